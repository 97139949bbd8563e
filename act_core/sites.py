"""Sites: the module outputs where activations are recorded and transported.

A site is named by its module path in ``model.named_modules()``, optionally followed by
``:<index>`` to pick one element of a module that returns a tuple (``"layers.0.self_attn:0"``) or
a key of a dict-like output (``"encoder:last_hidden_state"``). Without an index, a tuple/list or
dict-like output means its first element.
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .errors import SiteError

__all__ = [
    "LAYOUTS", "PRESETS", "Site", "find_module", "module_width", "read_output", "resolve_sites",
    "site_widths", "write_output",
]

#: ``auto`` decides from the output's rank: 2 -> vector (B, D), 3 -> tokens (B, T, D),
#: 4 or more -> channels (B, C, *spatial). ``seq_first`` is never chosen from the rank: tokens
#: with the batch in dim -2, (*positions, B, D), as sequence-first transformers keep them
#: (torch's ``batch_first=False``; Cosmos 1's (T, H, W, B, D) blocks). ``unbatched`` is never
#: chosen from the rank either: an output with no batch dim, (*positions, D), all of it one
#: item's tokens, as models that take batch 1 only keep them (MiniMax H3's packed (S, D)).
LAYOUTS: tuple[str, ...] = ("auto", "tokens", "channels", "vector", "seq_first", "unbatched")

_OUT_PROJECTIONS = {"o_proj", "out_proj", "down_proj", "c_proj", "fc2", "proj_out", "wo",
                    "dense_4h_to_h"}


def _is_norm(name: str, module: nn.Module) -> bool:
    return re.search(r"Norm(\d+d)?$", type(module).__name__) is not None


def _is_linear_out(name: str, module: nn.Module) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    return isinstance(module, nn.Linear) and (leaf in _OUT_PROJECTIONS or name.endswith("to_out.0"))


#: Generic presets usable as patterns: name -> predicate(module_name, module).
PRESETS: dict[str, Callable[[str, nn.Module], bool]] = {
    "norms": _is_norm,
    "linear": lambda name, module: isinstance(module, nn.Linear),
    "linear_out": _is_linear_out,
    "conv": lambda name, module: isinstance(module, nn.modules.conv._ConvNd),
}


@dataclass(frozen=True)
class Site:
    """A hook point.

    Parameters
    ----------
    name : str
        Module path in ``model.named_modules()``.
    output_index : int, str or None
        Element of a tuple output (int) or key of a dict-like output (str); None: the output
        itself, or its first element when it is a tuple, list or dict-like.
    layout : str
        One of :data:`LAYOUTS`.
    """

    name: str
    output_index: int | str | None = None
    layout: str = "auto"

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise SiteError(f"site layout must be one of {LAYOUTS}, found {self.layout!r}")

    @classmethod
    def parse(cls, spec: str | Site) -> Site:
        """Parse ``"name"`` or ``"name:index"`` (``index`` an integer or a key)."""
        if isinstance(spec, Site):
            return spec
        if not isinstance(spec, str):
            raise SiteError(f"a site is a string such as 'layers.0.self_attn:0', "
                            f"found {type(spec).__name__}")
        name, sep, index = spec.partition(":")
        if not sep:
            return cls(name)
        if not index:
            raise SiteError(f"site {spec!r} has an empty output index after ':'")
        return cls(name, int(index) if re.fullmatch(r"-?\d+", index) else index)

    def __str__(self) -> str:
        return self.name if self.output_index is None else f"{self.name}:{self.output_index}"


def find_module(model: nn.Module, site: Site | str) -> nn.Module:
    """Return the module a site names; SiteError with close names when it does not exist.

    The name is resolved by walking attributes (``model.get_submodule``), which costs nothing
    even on a large model (hosts resolve sites at every model call); only a name that does not
    resolve lists every module, to suggest close names.
    """
    site = Site.parse(site)
    try:
        module = model.get_submodule(site.name)
    except AttributeError:
        module = None
    if isinstance(module, nn.Module):
        return module
    modules = dict(model.named_modules())
    if site.name in modules:
        return modules[site.name]
    close = difflib.get_close_matches(site.name, list(modules), n=5)
    hint = f"; did you mean {close}?" if close else f"; some modules: {list(modules)[1:6]}"
    raise SiteError(f"site {str(site)!r}: no module named {site.name!r} in the model{hint}")


def module_width(module: nn.Module | None) -> int | None:
    """Features or channels a module outputs, when its type or parameters tell (None: unknown,
    e.g. a block whose output width no parameter names).

    Linear -> ``out_features``; convolution -> ``out_channels``; GroupNorm -> ``num_channels``;
    LayerNorm -> the last normalised dim; GPT-2's transposed ``Conv1D`` -> ``weight.shape[1]``;
    any other module with a 1-D ``weight`` (RMSNorm and the like) -> its length.
    """
    if module is None:
        return None
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.out_channels
    if isinstance(module, nn.GroupNorm):
        return module.num_channels
    if isinstance(module, nn.LayerNorm):
        return int(module.normalized_shape[-1]) if module.normalized_shape else None
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        return None
    if type(module).__name__ == "Conv1D" and weight.ndim == 2:
        return int(weight.shape[1])  # GPT-2's transposed linear: weight (in, out)
    return int(weight.shape[0]) if weight.ndim == 1 and weight.numel() else None


def site_widths(model: nn.Module, sites: Iterable[str], maps: Mapping) -> dict[str, int]:
    """``{site: width}`` of the sites' modules in ``model``, for
    :func:`act_core.check_compatible`: the map's own D where a module's width cannot be read;
    sites the model lacks are left out, so that the check names them. A timestep-range key
    (``<site>@<k>``) is read as its site. Every host checks maps with this one function."""
    from .timesteps import split_range_key

    widths = {}
    for site in sites:
        try:
            module = find_module(model, Site.parse(split_range_key(site)[0]))
        except LookupError:
            continue
        width = module_width(module)
        widths[site] = width if width is not None else maps[site].dim
    return widths


def _matcher(pattern: str) -> Callable[[str, nn.Module], bool]:
    if pattern in PRESETS:
        return PRESETS[pattern]
    if pattern.startswith("re:"):
        regex = re.compile(pattern[3:])
        return lambda name, module: regex.fullmatch(name) is not None
    return lambda name, module: fnmatch.fnmatchcase(name, pattern)


def _type_matches(module: nn.Module, types: Sequence[str | type] | None) -> bool:
    if not types:
        return True
    name = type(module).__name__
    return any(isinstance(module, t) if isinstance(t, type) else fnmatch.fnmatchcase(name, t)
               for t in types)


def _split_index(pattern: str) -> tuple[str, int | str | None]:
    if pattern.startswith("re:") or ":" not in pattern:
        return pattern, None
    site = Site.parse(pattern)
    return site.name, site.output_index


def resolve_sites(model: nn.Module, patterns: str | Iterable[str] | None = None, *,
                  types: Sequence[str | type] | None = None) -> list[Site]:
    """Choose sites by module-name patterns and/or module types, in registration order.

    Parameters
    ----------
    model : nn.Module
    patterns : str or iterable of str, optional
        Each is a preset name (:data:`PRESETS`: ``"norms"``, ``"linear"``, ``"linear_out"``,
        ``"conv"``), a ``re:<regex>`` matched against the full module name, or an fnmatch glob
        (``"layers.*.mlp"``; as in fnmatch, ``*`` also matches dots, ``?`` one character).
        A glob may end with ``:<index>`` to pick a tuple element.
        None selects every module (then ``types`` should be given).
    types : sequence of str or type, optional
        Keep only modules that are instances of a given type or whose class name matches a
        given glob (``"*Norm"``).

    Returns
    -------
    list of Site, deduplicated, in ``named_modules()`` order (the root module is never chosen).

    Raises
    ------
    SiteError
        If a pattern (after the type filter) matches no module; the message lists some names.
    """
    named = [(name, module) for name, module in model.named_modules() if name]
    specs = [patterns] if isinstance(patterns, str) else list(patterns or [None])
    chosen: dict[str, Site] = {}
    for spec in specs:
        name_pattern, index = (None, None) if spec is None else _split_index(spec)
        match = (lambda n, m: True) if name_pattern is None else _matcher(name_pattern)
        found = [Site(name, index) for name, module in named
                 if match(name, module) and _type_matches(module, types)]
        if not found:
            sample = [f"{name} ({type(module).__name__})" for name, module in named[:8]]
            raise SiteError(f"site pattern {spec!r} (types={types}) matches no module; "
                            f"available modules include {sample}; presets: {sorted(PRESETS)}")
        for site in found:
            chosen.setdefault(str(site), site)
    order = {name: position for position, (name, _) in enumerate(named)}
    return sorted(chosen.values(), key=lambda site: order[site.name])


def _element_key(output: object, site: Site) -> int | str | None:
    """Key of ``output`` that holds the site's tensor; None when the output is the tensor."""
    index = site.output_index
    if isinstance(output, torch.Tensor):
        if index is not None:
            raise SiteError(f"site {str(site)!r}: the module returns a tensor, not a tuple; "
                            f"drop ':{index}' from the site")
        return None
    if isinstance(output, (tuple, list)):
        index = 0 if index is None else index
        if not isinstance(index, int) or not -len(output) <= index < len(output):
            raise SiteError(f"site {str(site)!r}: output is a {type(output).__name__} of length "
                            f"{len(output)}; use an integer index in range")
        return index
    if isinstance(output, Mapping):
        keys = list(output.keys())
        if index is None or isinstance(index, int):
            index = 0 if index is None else index
            if not -len(keys) <= index < len(keys):
                raise SiteError(f"site {str(site)!r}: output has keys {keys}, no element {index}")
            return keys[index]
        if index not in output:
            raise SiteError(f"site {str(site)!r}: output has keys {keys}, not {index!r}")
        return index
    raise SiteError(f"site {str(site)!r}: cannot read a tensor from a module output of type "
                    f"{type(output).__name__}")


def read_output(output: object, site: Site) -> torch.Tensor:
    """Extract the tensor a site names from a module output (tensor, tuple/list, dict-like)."""
    key = _element_key(output, site)
    value = output if key is None else output[key]  # type: ignore[index]
    if not isinstance(value, torch.Tensor):
        raise SiteError(f"site {str(site)!r}: the selected output element is a "
                        f"{type(value).__name__}, not a tensor; choose another ':<index>'")
    return value


def write_output(output: object, site: Site, value: torch.Tensor) -> object:
    """Return a copy of ``output`` with the site's tensor replaced by ``value``.

    Tuples and lists are rebuilt; dict-like outputs (e.g. transformers ``ModelOutput``) are
    shallow-copied and the key is set. The original structure is never modified.
    """
    key = _element_key(output, site)
    if key is None:
        return value
    if isinstance(output, tuple):
        items = list(output)
        items[key] = value  # type: ignore[index]
        return type(output)(*items) if hasattr(output, "_fields") else tuple(items)
    if isinstance(output, list):
        items = list(output)
        items[key] = value  # type: ignore[index]
        return items
    replaced = copy.copy(output)
    replaced[key] = value  # type: ignore[index]
    return replaced
