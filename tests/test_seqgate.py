"""One gate for a whole map set (act_core.seqgate, act_core.hf.gating): the fit, the map file
(format 3, refused by format-2 readers, shown by ``act info``), refusal to export, and on a tiny
config-built Llama: a sequence whose gate stays off runs bit for bit as the unsteered model, in
one forward call and across the decoding steps of ``generate``."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from act_core import MapSet, load_maps, save_maps
from act_core import mapfile as mapfile_module
from act_core.errors import FitError, MapFileError
from act_core.fold import FoldError
from act_core.gate import check_ungated, select_gate
from act_core.seqgate import (
    SequenceGate,
    fit_sequence_gate,
    ledoit_wolf_shrinkage,
    shrunk_discriminant,
)

pytest.importorskip("transformers")


def _tokens(n: int, d: int, seed: int, hit: bool) -> list[torch.Tensor]:
    """n texts of 6-12 tokens (T, d); with ``hit`` one token per text is shifted along unit 0."""
    gen = torch.Generator().manual_seed(seed)
    texts = []
    for _ in range(n):
        x = torch.randn(int(torch.randint(6, 13, (1,), generator=gen)), d, generator=gen)
        if hit:
            x[int(torch.randint(0, x.shape[0], (1,), generator=gen)), 0] += 8.0
        texts.append(x)
    return texts


def test_fit_switches_on_for_source_texts_and_off_for_every_target_token():
    source, target = _tokens(40, 8, 0, True), _tokens(40, 8, 1, False)
    positives = [x[:, 0] > 4.0 for x in source]  # the shifted token of each source text
    gate = fit_sequence_gate("reader", source, target, positives)
    assert all(float(gate.scores(t).max()) <= 0 for t in target)  # strict: no target token on
    held_src, held_tgt = _tokens(40, 8, 2, True), _tokens(40, 8, 3, False)
    on_src = sum(float(gate.scores(x).max()) > 0 for x in held_src) / 40
    on_tgt = sum(float(gate.scores(x).max()) > 0 for x in held_tgt) / 40
    assert on_src >= 0.9 and on_tgt <= 0.1
    assert gate.auroc > 0.95 and gate.source_on >= 0.9 and gate.target_on == 0.0


def _word_texts(n: int, d: int, seed: int, units: list[int] | None,
                shift: float = 8.0) -> list[torch.Tensor]:
    """n texts of 6-12 tokens; with ``units`` text i holds one token shifted by ``shift`` along
    unit ``units[i]`` (its "word")."""
    gen = torch.Generator().manual_seed(seed)
    texts = []
    for i in range(n):
        x = torch.randn(int(torch.randint(6, 13, (1,), generator=gen)), d, generator=gen)
        if units is not None:
            x[int(torch.randint(0, x.shape[0], (1,), generator=gen)), units[i]] += shift
        texts.append(x)
    return texts


def test_held_out_shares_tell_a_gate_that_generalises_from_one_that_knows_only_its_texts():
    from act_core.info import describe_maps, gate_report

    d, n = 48, 40
    # one "word" shared by every source text: a gate fitted on either fold reads the other
    shared = _word_texts(n, d, 0, [0] * n)
    target = _word_texts(n, d, 1, None)
    gate = fit_sequence_gate("reader", shared, target, [x.abs().max(1).values > 5 for x in shared])
    assert gate.heldout_source_on >= 0.8 and gate.heldout_target_on <= 0.1
    # even texts use words 0-3, odd texts 4-7: each fold's words are new to the other
    apart = _word_texts(n, d, 2, [i % 2 * 4 + i // 2 % 4 for i in range(n)], shift=16.0)
    gate = fit_sequence_gate("reader", apart, target, [x.abs().max(1).values > 5 for x in apart])
    assert gate.source_on >= 0.9 and gate.heldout_source_on <= 0.3  # training overstates it
    assert "held out (2 folds)" in gate.describe()
    assert fit_sequence_gate("reader", apart, target, heldout=False).heldout_source_on is None
    assert fit_sequence_gate("reader", apart[:3], target[:3]).heldout_source_on is None
    # the weak one is told, with the reason, in the fit's report and in act info
    maps = MapSet({}, {}, gate)
    warnings = gate_report(maps)[1]
    held, trained = f"{100 * gate.heldout_source_on:.0f}%", f"{100 * gate.source_on:.0f}%"
    assert len(warnings) == 1 and f"only {held} of the source texts it was not fitted on" in \
        warnings[0]
    assert f"{trained} of its own" in warnings[0] and "ungated" in warnings[0]
    assert f"warning: the sequence gate switches on for only {held}" in describe_maps(maps)
    good = MapSet({}, {}, fit_sequence_gate("reader", shared, target))
    assert gate_report(good)[1] == [] and "warning" not in describe_maps(good)


def test_a_quantile_threshold_lets_that_share_of_target_tokens_pass():
    source, target = _tokens(40, 8, 0, True), _tokens(40, 8, 1, False)
    positives = [x[:, 0] > 4.0 for x in source]
    strict = fit_sequence_gate("reader", source, target, positives)
    assert fit_sequence_gate("reader", source, target, positives, quantile=1.0).bias == \
        strict.bias  # the default is the strict step
    n = sum(t.shape[0] for t in target)
    for q in (0.99, 0.9):
        gate = fit_sequence_gate("reader", source, target, positives, quantile=q)
        assert torch.equal(gate.weight, strict.weight) and gate.bias > strict.bias
        passed = sum(int((gate.scores(t) > 0).sum()) for t in target) / n
        assert 1 - q - 2 / n <= passed <= 1 - q + 1 / n
        assert gate.quantile == q and f"q{q:g} step" in gate.describe()
    for bad in (0.0, 1.5):
        with pytest.raises(FitError, match="quantile must be in"):
            fit_sequence_gate("reader", source, target, positives, quantile=bad)
    # a margin raises the strict threshold by that many sd of the target tokens' scores
    neg = torch.cat([strict.scores(t) for t in target]).double()
    raised = fit_sequence_gate("reader", source, target, positives, margin=0.5)
    assert raised.bias == pytest.approx(strict.bias - 0.5 * float(neg.std()), rel=1e-5)
    assert raised.margin == 0.5 and "strict +0.5 sd step" in raised.describe()
    with pytest.raises(FitError, match="margin must be >= 0"):
        fit_sequence_gate("reader", source, target, positives, margin=-1.0)


def test_ledoit_wolf_shrinkage_matches_scikit_learn():
    covariance = pytest.importorskip("sklearn.covariance")
    x = torch.randn(50, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = x - x.mean(0)
    expected = covariance.ledoit_wolf_shrinkage(x.numpy(), assume_centered=True)
    assert ledoit_wolf_shrinkage(x) == pytest.approx(float(expected), rel=1e-9)


def test_shrunk_discriminant_solves_the_shrunk_pooled_covariance_with_fewer_rows_than_units():
    """Fewer rows (12 + 10) than units (30): the pooled covariance is singular, the shrunk one
    is not; the direction is built here with numpy and scikit-learn's shrinkage."""
    covariance = pytest.importorskip("sklearn.covariance")
    g = torch.Generator().manual_seed(1)
    pos = torch.randn(12, 30, generator=g, dtype=torch.float64) + 0.5
    neg = torch.randn(10, 30, generator=g, dtype=torch.float64)
    centred = np.concatenate([(pos - pos.mean(0)).numpy(), (neg - neg.mean(0)).numpy()])
    s = centred.T @ centred / len(centred)
    a = covariance.ledoit_wolf_shrinkage(centred, assume_centered=True)
    c = (1 - a) * s + a * np.trace(s) / 30 * np.eye(30)
    expected = np.linalg.solve(c, (pos.mean(0) - neg.mean(0)).numpy())
    assert np.linalg.matrix_rank(s) < 30 and np.linalg.matrix_rank(c) == 30
    np.testing.assert_allclose(shrunk_discriminant(pos, neg).numpy(), expected, rtol=1e-8)


