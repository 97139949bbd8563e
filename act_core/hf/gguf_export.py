"""llama.cpp control vectors (GGUF) from maps that are pure shifts of a layer's last residual add.

llama.cpp adds a control vector to the residual stream at the end of each decoder layer, right
after the feed-forward block's output has been added (``build_cvec`` after the FFN residual add,
in every Llama-style graph). The file holds one float32 vector ``direction.N`` per layer ``N``
(0-based graph layer, ``N >= 1``: there is no slot for layer 0) and ``--control-vector-scaled
FILE s`` adds ``s * direction.N`` there.

A map on ``model.layers.N.mlp.down_proj`` (the feed-forward output, ``mlp_out``) that is a pure
shift (``omega = 1``: ``mean_act``, ``diff_means``), with the unbounded support and on every token,
adds ``lambda * beta`` to that output, and so to the residual stream at the very place llama.cpp
adds ``direction.N``. The correspondence is exact::

    direction.N = lambda * beta(model.layers.N.mlp.down_proj)        (N >= 1)

and ``--control-vector-scaled FILE s`` on a file written at ``lambda = 1`` is strength ``s``.
Anything else (a slope, another site, layer 0, a bounded support, maps that skip the first token)
is refused with the reason (:class:`~act_core.fold.FoldError`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from act_core.fold import FoldError, is_pure_shift
from act_core.gate import check_ungated
from act_core.maps import TransportMap
from act_core.mapset import MapSet
from act_core.support import parse_support

__all__ = ["ARCH", "control_vectors", "read_control_vector", "write_control_vector"]

#: ``general.architecture`` of a control-vector GGUF file (what llama.cpp and repeng write).
ARCH = "controlvector"
_MLP_OUT = re.compile(r"^(?:.+\.)?layers\.(?P<layer>\d+)\.mlp\.down_proj$")


def control_vectors(maps: Mapping[str, TransportMap], strength: float = 1.0,
                    support: str = "unbounded") -> dict[int, np.ndarray]:
    """``{layer N: direction (D,) float32}`` equal to ``maps`` at ``strength`` in llama.cpp.

    Raises FoldError naming the first map that has no exact control-vector form.
    """
    if parse_support(support).kind != "unbounded":
        raise FoldError(f"the support is {support!r}: llama.cpp adds its control vector to "
                        "every value, which only the 'unbounded' support does")
    extra = (maps.metadata.get("extra") or {}) if isinstance(maps, MapSet) else {}
    if extra.get("skip_first_token"):
        raise FoldError("the maps leave each sequence's first token unchanged "
                        "(skip_first_token); a control vector is added to every token")
    check_ungated(maps, "a llama.cpp control vector")
    out: dict[int, np.ndarray] = {}
    for site, tmap in maps.items():
        match = _MLP_OUT.match(site)
        if match is None:
            raise FoldError(f"site {site!r} is not a feed-forward output (layers.N.mlp."
                            "down_proj): llama.cpp adds its control vector after each layer's "
                            "feed-forward residual add, and only a shift of that last addend "
                            "lands there unchanged")
        if tmap.mode not in ("tokens", "vector"):
            raise FoldError(f"the map of site {site!r} is in {tmap.mode!r} mode, not per token")
        if not is_pure_shift(tmap):
            raise FoldError(f"the map of site {site!r} ({tmap.method}) has omega != 1: a control "
                            "vector only adds; use a pure shift (mean_act or diff_means) or "
                            "export a checkpoint (act export --format transformers)")
        layer = int(match["layer"])
        if layer == 0:
            raise FoldError(f"site {site!r} is in layer 0, and llama.cpp has no control-vector "
                            "slot for layer 0 (direction.N needs N >= 1); leave layer 0 out")
        vector = (float(strength) * tmap.shift.to(torch.float64)).to(torch.float32)
        out[layer] = vector.numpy().copy()
    return dict(sorted(out.items()))


def write_control_vector(path: str | Path, maps: Mapping[str, TransportMap],
                         strength: float = 1.0, *, support: str = "unbounded",
                         model_hint: str = "llama") -> Path:
    """Write ``maps`` at ``strength`` as a llama.cpp control-vector GGUF file.

    Tensors ``direction.N`` (float32, (D,)); keys ``general.architecture = "controlvector"``,
    ``controlvector.model_hint`` (the llama.cpp architecture, e.g. ``"llama"``) and
    ``controlvector.layer_count``. Returns the path.
    """
    from gguf import GGUFWriter

    vectors = control_vectors(maps, strength, support)
    if not vectors:
        raise FoldError("no maps to write")
    path = Path(path)
    writer = GGUFWriter(str(path), ARCH)
    writer.add_string(f"{ARCH}.model_hint", model_hint)
    writer.add_uint32(f"{ARCH}.layer_count", len(vectors))
    for layer, vector in vectors.items():
        writer.add_tensor(f"direction.{layer}", vector)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return path


def read_control_vector(path: str | Path) -> tuple[dict[int, np.ndarray], dict[str, object]]:
    """``({layer: direction}, {key: value})`` read back from a control-vector GGUF file."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    fields = {}
    for name in ("general.architecture", f"{ARCH}.model_hint", f"{ARCH}.layer_count"):
        field = reader.get_field(name)
        if field is not None:
            fields[name] = field.contents()
    vectors = {int(t.name.split(".", 1)[1]): np.array(t.data, dtype=np.float32)
               for t in reader.tensors if t.name.startswith("direction.")}
    return dict(sorted(vectors.items())), fields
