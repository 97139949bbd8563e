"""What a map file holds, as text: the report ``act info`` prints (any map file: ComfyUI's or
``act fit``'s)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from act_core.mapset import MapSet

__all__ = ["WEAK_GATE_AUROC", "WEAK_SEQUENCE_GATE_ON", "describe_maps", "gate_report",
           "sequence_gate_warnings"]

#: Below this median held-out AUROC the per-site gates are reported as unable to tell the
#: source from the target (0.5 = chance).
WEAK_GATE_AUROC = 0.6
#: Below this share of held-out source texts switching it on, a sequence gate is reported as
#: recognising little beyond its own texts.
WEAK_SEQUENCE_GATE_ON = 0.5


def describe_maps(maps: MapSet, name: str | Path = "maps") -> str:
    """The sites, method, support, format version and gates of ``maps``, the words a sequence
    gate learned from, one line per site (units kept, gate), what the per-site gates learned
    (:func:`gate_report`) and the stored diagnosis."""
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
        lines += [f"warning: {w}" for w in sequence_gate_warnings(maps.sequence_gate)]
    extra = dict(meta.get("extra") or {})
    report, words = extra.pop("diagnosis", None), extra.pop("gate_words", None)
    auto = extra.pop("auto", None)
    if words:
        from act_core.hf.gating import describe_gate_words

        lines.append(describe_gate_words(words))
    lines.append(f"extra: {json.dumps(extra)}")
    for site, tmap in maps.items():
        kept = int(tmap.moved_units.sum())
        gate = f" {tmap.gate.describe()}" if tmap.gate is not None else ""
        lines.append(f"  {site}  D={tmap.dim} mode={tmap.mode} n={tmap.n_source}/"
                     f"{tmap.n_target} guarded={tmap.guarded} kept={kept}{gate}")
    gates = gate_report(maps)[0]
    lines += [gates] if gates else []
    if auto:  # sites = auto: the measured choice
        from act_core.selection import Selection

        lines.append(Selection.from_dict(auto).text())
    if report:
        lines.append(Diagnosis.from_dict(report).text())
    return "\n".join(lines)


def sequence_gate_warnings(gate) -> list[str]:
    """A warning when a sequence gate switches on for fewer than :data:`WEAK_SEQUENCE_GATE_ON`
    of the source texts it was not fitted on (none when that was not measured)."""
    if gate is None or gate.heldout_source_on is None or (
            gate.heldout_source_on >= WEAK_SEQUENCE_GATE_ON):
        return []
    return [f"the sequence gate switches on for only {100 * gate.heldout_source_on:.0f}% of "
            f"the source texts it was not fitted on (2 folds; {100 * gate.source_on:.0f}% of "
            "its own), so it will leave many inputs that need the maps unsteered: it knows "
            "what its texts show (act info lists the words) and little beyond. Add source "
            "texts that show what your inputs hold, lower the threshold (act fit "
            "--gate-quantile 0.999), or use the maps ungated"]


def gate_report(maps: Mapping[str, object]) -> tuple[str, list[str]]:
    """What the per-site gates of ``maps`` learned, as one line ("" when none is gated), and
    warnings: when they barely tell the source from the target (a median held-out AUROC,
    :func:`act_core.gate.heldout_auroc`, or the training AUROC for gates that lack it, below
    :data:`WEAK_GATE_AUROC`), and :func:`sequence_gate_warnings` for a set's sequence gate."""
    seq_warnings = sequence_gate_warnings(getattr(maps, "sequence_gate", None))
    gates = [(site, tmap.gate) for site, tmap in maps.items()
             if getattr(tmap, "gate", None) is not None]
    if not gates:
        return "", seq_warnings

    def median(values: list[float]) -> float:
        return float(torch.tensor(values, dtype=torch.float64).quantile(0.5))  # mid-way

    held = [gate.heldout_auroc for _, gate in gates if gate.heldout_auroc is not None]
    judged = median(held) if len(held) == len(gates) else median([g.auroc for _, g in gates])
    low_site, low = min(gates, key=lambda pair: pair[1].auroc if pair[1].heldout_auroc is None
                        else pair[1].heldout_auroc)
    on_source = sum(gate.source_gate for _, gate in gates) / len(gates)
    on_target = sum(gate.target_gate for _, gate in gates) / len(gates)
    trained = median([gate.auroc for _, gate in gates])
    text = (f"gates: {len(gates)} of {len(maps)} sites; AUROC median {trained:.2f} on their "
            "training samples" + (f", {judged:.2f} held out (lowest {low.heldout_auroc:.2f} at "
                                  f"{low_site}" if len(held) == len(gates)
                                  else f" (lowest {low.auroc:.2f} at {low_site}")
            + f"; 0.5 = not told apart); mean gate {on_source:.2f} on the source samples, "
            f"{on_target:.2f} on the target samples (0 = left as they are)")
    warnings = []
    if judged < WEAK_GATE_AUROC:
        warnings.append(f"the learned gates barely tell the source from the target (median "
                        f"{'held-out ' if len(held) == len(gates) else ''}AUROC {judged:.2f}, "
                        "0.5 = not at all): gated, the maps act on inputs almost at random; "
                        "make the two sets differ clearly in the concept, or set the gate off")
    return text, warnings + seq_warnings
