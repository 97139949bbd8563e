"""The transport-map files the project ships for its example workflows.

``toyworld/maps/*.safetensors`` are fitted by the project's own nodes from the toy checkpoint
(``python -m harness.build_maps``: the learn half of ``act_style_intensity``, run on the real
ComfyUI server) and committed. ``install_example_maps(models_dir)`` copies them into
``<models_dir>/act_maps`` so that ``AcT Load Maps`` in ``act_load_and_apply`` finds them on a
fresh install. This module imports nothing of ComfyUI at the top: the pack may call it while
loading.
"""

from __future__ import annotations

import argparse
import filecmp
import logging
import shutil
import sys
from pathlib import Path

__all__ = ["ACT_MAPS", "MAPS_DIR", "STRIPED_MAP", "install_example_maps"]

log = logging.getLogger(__name__)
MAPS_DIR = Path(__file__).resolve().parent / "maps"
STRIPED_MAP = "toyworld_striped.safetensors"
ACT_MAPS = "act_maps"


def install_example_maps(models_dir: str | Path) -> list[Path]:
    """Copy the shipped map files into ``<models_dir>/act_maps``; return the files written.

    A file already there with the same bytes is left alone; one with the same name and
    different bytes is replaced (these names belong to the pack). Missing shipped files are
    logged, not raised: ComfyUI must start without them.
    """
    dest = Path(models_dir) / ACT_MAPS
    shipped = sorted(MAPS_DIR.glob("*.safetensors"))
    if not shipped:
        log.warning("no example map files in %s: run `python -m harness.build_maps`",
                    MAPS_DIR)
        return []
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for src in shipped:
        target = dest / src.name
        if target.is_file() and filecmp.cmp(src, target, shallow=False):
            continue
        tmp = target.with_suffix(".partial")
        shutil.copyfile(src, tmp)
        tmp.replace(target)
        written.append(target)
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("install", help="copy the shipped maps into a ComfyUI models folder")
    i.add_argument("--models-dir", type=Path, required=True,
                   help="ComfyUI's models folder (the maps go to its act_maps sub-folder)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[example_maps] %(message)s")
    written = install_example_maps(args.models_dir)
    log.info("installed %d file(s) into %s", len(written), args.models_dir / ACT_MAPS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
