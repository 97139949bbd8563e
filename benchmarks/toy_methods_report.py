"""Pictures and the docs section of ``toy_methods``: curves, method grids, the Markdown report."""

from __future__ import annotations

from pathlib import Path

from evaluation.grids import save_grid
from toyworld.experiments import negation_experiment

__all__ = ["BEGIN", "END", "method_grid", "plot_curves", "report"]

BEGIN, END = "<!-- toy_methods: begin -->", "<!-- toy_methods: end -->"


def _x(strength: float) -> float:
    """Position on the strength axis, 0..1: 0..1.5 (the OT range) on the first 70%, 1.5..4
    (diff_means' steering strengths) on the rest."""
    if strength <= 1.5:
        return strength / 1.5 * 0.7
    return 0.7 + (min(strength, 4.0) - 1.5) / 2.5 * 0.3


def plot_curves(results: dict, exp_name: str, path: Path) -> None:
    """Three panels (presence, colour kept, shape kept) over the strength, one line per method.
    The strength axis is piecewise linear: 0..1.5, then 1.5..4 compressed (diff_means)."""
    from PIL import Image, ImageDraw

    colours = {"linear_act": (214, 39, 40), "mean_act": (31, 119, 180),
               "gaussian_ot": (44, 160, 44), "aura": (148, 103, 189),
               "diff_means": (255, 127, 14)}
    panel_w, panel_h, pad, top = 300, 220, 44, 28
    canvas = Image.new("RGB", (3 * panel_w + 20, panel_h + top + 50), "white")
    draw = ImageDraw.Draw(canvas)
    for p, metric in enumerate(("presence", "colour", "shape")):
        x0, y0 = p * panel_w + pad, top
        w, h = panel_w - pad - 12, panel_h - 40
        title = f"{results[exp_name]['presence_label']} presence" if metric == "presence" \
            else f"{metric} kept"
        draw.text((x0, 6), f"{exp_name}: {title}", fill="black")
        draw.rectangle([x0, y0, x0 + w, y0 + h], outline=(120, 120, 120))
        draw.line([x0 + 0.7 * w, y0, x0 + 0.7 * w, y0 + h], fill=(210, 210, 210))
        for v in (0.0, 0.5, 1.0):
            y = y0 + h - v * h
            draw.line([x0 - 4, y, x0, y], fill="black")
            draw.text((x0 - 30, y - 6), f"{v:.1f}", fill="black")
        for tick in (0.0, 0.5, 1.0, 1.5, 4.0):
            x = x0 + _x(tick) * w
            draw.line([x, y0 + h, x, y0 + h + 4], fill="black")
            draw.text((x - 6, y0 + h + 6), f"{tick:g}", fill="black")
        draw.text((x0 + w / 2 - 20, y0 + h + 20), "strength", fill="black")
        for method, entry in results[exp_name]["methods"].items():
            points = [(x0 + _x(r["strength"]) * w, y0 + h - r[metric] * h)
                      for r in entry["rows"]]
            draw.line(points, fill=colours[method], width=2)
            for x, y in points:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colours[method])
    x = pad
    for method in results[exp_name]["methods"]:
        y = panel_h + top + 28
        draw.line([x, y + 6, x + 18, y + 6], fill=colours[method], width=3)
        draw.text((x + 22, y), method, fill="black")
        x += 150
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def method_grid(exp, images_by_method: dict, strengths_by_method: dict, path: Path,
                prompt_index: int, seeds: int) -> None:
    """One held-out prompt, one row per method, its strengths left to right."""
    rows, labels = [], []
    for method, images in images_by_method.items():
        rows.append([images[s][prompt_index * seeds] for s in strengths_by_method[method]])
        labels.append(f"{method} ({', '.join(f'{s:g}' for s in strengths_by_method[method])})")
    save_grid(rows, labels, path)



def _fmt(r: dict) -> str:
    return f"{r['presence']:.2f} / {r['colour']:.2f} / {r['shape']:.2f}"


def _prompts_table(p: dict) -> list[str]:
    """Markdown lines: one row per prompt count, one column per strength, then a blank."""
    strengths = sorted({r["strength"] for row in p["rows"] for r in row["rows"]})
    lines = ["| prompts per side | " + " | ".join(f"strength {v:g}" for v in strengths) + " |",
             "|---" * (len(strengths) + 1) + "|"]
    for row in p["rows"]:
        cells = {r["strength"]: _fmt(r) for r in row["rows"]}
        lines.append(f"| {row['prompts']} | " + " | ".join(cells.get(v, "-") for v in strengths)
                     + " |")
    return lines + [""]


