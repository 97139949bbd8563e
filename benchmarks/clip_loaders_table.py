"""docs/families.md's tables of every CLIP ComfyUI's CLIP loaders build (harness/clip_rows.py).

Two tables: loader type -> the family it serves -> the CLIP classes it selects; and one row per
CLIP class the loaders reach -> how the matrix covers it -> sites per preset (named rows'
sites are in the table of tests/test_text_encoders_matrix.py's rows). Generated rows are
built tiny (harness/tiny_clips.py); Mistral's tokenizers run in a subprocess with
transformers 4.57.6, as the named Flux2 row does.

    python -m benchmarks.clip_loaders_table --row single:ernie:MINISTRAL_3_3B  # one row
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
PRESETS = ("layer outputs", "final norm", "layer norms")
PROMPT = 'a red circle, "sun"'  # ByT5 encodes quoted text only

__all__ = ["class_rows", "type_rows"]


def _short(key: tuple) -> str:
    """``QwenImageTEModel_ (qwen_image, byt5=False)``: class name, its module, its arguments."""
    module, qualname = key[0].split(":")
    args = ", ".join(f"{k}={v}" for k, v in key[2] if k != "t5_attention_mask")
    where = module.rsplit(".", 1)[-1]
    return f"`{qualname.rsplit('.', 1)[-1]}` ({where}{', ' + args if args else ''})"


def _sites(clip_nodes, clip) -> list[str]:
    cells = []
    for preset in PRESETS:
        try:
            _, sites = clip_nodes.choose_text_sites(clip, preset, "", "all", PROMPT)
        except LookupError:  # SiteError: an encoder without a final norm
            cells.append("none")
            continue
        per = Counter(str(s).split(".", 1)[0] for s in sites)
        cells.append(", ".join(f"{enc} {n}" for enc, n in per.items()))
    return cells


def _needs_transformers4(key: tuple) -> bool:
    import transformers

    from harness import clip_rows

    return (key[1] in clip_rows.TRANSFORMERS4_TOKENIZERS
            and int(transformers.__version__.split(".")[0]) >= 5)


def _row_in_subprocess(name: str) -> list[str]:
    from harness.encoder_recipes import TRANSFORMERS4_DIR

    path = os.pathsep.join([str(TRANSFORMERS4_DIR), str(ROOT), os.environ.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-m", "benchmarks.clip_loaders_table", "--row",
                             name], cwd=ROOT, env={**os.environ, "PYTHONPATH": path},
                            capture_output=True, text=True, timeout=600, check=True)
    return result.stdout.strip().splitlines()[-1].split(" ;; ")


def _generated_cells(clip_nodes, entry) -> list[str]:
    from harness import clip_loaders, tiny_clips

    if _needs_transformers4(entry["key"]):
        return _row_in_subprocess(entry["target"].name)
    clip = tiny_clips.build_tiny(clip_loaders.target_of(entry["target"]))
    return [", ".join(clip_nodes.encoders_of(clip)), *_sites(clip_nodes, clip)]


def class_rows(clip_nodes, rows: dict) -> list[str]:
    """One markdown row per CLIP class the loaders reach."""
    out = []
    for name, entry in rows.items():
        how = entry["how"]
        if how == "generated":
            cells = _generated_cells(clip_nodes, entry)
        elif how == "named":
            cells = [f"named row `{entry['row']}`", "(table above)", "", ""]
        else:
            cells = [f"{how}: {entry['reason']}", "", "", ""]
        out.append(f"| `{name}` | {_short(entry['key'])} | " + " | ".join(cells) + " |")
    return out


def type_rows(rows: dict) -> list[str]:
    """One markdown row per loader type: the family it serves and the classes it selects.
    For most encoders the single loader goes by the file alone: classes that more than half
    of its types reach are listed once, under 'any'."""
    from harness import clip_loaders, clip_rows

    types = clip_loaders.loader_types()
    half = len(types["single"]) / 2
    by_type: dict[tuple[str, str | None], list[str]] = {}
    anywhere: list[str] = []
    for entry in rows.values():
        reached = {(t.loader, t.type) for t in entry["targets"]}
        files = "+".join(entry["target"].files)
        label = f"{_short(entry['key'])} [{entry['how']}]"
        single = f"{_short(entry['key'])} ← {files} [{entry['how']}]"
        if sum(loader == "single" for loader, _ in reached) > half:
            anywhere.append(single)
            reached = {(loader, t) for loader, t in reached if loader != "single"}
        for pair in reached:
            by_type.setdefault(pair, []).append(single if pair[0] == "single" else label)
    out = []
    for loader, names in types.items():
        for t in names:
            serves = clip_rows.TYPE_FAMILIES.get(t) or (
                f"excluded: {clip_rows.EXCLUDED_TYPES[t]}" if t in clip_rows.EXCLUDED_TYPES
                else "SD3 (triple) / HiDream (quadruple)")
            classes = "; ".join(by_type.get((loader, t), [])) or "(the file decides: 'any')"
            out.append(f"| {loader} | {t or '-'} | {serves} | {classes} |")
    out.append(f"| single | any | the file's encoder decides | {'; '.join(anywhere)} |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--row", required=True, help="print this generated row's cells")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    from harness.comfy_env import import_comfy, import_pack

    import_comfy()
    clip_nodes = importlib.import_module(f"{import_pack().__name__}.nodes.clip")
    from harness import clip_rows

    print(" ;; ".join(_generated_cells(clip_nodes, clip_rows.rows()[args.row])))


if __name__ == "__main__":
    main()
