"""Generation and perplexity of a transformers causal LM under maps at a strength.

Both functions take ``maps`` (``None`` or empty: the model as it is), ``strength`` (lambda) and
``support``, and apply the maps with :func:`act_core.hf.steering` around the model calls only,
so hooks never outlive a call. :func:`generate` also takes a list of map sets with one strength
each: they act together, sequentially in the given order at each site (:func:`steering_many`,
:mod:`act_core.compose`). A set whose sequence gate pools ``draft`` is generated twice where
needed: first without that set (unsteered, or with the other sets of a list), then with it for
the sequences the gate reads as the source (:func:`generate`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from typing import Any

import torch

from act_core.compose import apply_composed
from act_core.errors import MapError
from act_core.hf.lm import first_token_mask, progress_bar, skips_first_token, steering
from act_core.maps import TransportMap

__all__ = ["draft_gate", "generate", "perplexity", "steering_many"]

log = logging.getLogger(__name__)

MapsArg = Mapping[str, TransportMap] | Sequence[Mapping[str, TransportMap]] | None


@contextmanager
def steering_many(model: Any, map_sets: Sequence[Mapping[str, TransportMap]],
                  strengths: Sequence[float], support: str = "minmax") -> Iterator[None]:
    """Apply several map sets together: ``T_2(T_1(x))`` at each site, in the given order.

    One patch per site module (:func:`act_core.compose.apply_composed`) when every set agrees
    on leaving the first token alone (as recorded in its file) and none has a sequence gate;
    otherwise the single-set :func:`~act_core.hf.steering` contexts are nested in the same
    order, which has the same meaning.
    """
    if len(strengths) != len(map_sets):
        raise ValueError(f"expected one strength per map set ({len(map_sets)}), found "
                         f"{len(strengths)}")
    skips = {skips_first_token(m) for m in map_sets}
    if len(skips) > 1 or any(getattr(m, "sequence_gate", None) is not None for m in map_sets):
        # a sequence gate is honoured by its own steering context only (:func:`steering`)
        with ExitStack() as stack:
            for maps, strength in zip(map_sets, strengths, strict=True):
                stack.enter_context(steering(model, maps, strength, support))
            yield
        return
    with first_token_mask(model) if skips.pop() else nullcontext() as keep:
        with apply_composed(model, map_sets, strengths, support, keep_tokens=keep):
            yield


def _steering(model: Any, maps: MapsArg, strength: float | Sequence[float], support: str):
    if maps is None or isinstance(maps, Mapping):
        return steering(model, maps, strength, support)
    return steering_many(model, *_sets(maps, strength), support)


def _sets(maps: MapsArg, strength: float | Sequence[float]) -> tuple[list, list]:
    """``maps`` and ``strength`` as one list of sets and one list of strengths."""
    if maps is None or isinstance(maps, Mapping):
        return ([] if maps is None else [maps]), [strength]
    strengths = list(strength) if isinstance(strength, Sequence) else [strength] * len(maps)
    return list(maps), strengths


def draft_gate(maps: MapsArg, strength: float | Sequence[float]) -> tuple[Any, int] | None:
    """``(gate, index)`` of the one set whose sequence gate pools ``draft`` and steers, else
    None. Two such sets in one list are refused (each would need its own look-ahead)."""
    sets, strengths = _sets(maps, strength)
    found = [(gate, i) for i, (one, s) in enumerate(zip(sets, strengths, strict=False))
             if (gate := getattr(one, "sequence_gate", None)) is not None
             and gate.pooling == "draft" and s != 0]
    if len(found) > 1:
        raise MapError(f"{len(found)} of the map sets have a sequence gate that pools 'draft' "
                       "(sets " + ", ".join(str(i + 1) for _, i in found) + "); generate "
                       "with one of them at a time, or switch the others' gates off")
    return found[0] if found else None


def _without(maps: MapsArg, strength: float | Sequence[float], index: int,
             replace: Any = None) -> tuple[MapsArg, float | list[float]]:
    """``maps`` and ``strength`` with set ``index`` left out (``replace`` None) or replaced."""
    sets, strengths = _sets(maps, strength)
    if replace is not None:
        sets[index] = replace
    else:
        del sets[index], strengths[index]
    if not sets:
        return None, 0.0
    return (sets[0], strengths[0]) if len(sets) == 1 else (sets, strengths)


def _steers(maps: MapsArg, strength: float | Sequence[float]) -> bool:
    """Whether ``maps`` at ``strength`` act at all (some map, some strength above 0)."""
    return any(bool(one) and s != 0 for one, s in zip(*_sets(maps, strength), strict=False))


def _draft_and_full(maps: MapsArg, strength: float | Sequence[float], index: int) -> tuple:
    """The two ``(maps, strength)`` of a ``draft`` look-ahead on set ``index``: every set but
    that one (the draft), and every set with that one ungated (a passing sequence)."""
    from act_core.gate import ungated

    gated = ungated(_sets(maps, strength)[0][index])
    return _without(maps, strength, index), _without(maps, strength, index, gated)


def _drafted(model: Any, enc: Any, ids: torch.Tensor, gate: Any, regenerate: Any,
             pad: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``draft`` look-ahead for one batch: ``ids`` is the draft (generated without the gated
    set); rows whose prompt + draft pass the gate are generated again by ``regenerate(enc
    rows)``, steered from their first token. The gate reads the unsteered model's activations
    of prompt + draft, as it was fitted. Returns the new tokens (B, N) and which rows were
    generated again (B,) bool."""
    from act_core.hf.gating import draft_passes

    width = enc["input_ids"].shape[1]
    new = ids[:, width:]
    real = torch.ones_like(new) if pad is None else (new != pad).long()
    fired = draft_passes(model, gate, ids, torch.cat([enc["attention_mask"], real], dim=1))
    log.info("sequence gate (draft): %d of %d sequences read as the source, generated again "
             "with the maps", int(fired.sum()), int(fired.numel()))
    if not bool(fired.any()):
        return new, fired
    rows = {key: value[fired] for key, value in enc.items()}
    lead = int((rows["attention_mask"].sum(dim=0) == 0).sum())  # columns of padding only
    rows = {key: value[:, lead:] for key, value in rows.items()}
    again = regenerate(rows)[:, width - lead :]
    fill = 0 if pad is None else pad
    out = new.new_full((new.shape[0], max(new.shape[1], again.shape[1])), fill)
    out[:, : new.shape[1]] = new
    out[fired] = torch.nn.functional.pad(again, (0, out.shape[1] - again.shape[1]), value=fill)
    return out, fired


