"""What a map file holds, as text: the report ``act info`` prints (any map file: ComfyUI's or
``act fit``'s)."""

from __future__ import annotations

import json
from pathlib import Path

from act_core.mapset import MapSet

__all__ = ["describe_maps"]


def describe_maps(maps: MapSet, name: str | Path = "maps") -> str:
    """The sites, method, support, format version and gates of ``maps``, the words a sequence
    gate learned from, one line per site (units kept, gate) and the stored diagnosis."""
    from act_core.diagnose import Diagnosis

    meta = maps.metadata
    gated = sum(tmap.gate is not None for tmap in maps.values())
    lines = [f"{name}: {len(maps)} sites, method {meta.get('method')}, "
             f"support {meta.get('support')}, format version {meta.get('version')}"
             + (f", gated ({gated} sites)" if gated else "")
             + (", one sequence gate" if maps.sequence_gate is not None else "")
             + ("" if gated or maps.sequence_gate is not None else ", no gate"),
             f"model: {json.dumps(meta.get('model'))}"]
    if maps.sequence_gate is not None:
        lines.append(maps.sequence_gate.describe())
    extra = dict(meta.get("extra") or {})
    report, words = extra.pop("diagnosis", None), extra.pop("gate_words", None)
    if words:
        from act_core.hf.gating import describe_gate_words

        lines.append(describe_gate_words(words))
    lines.append(f"extra: {json.dumps(extra)}")
    for site, tmap in maps.items():
        kept = int(((tmap.scale != 1) | (tmap.shift != 0)).sum())
        gate = f" {tmap.gate.describe()}" if tmap.gate is not None else ""
        lines.append(f"  {site}  D={tmap.dim} mode={tmap.mode} n={tmap.n_source}/"
                     f"{tmap.n_target} guarded={tmap.guarded} kept={kept}{gate}")
    if report:
        lines.append(Diagnosis.from_dict(report).text())
    return "\n".join(lines)