@pytest.fixture(scope="module")
def tiny():
    """A tiny Llama, maps fitted on it, and a gate read at the embeddings that passes exactly
    on the token ``z`` (scores computed here from the embedding matrix, not by the gate)."""
    from act_core import hf
    from harness.hf_tiny import tiny_causal_lm

    model, tokenizer = tiny_causal_lm("llama")
    source = [f"QQ XX {i} WW" for i in range(8)]
    target = [f"the cat {i} sat" for i in range(8)]
    maps = hf.fit_lm(model, tokenizer, source, target, "post_norms", incremental=False)
    z = tokenizer("Z", add_special_tokens=False)["input_ids"][0]
    return model, tokenizer, MapSet(maps, {}, _gate_on_token(model, z, "max")), maps


def _gate_on_token(model, token: int, pooling: str) -> SequenceGate:
    """A gate at the embeddings that passes on ``token`` only (its bias halfway between that
    token's score and the runner-up's, computed here from the embedding matrix)."""
    table = model.get_input_embeddings().weight.detach().float()  # (V, D)
    weight = table[token] - table.mean(0)
    scores = table @ weight  # (V,)
    runner_up = float(scores[torch.arange(len(scores)) != token].max())
    return SequenceGate(site="model.embed_tokens", weight=weight, pooling=pooling,
                        bias=-(runner_up + float(scores[token])) / 2)