def _drafted_logits(model: Any, enc: Any, maps: MapsArg, strength: Any, support: str,
                    gate: Any, index: int) -> torch.Tensor:
    """(B, T, V) logits for :func:`perplexity` with set ``index`` gated by ``draft``: every row
    under the other sets, the rows whose text passes the gate under all sets (gate ungated)."""
    from act_core.hf.gating import draft_passes

    fired = draft_passes(model, gate, enc["input_ids"], enc["attention_mask"])  # (B,)
    draft, full = _draft_and_full(maps, strength, index)
    with _steering(model, *draft, support):
        logits = model(**enc, use_cache=False).logits.float()
    if bool(fired.any()):
        rows = {key: value[fired] for key, value in enc.items()}
        with _steering(model, *full, support):
            logits[fired] = model(**rows, use_cache=False).logits.float()
    return logits


def _length_order(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Indices of ``texts`` sorted by token count (less padding per batch)."""
    lengths = [len(ids) for ids in tokenizer(list(texts))["input_ids"]]
    return sorted(range(len(texts)), key=lambda i: (lengths[i], i))


@torch.inference_mode()
def generate(model: Any, tokenizer: Any, prompts: Sequence[str],
             maps: MapsArg = None, strength: float | Sequence[float] = 1.0,
             support: str = "minmax", *, max_new_tokens: int = 32, seed: int = 0,
             do_sample: bool = True, temperature: float = 1.0, top_p: float = 0.9,
             batch_size: int = 16, progress: bool = False, return_steered: bool = False,
             **generate_kwargs: Any) -> list[str] | tuple[list[str], list[bool]]:
    """Continue every prompt, returning only the new text (special tokens removed).

    Prompts are batched by length (left padding) and the results returned in input order.
    Sampling is reproducible: batch ``k`` is drawn after ``torch.manual_seed(seed + k)``.

    Parameters
    ----------
    prompts : sequence of str, length P
    maps, strength, support
        Maps to apply (None: none), lambda >= 0 and the support (``minmax``, ``unbounded``...);
        or a list of map sets with a list of strengths (one each), applied together in that
        order (:func:`steering_many`).
    max_new_tokens, do_sample, temperature, top_p
        As in transformers' ``generate`` (greedy when ``do_sample`` is False).
    return_steered
        Also return, per prompt, whether its continuation was written with the maps on: False
        where the text is the unsteered model's (no maps, strength 0, or a ``draft`` gate that
        did not pass), True otherwise (maps whose per-site gates stayed shut count as on). With a
        ``draft`` gate in a list of sets: whether the gated set wrote the text.
    generate_kwargs
        Further keyword arguments of transformers' ``generate`` (e.g. ``min_new_tokens``).

    A set whose sequence gate pools ``draft`` (:mod:`act_core.seqgate`) is first generated
    without that set: unsteered, or with the other sets of a list at their strengths (a base
    strength everywhere, the gated set's on top where the gate passes). The sequences whose
    prompt + draft pass the gate are generated again with every set, the gated one ungated,
    from the same seed, steered from their first token; the others keep the draft bit for bit.
    At most one set of a list may have such a gate.

    Returns
    -------
    list of str, length P; with ``return_steered``, also a list of bool, length P.
    """
    device = next(model.parameters()).device
    order = _length_order(tokenizer, prompts)
    out: list[str] = [""] * len(prompts)
    steered = [_steers(maps, strength)] * len(prompts)
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    sampling = {"temperature": temperature, "top_p": top_p, "top_k": 0} if do_sample else {}
    drafting = draft_gate(maps, strength)
    if drafting is not None:
        gate, index = drafting
        draft, full = _draft_and_full(maps, strength, index)
    for k, chunk in enumerate(progress_bar(chunks, len(chunks), "generate", progress)):
        enc = tokenizer([prompts[i] for i in chunk], return_tensors="pt", padding=True,
                        padding_side="left").to(device)

        def run(batch: Any, steer: tuple, k: int = k) -> torch.Tensor:
            torch.manual_seed(seed + k)
            with _steering(model, steer[0], steer[1], support):
                return model.generate(**batch, max_new_tokens=max_new_tokens,
                                      do_sample=do_sample, pad_token_id=tokenizer.pad_token_id,
                                      **sampling, **generate_kwargs)

        if drafting is None:
            new = run(enc, (maps, strength))[:, enc["input_ids"].shape[1] :]  # (B, new tokens)
        else:
            new, fired = _drafted(model, enc, run(enc, draft), gate,
                                  lambda rows, run=run: run(rows, full), tokenizer.pad_token_id)
            for i, one in zip(chunk, fired.tolist(), strict=True):
                steered[i] = bool(one)
        for i, text in zip(chunk, tokenizer.batch_decode(new, skip_special_tokens=True),
                           strict=True):
            out[i] = text
    return (out, steered) if return_steered else out


@torch.inference_mode()
def perplexity(model: Any, tokenizer: Any, texts: Sequence[str], maps: MapsArg = None,
               strength: float | Sequence[float] = 1.0, support: str = "minmax", *,
               batch_size: int = 8, max_length: int = 128, progress: bool = False) -> float:
    """Token-level perplexity ``exp(mean NLL)`` of ``texts`` under the (steered) model.

    Every predicted token of every text counts once (right padding, padding excluded).
    ``maps`` and ``strength`` as for :func:`generate` (one set, or a list applied together).
    A ``draft``-gated set in a list acts on the texts whose tokens pass its gate, read on the
    unsteered model as :func:`generate` reads a draft; the other texts get the other sets only.
    """
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    chunks = [list(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
    listed = maps is not None and not isinstance(maps, Mapping)
    drafting = draft_gate(maps, strength) if listed else None  # a lone set: its own context
    for chunk in progress_bar(chunks, len(chunks), "perplexity", progress):
        enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True,
                        max_length=max_length, padding_side="right").to(device)
        if drafting is None:
            with _steering(model, maps, strength, support):
                logits = model(**enc, use_cache=False).logits.float()  # (B, T, V)
        else:
            logits = _drafted_logits(model, enc, maps, strength, support, *drafting)
        targets = enc["input_ids"][:, 1:]  # (B, T-1)
        mask = enc["attention_mask"][:, 1:].bool()  # (B, T-1)
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
        ).view_as(targets)  # (B, T-1)
        total_nll += float(nll[mask].sum())
        total_tokens += int(mask.sum())
    return math.exp(total_nll / max(total_tokens, 1))
