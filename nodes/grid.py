"""ActStrengthGrid: one seed, several strengths, one labelled picture.

The first thing a user wants to see after learning maps: the same image at lambda = 0, 0.25,
0.5, 0.75, 1. Each column is a full sampling run with the model patched at that strength.
"""

from __future__ import annotations

import comfy.sample
import comfy.samplers
import numpy as np
import torch
from comfy_api.latest import IO

from .apply import patch_model

__all__ = ["ActStrengthGrid", "label_grid", "parse_strengths"]


def parse_strengths(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError as error:
        raise ValueError(f"strengths must be numbers separated by commas, e.g. "
                         f"'0, 0.25, 0.5, 0.75, 1'; got {text!r}") from error
    if not values:
        raise ValueError("strengths is empty: give e.g. '0, 0.25, 0.5, 0.75, 1'")
    return values


def label_grid(columns: list[torch.Tensor], labels: list[str], min_tile: int = 128
               ) -> torch.Tensor:
    """(rows*H', cols*W', 3) grid of image batches (B, H, W, 3), columns labelled on top."""
    from PIL import Image, ImageDraw

    b, h, w, _ = columns[0].shape
    zoom = max(1, -(-min_tile // max(h, w)))
    th, tw, top = h * zoom, w * zoom, 18
    canvas = Image.new("RGB", (tw * len(columns), top + th * b), "white")
    draw = ImageDraw.Draw(canvas)
    for j, (col, label) in enumerate(zip(columns, labels)):
        draw.text((j * tw + 4, 3), label, fill="black")
        for i in range(b):
            arr = (col[i].clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
            tile = Image.fromarray(arr).resize((tw, th), Image.NEAREST)
            canvas.paste(tile, (j * tw, top + i * th))
    return torch.from_numpy(np.asarray(canvas).astype(np.float32) / 255.0)[None]


class ActStrengthGrid(IO.ComfyNode):
    @classmethod
    def define_schema(cls) -> IO.Schema:
        return IO.Schema(
            node_id="ActStrengthGrid",
            display_name="AcT Strength Grid",
            category="AcT",
            description=("Samples the same seed at several strengths (lambda) and returns a "
                         "labelled grid: columns are strengths, rows are the latent's batch. "
                         "Equivalent to one AcT Apply Transport + KSampler + VAE Decode per "
                         "strength."),
            search_aliases=["lambda sweep", "strength sweep", "xy plot act", "compare strengths"],
            inputs=[
                IO.Model.Input("model", tooltip="The model to steer (not changed)."),
                IO.Custom("ACT_MAPS").Input("maps", tooltip="Transport maps."),
                IO.Conditioning.Input("positive", tooltip="Positive conditioning."),
                IO.Conditioning.Input("negative", tooltip="Negative conditioning."),
                IO.Latent.Input("latent_image", tooltip="The latent to denoise (e.g. Empty "
                                                        "Latent Image)."),
                IO.Vae.Input("vae", tooltip="Decodes the results."),
                IO.String.Input("strengths", default="0, 0.25, 0.5, 0.75, 1",
                                tooltip="Comma-separated strengths, one column each."),
                IO.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF,
                             control_after_generate=True, tooltip="Noise seed (same for all)."),
                IO.Int.Input("steps", default=20, min=1, max=10000, tooltip="Sampling steps."),
                IO.Float.Input("cfg", default=5.0, min=0.0, max=100.0, step=0.1,
                               tooltip="Classifier-free guidance scale."),
                IO.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS,
                               default="euler", tooltip="Sampler."),
                IO.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS,
                               default="normal", tooltip="Noise schedule."),
            ],
            outputs=[IO.Image.Output(display_name="grid", tooltip="Labelled grid."),
                     IO.Image.Output(display_name="images",
                                     tooltip="Every image, strength by strength.")],
        )

    @classmethod
    def execute(cls, model, maps, positive, negative, latent_image, vae, strengths, seed, steps,
                cfg, sampler_name, scheduler) -> IO.NodeOutput:
        values = parse_strengths(strengths)
        latent = comfy.sample.fix_empty_latent_channels(model, latent_image["samples"])
        noise = comfy.sample.prepare_noise(latent, seed, latent_image.get("batch_index"))
        columns = []
        for value in values:
            patched = patch_model(model, maps, value)
            samples = comfy.sample.sample(patched, noise, steps, cfg, sampler_name, scheduler,
                                          positive, negative, latent, seed=seed)
            columns.append(vae.decode(samples))
        grid = label_grid(columns, [f"strength {v:g}" for v in values])
        return IO.NodeOutput(grid, torch.cat(columns))
