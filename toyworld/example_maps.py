"""The transport-map files the project ships for its example workflows.

``toyworld/maps/*.safetensors`` are fitted by the project's own nodes from the toy checkpoint
(``python -m toyworld.example_maps build``: the learn half of ``act_style_intensity``, run on
the real ComfyUI server) and committed. ``install_example_maps(models_dir)`` copies them into
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

__all__ = ["MAPS_DIR", "STRIPED_MAP", "build", "install_example_maps"]

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
        log.warning("no example map files in %s: run `python -m toyworld.example_maps build`",
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


def _upstream(graph: dict, node_id: str) -> dict:
    """The part of an API graph that ``node_id`` depends on (itself included)."""
    keep, todo = set(), [node_id]
    while todo:
        nid = todo.pop()
        if nid in keep:
            continue
        keep.add(nid)
        todo += [v[0] for v in graph[nid]["inputs"].values() if isinstance(v, list)]
    return {nid: graph[nid] for nid in graph if nid in keep}


def build(checkpoint: Path | None = None, out: Path | None = None) -> Path:
    """Fit the striped-style maps with ``act_style_intensity``'s own learn settings.

    Runs only the nodes the workflow's ``ActSaveMaps`` depends on, on the real ComfyUI server
    with the toy checkpoint (default: the installed one), and copies the saved file to ``out``
    (default ``toyworld/maps/toyworld_striped.safetensors``).
    """
    from .workflows import object_info_of, style_intensity, to_api, toy_server

    out = out or MAPS_DIR / STRIPED_MAP
    spec = style_intensity()
    save = next(n for n in spec.nodes if n.type == "ActSaveMaps")
    save.inputs["filename_prefix"] = "example_build/toyworld_striped"
    with toy_server(checkpoint, install_maps=False) as server:
        graph = _upstream(to_api(spec, object_info_of(server)), str(save.id))
        server.run(graph)
        saved = sorted((server.base / "models" / ACT_MAPS / "example_build").glob("*.safetensors"))
        if not saved:
            raise RuntimeError(f"ActSaveMaps wrote no file:\n{server.log_tail()}")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(saved[-1], out)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="fit toyworld/maps/*.safetensors from the toy checkpoint")
    b.add_argument("--checkpoint", type=Path, default=None,
                   help="toy checkpoint to fit on (default: models/checkpoints/...)")
    b.add_argument("--out", type=Path, default=None)
    i = sub.add_parser("install", help="copy the shipped maps into a ComfyUI models folder")
    i.add_argument("--models-dir", type=Path, required=True,
                   help="ComfyUI's models folder (the maps go to its act_maps sub-folder)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[example_maps] %(message)s")
    if args.cmd == "build":
        log.info("wrote %s", build(args.checkpoint, args.out))
    else:
        written = install_example_maps(args.models_dir)
        log.info("installed %d file(s) into %s", len(written), args.models_dir / ACT_MAPS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