def report(results: dict, args) -> str:
    lines = [BEGIN, "", "## Method comparison on the toy world", "",
             "Measured with `.venv/bin/python -m benchmarks.toy_methods "
             f"--seeds {args.seeds} --style-seeds {args.style_seeds}` (in-process: the "
             "checkpoint is loaded with ComfyUI's loader, "
             "maps are learned with AcT Learn Transport's function at its defaults and applied "
             "with AcT Apply Transport's function to the conditional half; ComfyUI's sampler, "
             "euler, 20 steps, cfg 5, 64x64). Every number is read from images of prompts held "
             "out from fitting. Cells: presence / colour kept / shape kept. \"learn s\" is the "
             "wall time of learning on the shared machine (its load varied a lot, so compare "
             "these only roughly). Raw numbers: `benchmarks/results/toy_methods.json`.", ""]
    methods = results.get("methods", {})
    for exp_name, entry in methods.items():
        label = entry["presence_label"]
        goal = ("dot presence: lower is better" if label == "dot"
                else f"{label} presence: higher is better")
        lines += [f"### {exp_name} ({entry['fit_prompts']} fitting prompts per side, "
                  f"{entry['heldout_prompts']} held-out prompts x {entry['seeds']} seed(s); "
                  f"{goal})",
                  "", f"![{exp_name} curves](images/methods_{exp_name}_curves.png)", "",
                  f"![{exp_name} grid](images/methods_{exp_name}_grid.png)", "",
                  "| method | best strength | at best | at strength 1 | all strengths "
                  "(presence) | learn s |", "|---|---|---|---|---|---|"]
        for method, m in entry["methods"].items():
            at_one = next((r for r in m["rows"] if r["strength"] == 1.0), None)
            flag = "" if m["best_keeps"] else " (colour/shape not kept at any strength)"
            lines.append(
                f"| {method} | {m['best']['strength']:g}{flag} | {_fmt(m['best'])} | "
                f"{_fmt(at_one) if at_one else '-'} | "
                + ", ".join(f"{r['strength']:g}: {r['presence']:.2f}" for r in m["rows"])
                + f" | {m['learn_s']:.0f} |")
        lines.append("")
    if "prompts" in results:
        p = results["prompts"]
        lines += ["### How many prompts are enough (negation, linear_act)", "",
                  f"{len(negation_experiment().heldout)} held-out prompts x "
                  f"{args.seeds} seed(s).", "",
                  f"The toy world's fitting split has {p['available']} prompts per side (6 colour/"
                  "shape combinations x 3 styles); 32 distinct prompts per side would need the "
                  "held-out ones, so the largest row uses all of them. Each prompt gives 8 noise "
                  "samples (the node's default).", "", *_prompts_table(p)]
    if "prompts_wide" in results:
        p = results["prompts_wide"]
        lines += ["Up to 32 prompts per side, on a second split: every dot prompt but four is "
                  f"available for fitting ({p['available']}), and the four held out ("
                  + ", ".join(f"\"{h}\"" for h in p["heldout"])
                  + f") are evaluated with {p['seeds']} seeds each; fewer images per row, so "
                  "coarser numbers.", "", *_prompts_table(p)]
    if "timesteps" in results:
        t = results["timesteps"]
        lines += ["### One map vs maps per timestep range (negation, linear_act)", "",
                  f"{len(negation_experiment().heldout)} held-out prompts x {args.seeds} "
                  "seed(s). Maps per range are applied over their range; each is recorded on "
                  "noise at its range's middle, or on the steps of real (cfg 1, euler) "
                  "trajectories that fall in the range where the row says so (`collect = "
                  "trajectory`). Rows without 'all sites at once' fit incrementally (8 stages, "
                  "the node's default).", "",
                  "| maps | strength 0.5 | strength 1 | strength 1.25 | learn s |",
                  "|---|---|---|---|---|"]
        for row in t["rows"]:
            cells = {r["strength"]: _fmt(r) for r in row["rows"]}
            lines.append(f"| {row['variant']} | {cells.get(0.5, '-')} | {cells.get(1.0, '-')} | "
                         f"{cells.get(1.25, '-')} | {row['learn_s']:.0f} |")
        lines.append("")
    lines.append(END)
    return "\n".join(lines) + "\n"


