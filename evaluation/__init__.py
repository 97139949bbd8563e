"""Measuring images of the toy world.

- ``metrics``: read colour, shape, style and dot back from an image (analytic, no learning);
- ``checkpoint_eval``: the toy checkpoint through the real ComfyUI server with stock nodes;
- ``act_eval``: AcT's nodes on the toy world's experiments (``toyworld.experiments``);
- ``grids``: labelled picture grids.
"""
