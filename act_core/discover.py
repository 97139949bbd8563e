"""Site discovery by structure: the stacks of repeated blocks of any model.

A diffusion transformer, a UNet or a text encoder is, at its core, one or a few lists of
repeated blocks (``blocks.0 .. blocks.29``, ``double_blocks`` + ``single_blocks``,
``encoder.layers``). Their outputs, and the affine norm layers inside them, are where AcT acts
when nobody has published a better choice for the architecture. Discovery needs no names:

1. :func:`~act_core.block_stacks.find_block_stacks` reads the module tree (no forward pass):
   every ``nn.ModuleList``, ``nn.Sequential`` or ``nn.ModuleDict`` whose children are >= 2
   blocks of one class, outermost only, and of those the ones whose blocks attend (transformer
   stacks) where there are any;
2. :func:`probe_outputs` runs the model once (the caller's ``run``) and records what each
   candidate module returns, so that tuple outputs (``(img, txt)`` streams) become one site per
   computed tensor element, stacks that do not run for this input (an audio injector without
   audio) are dropped, and norm layers applied to attention heads are left out;
3. :func:`discover_sites` puts both together: block outputs and/or affine norms, in forward
   order. Given a second pass with twice the batch, it finds each output's batch dim as the
   one dim that doubles: batch first (B, ..., D) or (B, C, ...) as usual, or in dim -2
   (*positions, B, D), as sequence-first blocks keep it (Cosmos 1's (T, H, W, B, D)): a
   ``seq_first`` site, whose per-item strengths (CFG halves) index that dim. A model that
   refuses twice the batch (the second pass raises :class:`~act_core.errors.BatchSizeError`)
   takes batch 1 only: its block outputs with no batch dim, (*positions, D) such as MiniMax
   H3's packed (S, D) sequence, are one item's tokens: ``unbatched`` sites (pooled over every
   position, transported per token; the host calls such a model once per CFG half, so the
   strength of each call is that half's).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .block_stacks import BlockStack, find_block_stacks
from .errors import BatchSizeError, SiteError
from .sites import Site

__all__ = ["DISCOVERY_KINDS", "OutputElement", "discover_sites", "probe_outputs"]

#: What :func:`discover_sites` can offer: block outputs, affine norms inside the blocks, or both.
DISCOVERY_KINDS: tuple[str, ...] = ("blocks", "norms", "blocks+norms", "final_norms")

# norms applied to queries/keys (per head): they transport attention logits, not features
_QK_NORM = re.compile(r"(^|_)(q|k|query|key)_?(rms_?)?norm|norm_(added_)?(q|k)($|_)")
# a norm inside a query/key projection container (Cosmos 1's ``attn.to_q.1``)
_QK_PARENT = re.compile(r"(^|\.)(to_[qk]|[qk]_proj|query|key)\.\d+$")


@dataclass(frozen=True)
class OutputElement:
    """A tensor a module returned on the probe pass: ``index`` None = the output itself."""

    index: int | None
    shape: tuple[int, ...]


def _is_norm(module: nn.Module) -> bool:
    return re.search(r"Norm(\d+d)?$", type(module).__name__) is not None


def _affine_width(module: nn.Module) -> int | None:
    """Width of a norm's 1-D affine weight; None when it has none."""
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.ndim == 1 and weight.numel() > 0:
        return int(weight.numel())
    return None


