"""A map set's sequence gate on a transformers causal LM: read, decide, steer (or not).

:class:`act_core.seqgate.SequenceGate` scores every token at one reader site and switches the
map set on for a sequence from its first token that passes (a running max). Here that decision
is made on the model's forward calls:

* a call that starts sequences (no KV cache: a prompt, a perplexity passage) first runs an
  unsteered *pre-pass* of the model up to the reader (the rest of the model is skipped), so
  that token t of the real call is steered exactly when one of the tokens 1..t passed;
* a decoding step (a KV cache) is steered when the sequence's gate was on after the tokens
  before it; the step's own reader output then updates the running max for the next step.

Padding tokens and each sequence's first token (the attention sink, left out of fitting too)
never switch a gate on. A sequence whose gate stays off runs exactly the unsteered model's
computation: the patches return their input untouched (strength 0 for a call with no token on).
The pre-pass costs a forward through the layers up to the reader, once per prompt; a decoding
step costs one projection of the reader output.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from act_core.seqgate import SequenceGate, fit_sequence_gate
from act_core.sites import Site, find_module, read_output

__all__ = ["SequenceGating", "describe_gate_words", "draft_passes", "fit_lm_sequence_gate",
           "gate_words", "reader_site", "sequence_gating"]

log = logging.getLogger(__name__)

#: Defaults of :func:`fit_lm_sequence_gate` (and ``act fit --gate sequence``): the reader is the
#: residual stream after this many decoder layers, the look-ahead pooling, and the threshold
#: raised by this many standard deviations. Chosen on SmolLM2's dev prefixes by the third
#: pass's rule (docs/results_gate.md; the second pass had chosen 6 layers, ``max``, no margin).
DEFAULT_READER_LAYERS = 2
DEFAULT_POOLING = "draft"
DEFAULT_MARGIN = 0.1


class _Stop(Exception):
    """Raised by the reader hook to end a pre-pass once the reader has run."""


def reader_site(model: Any, layers: int = DEFAULT_READER_LAYERS) -> str:
    """The site of the residual stream after ``layers`` decoder layers (``<stack>.<layers-1>``).

    Raises
    ------
    ValueError
        When the model has no recognisable decoder-layer stack or fewer layers.
    """
    from act_core.block_stacks import find_block_stacks

    stacks = find_block_stacks(model)
    if not stacks:
        raise ValueError(f"{type(model).__name__}: no stack of decoder layers found; pass the "
                         "reader site explicitly")
    blocks = max(stacks, key=lambda stack: stack.parameters).blocks
    if not 1 <= layers <= len(blocks):
        raise ValueError(f"reader layers must be in 1..{len(blocks)} for this model, found "
                         f"{layers} (the default is {DEFAULT_READER_LAYERS}); pass a smaller "
                         "number (act fit --reader-layers, reader=)")
    return blocks[layers - 1]


def _token_mask(attention: torch.Tensor | None, batch: int, length: int, fresh: bool,
                device: torch.device) -> torch.Tensor:
    """(B, T) bool: tokens of this call that may switch a gate on (not padding, not first)."""
    if isinstance(attention, torch.Tensor) and attention.ndim == 2:
        mask = attention[:, -length:].to(device=device, dtype=torch.bool)
    else:
        mask = torch.ones(batch, length, dtype=torch.bool, device=device)
    if fresh:  # the first real token of each sequence is in this call
        first = mask.to(torch.int8).argmax(dim=1)  # (B,)
        mask = mask.clone()
        mask[torch.arange(batch, device=device), first] = False
    return mask


class SequenceGating:
    """The gate's state on one model inside one :func:`sequence_gating` context."""

    def __init__(self, model: Any, gate: SequenceGate) -> None:
        self.model, self.gate = model, gate
        self.site = Site.parse(gate.site)
        self.reader = find_module(model, self.site)
        self.prepass = False
        self.running: torch.Tensor | None = None  # (B,) running max of token scores
        self.on: torch.Tensor | None = None  # (B, T) this call: steered tokens
        self._call_mask: torch.Tensor | None = None
        self._fresh = True

    # model forward pre-hook
    def before(self, module: Any, args: tuple, kwargs: dict) -> None:
        if self.prepass:
            return
        from act_core.hf.lm import _cached_length

        ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        lead = ids if ids is not None else embeds
        if lead is None:
            self.on = None
            return
        batch, length = lead.shape[0], lead.shape[1]
        attention = kwargs.get("attention_mask")
        self._fresh = _cached_length(kwargs) == 0
        self._call_mask = _token_mask(attention, batch, length, self._fresh, lead.device)
        if self._fresh:
            scores = self._prepass(ids, embeds, attention, kwargs.get("position_ids"))
            scores = scores.masked_fill(~self._call_mask, float("-inf"))
            running = torch.cummax(scores, dim=1).values  # (B, T)
            self.running = running[:, -1]
            if self.gate.pooling in ("prompt", "draft"):  # the whole call, once any passes
                self.on = (self.running > 0)[:, None].expand(batch, length)
            else:
                self.on = running > 0
        elif self.running is not None and self.running.shape[0] == batch:
            self.on = (self.running > 0)[:, None].expand(batch, length)
        else:
            log.warning("sequence gate: a decoding call for %d sequences without their prompt "
                        "call; these tokens are not steered", batch)
            self.on = torch.zeros(batch, length, dtype=torch.bool, device=lead.device)

    def _prepass(self, ids, embeds, attention, position_ids) -> torch.Tensor:
        self.prepass = True
        self._scores = None
        try:
            self.model(input_ids=ids, inputs_embeds=None if ids is not None else embeds,
                       attention_mask=attention, position_ids=position_ids, use_cache=False)
        except _Stop:
            pass
        finally:
            self.prepass = False
        if self._scores is None:
            raise RuntimeError(f"sequence gate: the reader {self.gate.site!r} did not run in "
                               "the model's forward; refit the gate with another reader")
        return self._scores

    # reader forward hook
    def read(self, module: Any, args: tuple, output: Any) -> None:
        x = read_output(output, self.site)  # (B, T, D)
        scores = self.gate.scores(x)  # (B, T)
        if self.prepass:
            self._scores = scores
            raise _Stop
        if self._fresh or self.running is None or self._call_mask is None \
                or self._call_mask.shape != scores.shape:
            return
        scores = scores.masked_fill(~self._call_mask, float("-inf"))
        self.running = torch.maximum(self.running, scores.max(dim=1).values)

    def keep(self) -> torch.Tensor | None:
        """(B, T) bool for :func:`act_core.apply.apply_transport`: tokens left unchanged."""
        return None if self.on is None else ~self.on

    def active(self) -> bool:
        """Whether some token of the current call is steered."""
        return not self.prepass and self.on is not None and bool(self.on.any())


