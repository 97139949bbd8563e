"""Learned maps kept for the life of the server, for when ComfyUI drops its cached copy.

ComfyUI 0.30's default cache (RAM pressure, ``--cache-ram``) releases node outputs whenever
free memory falls below its headroom (10% of the machine's RAM, at least 2 GB), and on a
loaded machine it does: AcT Learn Transport then runs again for inputs it has already learned
from (20-40 s on the toy model). Maps are small (a few floats per unit), so the learn node keeps
the last few here, keyed by a fingerprint of everything that determines them:

* the conditioning tensors the source and target prompts encode to (so a changed CLIP, prompt
  or text-encoder patch misses);
* the model: its class, a sample of every weight (the first values of each tensor), the weight
  patches it carries (keys, strengths and a sample of each), and the structure of its model
  options (which patches, wrappers and callbacks are set);
* every learn setting.

A miss only costs a new learn; a hit returns the very maps learned before. Pure Python and
torch; no ComfyUI import.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable

import torch

__all__ = ["MAPS_KEPT", "fingerprint", "recall", "remember"]

MAPS_KEPT = 8  # learned map sets kept (least recently used dropped first)
_SAMPLE = 64  # values hashed per weight tensor
_kept: OrderedDict[str, object] = OrderedDict()


def _tensor(digest, tensor: torch.Tensor, sample: int | None = None) -> None:
    flat = tensor.detach().reshape(-1)
    if sample is not None:
        flat = flat[:sample]
    digest.update(f"{tuple(tensor.shape)}{tensor.dtype}".encode())
    digest.update(flat.to("cpu", torch.float32).numpy().tobytes())


def _walk(digest, value: object, sample: int | None, depth: int = 0) -> None:
    """Hash tensors (whole, or their first ``sample`` values) and the structure around them."""
    if isinstance(value, torch.Tensor):
        _tensor(digest, value, sample)
    elif isinstance(value, dict) and depth < 6:
        for key in sorted(value, key=str):
            digest.update(f"<{key}>".encode())
            _walk(digest, value[key], sample, depth + 1)
    elif isinstance(value, (list, tuple)) and depth < 6:
        digest.update(f"[{len(value)}".encode())
        for item in value:
            _walk(digest, item, sample, depth + 1)
    elif isinstance(value, (str, int, float, bool, type(None))):
        digest.update(repr(value).encode())
    else:  # functions and objects by their kind, not their identity (a clone changes it)...
        digest.update(type(value).__qualname__.encode())
        fields = getattr(value, "__dict__", None)
        if fields and depth < 6 and not isinstance(value, torch.nn.Module):
            _walk(digest, fields, sample, depth + 1)  # ...and objects by what they hold


def fingerprint(model, conds: Iterable[list], settings: dict) -> str:
    """A key for maps learned on ``model`` (a ModelPatcher) from ``conds`` with ``settings``."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(type(model.model).__qualname__.encode())
    for name, tensor in model.model.state_dict().items():
        digest.update(name.encode())
        _tensor(digest, tensor, _SAMPLE)
    _walk(digest, dict(model.patches), _SAMPLE)
    _walk(digest, model.model_options, _SAMPLE)
    for cond in conds:
        _walk(digest, cond, None)
    _walk(digest, settings, None)
    return digest.hexdigest()


def recall(key: str):
    """The maps stored under ``key``, or None."""
    maps = _kept.get(key)
    if maps is not None:
        _kept.move_to_end(key)
    return maps


def remember(key: str, maps) -> None:
    _kept[key] = maps
    _kept.move_to_end(key)
    while len(_kept) > MAPS_KEPT:
        _kept.popitem(last=False)
