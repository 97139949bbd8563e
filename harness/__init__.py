"""What the tests, benchmarks and tools drive: the real ComfyUI and tiny models.

- ``comfy_env``: import ComfyUI and this pack in-process (CPU); ``comfy_server``: start the
  real ComfyUI server on loopback and run API graphs; ``comfy_page``: its web page in a browser.
- ``workflow_format``, ``workflows``: the example workflows (UI format) and their writer;
  ``build_maps``: the example map files they load; ``pack_images``: the pack's pictures.
- ``family_recipes``, ``encoder_recipes``, ``tiny_files``: tiny random-weight models of every
  ComfyUI model family and text encoder; ``hf_tiny``: tiny transformers LMs.

Nothing here ships in the wheel (only ``act_core`` does).
"""
