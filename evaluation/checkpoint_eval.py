"""Evaluate the toy checkpoint through the real ComfyUI server with stock nodes.

Renders every colour x shape x style x dot prompt with KSampler (euler, 20 steps, cfg 5) at
64x64 for several seeds, reads each image with ``evaluation.metrics`` and writes a markdown
table and a grid picture. ``python -m evaluation.checkpoint_eval --out docs`` (about 3 minutes
on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from harness.comfy_server import ComfyServer, txt2img_graph
from toyworld.render import all_scenes

from .grids import save_grid
from .metrics import read_image

__all__ = ["evaluate_checkpoint", "markdown", "summarise"]


def evaluate_checkpoint(server: ComfyServer, seeds: int = 2, base_seed: int = 1000):
    """Render all 72 prompts x ``seeds`` images; return (per-image records, images by prompt)."""
    records, by_prompt = [], {}
    for k, scene in enumerate(all_scenes()):
        graph = txt2img_graph(scene.prompt, seed=base_seed + k, batch=seeds, prefix=f"eval{k}")
        images = server.images(server.run(graph))
        by_prompt[scene.prompt] = images
        for img in images:
            r = read_image(img)
            records.append({
                "prompt": scene.prompt, "style": scene.style, "dot": scene.dot,
                "colour_ok": r.colour == scene.colour, "shape_ok": r.shape == scene.shape,
                "style_ok": r.style == scene.style, "dot_seen": r.dot,
            })
    return records, by_prompt


def summarise(records: list[dict]) -> dict:
    def rate(rs, key):
        return sum(r[key] for r in rs) / max(1, len(rs))

    with_dot = [r for r in records if r["dot"]]
    without = [r for r in records if not r["dot"]]
    out = {"images": len(records), "colour": rate(records, "colour_ok"),
           "shape": rate(records, "shape_ok"), "style": rate(records, "style_ok"),
           "dot_when_prompted": rate(with_dot, "dot_seen"),
           "dot_when_not_prompted": rate(without, "dot_seen")}
    by_style = defaultdict(list)
    for r in records:
        by_style[r["style"]].append(r)
    out["style_by_style"] = {s: rate(rs, "style_ok") for s, rs in sorted(by_style.items())}
    return out


def markdown(summary: dict) -> str:
    thresholds = {"colour": ">= 0.95", "shape": ">= 0.80", "style": ">= 0.80",
                  "dot_when_prompted": ">= 0.90", "dot_when_not_prompted": "<= 0.05"}
    lines = [f"Images: {summary['images']} (72 prompts x {summary['images'] // 72} seeds), "
             "KSampler euler, 20 steps, cfg 5, 64x64.", "",
             "| metric | measured | required |", "|---|---|---|"]
    for k, req in thresholds.items():
        lines.append(f"| {k.replace('_', ' ')} | {summary[k]:.3f} | {req} |")
    lines.append("")
    lines.append("Style correct by style: " + ", ".join(
        f"{s} {v:.3f}" for s, v in summary["style_by_style"].items()))
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("docs"))
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args(argv)
    with ComfyServer() as server:
        records, by_prompt = evaluate_checkpoint(server, args.seeds)
    summary = summarise(records)
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    (args.out / "toyworld_eval.json").write_text(json.dumps(summary, indent=2))
    (args.out / "toyworld_eval.md").write_text(markdown(summary))
    prompts = list(by_prompt)[:36]
    rows = [by_prompt[p][:2] + by_prompt[q][:2] for p, q in zip(prompts[0::2], prompts[1::2])]
    labels = [f"{p} | {q}" for p, q in zip(prompts[0::2], prompts[1::2])]
    save_grid(rows, labels, args.out / "images" / "toyworld_grid.png")
    print(markdown(summary))


if __name__ == "__main__":
    main()