def _logits(model, tokenizer, texts, maps):
    from act_core.hf import steering

    batch = tokenizer(texts, return_tensors="pt", padding=True, padding_side="right")
    with torch.no_grad(), steering(model, maps, 1.0, "unbounded"):
        return model(**batch).logits  # (B, T, V)


def test_a_sequence_is_unchanged_until_its_first_token_that_passes(tiny):
    model, tokenizer, gated, plain = tiny
    texts = ["the dog sat on the mat", "the dog Zat on the mat"]
    base = _logits(model, tokenizer, texts, None)
    steered = _logits(model, tokenizer, texts, gated)
    where = texts[1].index("Z")  # byte-level tokenizer: one token per character
    assert torch.equal(steered[0], base[0])  # no Z: bit for bit
    assert torch.equal(steered[1, :where], base[1, :where])  # before Z: bit for bit
    assert not torch.allclose(steered[1, where:], base[1, where:])  # from Z on: steered
    # a Z right after the first token steers everything but the first token, like the
    # ungated maps that leave the first token alone
    from act_core.hf import steering

    batch = tokenizer(["aZ dog sat"], return_tensors="pt")
    with torch.no_grad(), steering(model, plain, 1.0, "unbounded", skip_first_token=True):
        expected = model(**batch).logits
    with torch.no_grad(), steering(model, gated, 1.0, "unbounded", skip_first_token=True):
        got = model(**batch).logits
    assert torch.allclose(got, expected, atol=1e-5)


def test_prompt_pooling_steers_a_whole_prompt_once_any_token_passes(tiny):
    model, tokenizer, gated, _ = tiny
    whole = MapSet(dict(gated), {}, dataclasses.replace(gated.sequence_gate, pooling="prompt"))
    texts = ["the dog sat on the mat", "the dog Zat on the mat"]
    base = _logits(model, tokenizer, texts, None)
    causal = _logits(model, tokenizer, texts, gated)
    steered = _logits(model, tokenizer, texts, whole)
    where = texts[1].index("Z")
    assert torch.equal(steered[0], base[0])  # no Z anywhere: bit for bit
    assert not torch.allclose(steered[1, 1:where], base[1, 1:where])  # before Z: steered too
    assert torch.equal(causal[1, :where], base[1, :where])  # (the causal gate is not)
    # in one forward call the look-ahead pooling is the prompt pooling
    draft = MapSet(dict(gated), {}, dataclasses.replace(gated.sequence_gate, pooling="draft"))
    assert torch.equal(_logits(model, tokenizer, texts, draft), steered)


