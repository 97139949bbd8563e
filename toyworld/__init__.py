"""The toy world: a procedurally drawn text-to-image domain small enough to train on a CPU.

Prompts are ``"a {colour} {shape}"`` or ``"a {style} {colour} {shape}"``, optionally
followed by ``" with a black dot"``. ``render`` draws them; ``metrics`` reads colour,
shape, style and dot back from any image; ``train`` builds the SD1.5-format checkpoint
``act_toyworld_sd15.safetensors`` that ComfyUI's stock nodes load.
"""

from .render import COLOURS, SHAPES, STYLES, Scene, all_scenes, parse_prompt, render

__all__ = ["COLOURS", "SHAPES", "STYLES", "Scene", "all_scenes", "parse_prompt", "render"]