@contextmanager
def sequence_gating(model: Any, gate: SequenceGate) -> Iterator[SequenceGating]:
    """Track ``gate`` on ``model``'s forward calls inside the context (hooks removed on exit)."""
    state = SequenceGating(model, gate)
    handles = [model.register_forward_pre_hook(state.before, with_kwargs=True),
               state.reader.register_forward_hook(state.read)]
    try:
        yield state
    finally:
        for handle in handles:
            handle.remove()


def gated_strength(state: SequenceGating, strength: float) -> Callable[[], float]:
    """A strength callable: ``strength`` while some token of the call is on, else 0."""
    return lambda: strength if state.active() else 0.0


def _positives(tokenizer: Any, source: Sequence[str], target: Sequence[str],
               max_length: int) -> list[torch.Tensor] | None:
    """Source tokens (after the first) whose id the paired target lacks; None when unpaired."""
    if len(source) != len(target):
        return None
    masks = []
    for s, t in zip(source, target, strict=True):
        ids = tokenizer([s], truncation=True, max_length=max_length)["input_ids"][0][1:]
        other = set(tokenizer([t], truncation=True, max_length=max_length)["input_ids"][0])
        masks.append(torch.tensor([i not in other for i in ids], dtype=torch.bool))
    return masks


@torch.inference_mode()
def _token_activations(model: Any, tokenizer: Any, texts: Sequence[str], site: Site,
                       max_length: int, batch_size: int = 16) -> list[torch.Tensor]:
    """Each text's reader activations without its first token: list of (T_i - 1, D)."""
    from act_core.hf.lm import _batches

    module, out = find_module(model, site), []
    device = next(model.parameters()).device
    seen: list[torch.Tensor] = []

    def read(mod: Any, args: tuple, output: Any) -> None:
        seen.append(read_output(output, site).float().cpu())
        raise _Stop  # the layers after the reader are not needed

    handle = module.register_forward_hook(read)
    try:
        for batch in _batches(texts, batch_size):
            enc = tokenizer(batch, return_tensors="pt", padding=True, truncation=True,
                            max_length=max_length, padding_side="right").to(device)
            seen.clear()
            try:
                model(**enc, use_cache=False)
            except _Stop:
                pass
            lengths = enc["attention_mask"].sum(1).tolist()  # right padding: (B,) lengths
            out.extend(seen[0][i, 1:n] for i, n in enumerate(lengths))
    finally:
        handle.remove()
    return out