def test_the_default_gate_reads_after_2_layers_looks_ahead_and_a_shallow_model_is_told(tiny):
    from act_core.hf.gating import fit_lm_sequence_gate

    model, tokenizer, _, _ = tiny  # 2 decoder layers
    with pytest.raises(ValueError, match=r"1\.\.2 for this model, found 3.*--reader-layers"):
        fit_lm_sequence_gate(model, tokenizer, ["QQ XX"], ["the cat"], reader=3)
    source, target = ["QQ XX 1", "QQ XX 2"], ["the cat 1", "the cat 2"]
    gate = fit_lm_sequence_gate(model, tokenizer, source, target)
    assert gate.site == "model.layers.1" and gate.pooling == "draft" and gate.margin == 0.1
    strict = fit_lm_sequence_gate(model, tokenizer, source, target, margin=0.0)
    assert strict.bias > gate.bias and torch.equal(strict.weight, gate.weight)


def test_generation_stays_bit_identical_while_the_gate_is_off(tiny):
    from act_core.hf.generate import generate

    model, tokenizer, gated, plain = tiny
    prompts = ["the weather is", "a dog and a cat", "hello"]
    base = generate(model, tokenizer, prompts, None, do_sample=False, max_new_tokens=12)
    assert not any("Z" in p + b for p, b in zip(prompts, base))  # the gate never opens
    assert generate(model, tokenizer, prompts, gated, do_sample=False,
                    max_new_tokens=12) == base
    sampled = generate(model, tokenizer, prompts, None, max_new_tokens=12, seed=3)
    if not any("Z" in s for s in sampled):
        assert generate(model, tokenizer, prompts, gated, max_new_tokens=12, seed=3) == sampled
    # a prompt with Z is steered from there on (the ungated maps change it too)
    hit = ["the Z weather is"]
    assert generate(model, tokenizer, hit, plain, do_sample=False, max_new_tokens=12) != \
        generate(model, tokenizer, hit, None, do_sample=False, max_new_tokens=12)
    assert generate(model, tokenizer, hit, gated, do_sample=False, max_new_tokens=12) != \
        generate(model, tokenizer, hit, None, do_sample=False, max_new_tokens=12)


