"""Compare AcT estimators on the toy world, in-process, with the pack's own node functions.

Three studies, each on prompts held out from fitting (evaluation.act_eval's split: half of the
colour x shape combinations fit, the other half are evaluated), sampled with ComfyUI's own
``comfy.sample.sample`` (euler, 20 steps, cfg 5, 64x64, the KSampler's path) and read back with
evaluation.metrics:

* ``methods``: linear_act, mean_act, gaussian_ot, aura and diff_means, each learned with
  ``learn_maps`` (AcT Learn Transport's function, its defaults: incremental, 8 stages, 8 samples
  per prompt, first step of the schedule) and applied with ``patch_model`` (AcT Apply
  Transport's function, conditional half) over its strength range, for the style experiment
  (plain -> striped) and the negation experiment (" with a black dot" -> without).
  Presence/colour/shape curves as a picture, and a table at each method's best strength (the
  best presence among the strengths that keep colour >= 0.95 and shape >= 0.80, or the best
  presence overall, flagged, when none does).
* ``prompts``: negation with linear_act from 4, 8, 16 and all 18 fitting prompts per side
  (spread over the three styles), presence at strength 1 and 1.25.
* ``prompts_wide``: the same up to 32 prompts per side, on a split that holds out only four
  dot prompts (evaluated with 4 seeds each).
* ``timesteps``: negation with linear_act: one map collected at the first step (the default),
  one collected half-way through the schedule, maps per timestep range (4 ranges, each
  collected on noise at its range's middle and applied over that range), and the same two
  recorded along real sampling trajectories (``collect = trajectory``).

Usage: ``.venv/bin/python -m benchmarks.toy_methods [--seeds 1] [--style-seeds 2]
[--parts methods,prompts,timesteps]`` (about 75 minutes on 2 shared cores).
Writes its section into ``docs/results.md`` (between its markers), the raw numbers into
``benchmarks/results/toy_methods.json`` and the pictures into ``docs/images/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.timing import write_section
from benchmarks.toy_inprocess import _pack  # the repository as a node pack
from benchmarks.toy_methods_report import BEGIN, END, method_grid, plot_curves, report
from evaluation.metrics import read_image
from harness.comfy_env import import_comfy
from toyworld.checkpoint import checkpoint_path
from toyworld.experiments import Experiment, negation_experiment, style_experiment
from toyworld.render import COLOURS, SHAPES, STYLES, Scene

ROOT = Path(__file__).resolve().parent.parent
logger = logging.getLogger("toy_methods")
RESULTS = ROOT / "docs" / "results.md"
IMAGES = ROOT / "docs" / "images"
RAW = ROOT / "benchmarks" / "results" / "toy_methods.json"
OT_STRENGTHS = (0.0, 0.5, 1.0, 1.5)
# With the unbounded support both experiments use, diff_means has mean_act's coefficients
# (omega = 1, beta = mean b - mean a): its curve at strengths <= 1.5 is mean_act's, so it is
# sampled only where steering vectors are usually pushed, beyond the OT range.
STRENGTHS = {"linear_act": OT_STRENGTHS, "mean_act": OT_STRENGTHS, "gaussian_ot": OT_STRENGTHS,
             "aura": OT_STRENGTHS, "diff_means": (0.0, 2.0, 4.0)}
METHODS = tuple(STRENGTHS)
KEEP_COLOUR, KEEP_SHAPE = 0.95, 0.80
STEPS, CFG, SIZE, BASE_SEED = 20, 5.0, 64, 5000


class Toy:
    """The toy checkpoint loaded in this process, and the pack's node functions."""

    def __init__(self, checkpoint: Path | None = None):
        import_comfy()
        logging.getLogger().setLevel(logging.WARNING)
        import comfy.sd

        self.pack = _pack()
        self.model, self.clip, self.vae, _ = comfy.sd.load_checkpoint_guess_config(
            str(checkpoint or checkpoint_path()), output_vae=True, output_clip=True)
        self.negative = self.encode([""])[0]
        self._cache: dict[str, list] = {}

    def encode(self, prompts: list[str]) -> list:
        return self.pack.nodes.learn.encode_prompts(self.clip, prompts)

    def learn(self, source: list[str], target: list[str], **options):
        fit_latent = {"samples": torch.zeros(1, 4, SIZE // 8, SIZE // 8)}
        return self.pack.nodes.learn.learn_maps(
            self.model, self.encode(source), self.encode(target), source=source, target=target,
            latent=fit_latent, **options)

    def _batched_positive(self, prompts: list[str], seeds: int) -> list:
        """One CONDITIONING whose batch holds every prompt ``seeds`` times, in prompt order."""
        conds = self.encode(prompts)
        tensors = [c[0][0] for c in conds for _ in range(seeds)]
        extras = dict(conds[0][0][1])
        if "pooled_output" in extras:
            extras["pooled_output"] = torch.cat(
                [c[0][1]["pooled_output"] for c in conds for _ in range(seeds)])
        return [[torch.cat(tensors), extras]]

    def sample(self, model, prompts: list[str], seeds: int, cfg: float = CFG) -> np.ndarray:
        """Images (len(prompts) * seeds, H, W, 3) uint8; the noise of prompt k is seed
        BASE_SEED + k's batch, as a KSampler with batch_size = seeds would draw it."""
        import comfy.sample

        key = f"{seeds}|" + "|".join(prompts)
        if key not in self._cache:
            self._cache[key] = self._batched_positive(prompts, seeds)
        positive = self._cache[key]
        latent = torch.zeros(seeds, 4, SIZE // 8, SIZE // 8)
        noise = torch.cat([comfy.sample.prepare_noise(latent, BASE_SEED + k)
                           for k in range(len(prompts))])
        batch = torch.zeros_like(noise)
        with torch.no_grad():
            out = comfy.sample.sample(model, noise, STEPS, cfg, "euler", "normal", positive,
                                      self.negative, batch, disable_pbar=True, seed=BASE_SEED)
            pixels = self.vae.decode(out)
        return (pixels.clamp(0, 1).numpy() * 255).round().astype(np.uint8)


def score(exp, images: np.ndarray, seeds: int) -> dict:
    n = presence = colour = shape = 0
    for k, scene in enumerate(exp.heldout):
        for img in images[k * seeds:(k + 1) * seeds]:
            r = read_image(img)
            n += 1
            presence += r.dot if exp.presence == "dot" else (r.style == exp.presence)
            colour += r.colour == scene.colour
            shape += r.shape == scene.shape
    return {"images": n, "presence": presence / n, "colour": colour / n, "shape": shape / n}


def curve(toy: Toy, exp, maps, strengths, label: str, seeds: int) -> tuple[list[dict], dict]:
    """Rows (one per strength) and the images by strength."""
    prompts = [s.prompt for s in exp.heldout]
    rows, images = [], {}
    for strength in strengths:
        start = time.perf_counter()
        model = (toy.model if strength == 0.0
                 else toy.pack.nodes.apply.patch_model(toy.model, maps, strength))
        images[strength] = toy.sample(model, prompts, seeds)
        row = {"strength": strength, **score(exp, images[strength], seeds)}
        rows.append(row)
        logger.info("%s %s strength %g: presence %.3f colour %.3f shape %.3f (%.0f s)",
                    exp.name, label, strength, row["presence"], row["colour"], row["shape"],
                    time.perf_counter() - start)
    return rows, images


def best(rows: list[dict], remove: bool) -> tuple[dict, bool]:
    """The row with the best presence among those that keep colour and shape (and whether one
    did)."""
    kept = [r for r in rows if r["colour"] >= KEEP_COLOUR and r["shape"] >= KEEP_SHAPE]
    pool = kept or rows
    key = (lambda r: (r["presence"], -r["strength"])) if remove else \
        (lambda r: (-r["presence"], r["strength"]))
    return min(pool, key=key), bool(kept)


# ---------------------------------------------------------------------------------------------
# studies


def study_methods(toy: Toy, names: list[str], seeds: dict[str, int]) -> dict:
    results = {}
    for exp_name in names:
        exp = {"style": style_experiment, "negation": negation_experiment}[exp_name]()
        n_seeds = seeds[exp_name]
        remove = exp.presence == "dot"
        entry = {"presence_label": exp.presence, "fit_prompts": len(exp.source),
                 "heldout_prompts": len(exp.heldout), "seeds": n_seeds, "methods": {}}
        all_images, plain = {}, None
        for method in METHODS:
            start = time.perf_counter()
            maps = toy.learn(exp.source, exp.target, method=method, support=exp.support)
            learn_s = time.perf_counter() - start
            strengths = STRENGTHS[method]
            rows, images = [], {}
            if plain is not None:  # strength 0 is the unpatched model: sampled once
                rows.append(dict(plain[0]))
                images[0.0] = plain[1]
            more_rows, more_images = curve(toy, exp, maps, [s for s in strengths
                                                            if plain is None or s != 0.0],
                                          method, n_seeds)
            rows += more_rows
            images.update(more_images)
            if plain is None:
                plain = (rows[0], images[0.0])
            chosen, kept = best(rows, remove)
            entry["methods"][method] = {"rows": rows, "best": chosen, "best_keeps": kept,
                                        "learn_s": learn_s}
            all_images[method] = images
        results[exp_name] = entry
        plot_curves(results, exp_name, IMAGES / f"methods_{exp_name}_curves.png")
        method_grid(exp, all_images, STRENGTHS, IMAGES / f"methods_{exp_name}_grid.png",
                    prompt_index=0, seeds=n_seeds)
    return results


def _spread(pairs: list[tuple[str, str]], n: int) -> list[tuple[str, str]]:
    """``n`` of the pairs, evenly spaced over the list (which is ordered style by style)."""
    if n >= len(pairs):
        return list(pairs)
    return [pairs[round(i * len(pairs) / n)] for i in range(n)]


def _prompt_counts(toy: Toy, exp, seeds: int, counts, strengths, label: str) -> dict:
    """Learn from ``n`` of the experiment's prompt pairs for each n in ``counts``; rows of
    presence at ``strengths``."""
    pairs = list(zip(exp.source, exp.target))
    rows = []
    for n in counts:
        chosen = _spread(pairs, n)
        maps = toy.learn([s for s, _ in chosen], [t for _, t in chosen], support=exp.support)
        curve_rows, _ = curve(toy, exp, maps, strengths, f"{n} prompts{label}", seeds)
        rows.append({"prompts": len(chosen), "rows": curve_rows})
    return {"experiment": exp.name, "available": len(pairs), "rows": rows}


def study_prompts(toy: Toy, seeds: int, counts=(4, 8, 16, 18), strengths=(1.0, 1.25)) -> dict:
    return _prompt_counts(toy, negation_experiment(), seeds, counts, strengths, "")


WIDE_HELDOUT = (("red", "triangle", "plain"), ("green", "circle", "striped"),
                ("blue", "square", "outlined"), ("yellow", "circle", "plain"))


def wide_negation_experiment() -> Experiment:
    """Negation with 32 fitting prompts per side: every dot prompt of the toy world but the
    four of WIDE_HELDOUT (each colour once, each shape and style at least once), which are
    the ones evaluated."""
    held = [Scene(c, s, st, True) for c, s, st in WIDE_HELDOUT]
    fit = [(c, s, st) for st in STYLES for c in COLOURS for s in SHAPES
           if (c, s, st) not in WIDE_HELDOUT]
    return Experiment(
        name="negation_dot_wide",
        source=[Scene(c, s, st, True).prompt for c, s, st in fit],
        target=[Scene(c, s, st, False).prompt for c, s, st in fit],
        heldout=held, support="unbounded", presence="dot")


def study_prompts_wide(toy: Toy, seeds: int, counts=(4, 8, 16, 32), strengths=(1.0,)) -> dict:
    """Prompts per side up to 32, on the split of :func:`wide_negation_experiment`."""
    exp = wide_negation_experiment()
    return {**_prompt_counts(toy, exp, seeds, counts, strengths, " (wide)"), "seeds": seeds,
            "heldout": [s.prompt for s in exp.heldout]}


TIMESTEP_VARIANTS = {  # short name: (label, learn_maps options)
    "first": ("one map, collected at the first step (default)",
              {"collect_at": 0.0, "timestep_ranges": 1}),
    "half": ("one map, collected half-way (percent 0.5)",
             {"collect_at": 0.5, "timestep_ranges": 1}),
    "ranges4": ("4 maps, one per timestep range, each on noise at its middle",
                {"timestep_ranges": 4}),
    "traj4": ("4 maps, one per timestep range, recorded along 10-step trajectories",
              {"timestep_ranges": 4, "collect": "trajectory", "trajectory_steps": 10}),
    "traj4_s1": ("4 maps along 10-step trajectories, each range steered by the earlier ones, "
                 "all sites of a range at once (stages 1)",
                 {"timestep_ranges": 4, "collect": "trajectory", "trajectory_steps": 10,
                  "stages": 1}),
    "traj1": ("one map, recorded at every step of 10-step trajectories",
              {"timestep_ranges": 1, "collect": "trajectory", "trajectory_steps": 10}),
    "first_once": ("one map, collected at the first step, all sites at once",
                   {"timestep_ranges": 1, "incremental": False}),
    "traj4_once": ("4 maps along 10-step trajectories, all sites at once",
                   {"timestep_ranges": 4, "collect": "trajectory", "trajectory_steps": 10,
                    "incremental": False}),
}


def study_timesteps(toy: Toy, seeds: int, variants: list[str], strengths=(0.5, 1.0, 1.25),
                    previous: dict | None = None) -> dict:
    """Rows of the variants asked for; rows of other variants in ``previous`` are kept."""
    exp = negation_experiment()
    rows = [r for r in (previous or {}).get("rows", []) if r.get("name") not in variants]
    for name in variants:
        label, options = TIMESTEP_VARIANTS[name]
        start = time.perf_counter()
        maps = toy.learn(exp.source, exp.target, support=exp.support, **options)
        learn_s = time.perf_counter() - start
        curve_rows, _ = curve(toy, exp, maps, strengths, label, seeds)
        rows.append({"name": name, "variant": label, "options": options, "learn_s": learn_s,
                     "rows": curve_rows})
    order = list(TIMESTEP_VARIANTS)
    rows.sort(key=lambda r: order.index(r["name"]) if r.get("name") in order else len(order))
    return {"experiment": exp.name, "rows": rows}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1,
                        help="images per held-out prompt of the negation experiment (18 prompts)")
    parser.add_argument("--style-seeds", type=int, default=2,
                        help="images per held-out prompt of the style experiment (6 prompts)")
    parser.add_argument("--parts", default="methods,prompts,prompts_wide,timesteps")
    parser.add_argument("--experiments", default="negation,style",
                        help="for the methods part")
    parser.add_argument("--wide-seeds", type=int, default=4,
                        help="seeds per held-out prompt of the prompts_wide part (4 prompts)")
    parser.add_argument("--prompt-strengths", default="1,1.25",
                        help="strengths of the prompts part (comma-separated)")
    parser.add_argument("--timestep-variants", default="first,half,ranges4,traj4,traj1",
                        help="for the timesteps part, of: " + ", ".join(TIMESTEP_VARIANTS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--raw", type=Path, default=RAW, help="JSON of the raw numbers (read "
                        "first, then updated part by part); --parts report only rewrites --out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    parts = args.parts.split(",")
    raw = args.raw
    results = json.loads(raw.read_text()) if raw.exists() else {}
    if parts != ["report"]:
        toy = Toy()
        logging.getLogger().setLevel(logging.WARNING)
        logger.setLevel(logging.INFO)
    if "methods" in parts:
        results["methods"] = study_methods(toy, args.experiments.split(","),
                                           {"negation": args.seeds, "style": args.style_seeds})
        raw.parent.mkdir(parents=True, exist_ok=True)
        raw.write_text(json.dumps(results, indent=1))
    if "prompts" in parts:
        results["prompts"] = study_prompts(
            toy, args.seeds, strengths=tuple(float(v) for v in args.prompt_strengths.split(",")))
        raw.write_text(json.dumps(results, indent=1))
    if "prompts_wide" in parts:
        results["prompts_wide"] = study_prompts_wide(toy, args.wide_seeds)
        raw.write_text(json.dumps(results, indent=1))
    if "timesteps" in parts:
        results["timesteps"] = study_timesteps(toy, args.seeds,
                                               args.timestep_variants.split(","),
                                               previous=results.get("timesteps"))
        raw.write_text(json.dumps(results, indent=1))
    write_section(args.out, report(results, args), BEGIN, END)
    print(report(results, args))


if __name__ == "__main__":
    main()
