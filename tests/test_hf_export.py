"""``act export``: maps folded into a transformers checkpoint of the model's own architecture.

Tiny config-built Llama (no downloads). The exported folder, loaded by plain
``AutoModelForCausalLM.from_pretrained`` in a fresh interpreter that cannot import this package,
must give the hooked model's logits and greedy tokens; what does not fold exactly is refused.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from act_core import MapSet, TransportMap
from act_core.fold import FoldError
from act_core.hf import steering
from act_core.hf.export import export_checkpoint, fold_lm
from harness.hf_tiny import tiny_causal_lm

SITES = ("model.layers.0.input_layernorm", "model.layers.0.self_attn.o_proj",
         "model.layers.0.post_attention_layernorm", "model.layers.1.mlp.down_proj",
         "model.layers.1.input_layernorm", "model.layers.1.post_attention_layernorm")
PROMPTS = ["hello world", "the cat sat on", "a b c", "Once upon a time"]


def _tmap(d: int, gen: torch.Generator, shift: bool = True, scale: bool = True) -> TransportMap:
    levels = torch.linspace(-3, 3, 13).unsqueeze(1).expand(13, d).contiguous()
    return TransportMap(
        scale=0.6 + 0.8 * torch.rand(d, generator=gen) if scale else torch.ones(d),
        shift=0.5 * torch.randn(d, generator=gen) if shift else torch.zeros(d),
        lo=-3 * torch.ones(d), hi=3 * torch.ones(d), quantiles=levels, method="test")


def _maps(sites=SITES, final_norm_shift: bool = False, **meta) -> MapSet:
    gen = torch.Generator().manual_seed(0)
    maps = {site: _tmap(32, gen) for site in sites}
    maps["model.norm"] = _tmap(32, gen, shift=final_norm_shift)
    return MapSet(maps, {"support": "unbounded", **meta})


@pytest.fixture(scope="module")
def lm():
    return tiny_causal_lm("llama", seed=3)


def _greedy(model, tokenizer, new_tokens: int = 12) -> list[list[int]]:
    out = []
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        gen = model.generate(ids, max_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
        out.append(gen[0, ids.shape[1]:].tolist())
    return out


def test_folded_model_equals_the_hooked_one_and_the_input_is_unchanged(lm):
    model, tokenizer = lm
    maps = _maps()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    for strength in (0.5, 1.0):
        folded = fold_lm(model, maps, strength)
        assert folded.config.attention_bias and folded.config.mlp_bias
        with torch.no_grad(), steering(model, maps, strength, "unbounded"):
            hooked = model(**ids).logits
        with torch.no_grad():
            got = folded(**ids).logits
            plain = model(**ids).logits
        assert (hooked - plain).abs().max() > 0.05, "the maps should change the logits"
        torch.testing.assert_close(got, hooked, rtol=1e-4, atol=1e-4)
    after = model.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert not model.config.mlp_bias


@pytest.mark.slow  # a fresh Python process imports transformers
def test_exported_folder_loads_without_our_package_and_generates_the_same(lm, tmp_path):
    model, tokenizer = lm
    maps = _maps()
    out = export_checkpoint(model, tokenizer, maps, 0.8, tmp_path / "steered")
    with steering(model, maps, 0.8, "unbounded"):
        expected = _greedy(model, tokenizer)
    assert expected != _greedy(model, tokenizer), "the maps should change greedy tokens"
    script = (
        "import json, sys\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"folder, prompts = {str(out)!r}, {PROMPTS!r}\n"
        "model = AutoModelForCausalLM.from_pretrained(folder).eval()\n"
        "tok = AutoTokenizer.from_pretrained(folder)\n"
        "res = []\n"
        "for p in prompts:\n"
        "    ids = tok(p, return_tensors='pt').input_ids\n"
        "    g = model.generate(ids, max_new_tokens=12, do_sample=False,"
        " pad_token_id=tok.pad_token_id)\n"
        "    res.append(g[0, ids.shape[1]:].tolist())\n"
        "mods = [m for m in sys.modules if m.startswith('act_core')]\n"
        "print(json.dumps({'tokens': res, 'ours': mods, 'cls': type(model).__name__}))\n")
    # -I: isolated (no cwd, no PYTHONPATH, no user site): our package cannot be imported
    run = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["ours"] == [] and result["cls"] == "LlamaForCausalLM"
    assert result["tokens"] == expected
    assert json.loads((out / "config.json").read_text())["mlp_bias"] is True


@pytest.mark.parametrize(("maps", "support", "message"), [
    (_maps(), "minmax", "support is 'minmax'"),
    (_maps(), "q0.05-0.95", "support"),
    (_maps(extra={"skip_first_token": True}), "unbounded", "first token"),
    (_maps(final_norm_shift=True), "unbounded", "final norm"),
    (_maps(sites=("model.layers.0.self_attn.q_proj",)), "unbounded", "not one of the exportable"),
])
def test_what_does_not_fold_is_refused_with_the_reason(lm, maps, support, message):
    with pytest.raises(FoldError, match=message):
        fold_lm(lm[0], maps, 1.0, support)


def test_other_families_are_refused():
    model, _ = tiny_causal_lm("gpt2")
    gen = torch.Generator().manual_seed(0)
    maps = MapSet({"transformer.h.0.mlp.c_proj": _tmap(32, gen)}, {})
    with pytest.raises(FoldError, match="model_type"):
        fold_lm(model, maps, 1.0)
