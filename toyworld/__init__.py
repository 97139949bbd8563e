"""The toy world: a procedurally drawn text-to-image domain small enough to train on a CPU.

Prompts are ``"a {colour} {shape}"`` or ``"a {style} {colour} {shape}"``, optionally
followed by ``" with a black dot"``. ``render`` draws them; ``train`` and ``train_global``
build the SD1.5-format checkpoint ``act_toyworld_sd15.safetensors`` that ComfyUI's stock nodes
load (``checkpoint`` installs it from ``weights/``); ``experiments`` holds the prompt sets AcT
is measured on; ``example_maps`` installs the map files in ``maps/``; ``demo`` is ``make demo``.
Reading images back is ``evaluation.metrics``; driving ComfyUI is ``harness``.
"""

from .render import COLOURS, SHAPES, STYLES, Scene, all_scenes, parse_prompt, render

__all__ = ["COLOURS", "SHAPES", "STYLES", "Scene", "all_scenes", "parse_prompt", "render"]
