"""Map files: safetensors with one JSON metadata string (never pickle).

Layout of a file:

* tensors ``<site>.scale``, ``<site>.shift``, ``<site>.lo``, ``<site>.hi`` (float32, (D,)) and
  ``<site>.quantiles`` (float32, (K, D)) for every site, and ``<site>.gate`` (float32, (D,))
  for every gated site (:mod:`act_core.gate`);
* the safetensors metadata key ``act`` holds a JSON object::

    {"format": "act-maps", "version": 1, "created_with": "act_core 0.1.0",
     "method": "linear_act", "support": "minmax", "quantile_levels": [0.0, ..., 1.0],
     "model": {"family": "sd15", ...}, "prompt_hash": "<sha256>" | null,
     "sites": {"<site>": {"mode": "channels", "pooling": "mean", "dim": 320, "n_source": 1024,
                          "n_target": 1024, "guarded": 0, "method": "linear_act",
                          "unbounded_strength": false,
                          "gate": {"bias": 0.0, "pooling": "item", "auroc": 1.0,
                                   "source_gate": 1.0, "target_gate": 0.0,
                                   "heldout_auroc": 0.98}}, ...},
     "extra": {...}}

  ``gate`` is present on gated sites only (``heldout_auroc`` where it was measured; readers
  that predate it ignore it). A file with a gated site is format version 2 (so
  readers of version 1, which would silently drop the gate, refuse it); every other file is
  still written as version 1, and both versions load.

* a set with one gate for all its maps (:mod:`act_core.seqgate`) adds the tensor
  ``__sequence_gate__.weight`` (float32, (D,) of the reader) and the top-level entry
  ``"sequence_gate": {"site": "model.layers.1", "bias": ..., "pooling": "max", "auroc": ...,
  "source_on": ..., "target_on": ..., "quantile": ..., "margin": ...}``; such a file is format
  version 3, which readers of versions 1 and 2 refuse ("written by a newer act_core") instead of
  steering every token; with the look-ahead pooling ``"draft"`` it is version 4, which readers
  of version 3 (which know no ``draft``) refuse the same way. ``heldout_source_on`` and
  ``heldout_target_on`` (where measured) are read by newer readers and ignored by older ones.

  ``sites`` keeps the order of the saved mapping (the forward order for maps from
  :func:`~act_core.fitting.fit_sites`). ``method`` is ``"mixed"`` when sites used different
  estimators; ``extra`` holds the caller's ``metadata`` argument unchanged (it must be
  JSON-serialisable).

* timestep ranges: maps that act on one part of the sampling schedule are keyed
  ``<site>@<k>`` (range ``k``) and the ranges are listed in ``extra.buckets`` as contiguous
  ``[start, end]`` fractions of the schedule from 0 (noisiest) to 1, e.g.
  ``"extra": {"buckets": [[0.0, 0.5], [0.5, 1.0]]}`` with keys ``out.0@0`` and ``out.0@1``. A
  file without ``buckets`` (or with one range) has plain site keys that act at every step.
  :mod:`act_core.timesteps` splits such a set per range; ``apply_transport`` applies it with a
  ``progress`` callable. Checked on loading.

Saving is atomic (temporary file in the same directory, then ``os.replace``).
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Mapping
from pathlib import Path

import safetensors.torch
import torch
from safetensors import SafetensorError

from ._version import __version__
from .errors import MapError, MapFileError
from .gate import Gate
from .maps import TransportMap
from .mapset import MapSet
from .seqgate import SequenceGate
from .support import SupportLike, parse_support
from .timesteps import validate_ranges

__all__ = ["FORMAT", "METADATA_KEY", "VERSION", "load_maps", "save_maps"]

FORMAT = "act-maps"
VERSION = 4
#: Version written for files without gates (readable by every act_core release).
VERSION_UNGATED = 1
#: Version written for files with per-site gates only (readable since per-site gates exist).
VERSION_SITE_GATES = 2
#: Version written for files with a sequence gate that pools "max" or "prompt".
VERSION_SEQUENCE_GATE = 3
#: Tensor name of a set's sequence gate weight (not a site: sites never start with "__").
SEQUENCE_GATE_TENSOR = "__sequence_gate__.weight"
METADATA_KEY = "act"
_FIELDS = ("scale", "shift", "lo", "hi", "quantiles")
_MAX_HEADER = 100 * 1024 * 1024


def _site_entry(tmap: TransportMap) -> dict:
    entry = {"mode": tmap.mode, "pooling": "mean", "dim": tmap.dim, "n_source": tmap.n_source,
             "n_target": tmap.n_target, "guarded": tmap.guarded, "method": tmap.method,
             "unbounded_strength": tmap.unbounded_strength}
    if tmap.gate is not None:
        gate = tmap.gate
        entry["gate"] = {"bias": gate.bias, "pooling": gate.pooling, "auroc": gate.auroc,
                         "source_gate": gate.source_gate, "target_gate": gate.target_gate,
                         **({} if gate.heldout_auroc is None
                            else {"heldout_auroc": gate.heldout_auroc})}
    return entry


def _fields(tmap: TransportMap) -> tuple[str, ...]:
    return (*_FIELDS, "gate") if tmap.gate is not None else _FIELDS


def _tensor(tmap: TransportMap, field: str) -> torch.Tensor:
    value = tmap.gate.weight if field == "gate" else getattr(tmap, field)
    return value.detach().to("cpu", torch.float32).clone()


def _header(maps: Mapping[str, TransportMap], metadata: Mapping | None, model: Mapping | None,
            prompt_hash: str | None, support: SupportLike) -> dict:
    levels = {tmap.quantile_levels for tmap in maps.values()}
    if len(levels) != 1:
        raise MapFileError("all maps of one file must store the same quantile levels")
    methods = {tmap.method for tmap in maps.values()}
    gated = any(tmap.gate is not None for tmap in maps.values())
    sequence_gate = getattr(maps, "sequence_gate", None)
    if sequence_gate is not None:
        version = VERSION if sequence_gate.pooling == "draft" else VERSION_SEQUENCE_GATE
    else:
        version = VERSION_SITE_GATES if gated else VERSION_UNGATED
    header = {
        "format": FORMAT, "version": version,
        "created_with": f"act_core {__version__}",
        "method": methods.pop() if len(methods) == 1 else "mixed",
        "support": str(parse_support(support)), "quantile_levels": list(levels.pop()),
        "model": dict(model or {}), "prompt_hash": prompt_hash,
        "sites": {site: _site_entry(tmap) for site, tmap in maps.items()},
        "extra": dict(metadata or {}),
    }
    if sequence_gate is not None:
        header["sequence_gate"] = sequence_gate.metadata()
    return header


def save_maps(path: str | os.PathLike, maps: Mapping[str, TransportMap],
              metadata: Mapping | None = None, *, model: Mapping | None = None,
              prompt_hash: str | None = None, support: SupportLike | None = None) -> Path:
    """Write maps to a safetensors map file, atomically.

    Parameters
    ----------
    path : path-like
        Destination (conventionally ``*.safetensors``); its directory must exist.
    maps : mapping of str to TransportMap
        Keyed by site string. When it is a :class:`MapSet` and ``model``, ``prompt_hash`` or
        ``metadata`` are None, the set's own values are kept.
    metadata : mapping, optional
        Free-form JSON-serialisable data, stored under ``"extra"``.
    model : mapping, optional
        Model hint, e.g. ``{"family": "sd15", "arch": "UNet2DConditionModel"}``.
    prompt_hash : str, optional
        From :func:`~act_core.mapset.prompt_hash`.
    support : str, tuple or Support, optional
        Recommended support to apply the maps with; None keeps a MapSet's own, else "minmax".

    Returns
    -------
    Path of the written file.

    Raises
    ------
    MapFileError
        For no maps, mixed quantile levels or non-JSON-serialisable metadata.
    """
    if not maps:
        raise MapFileError("refusing to save an empty set of maps")
    if isinstance(maps, MapSet):
        own = maps.metadata
        model = own.get("model") if model is None else model
        prompt_hash = own.get("prompt_hash") if prompt_hash is None else prompt_hash
        metadata = own.get("extra") if metadata is None else metadata
        support = own.get("support") if support is None else support
    if support is None:
        support = "minmax"
    try:
        header = json.dumps(_header(maps, metadata, model, prompt_hash, support))
    except (TypeError, ValueError) as error:
        raise MapFileError(f"metadata must be JSON-serialisable: {error}") from error
    tensors = {f"{site}.{field}": _tensor(tmap, field)
               for site, tmap in maps.items() for field in _fields(tmap)}
    if getattr(maps, "sequence_gate", None) is not None:
        tensors[SEQUENCE_GATE_TENSOR] = maps.sequence_gate.weight.detach().to(
            "cpu", torch.float32).clone()
    data = safetensors.torch.save(tensors, metadata={METADATA_KEY: header})
    target = Path(path)
    _write_atomic(target, data)
    return target


def _write_bytes(handle, data: bytes) -> None:
    handle.write(data)


def _write_atomic(path: Path, data: bytes) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                             suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            _write_bytes(handle, data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _read_header(path: Path, data: bytes) -> dict:
    """Check the container and return the decoded ``act`` metadata."""
    length = struct.unpack("<Q", data[:8])[0] if len(data) >= 8 else -1
    if not 0 < length <= min(len(data) - 8, _MAX_HEADER) or data[8:9] != b"{":
        # not a safetensors container; say what it looks like instead (a safetensors header
        # length may itself start with the pickle opcode 0x80, so this test comes second)
        if data[:4] == b"PK\x03\x04" or (data[:1] == b"\x80" and data[1:2] in b"\x02\x03\x04\x05"):
            raise MapFileError(f"{path}: this looks like a pickle/PyTorch checkpoint; AcT map "
                               "files are safetensors, refusing to unpickle")
        raise MapFileError(f"{path}: not a safetensors file (bad header length, truncated or "
                           f"corrupted; {len(data)} bytes)")
    try:
        header = json.loads(data[8:8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MapFileError(f"{path}: corrupted safetensors header: {error}") from error
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or METADATA_KEY not in meta:
        raise MapFileError(f"{path}: not an AcT map file (a safetensors file without "
                           f"'{METADATA_KEY}' metadata, e.g. a model checkpoint)")
    try:
        act = json.loads(meta[METADATA_KEY])
    except (TypeError, json.JSONDecodeError) as error:
        raise MapFileError(f"{path}: the '{METADATA_KEY}' metadata is not valid JSON") from error
    return _check_header(path, act)


def _check_header(path: Path, act: object) -> dict:
    if not isinstance(act, dict) or act.get("format") != FORMAT:
        raise MapFileError(f"{path}: '{METADATA_KEY}' metadata does not describe an {FORMAT} file")
    version = act.get("version")
    if not isinstance(version, int) or version < 1:
        raise MapFileError(f"{path}: invalid format version {version!r}")
    if version > VERSION:
        raise MapFileError(f"{path}: written by a newer act_core (format version {version}, this "
                           f"one reads up to {VERSION}); update the package")
    sites, levels = act.get("sites"), act.get("quantile_levels")
    if not isinstance(sites, dict) or not sites or not isinstance(levels, list):
        raise MapFileError(f"{path}: metadata lacks the 'sites' or 'quantile_levels' entries")
    return act


def _check_keys(path: Path, tensors: Mapping[str, torch.Tensor], sites: Mapping,
                sequence_gate: bool = False) -> None:
    expected = {f"{site}.{field}" for site, entry in sites.items()
                for field in ((*_FIELDS, "gate") if _gate_entry(entry) else _FIELDS)}
    if sequence_gate:
        expected.add(SEQUENCE_GATE_TENSOR)
    missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or extra:
        raise MapFileError(f"{path}: tensors do not match the listed sites; missing "
                           f"{missing[:5]}, unexpected {extra[:5]}")


def _build_map(path: Path, site: str, entry: object, tensors: Mapping[str, torch.Tensor],
               levels: list) -> TransportMap:
    if not isinstance(entry, dict):
        raise MapFileError(f"{path}: metadata of site {site!r} is not an object")
    fields = {field: tensors[f"{site}.{field}"] for field in _FIELDS}
    for field, value in fields.items():
        if value.dtype != torch.float32:
            raise MapFileError(f"{path}: {site}.{field} has dtype {value.dtype}, expected float32")
    try:
        tmap = TransportMap(
            **fields, method=str(entry.get("method", "linear_act")),
            mode=str(entry.get("mode", "tokens")), n_source=int(entry.get("n_source", 0)),
            n_target=int(entry.get("n_target", 0)), guarded=int(entry.get("guarded", 0)),
            quantile_levels=tuple(levels),
            unbounded_strength=bool(entry.get("unbounded_strength", False)),
            gate=_build_gate(entry, tensors, site),
        )
    except (MapError, TypeError, ValueError, KeyError) as error:
        raise MapFileError(f"{path}: site {site!r} is invalid: {error}") from error
    if entry.get("dim", tmap.dim) != tmap.dim:
        raise MapFileError(f"{path}: site {site!r} lists dim {entry.get('dim')} but its tensors "
                           f"have D={tmap.dim}")
    return tmap


def _gate_entry(entry: object) -> dict | None:
    gate = entry.get("gate") if isinstance(entry, dict) else None
    return gate if gate else None


def _build_gate(entry: dict, tensors: Mapping[str, torch.Tensor], site: str) -> Gate | None:
    gate = _gate_entry(entry)
    if gate is None:
        return None
    weight = tensors[f"{site}.gate"]
    if weight.dtype != torch.float32:
        raise MapError(f"{site}.gate has dtype {weight.dtype}, expected float32")
    return Gate(weight=weight, bias=float(gate["bias"]), pooling=str(gate.get("pooling", "item")),
                auroc=float(gate.get("auroc", 0.5)),
                source_gate=float(gate.get("source_gate", 1.0)),
                target_gate=float(gate.get("target_gate", 0.0)),
                heldout_auroc=None if gate.get("heldout_auroc") is None
                else float(gate["heldout_auroc"]))


def load_maps(path: str | os.PathLike) -> MapSet:
    """Read and validate a map file written by :func:`save_maps`.

    Returns
    -------
    MapSet
        ``{site: TransportMap}`` in file order, with ``.metadata`` the decoded ``act`` JSON.

    Raises
    ------
    MapFileError
        Missing file; pickle or PyTorch checkpoint; not safetensors, truncated or corrupted;
        safetensors without AcT metadata; newer format version; missing or extra tensors; wrong
        shapes or dtypes; non-finite values.
    """
    path = Path(path)
    if not path.is_file():
        raise MapFileError(f"no map file at {path}")
    data = path.read_bytes()
    act = _read_header(path, data)
    try:
        tensors = safetensors.torch.load(data)
    except SafetensorError as error:
        raise MapFileError(f"{path}: corrupted or truncated safetensors data: {error}") from error
    _check_keys(path, tensors, act["sites"], "sequence_gate" in act)
    extra = act.get("extra") if isinstance(act.get("extra"), dict) else {}
    validate_ranges(extra.get("buckets"), list(act["sites"]), str(path))
    maps = {site: _build_map(path, site, entry, tensors, act["quantile_levels"])
            for site, entry in act["sites"].items()}
    return MapSet(maps, act, _build_sequence_gate(path, act, tensors))


def _optional(value) -> float | None:
    return None if value is None else float(value)


def _build_sequence_gate(path: Path, act: dict, tensors: Mapping[str, torch.Tensor]
                         ) -> SequenceGate | None:
    entry = act.get("sequence_gate")
    if entry is None:
        return None
    weight = tensors[SEQUENCE_GATE_TENSOR]
    try:
        if not isinstance(entry, dict):
            raise MapError(f"expected an object, found {type(entry).__name__}")
        if weight.dtype != torch.float32:
            raise MapError(f"weight has dtype {weight.dtype}, expected float32")
        return SequenceGate(site=str(entry["site"]), weight=weight, bias=float(entry["bias"]),
                            pooling=str(entry.get("pooling", "max")),
                            auroc=float(entry.get("auroc", 0.5)),
                            source_on=float(entry.get("source_on", 1.0)),
                            target_on=float(entry.get("target_on", 0.0)),
                            quantile=float(entry.get("quantile", 1.0)),
                            margin=float(entry.get("margin", 0.0)),
                            heldout_source_on=_optional(entry.get("heldout_source_on")),
                            heldout_target_on=_optional(entry.get("heldout_target_on")))
    except (MapError, KeyError, TypeError, ValueError) as error:
        raise MapFileError(f"{path}: the sequence gate is invalid: {error}") from error
