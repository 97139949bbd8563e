"""Transformers integration on tiny config-built models of several families (no downloads)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from act_core import hf  # noqa: E402
from act_core.errors import MapCompatibilityError, SiteError  # noqa: E402
from act_core.hf.generate import generate, perplexity  # noqa: E402
from act_core.hf.presets import UnknownFamilyError  # noqa: E402
from harness.hf_tiny import tiny_causal_lm  # noqa: E402

SOURCE = ["you are a horrible person", "shut up", "what a stupid idea that was", "go away now"]
TARGET = ["you are a kind person", "thank you", "what a lovely idea that was", "come in please",
          "have a nice day"]

EXPECTED_POST_NORMS = {
    "llama": ["model.layers.0.input_layernorm", "model.layers.0.post_attention_layernorm"],
    "qwen2": ["model.layers.0.input_layernorm", "model.layers.0.post_attention_layernorm"],
    "gemma2": ["model.layers.0.post_attention_layernorm",
               "model.layers.0.post_feedforward_layernorm"],
    "gpt2": ["transformer.h.0.ln_1", "transformer.h.0.ln_2"],
}


@pytest.fixture(scope="module", params=["llama", "gpt2", "gemma2", "qwen2"])
def lm(request):
    return request.param, *tiny_causal_lm(request.param)


def _logits(model, tokenizer, text="hello world"):
    enc = tokenizer([text], return_tensors="pt")
    with torch.inference_mode():
        return model(**enc).logits


def test_presets_name_the_expected_modules(lm):
    family, model, _ = lm
    sites = [str(s) for s in hf.lm_sites(model, "post_norms")]
    assert sites[:2] == EXPECTED_POST_NORMS[family] and len(sites) == 4
    assert len(hf.lm_sites(model, "attn_out")) == 2
    assert hf.lm_sites(model) == hf.lm_sites(model, "attn_out")  # the default preset
    assert len(hf.lm_sites(model, "layernorms")) >= 5
    assert hf.model_hint(model)["hidden"] == 32 and hf.model_hint(model)["num_layers"] == 2


def test_batched_recording_ignores_padding(lm):
    _, model, tokenizer = lm
    texts = ["a", "a much longer text with many tokens", "mid length"]
    batched = hf.record_texts(model, tokenizer, texts, "post_norms", batch_size=3)
    single = hf.record_texts(model, tokenizer, texts, "post_norms", batch_size=1)
    for site in batched:
        assert batched[site].shape == (3, 32)
        torch.testing.assert_close(batched[site], single[site], atol=1e-4, rtol=1e-4)


def test_recording_matches_hidden_states_oracle():
    model, tokenizer = tiny_causal_lm("llama")
    texts = ["one two", "three four five six"]
    rec = hf.record_texts(model, tokenizer, texts, ["model.norm"], batch_size=2)["model.norm"]
    for i, text in enumerate(texts):
        enc = tokenizer([text], return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**enc, output_hidden_states=True).hidden_states[-1]  # after model.norm
        torch.testing.assert_close(rec[i], hidden[0].mean(0), atol=1e-5, rtol=1e-5)


def test_fit_and_steer_strength_zero_is_identity_and_hooks_are_removed(lm):
    _, model, tokenizer = lm
    maps = hf.fit_lm(model, tokenizer, SOURCE, TARGET, "post_norms", stages=2)
    assert len(maps) == 4 and all(m.dim == 32 for m in maps.values())
    base = _logits(model, tokenizer)
    with hf.steering(model, maps, 0.0):
        assert torch.equal(_logits(model, tokenizer), base)
    with hf.steering(model, maps, 1.0, "unbounded"):
        assert not torch.allclose(_logits(model, tokenizer), base)
    assert torch.equal(_logits(model, tokenizer), base)


def test_mean_act_moves_the_source_mean_onto_the_target_mean():
    model, tokenizer = tiny_causal_lm("llama")
    site = "model.layers.0.input_layernorm"
    maps = hf.fit_lm(model, tokenizer, SOURCE, TARGET, [site], method="mean_act")
    target = hf.record_texts(model, tokenizer, TARGET, [site])[site].mean(0)
    with hf.steering(model, maps, 1.0, "unbounded"):
        moved = hf.record_texts(model, tokenizer, SOURCE, [site])[site].mean(0)
    torch.testing.assert_close(moved, target, atol=1e-4, rtol=1e-4)


def test_map_files_carry_the_hint_and_refuse_other_models(tmp_path):
    model, tokenizer = tiny_causal_lm("llama")
    maps = hf.fit_lm(model, tokenizer, SOURCE, TARGET, "post_norms", incremental=False)
    path = hf.save_lm_maps(tmp_path / "m.safetensors", maps, model, source_texts=SOURCE,
                           target_texts=TARGET, metadata={"data": "test"})
    loaded = hf.load_lm_maps(path, model)
    assert loaded.metadata["model"]["family"] == "llama"
    assert loaded.metadata["model"]["name_or_path"] == "tiny-llama"
    assert loaded.metadata["prompt_hash"]
    gpt2, _ = tiny_causal_lm("gpt2")
    with pytest.raises(MapCompatibilityError, match="family 'llama'.*fit maps for this model"):
        hf.load_lm_maps(path, gpt2)
    deeper = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=259, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2))
    with pytest.raises(MapCompatibilityError, match="num_layers 2"):
        hf.load_lm_maps(path, deeper)


def test_unknown_family_and_bad_patterns_say_how_to_fix():
    model, _ = tiny_causal_lm("llama")
    model.config.model_type = "mystery"
    with pytest.raises(UnknownFamilyError, match="--sites"):
        hf.lm_sites(model, "post_norms")
    assert len(hf.lm_sites(model, ["re:model\\.layers\\.\\d+\\.input_layernorm"])) == 2
    with pytest.raises(SiteError):
        hf.lm_sites(model, ["nothing.matches.*"])


@pytest.mark.slow  # several seconds: left out of the fast command
def test_generate_is_seeded_ordered_and_steerable():
    model, tokenizer = tiny_causal_lm("llama")
    prompts = ["a longer prompt here", "hi", "medium one"]
    maps = hf.fit_lm(model, tokenizer, SOURCE, TARGET, "post_norms", incremental=False)
    one = generate(model, tokenizer, prompts, max_new_tokens=6, seed=3, batch_size=2)
    assert one == generate(model, tokenizer, prompts, max_new_tokens=6, seed=3, batch_size=2)
    greedy = generate(model, tokenizer, prompts, max_new_tokens=6, do_sample=False, batch_size=3)
    alone = [generate(model, tokenizer, [p], max_new_tokens=6, do_sample=False)[0]
             for p in prompts]
    assert greedy == alone  # left padding and re-ordering do not change results
    steered = generate(model, tokenizer, prompts, maps, 2.0, "unbounded", max_new_tokens=6,
                       do_sample=False, batch_size=3)
    assert steered != greedy


def test_perplexity_matches_the_model_loss():
    model, tokenizer = tiny_causal_lm("gpt2")
    text = "a short sentence to score"
    enc = tokenizer([text], return_tensors="pt")
    with torch.inference_mode():
        loss = model(**enc, labels=enc["input_ids"]).loss
    assert perplexity(model, tokenizer, [text]) == pytest.approx(float(loss.exp()), rel=1e-4)
    padded = perplexity(model, tokenizer, [text, "x y"], batch_size=2)
    assert padded == pytest.approx(
        perplexity(model, tokenizer, [text, "x y"], batch_size=1), rel=1e-4)


def test_fit_reports_progress_over_passes():
    model, tokenizer = tiny_causal_lm("llama")
    calls = []
    hf.fit_lm(model, tokenizer, SOURCE, TARGET, "attn_out", progress=lambda d, n: calls.append(
        (d, n)))
    assert calls == [(1, 3), (2, 3), (3, 3)]  # 1 target pass + 1 source pass per site


def test_skip_first_token_pools_the_other_tokens_only():
    model, tokenizer = tiny_causal_lm("llama")
    texts = ["one two", "three four five six", "x"]
    rec = hf.record_texts(model, tokenizer, texts, ["model.norm"], batch_size=3,
                          skip_first_token=True)["model.norm"]
    for i, text in enumerate(texts):
        enc = tokenizer([text], return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**enc, output_hidden_states=True).hidden_states[-1][0]
        expected = hidden[1:].mean(0) if hidden.shape[0] > 1 else hidden[0]  # one token: kept
        torch.testing.assert_close(rec[i], expected, atol=1e-5, rtol=1e-5)


def _first_token_logits(model, tokenizer, texts):
    """Logits at each text's first real token, in a left-padded batch: (B, V)."""
    enc = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left")
    with torch.inference_mode():
        logits = model(**enc).logits
    first = enc["attention_mask"].argmax(1)
    return logits[torch.arange(len(texts)), first], logits[:, -1]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_steering_leaves_the_first_token_alone_when_the_file_says_so(tmp_path, family):
    model, tokenizer = tiny_causal_lm(family)
    maps = hf.fit_lm(model, tokenizer, SOURCE, TARGET, "post_norms", stages=2,
                     skip_first_token=True)
    path = hf.save_lm_maps(tmp_path / "m.safetensors", maps, model, skip_first_token=True)
    loaded = hf.load_lm_maps(path, model)
    assert hf.skips_first_token(loaded) and not hf.skips_first_token(maps)
    texts = ["a much longer prompt here", "hi there", "mid"]
    base_first, base_last = _first_token_logits(model, tokenizer, texts)
    with hf.steering(model, loaded, 1.0, "unbounded"):  # the file's choice
        first, last = _first_token_logits(model, tokenizer, texts)
    # a causal model's first position sees only itself: unchanged exactly when it is skipped
    torch.testing.assert_close(first, base_first, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(last, base_last, atol=1e-3)
    with hf.steering(model, loaded, 1.0, "unbounded", skip_first_token=False):
        first, _ = _first_token_logits(model, tokenizer, texts)
    assert not torch.allclose(first, base_first, atol=1e-3)


@pytest.mark.slow  # several seconds: left out of the fast command
def test_skip_first_token_generation_is_the_same_batched_and_alone():
    model, tokenizer = tiny_causal_lm("llama")
    maps = hf.fit_lm(model, tokenizer, SOURCE, TARGET, "post_norms", incremental=False,
                     skip_first_token=True)
    prompts = ["a longer prompt here", "hi", "medium one"]
    options = {"max_new_tokens": 6, "do_sample": False}
    batched = generate(model, tokenizer, prompts, maps, 2.0, "unbounded", batch_size=3,
                       **options)
    with hf.steering(model, maps, 2.0, "unbounded", skip_first_token=True):
        skipped = generate(model, tokenizer, prompts, batch_size=3, **options)
    alone = []
    for prompt in prompts:
        with hf.steering(model, maps, 2.0, "unbounded", skip_first_token=True):
            alone += generate(model, tokenizer, [prompt], **options)
    assert skipped == alone  # left padding puts the first token elsewhere in each row
    assert skipped != batched  # a plain dict applies everywhere (skip_first_token is False)
