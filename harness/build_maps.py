"""Fit the example map files the pack ships (``toyworld/maps/*.safetensors``).

``python -m harness.build_maps`` runs the learn half of the ``act_style_intensity`` example
workflow (only the nodes its ``ActSaveMaps`` depends on) on the real ComfyUI server with the toy
checkpoint, and copies the saved file into ``toyworld/maps/``. Commit the result;
``toyworld.example_maps`` installs it.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

from toyworld.example_maps import ACT_MAPS, MAPS_DIR, STRIPED_MAP

from .workflows import object_info_of, style_intensity, to_api, toy_server

__all__ = ["build"]

log = logging.getLogger(__name__)


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
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="toy checkpoint to fit on (default: models/checkpoints/...)")
    ap.add_argument("--out", type=Path, default=None,
                    help=f"where to write the maps (default: toyworld/maps/{STRIPED_MAP})")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[build_maps] %(message)s")
    log.info("wrote %s", build(args.checkpoint, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
