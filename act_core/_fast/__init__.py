"""Private fast paths of the transport; the readable formula is :mod:`act_core.transport`.

``kernels``: blocked elementwise kernels (CPU inline blocks over worker threads);
``prepared``: a site's transport prepared once per shape, so that a sampler's call only
launches kernels. Both give the formula's results bit for bit (tests/test_transport*.py).
"""
