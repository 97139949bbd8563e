"""Diffusers host: fit and apply maps on a text-to-image pipeline's denoiser.

``pipeline``: fit, save, load and steer (:mod:`act_core.diffusers.pipeline`); ``names``: the
site names of ComfyUI's SD UNet translated to diffusers' (map files from the ComfyUI nodes).
Diffusers itself is never imported here: only the pipeline object passed in is used.
"""