def test_draft_pooling_regenerates_with_the_maps_only_where_the_draft_passes(tiny):
    from act_core.hf.generate import generate

    model, tokenizer, _, plain = tiny
    prompts = ["the weather is", "a dog and a cat", "hello"]
    enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    with torch.no_grad():
        ids = model.generate(**enc, max_new_tokens=12, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    width = enc["input_ids"].shape[1]
    others = set(ids[1:].flatten().tolist()) | set(ids[0, :width].tolist())
    token = next(t for t in ids[0, width:].tolist() if t not in others)  # in draft 0 only
    base = generate(model, tokenizer, prompts, None, do_sample=False, max_new_tokens=12)
    drafted = generate(model, tokenizer, prompts, MapSet(plain, {}, _gate_on_token(
        model, token, "draft")), do_sample=False, max_new_tokens=12)
    assert drafted[1:] == base[1:]  # drafts that never pass: the unsteered text
    assert drafted[0] == generate(model, tokenizer, prompts[:1], plain, do_sample=False,
                                  max_new_tokens=12)[0] != base[0]  # as the ungated maps
    # return_steered says which continuations the maps wrote: the draft that passed only
    texts, steered = generate(model, tokenizer, prompts, MapSet(plain, {}, _gate_on_token(
        model, token, "draft")), do_sample=False, max_new_tokens=12, return_steered=True)
    assert texts == drafted and steered == [True, False, False]
    assert generate(model, tokenizer, prompts, None, do_sample=False, max_new_tokens=4,
                    return_steered=True)[1] == [False] * 3
    assert generate(model, tokenizer, prompts, plain, 0.0, do_sample=False, max_new_tokens=4,
                    return_steered=True)[1] == [False] * 3
    assert generate(model, tokenizer, prompts, plain, do_sample=False, max_new_tokens=4,
                    return_steered=True)[1] == [True] * 3
    # the causal gate only steers from the token on, which the prompt does not have
    causal = generate(model, tokenizer, prompts, MapSet(plain, {}, _gate_on_token(
        model, token, "max")), do_sample=False, max_new_tokens=12)
    assert causal[0] != drafted[0]


def test_a_draft_gate_in_a_list_drafts_with_the_other_sets_and_adds_its_own_where_it_passes(
        tiny):
    """A base set at 0.5 everywhere, the same maps behind a ``draft`` gate on top: the draft is
    the base set's text; a passing draft is written again with both sets."""
    from act_core.errors import MapError
    from act_core.hf import steering
    from act_core.hf.generate import generate, perplexity, steering_many

    model, tokenizer, gated, plain = tiny
    prompts = ["the weather is", "a dog and a cat", "hello"]
    enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    with torch.no_grad(), steering(model, plain, 0.5, "unbounded"):
        ids = model.generate(**enc, max_new_tokens=12, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    width = enc["input_ids"].shape[1]
    others = set(ids[1:].flatten().tolist()) | set(ids[0, :width].tolist())
    token = next(t for t in ids[0, width:].tolist() if t not in others)  # in draft 0 only
    on_top = MapSet(plain, {}, _gate_on_token(model, token, "draft"))
    kw = {"do_sample": False, "max_new_tokens": 12, "support": "unbounded"}
    base = generate(model, tokenizer, prompts, plain, 0.5, **kw)
    both = generate(model, tokenizer, prompts[:1], [plain, plain], [0.5, 1.0], **kw)[0]
    texts, steered = generate(model, tokenizer, prompts, [plain, on_top], [0.5, 1.0],
                              return_steered=True, **kw)
    assert texts[1:] == base[1:]  # drafts that never pass: the base set's text
    assert texts[0] == both != base[0]  # the passing draft: both sets, the gate ungated
    assert steered == [True, False, False]  # which texts the gated set wrote
    # the gated set at strength 0 is left out: the base set alone
    assert generate(model, tokenizer, prompts, [plain, on_top], [0.5, 0.0], **kw) == base
    with pytest.raises(MapError, match=r"2 of the map sets have a sequence gate.*draft"):
        generate(model, tokenizer, prompts, [on_top, on_top], [0.5, 1.0], **kw)
    # perplexity and steering_many honour a sequence gate in a list (once applied ungated)
    quiet, loud = ["the dog sat on the mat"], ["the dog Zat on the mat"]
    z_draft = MapSet(dict(gated), {}, dataclasses.replace(gated.sequence_gate,
                                                          pooling="draft"))
    assert perplexity(model, tokenizer, quiet, [plain, z_draft], [0.5, 1.0], "unbounded") == \
        perplexity(model, tokenizer, quiet, plain, 0.5, "unbounded")
    assert perplexity(model, tokenizer, loud, [plain, z_draft], [0.5, 1.0], "unbounded") == \
        pytest.approx(perplexity(model, tokenizer, loud, [plain, plain], [0.5, 1.0],
                                 "unbounded"), rel=1e-5)
    # in one batch, each text gets its own sets: the summed log-likelihoods add up
    import math

    def nll(texts, sets, strengths):  # total negative log-likelihood of the predicted tokens
        count = sum(len(ids) - 1 for ids in tokenizer(texts)["input_ids"])
        return count * math.log(perplexity(model, tokenizer, texts, sets, strengths,
                                           "unbounded"))

    assert nll(quiet + loud, [plain, z_draft], [0.5, 1.0]) == pytest.approx(
        nll(quiet, plain, 0.5) + nll(loud, [plain, plain], [0.5, 1.0]), rel=1e-5)
    # a gate read after layer 0, which the base set moves: perplexity decides on the unsteered
    # reading, as a draft is read, although the base set is applied around it
    read = {}
    hook = model.model.layers[0].register_forward_hook(
        lambda mod, args, out: read.__setitem__("x", (out[0] if isinstance(out, tuple)
                                                      else out)[0, 1:]))
    try:
        batch = tokenizer(loud, return_tensors="pt")
        weights = torch.randn(16, model.config.hidden_size,
                              generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            model(**batch)
            unsteered = (read["x"] @ weights.T).max(dim=0).values  # (16,) per weight
            with steering(model, plain, 0.5, "unbounded"):
                model(**batch)
            moved = (read["x"] @ weights.T).max(dim=0).values
    finally:
        hook.remove()
    k = int((unsteered - moved).argmax())  # a direction the base set lowers
    assert unsteered[k] > moved[k]
    after0 = MapSet(plain, {}, SequenceGate(site="model.layers.0", weight=weights[k],
                                            pooling="draft",
                                            bias=-float(unsteered[k] + moved[k]) / 2))
    assert perplexity(model, tokenizer, loud, [plain, after0], [0.5, 1.0], "unbounded") == \
        pytest.approx(perplexity(model, tokenizer, loud, [plain, plain], [0.5, 1.0],
                                 "unbounded"), rel=1e-5)
    batch = tokenizer(quiet, return_tensors="pt")
    with torch.no_grad():
        alone = model(**batch).logits
        with steering_many(model, [gated], [1.0], "unbounded"):
            assert torch.equal(model(**batch).logits, alone)  # Z never seen: bit for bit


def test_file_is_format_3_older_readers_refuse_it_and_info_shows_the_gate(tiny, tmp_path,
                                                                         monkeypatch, capsys):
    _, _, gated, plain = tiny
    path, old = tmp_path / "seq.safetensors", tmp_path / "plain.safetensors"
    save_maps(path, gated, {"concept": "x"})
    save_maps(old, plain)
    loaded = load_maps(path)
    assert loaded.metadata["version"] == 3 and load_maps(old).metadata["version"] == 1
    back = loaded.sequence_gate
    assert torch.equal(back.weight, gated.sequence_gate.weight)
    assert back.bias == gated.sequence_gate.bias and back.site == "model.embed_tokens"
    assert back.pooling == "max" and back.margin == 0.0
    assert back.heldout_source_on is None and back.heldout_target_on is None  # not measured
    draft = MapSet(dict(gated), {}, dataclasses.replace(
        gated.sequence_gate, pooling="draft", margin=0.25, heldout_source_on=0.375,
        heldout_target_on=0.0625))
    save_maps(tmp_path / "draft.safetensors", draft)
    again = load_maps(tmp_path / "draft.safetensors")
    assert again.sequence_gate.pooling == "draft" and again.sequence_gate.margin == 0.25
    assert (again.sequence_gate.heldout_source_on, again.sequence_gate.heldout_target_on) == (
        0.375, 0.0625)
    assert again.metadata["version"] == 4  # a reader of format 3 knows no look-ahead
    monkeypatch.setattr(mapfile_module, "VERSION", 3)
    with pytest.raises(MapFileError, match="newer act_core .format version 4"):
        load_maps(tmp_path / "draft.safetensors")
    assert load_maps(path).metadata["version"] == 3
    monkeypatch.undo()
    assert load_maps(old).sequence_gate is None
    # a reader of format 2 (per-site gates, the check unchanged) refuses the file
    monkeypatch.setattr(mapfile_module, "VERSION", 2)
    with pytest.raises(MapFileError, match="newer act_core .format version 3"):
        load_maps(path)
    monkeypatch.undo()
    from act_core.hf.cli import main

    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "format version 3, one sequence gate" in out
    assert "sequence gate at model.embed_tokens" in out


def test_export_refuses_a_sequence_gate_and_gate_off_drops_it(tiny):
    _, _, gated, _ = tiny
    with pytest.raises(FoldError, match="sequence gate at model.embed_tokens"):
        check_ungated(gated, "a folded checkpoint")
    off = select_gate(gated, "off")
    assert isinstance(off, MapSet) and off.sequence_gate is None
    check_ungated(off, "a folded checkpoint")
    assert select_gate(gated, "learned").sequence_gate is gated.sequence_gate
    with pytest.raises(Exception, match="site"):
        dataclasses.replace(gated.sequence_gate, site="")


def test_act_fit_gate_sequence_writes_a_gate_that_generate_uses_or_ignores(tmp_path, capsys):
    import json

    from act_core.hf.cli import main
    from harness.hf_tiny import tiny_causal_lm

    model, tokenizer = tiny_causal_lm("llama")
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    (tmp_path / "src.txt").write_text("you QQ fool\nQQ off now\nwhat a QQ day\nthe QQ cat\n")
    (tmp_path / "tgt.txt").write_text("you kind one\ngo off now\nwhat a nice day\nthe big cat\n")
    out = tmp_path / "m.safetensors"
    assert main(["fit", "--model", str(tmp_path / "model"), "--source", str(tmp_path / "src.txt"),
                 "--target", str(tmp_path / "tgt.txt"), "--sites", "post_norms",
                 "--all-at-once", "--gate", "sequence", "--reader-layers", "1",
                 "--gate-pooling", "max", "--gate-margin", "0", "-o", str(out)]) == 0
    loaded = load_maps(out)
    assert loaded.sequence_gate.site == "model.layers.0" and loaded.metadata["version"] == 3
    assert all(tmap.gate is None for tmap in loaded.values())  # one gate, not one per site
    capsys.readouterr()
    args = ["generate", "--model", str(tmp_path / "model"), "--prompt", "hello",
            "--prompt", "the QQ dog", "--max-new-tokens", "6", "--greedy", "--json",
            "--strength", "3", "--support", "unbounded", "--maps", str(out)]
    runs = {}
    for gate in ("learned", "off"):
        assert main(args + ["--gate", gate]) == 0
        runs[gate] = [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()]
    from act_core.gate import ungated
    from act_core.hf.generate import generate

    prompts = ["hello", "the QQ dog"]
    for gate, maps in (("learned", loaded), ("off", ungated(loaded))):
        assert runs[gate] == generate(model, tokenizer, prompts, maps, 3.0, "unbounded",
                                      max_new_tokens=6, do_sample=False, batch_size=16)
    assert runs["learned"] != runs["off"]
    # --gate-quantile lowers the threshold; the file keeps it (and the default look-ahead
    # pooling and margin) and act info shows it
    lower = tmp_path / "q.safetensors"
    assert main(["fit", "--model", str(tmp_path / "model"), "--source", str(tmp_path / "src.txt"),
                 "--target", str(tmp_path / "tgt.txt"), "--sites", "post_norms",
                 "--all-at-once", "--gate", "sequence", "--reader-layers", "1",
                 "--gate-quantile", "0.5", "-o", str(lower)]) == 0
    back = load_maps(lower).sequence_gate
    assert back.quantile == 0.5 and loaded.sequence_gate.quantile == 1.0
    assert back.margin == 0.1 and back.pooling == "draft"  # the defaults
    assert torch.equal(back.weight, loaded.sequence_gate.weight)
    assert back.bias > loaded.sequence_gate.bias and back.target_on > 0.0
    capsys.readouterr()
    assert main(["info", str(lower)]) == 0
    shown = capsys.readouterr().out
    assert "q0.5 +0.1 sd step" in shown
    # the words the gate learned: those holding a token each source line has and its pair lacks,
    # counted per line. The tiny tokenizer is one token per character (the first never counts)
    src = (tmp_path / "src.txt").read_text().splitlines()
    tgt = (tmp_path / "tgt.txt").read_text().splitlines()
    expected: dict = {}
    for s_line, t_line in zip(src, tgt, strict=True):
        start = 0
        for word in s_line.split():
            at = s_line.index(word, start)
            start = at + len(word)
            if any(ch not in t_line for k, ch in enumerate(word) if at + k > 0):
                expected[word] = expected.get(word, 0) + 1
    assert expected == {"QQ": 4, "fool": 1}  # QQ in every line, "fool" against "one"
    words = load_maps(lower).metadata["extra"]["gate_words"]
    assert words == expected and list(words)[0] == "QQ"  # the most shown first
    assert "sequence gate learned from 2 distinct words: QQ, fool (it may miss" in shown
    # act generate with the look-ahead gate: each JSON line says whether the maps wrote it, and
    # a line on stderr says how many did; a continuation not steered is the unsteered text
    draft = tmp_path / "draft.safetensors"  # the strict threshold, looking ahead
    assert main(["fit", "--model", str(tmp_path / "model"), "--source", str(tmp_path / "src.txt"),
                 "--target", str(tmp_path / "tgt.txt"), "--sites", "post_norms",
                 "--all-at-once", "--gate", "sequence", "--reader-layers", "1",
                 "--gate-margin", "0", "-o", str(draft)]) == 0
    prompts = ["what a nice day", "the QQ dog", "go off now", "you QQ"]
    args = ["generate", "--model", str(tmp_path / "model"), "--max-new-tokens", "2", "--greedy",
            "--json", "--strength", "3", "--support", "unbounded"]
    args += [part for prompt in prompts for part in ("--prompt", prompt)]
    texts = {}
    for run in ("plain", "off", "draft"):
        capsys.readouterr()
        assert main(args + {"plain": [], "off": ["--maps", str(draft), "--gate", "off"],
                            "draft": ["--maps", str(draft)]}[run]) == 0
        out = capsys.readouterr()
        texts[run] = [json.loads(line) for line in out.out.splitlines()]
    flags = [line["steered"] for line in texts["draft"]]
    # QQ passes; a target line passes only where its (random) draft does, and one does not
    assert flags[1] and flags[3] and not all(flags)
    assert [line["steered"] for line in texts["off"]] == [True] * 4
    for k, flag in enumerate(flags):  # steered: the maps' text; not: the unsteered model's
        assert texts["draft"][k]["text"] == texts["off" if flag else "plain"][k]["text"]
    assert texts["off"][1]["text"] != texts["plain"][1]["text"]
    assert f"the sequence gate read {sum(flags)} of 4 continuations as the source" in out.err
    # the same gated file on top of an ungated one: drafts are the ungated maps' text, and the
    # gate's passes are written again with both; stderr counts those
    plain = tmp_path / "plain.safetensors"
    assert main(["fit", "--model", str(tmp_path / "model"), "--source", str(tmp_path / "src.txt"),
                 "--target", str(tmp_path / "tgt.txt"), "--sites", "post_norms",
                 "--all-at-once", "-o", str(plain)]) == 0
    runs = {}
    for run, extra in (("base", ["--maps", str(plain), "--strength", "1"]),
                       ("both", ["--maps", str(plain), "--maps", str(draft), "--strength", "1",
                                 "--strength", "3"])):
        capsys.readouterr()
        assert main([part for part in args if part not in ("--strength", "3")] + extra) == 0
        out = capsys.readouterr()
        runs[run] = [json.loads(line) for line in out.out.splitlines()]
    on_top = [line["steered"] for line in runs["both"]]
    assert on_top[1] and on_top[3] and not all(on_top)
    for k, flag in enumerate(on_top):
        if not flag:  # the draft, kept: the ungated file's text at strength 1
            assert runs["both"][k]["text"] == runs["base"][k]["text"]
    assert runs["both"][1]["text"] != runs["base"][1]["text"]
    assert (f"the sequence gate read {sum(on_top)} of 4 continuations as the source and wrote "
            "them with its maps too; the others are the other maps' text") in out.err
