"""Gated maps (act_core.gate): the gate's range, identity at lambda 0, non-source inputs left
alone, the map file (format 2, refused by format-1 readers), refusal to fold or export, and a
gated fit on a tiny config-built Llama."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from act_core import MapSet, fit, load_maps, save_maps, transport_output
from act_core import mapfile as mapfile_module
from act_core.errors import MapFileError
from act_core.fold import FoldError, check_foldable
from act_core.gate import fit_gate, gate_maps, gate_values, select_gate, ungated
from act_core.hf.gguf_export import control_vectors


def _clouds(n: int, d: int = 16, seed: int = 0, offset: float = 3.0):
    """Source and target samples (n, d) that differ in their first four units."""
    gen = torch.Generator().manual_seed(seed)
    target = torch.randn(n, d, generator=gen)
    source = torch.randn(n, d, generator=gen)
    source[:, :4] += offset
    return source, target


def _gated(mode: str = "tokens", pooling: str = "item", d: int = 16):
    source, target = _clouds(64, d)
    tmap = fit(source, target, "linear_act", mode=mode)
    return gate_maps({"s": tmap}, {"s": source}, {"s": target}, pooling)["s"], tmap


def test_gate_is_in_unit_range_and_separates_held_out_samples():
    source, target = _clouds(64)
    gate = fit_gate(source, target)
    held_src, held_tgt = _clouds(200, seed=1)
    g_src, g_tgt = gate_values(held_src, gate, "vector"), gate_values(held_tgt, gate, "vector")
    for g in (g_src, g_tgt, gate_values(100 * torch.randn(50, 16), gate, "vector")):
        assert float(g.min()) >= 0.0 and float(g.max()) <= 1.0
    assert gate.auroc > 0.99 and gate.source_gate == 1.0 and gate.target_gate == 0.0
    assert float(g_src.mean()) > 0.9 and float(g_tgt.mean()) < 0.1
    assert float((g_tgt == 0).float().mean()) > 0.8  # most target-like inputs: exactly 0


def test_overlapping_samples_ramp_between_medians_or_strictly_above_every_target():
    source, target = _clouds(64, offset=0.5)  # overlapping scores
    balanced, strict = fit_gate(source, target), fit_gate(source, target, ramp="strict")
    assert 0.5 < balanced.auroc < 1.0
    assert 0.0 < balanced.target_gate < balanced.source_gate < 1.0
    assert strict.target_gate == 0.0 and 0.0 < strict.source_gate < balanced.source_gate


def test_strength_zero_and_gate_zero_leave_the_input_unchanged():
    gated, _ = _gated("vector")
    _, held_tgt = _clouds(32, seed=2)
    x = held_tgt
    assert transport_output(x, gated, 0.0, "unbounded") is x
    far = torch.zeros(4, 16)
    far[:, :4] = -10.0  # far on the target side: g = 0 exactly
    assert torch.equal(transport_output(far, gated, 1.0, "unbounded"), far)


def test_gated_map_moves_source_like_inputs_and_leaves_target_like_ones_nearly_alone():
    gated, plain = _gated("tokens", "item")
    held_src, held_tgt = _clouds(64, seed=3)
    src = held_src.reshape(8, 8, 16)  # (B, T, D): one g per item from the token mean
    tgt = held_tgt.reshape(8, 8, 16)
    moved_plain = (transport_output(tgt, plain, 1.0, "unbounded") - tgt).abs().mean()
    moved_gated = (transport_output(tgt, gated, 1.0, "unbounded") - tgt).abs().mean()
    assert float(moved_gated) < 0.05 * float(moved_plain)
    want = transport_output(src, plain, 1.0, "unbounded")
    got = transport_output(src, gated, 1.0, "unbounded")
    assert torch.allclose(got, want, atol=1e-5)  # source-like items: g = 1


def test_channel_and_token_gates_scale_the_transport_per_item_and_per_token():
    gated, plain = _gated("channels")
    held_src, held_tgt = _clouds(2, seed=4)
    x = torch.stack([held_src[0], held_tgt[0]])[:, :, None, None].expand(2, 16, 3, 3)
    g = gate_values(x, gated.gate, "channels")
    y, y_plain = (transport_output(x, m, 0.5, "unbounded") for m in (gated, plain))
    expected = x + g.view(2, 1, 1, 1) * (y_plain - x)
    assert torch.allclose(y, expected, atol=1e-5)
    token_gated, _ = _gated("tokens", "token")
    tokens = torch.stack([held_src, held_tgt], dim=1)  # (2, 2, D): one source, one target token
    g_tok = gate_values(tokens, token_gated.gate, "tokens")
    assert g_tok.shape == (2, 2) and bool((g_tok[:, 0] > g_tok[:, 1]).all())


def test_prefix_gate_carries_its_running_mean_across_decoding_calls():
    gated, _ = _gated("tokens", "prefix")
    x = torch.randn(3, 7, 16)
    full = gate_values(x, gated.gate, "tokens")  # (B, T)
    expected = torch.clamp((x @ gated.gate.weight).cumsum(1) / torch.arange(1, 8)
                           + gated.gate.bias, 0, 1)
    assert torch.allclose(full, expected, atol=1e-5)
    state: dict = {}
    first = gate_values(x[:, :5], gated.gate, "tokens", state)
    steps = [gate_values(x[:, t:t + 1], gated.gate, "tokens", state) for t in (5, 6)]
    assert torch.allclose(torch.cat([first, *steps], dim=1), full, atol=1e-5)


def test_a_held_gate_is_decided_at_the_first_call_and_kept():
    from act_core.apply import TransportPlan

    gated, _ = _gated("vector")
    model = torch.nn.Sequential(torch.nn.Identity())
    plan = TransportPlan(model, {"0": gated}, "unbounded")
    held_src, held_tgt = _clouds(4, seed=5)
    states: dict = {}
    with plan.applied(1.0, states):
        first = model(held_tgt)  # target-like: g = 0, unchanged
    assert torch.equal(first, held_tgt)
    with plan.applied(1.0, states):
        later = model(held_src)  # source-like input, but the gate decided at the first call
    assert torch.equal(later, held_src)
    with plan.applied(1.0):  # no held state: decided per call
        assert not torch.equal(model(held_src), held_src)


def test_gated_file_round_trip_is_format_2_and_format_1_readers_refuse_it(tmp_path,
                                                                          monkeypatch, capsys):
    gated, plain = _gated("tokens", "token")
    path, old = tmp_path / "gated.safetensors", tmp_path / "plain.safetensors"
    save_maps(path, {"s": gated}, {"concept": "x"})
    save_maps(old, {"s": plain})
    loaded = load_maps(path)
    assert loaded.metadata["version"] == 2 and load_maps(old).metadata["version"] == 1
    back = loaded["s"].gate
    assert torch.equal(back.weight, gated.gate.weight) and back.bias == gated.gate.bias
    assert back.pooling == "token" and back.auroc == pytest.approx(gated.gate.auroc)
    assert load_maps(old)["s"].gate is None
    # a reader of format 1 (the version check of act_core 0.1.0, unchanged) refuses the file
    monkeypatch.setattr(mapfile_module, "VERSION", 1)
    with pytest.raises(MapFileError, match="newer act_core .format version 2"):
        load_maps(path)
    assert load_maps(old)["s"].gate is None  # today's files still load
    monkeypatch.undo()
    from act_core.hf.cli import main

    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "gated (1 sites)" in out and "gate(token) auroc=" in out


def test_fold_and_exports_refuse_gated_maps_with_the_reason():
    gated, _ = _gated("tokens")
    layer = torch.nn.LayerNorm(16)
    with pytest.raises(FoldError, match="gated.*depends on the input"):
        check_foldable(layer, gated, "norm")
    check_foldable(layer, dataclasses.replace(gated, gate=None), "norm")
    shift = dataclasses.replace(gated, scale=torch.ones(16))
    with pytest.raises(FoldError, match="gated"):
        control_vectors({"model.layers.1.mlp.down_proj": shift})
    maps = MapSet({"s": gated}, {"x": 1})
    plain = select_gate(maps, "off")
    assert isinstance(plain, MapSet) and plain["s"].gate is None and ungated(plain) is plain
    assert select_gate(maps, "learned")["s"].gate is not None
    inverse = gated.inverse()
    x = torch.randn(5, 16)
    assert torch.allclose(gate_values(x, inverse.gate, "vector"),
                          1 - gate_values(x, gated.gate, "vector"), atol=1e-6)


def test_gated_fit_on_a_tiny_llama_leaves_target_like_text_nearly_unchanged():
    pytest.importorskip("transformers")
    from act_core.hf import fit_lm, steering
    from act_core.hf.export import fold_lm
    from harness.hf_tiny import tiny_causal_lm

    model, tokenizer = tiny_causal_lm("llama")
    source = [f"ZZZZ QQQQ XXXX {i} WWWW" for i in range(12)]
    target = [f"the cat sat on mat {i}" for i in range(12)]
    maps = fit_lm(model, tokenizer, source, target, "post_norms", incremental=False,
                  gate=True)
    assert all(tmap.gate is not None and tmap.gate.pooling == "token" for tmap in maps.values())
    held_src, held_tgt = ["ZZZZ XXXX QQQQ 77"], ["the dog sat on mat 77"]

    def logits(texts, m):
        batch = tokenizer(texts, return_tensors="pt")
        with torch.no_grad(), steering(model, m, 1.0, "unbounded"):
            return model(**batch).logits

    changes = {}
    for name, texts in (("source", held_src), ("target", held_tgt)):
        base = logits(texts, None)
        changes[name] = tuple(float((logits(texts, m) - base).abs().mean())
                              for m in (maps, ungated(maps)))
    gated_tgt, plain_tgt = changes["target"]
    gated_src, plain_src = changes["source"]
    # per-token gates read a pooled probe on single tokens: measured 0.27x here
    assert gated_tgt < 0.5 * plain_tgt  # target-like text: far less change than ungated
    assert gated_src > 0.5 * plain_src  # source-like text: still steered
    with pytest.raises(FoldError, match="gated"):
        fold_lm(model, maps, 1.0)


def test_heldout_auroc_sees_through_a_discriminant_that_fits_noise():
    from act_core.gate import heldout_auroc, separation_auroc

    gen = torch.Generator().manual_seed(5)
    same_src, same_tgt = torch.randn(32, 200, generator=gen), torch.randn(32, 200, generator=gen)
    gate = fit_gate(same_src, same_tgt)  # one distribution, 200 units for 64 samples
    assert gate.auroc > 0.95  # on its own samples the discriminant finds a difference...
    assert abs(gate.heldout_auroc - 0.5) < 0.2  # ...that samples it was not fitted on lack
    apart_src, apart_tgt = _clouds(64)
    assert fit_gate(apart_src, apart_tgt).heldout_auroc > 0.95
    # the definition: each half scored by a discriminant fitted on the other half, by hand
    first, second = (apart_src[:32], apart_tgt[:32]), (apart_src[32:], apart_tgt[32:])
    by_hand = []
    for (fs, ft), (hs, ht) in ((first, second), (second, first)):
        fs, ft, hs, ht = (x.double() for x in (fs, ft, hs, ht))
        pooled = (((fs - fs.mean(0)) ** 2).sum(0) + ((ft - ft.mean(0)) ** 2).sum(0)) / 62
        w = (fs.mean(0) - ft.mean(0)) / (pooled + 1e-3 * float(pooled.mean()) + 1e-12)
        by_hand.append(separation_auroc(hs @ w, ht @ w))
    assert heldout_auroc(apart_src, apart_tgt) == pytest.approx(sum(by_hand) / 2)
    assert heldout_auroc(apart_src[:1], apart_tgt) is None


def test_gate_report_sums_up_the_gates_and_warns_when_they_cannot_tell_the_sets_apart(tmp_path):
    from act_core.info import WEAK_GATE_AUROC, gate_report

    gen = torch.Generator().manual_seed(6)
    apart_src, apart_tgt = _clouds(64)
    same = [(torch.randn(32, 200, generator=gen), torch.randn(32, 200, generator=gen))
            for _ in range(2)]
    samples = {"apart": (apart_src, apart_tgt), "same1": same[0], "same2": same[1]}
    maps = {site: fit(src, tgt, "linear_act", mode="vector")
            for site, (src, tgt) in samples.items()}
    assert gate_report(maps) == ("", [])  # no gate, nothing to say
    gated = gate_maps(maps, {k: v[0] for k, v in samples.items()},
                      {k: v[1] for k, v in samples.items()})
    held = sorted(gated[site].gate.heldout_auroc for site in samples)
    assert held[1] < WEAK_GATE_AUROC < held[2]  # two of three sites cannot tell them apart
    text, warnings = gate_report(gated)
    assert text.startswith("gates: 3 of 3 sites; AUROC median ")
    assert f", {held[1]:.2f} held out (lowest {held[0]:.2f} at same" in text
    assert len(warnings) == 1 and "barely tell the source from the target" in warnings[0]
    one = {"apart": gated["apart"], "same1": gated["same1"]}  # median of 2: above the bound
    assert gate_report(one)[1] == [] and gate_report(ungated(MapSet(gated, {}))) == ("", [])
    # the held-out AUROC travels in the map file (act info reads it back)
    save_maps(tmp_path / "g.safetensors", MapSet(gated, {}))
    back = load_maps(tmp_path / "g.safetensors")
    assert [back[s].gate.heldout_auroc for s in samples] == \
        [gated[s].gate.heldout_auroc for s in samples]
    assert gate_report(back) == gate_report(gated)
    from act_core import describe_maps

    shown = describe_maps(back, "g.safetensors")  # what act info prints
    assert gate_report(gated)[0] in shown.splitlines()
    assert f"held-out auroc={back['apart'].gate.heldout_auroc:.2f}" in shown