def probe_outputs(model: nn.Module, names: Iterable[str], run: Callable[[], None]
                  ) -> dict[str, list[OutputElement]]:
    """Run ``run()`` once and record, per module, the tensors its first call returned.

    A tensor output gives one element with index None; a tuple or list gives one element per
    tensor it holds that the module computed (an element that is the very tensor object it was
    given as an input, unmodified, such as a text stream a block passes through, is left out;
    one updated in place counts as computed). Modules that
    did not run are absent. When ``""`` (the model itself) is among ``names`` and runs, only
    calls made inside its forward count: a module run only outside it (a text refiner a host
    runs once while preparing the conditioning) is absent, since hosts steer the model's calls.
    Hooks are removed when ``run`` returns or raises.

    Returns
    -------
    dict of str to list of OutputElement, in the order the modules first ran.
    """
    seen: dict[str, list[OutputElement]] = {}
    outside: dict[str, list[OutputElement]] = {}  # first calls made outside the model's forward
    depth = [0]  # nesting of the model's own forward calls
    handles = []
    inputs: dict[str, dict[int, torch.Tensor]] = {}  # the call's tensor inputs, copied

    def before(name: str):
        def remember(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if name == "":
                depth[0] += 1
            if name not in seen:  # copies, not versions: inference tensors have none
                inputs[name] = {id(a): a.detach().clone() for a in (*args, *kwargs.values())
                                if isinstance(a, torch.Tensor)}
        return remember

    def hook(name: str):
        def observe(module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
            if name == "":
                depth[0] -= 1
            into = seen if name == "" or depth[0] > 0 else outside
            if name in into:
                return
            given = inputs.pop(name, {})

            def computed(x: object) -> bool:  # not an input passed through untouched
                if not isinstance(x, torch.Tensor):
                    return False
                before = given.get(id(x))
                return before is None or not torch.equal(before, x)

            if isinstance(output, torch.Tensor):
                into[name] = [OutputElement(None, tuple(output.shape))]
            elif isinstance(output, (tuple, list)):
                into[name] = [OutputElement(i, tuple(x.shape)) for i, x in enumerate(output)
                              if computed(x)]
            else:
                into[name] = []
        return observe

    modules = dict(model.named_modules())
    try:
        for name in names:
            module = modules[name]
            handles.append(module.register_forward_pre_hook(before(name), with_kwargs=True))
            handles.append(module.register_forward_hook(hook(name), with_kwargs=True))
        run()
    finally:
        for handle in handles:
            handle.remove()
    if "" in seen:  # the model ran: what ran inside its forward
        return seen
    return {**outside, **seen}  # (a model whose own forward is never called, e.g. a CLIP)


def _widths(block: nn.Module) -> tuple[set[int], set[int]]:
    """(feature widths of linear layers and layer norms, channel counts of convs and
    group norms) inside a block."""
    features: set[int] = set()
    channels: set[int] = set()
    for m in block.modules():
        if isinstance(m, nn.Linear):
            features |= {m.in_features, m.out_features}
        elif isinstance(m, nn.LayerNorm) and m.normalized_shape:
            features.add(int(m.normalized_shape[-1]))
        elif isinstance(m, nn.modules.conv._ConvNd):
            channels |= {m.in_channels, m.out_channels}
        elif isinstance(m, nn.GroupNorm):
            channels.add(m.num_channels)
    return features, channels


def _layout(shape: tuple[int, ...], features: set[int], channels: set[int]) -> str:
    """``tokens`` for (B, T, D) and channel-last grids (B, *positions, D) such as a video
    transformer's (B, T, H, W, D) (the last dim is a feature width of the block, dim 1 is no
    channel count); ``auto`` (channels (B, C, *spatial) from rank >= 4) otherwise."""
    if len(shape) == 3 or (shape[-1] in features and shape[1] not in channels
                           and shape[1] != shape[-1]):
        return "tokens"
    return "auto"


def _block_sites(name: str, block: nn.Module, elements: list[OutputElement],
                 seq_first: set[int | None], unbatched: set[int | None]) -> list[Site]:
    """Sites for a block's computed outputs of rank >= 3 (token streams and feature maps);
    elements whose index is in ``seq_first`` have their batch in dim -2, those in
    ``unbatched`` (rank >= 2, their last dim a feature width) no batch dim."""
    features, channels = _widths(block)
    # an empty stream (LTX-2's audio when sampling video alone) has nothing to transport
    elements = [e for e in elements if min(e.shape, default=0) > 0 and (
        len(e.shape) >= 3 or (e.index in unbatched and e.shape[-1] in features))]
    if features or channels:  # feature streams only, not e.g. attention biases (B, H, T, T)
        elements = [e for e in elements if e.shape[-1] in features
                    or (len(e.shape) >= 4 and e.shape[1] in channels
                        and e.index not in seq_first | unbatched)]
    return [Site(name, e.index, "seq_first" if e.index in seq_first else "unbatched"
                 if e.index in unbatched else _layout(e.shape, features, channels))
            for e in elements]


def _norm_site(name: str, module: nn.Module, elements: list[OutputElement],
               seq_first: bool = False, unbatched: bool = False) -> Site | None:
    """A norm is a site when its affine weight spans the features of its (B, T, D) or
    (B, C, *spatial) output (or (*positions, B, D) when ``seq_first``, (*positions, D) when
    ``unbatched``); per-head norms of queries and keys are not."""
    width = _affine_width(module)
    if (width is None or _QK_NORM.search(name.rsplit('.', 1)[-1]) or _QK_PARENT.search(name)
            or len(elements) != 1):
        return None
    shape = elements[0].shape
    if min(shape, default=0) == 0:  # an empty stream: nothing to transport
        return None
    if seq_first or unbatched:
        layout = "seq_first" if seq_first else "unbatched"
        return Site(name, layout=layout) if shape[-1] == width else None
    if len(shape) >= 3 and shape[-1] == width and (len(shape) == 3 or shape[1] != width):
        return Site(name, layout="tokens")  # (B, T, D) or channel-last (B, *positions, D)
    if len(shape) >= 4 and shape[1] == width:
        return Site(name, layout="channels")
    return None


def _final_norms(model: nn.Module, blocks: list[str]) -> list[str]:
    """Affine norms outside every block (candidates for an encoder's final norm)."""
    return [name for name, module in model.named_modules()
            if name and _is_norm(module) and _affine_width(module) is not None
            and not any(name == b or name.startswith(f"{b}.") for b in blocks)]


def _candidates(model: nn.Module, blocks: list[str], kind: str
                ) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """(modules to probe, the layers standing for each block, the norm candidates)."""
    modules = dict(model.named_modules())
    # a container whose forward is never called (a UNet's TimestepEmbedSequential is iterated
    # by its parent) stands for its layers: their outputs are the sites instead
    layers = {block: [f"{block}.{child}" for child, _ in modules[block].named_children()]
              for block in blocks}
    if kind == "final_norms":
        norms = _final_norms(model, blocks)
        return [*blocks, *norms], layers, norms
    norms = [name for block in blocks for name, module in modules[block].named_modules(prefix=block)
             if _is_norm(module) and _affine_width(module) is not None]
    probed = [b for block in blocks for b in (block, *layers[block])] if kind != "norms" else []
    return probed + (norms if kind != "blocks" else []), layers, norms


def discover_sites(model: nn.Module, run: Callable[[], None], kind: str = "blocks",
                   stacks: list[BlockStack] | None = None,
                   within: Sequence[str] | None = None,
                   run_double: Callable[[], None] | None = None) -> list[Site]:
    """Sites of ``model`` found by structure: its main block stacks' outputs and/or norms.

    Parameters
    ----------
    model : nn.Module
    run : callable
        Runs one forward pass of ``model`` (any input it is used with; batch 1 is enough).
    kind : str
        One of :data:`DISCOVERY_KINDS`: ``"blocks"`` = the output of every block of the stacks
        (one site per computed tensor element of a tuple output, e.g. both streams of a
        dual-stream block); ``"norms"`` = every norm layer with a 1-D affine weight inside
        those blocks whose output it spans (tokens (B, T, D) or channels (B, C, ...));
        ``"blocks+norms"`` = both; ``"final_norms"`` = affine norms outside the blocks that
        run after a block (an encoder's final layer norm).
    stacks : list of BlockStack, optional
        Default :func:`find_block_stacks` of ``model``.
    within : sequence of str, optional
        Keep only stacks and modules under these module paths (one encoder of several).
    run_double : callable, optional
        Runs the pass of ``run`` with twice its batch. Each output's batch dim is then the one
        dim whose size doubles: dim 0 gives the usual sites, dim -2 of a token stream
        (*positions, B, D) a ``seq_first`` site; outputs with no such dim (frames or pixels
        folded into the batch) are left out. Without it, outputs whose dim 0 is not the batch
        of the model's own output are left out (per-item strengths need the batch dim). When
        it raises :class:`~act_core.errors.BatchSizeError` (the model takes batch 1 only, and
        ``run`` must use batch 1), block outputs without a batch dim, (*positions, D), become
        ``unbatched`` sites: each call's output is one item.

    Returns
    -------
    list of Site in the order the modules first ran on the probe pass.

    Raises
    ------
    SiteError
        If the model has no stack of repeated blocks, or none of the kind asked for ran.
    """
    if kind not in DISCOVERY_KINDS:
        raise SiteError(f"discovery kind must be one of {DISCOVERY_KINDS}, found {kind!r}")
    stacks = find_block_stacks(model) if stacks is None else stacks
    if within is not None:
        stacks = [s for s in stacks if any(s.name.startswith(f"{w}.") for w in within)]
    if not stacks:
        where = "" if within is None else f" under {list(within)}"
        raise SiteError(f"{type(model).__name__} has no list of >= 2 repeated blocks{where} to "
                        "choose sites from; give module-name patterns instead")
    blocks = [block for stack in stacks for block in stack.blocks]
    candidates, layers, norms = _candidates(model, blocks, kind)
    if within is not None:
        candidates = [c for c in candidates if any(c.startswith(f"{w}.") for w in within)]
    seen = probe_outputs(model, ["", *candidates], run)
    doubled, refused = None, None
    if run_double is not None:
        try:
            doubled = probe_outputs(model, ["", *candidates], run_double)
        except BatchSizeError as error:  # batch 1 only: outputs may have no batch dim
            refused = error
    sites = _sites_from(model, seen, kind, blocks, layers, norms, doubled, refused is not None)
    if not sites:
        found = [f"{s.name} ({len(s.blocks)} x {s.block_type})" for s in stacks]
        why = "" if refused is None else f" (the model takes batch 1 only: {refused})"
        raise SiteError(f"no {kind} sites ran in the probe pass of the stacks {found}{why}; "
                        "choose another kind or give module-name patterns")
    return sites


def _batch_dim(element: OutputElement, doubled: list[OutputElement]) -> int | None:
    """The one dim of ``element`` whose size doubled in the pass with twice the batch."""
    twin = next((d for d in doubled if d.index == element.index), None)
    if twin is None or len(twin.shape) != len(element.shape):
        return None
    changed = [i for i, (a, b) in enumerate(zip(element.shape, twin.shape)) if a != b]
    if len(changed) != 1 or twin.shape[changed[0]] != 2 * element.shape[changed[0]]:
        return None
    return changed[0]


def _sites_from(model: nn.Module, seen: dict[str, list[OutputElement]], kind: str,
                blocks: list[str], layers: dict[str, list[str]], norms: list[str],
                doubled: dict[str, list[OutputElement]] | None = None,
                single: bool = False) -> list[Site]:
    """The sites among the probed outputs; ``single``: the model takes batch 1 only (its
    outputs with no batch dim are ``unbatched`` sites)."""
    modules = dict(model.named_modules())
    outputs = set() if kind in ("norms", "final_norms") else (
        {block for block in blocks if block in seen}
        | {layer for block in blocks if block not in seen for layer in layers[block]})
    root = seen.pop("", [])
    batch = root[0].shape[0] if root and root[0].shape else None
    if root and doubled is not None:  # the model's own batch dim: the one that doubles
        dim = _batch_dim(root[0], doubled.pop("", []))
        batch = batch if dim is None else root[0].shape[dim]
    order = list(seen)
    first_block = min((order.index(b) for b in blocks if b in seen), default=len(order))
    sites: list[Site] = []
    for position, (name, elements) in enumerate(seen.items()):
        # outputs without the model's batch in dim 0 (or, seen with twice the batch, in dim
        # -2 of a token stream) cannot take per-item strengths (CFG halves): not sites. Frames
        # or pixels folded into the batch, as temporal layers do, are such outputs.
        seq_first: set[int | None] = set()
        if doubled is not None:
            dims = {e.index: _batch_dim(e, doubled.get(name, [])) for e in elements}
            seq_first = {e.index for e in elements if len(e.shape) >= 3
                         and dims[e.index] == len(e.shape) - 2 and e.shape[-2] == batch}
            elements = [e for e in elements if dims[e.index] == 0 or e.index in seq_first]
        # batch 1 only: an output whose dim 0 is not that 1 (or a (1, D) one) has no batch dim
        unbatched = {e.index for e in elements if single and batch == 1 and len(e.shape) >= 2
                     and (e.shape[0] != 1 or len(e.shape) == 2)}
        elements = [e for e in elements if e.index in seq_first | unbatched
                    or batch is None or (e.shape and e.shape[0] == batch)]
        if name in norms and kind != "blocks":
            if kind == "final_norms" and position < first_block:
                continue  # a norm before the blocks (an embedding norm), not a final one
            site = _norm_site(name, modules[name], elements, bool(seq_first), bool(unbatched))
            sites += [site] if site is not None else []
        elif name in outputs:
            sites += _block_sites(name, modules[name], elements, seq_first, unbatched)
    return sites
