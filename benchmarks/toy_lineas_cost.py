"""Cost of LinEAS against Linear-AcT: learn time and peak memory, same prompts, one run.

Each method learns in its own fresh process (so peak memory is its own), through the pack's
learn function on the toy checkpoint, at the learn node's defaults (Linear-AcT: sites auto =
every norm, incremental in 8 stages; LinEAS: sites auto = every preset's sites, 60 steps of 4
prompts), on the style prompts of docs/results_toyworld.md (6 plain + 6 striped, 8 noise
samples each), one torch thread (CPU time is the process's own work on the shared machine;
wall time is shown too). Peak memory is the process's resident high-water mark minus its
resident size just before learning. A third process learns by LinEAS without the copies autograd
keeps during its fit (``nodes/learn_lineas.saved_copies``): their cost. Prints one JSON line per
method, then the ratios, and writes benchmarks/results/toy_lineas_cost_EXPERIMENT.json. Run:
``.venv/bin/python -m benchmarks.toy_lineas_cost``; one learn alone:
``.venv/bin/python -m benchmarks.toy_lineas_cost --one METHOD EXPERIMENT [SITES]``
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

from benchmarks.timing import timed

ROOT = Path(__file__).resolve().parent.parent


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _pack():
    import importlib

    import torch

    from harness.comfy_env import import_pack

    torch.set_num_threads(1)  # on the shared 2 cores, 2 threads wait for each other (results.md)
    import_pack()
    return importlib.import_module("act_pack.nodes.learn")


def one(method: str, experiment: str, sites: str = "auto") -> dict:
    learn = _pack()
    label = method
    if method == "lineas_without_copies":
        # the A/B of learn_lineas.saved_copies (the toy UNet changes no saved tensor in place)
        import contextlib
        import importlib

        importlib.import_module("act_pack.nodes.learn_lineas").saved_copies = \
            contextlib.nullcontext
        method = "lineas"
    import comfy.sd
    import torch

    from toyworld.checkpoint import checkpoint_path
    from toyworld.experiments import EXPERIMENTS

    model, clip, _, _ = comfy.sd.load_checkpoint_guess_config(
        str(checkpoint_path()), output_vae=False, output_clip=True)
    exp = EXPERIMENTS[experiment]()
    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        src = learn.encode_prompts(clip, exp.source)
        tgt = learn.encode_prompts(clip, exp.target)
        latent = {"samples": torch.zeros(1, 4, 8, 8)}
        before = _rss_kib()
        out = []
        clocks = timed(lambda: out.append(learn.learn_and_diagnose(
            model, src, tgt, method=method, sites=sites, support=exp.support, latent=latent)))
        maps, report = out[0]
        seconds, cpu = clocks.wall, clocks.cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kept = sum(1 for s in report.sites if s.kept)
    return {"method": label, "site_choice": sites, "experiment": experiment,
            "seconds": round(seconds, 2),
            "cpu_seconds": round(cpu, 2),
            "peak_extra_mib": round((peak - before) / 1024, 1), "sites": len(maps),
            "sites_kept": kept, "warnings": list(report.warnings),
            "separation_closed": round(report.closed, 4)}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--one":
        print(json.dumps(one(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "style",
                             sys.argv[4] if len(sys.argv) > 4 else "auto")))
        return
    experiment = sys.argv[1] if len(sys.argv) > 1 else "style"
    rows = {}
    for method in ("linear_act", "lineas", "lineas_without_copies"):
        out = subprocess.run([sys.executable, "-m", "benchmarks.toy_lineas_cost", "--one", method,
                              experiment], check=True, capture_output=True, text=True,
                             cwd=ROOT).stdout
        rows[method] = json.loads(out.strip().splitlines()[-1])
        print(json.dumps(rows[method]))
    ratios = {"time": round(rows["lineas"]["seconds"] / rows["linear_act"]["seconds"], 2),
              "cpu_time": round(rows["lineas"]["cpu_seconds"]
                                / rows["linear_act"]["cpu_seconds"], 2),
              "peak_memory": round(rows["lineas"]["peak_extra_mib"]
                                   / max(rows["linear_act"]["peak_extra_mib"], 1e-9), 2)}
    copies = {"time": round(rows["lineas"]["seconds"]
                            / rows["lineas_without_copies"]["seconds"], 2),
              "peak_memory": round(rows["lineas"]["peak_extra_mib"]
                                   / max(rows["lineas_without_copies"]["peak_extra_mib"], 1e-9),
                                   2)}
    print(json.dumps({"lineas_over_linear_act": ratios, "copies": copies}))
    path = ROOT / "benchmarks" / "results" / f"toy_lineas_cost_{experiment}.json"
    path.write_text(json.dumps({"rows": rows, "ratios": ratios,
                                "lineas_over_lineas_without_copies": copies}, indent=2) + "\n")


if __name__ == "__main__":
    main()