def fit_lm_sequence_gate(model: Any, tokenizer: Any, source: Sequence[str],
                         target: Sequence[str], reader: str | int = DEFAULT_READER_LAYERS,
                         max_length: int = 64, pooling: str = DEFAULT_POOLING,
                         quantile: float = 1.0, margin: float = DEFAULT_MARGIN) -> SequenceGate:
    """Fit a :class:`~act_core.seqgate.SequenceGate` from the texts the maps were fitted on.

    ``reader``: a site string, or a number of decoder layers (:func:`reader_site`). Texts of
    equal count are taken as pairs (``source[i]`` -> ``target[i]``): the positives are the
    source tokens the paired target lacks; otherwise every source token. ``pooling``: see
    :data:`act_core.seqgate.POOLINGS`; ``quantile``: the threshold's quantile of the target
    tokens' scores (1: their maximum, :func:`act_core.seqgate.fit_sequence_gate`); ``margin``:
    its rise in standard deviations of those scores.
    """
    site = reader_site(model, reader) if isinstance(reader, int) else str(reader)
    parsed = Site.parse(site)
    src = _token_activations(model, tokenizer, source, parsed, max_length)
    tgt = _token_activations(model, tokenizer, target, parsed, max_length)
    positives = _positives(tokenizer, source, target, max_length)
    return fit_sequence_gate(site, src, tgt, positives, pooling, quantile, margin)


def gate_words(tokenizer: Any, source: Sequence[str], target: Sequence[str],
               max_length: int = 64) -> dict[str, int]:
    """The words a sequence gate fitted on paired texts learns from: those of each source text
    that hold one of its positive tokens (a token the paired target lacks), with how many
    source texts show each, most frequent first; {} when the texts are not paired.

    A gate recognises these well and words its pairs never showed far less often (on SmolLM2,
    0.75 against 0.07 of held-out tokens: docs/results_gate.md), so ``act fit`` stores them and
    ``act info`` shows them: a word missing here is one to add pairs for. (A tokenizer that
    gives no character offsets shows the tokens themselves.)
    """
    masks = _positives(tokenizer, source, target, max_length)
    counts: dict[str, int] = {}
    for text, mask in zip(source, masks or [], strict=False):
        words = set()
        try:
            enc = tokenizer([text], truncation=True, max_length=max_length,
                            return_offsets_mapping=True)
            spans = enc["offset_mapping"][0][1:]
        except (NotImplementedError, KeyError, TypeError):  # a slow tokenizer: tokens
            ids = tokenizer([text], truncation=True, max_length=max_length)["input_ids"][0][1:]
            words = {tokenizer.decode([i]).strip() for i, m in zip(ids, mask.tolist()) if m}
            spans = []
        for (a, b), m in zip(spans, mask.tolist(), strict=False):
            while m and a < b and not text[a].isalnum():  # a token's own leading space
                a += 1
            if m and b > a:  # widen a positive token to the whole word it is part of
                while a > 0 and text[a - 1].isalnum():
                    a -= 1
                while b < len(text) and text[b].isalnum():
                    b += 1
                words.add(text[a:b].strip())
        for word in words - {""}:
            counts[word] = counts.get(word, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def describe_gate_words(words: dict[str, int], limit: int = 20) -> str:
    """One line for ``act info``: how many distinct words the gate learned, the most shown."""
    shown = ", ".join(list(words)[:limit]) + (", ..." if len(words) > limit else "")
    return (f"sequence gate learned from {len(words)} distinct words: {shown} (it may miss "
            "words its pairs never showed)")


@torch.inference_mode()
def draft_passes(model: Any, gate: SequenceGate, ids: torch.Tensor,
                 attention: torch.Tensor) -> torch.Tensor:
    """(B,) bool: whether any token of each sequence passes ``gate`` (the ``draft`` pooling's
    look-ahead over prompt + unsteered draft; :func:`act_core.hf.generate.generate`).

    ``ids`` (B, T) left-padded token ids, ``attention`` (B, T) 1 for real tokens. One unsteered
    pass up to the reader; padding and each sequence's first token never count.
    """
    state = SequenceGating(model, gate)
    handle = state.reader.register_forward_hook(state.read)
    try:
        positions = (attention.long().cumsum(dim=1) - 1).clamp(min=0)
        scores = state._prepass(ids, None, attention, positions)  # (B, T)
    finally:
        handle.remove()
    mask = _token_mask(attention, ids.shape[0], ids.shape[1], True, scores.device)
    return (scores.masked_fill(~mask, float("-inf")) > 0).any(dim=1)


def sequence_gate_of(maps: Mapping | None) -> SequenceGate | None:
    """The sequence gate a map set carries (a :class:`~act_core.mapset.MapSet` attribute)."""
    return getattr(maps, "sequence_gate", None)
