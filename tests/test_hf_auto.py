"""``act fit --sites auto`` on tiny config-built models: the presets are scored on held-out
texts by how much closer each one's maps bring the final norm's output to the target's; the
best is kept and recorded, and a pair of sets with nothing to bring closer is told so."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from act_core import load_maps  # noqa: E402
from act_core.hf.auto import CANDIDATES, choose_lm_sites, final_norm_site  # noqa: E402
from act_core.hf.cli import main  # noqa: E402
from harness.hf_tiny import tiny_causal_lm  # noqa: E402

SOURCE = [f"ZZZZ QQQQ XXXX {i} WWWW" for i in range(12)]
TARGET = [f"the cat sat on the mat {i}" for i in range(12)]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_the_final_norm_is_found_outside_the_blocks(family):
    model, _ = tiny_causal_lm(family)
    assert final_norm_site(model) == {"llama": "model.norm", "gpt2": "transformer.ln_f"}[family]


def test_auto_keeps_the_group_whose_maps_bring_held_out_texts_closest(tmp_path, capsys):
    model, tokenizer = tiny_causal_lm("llama")
    chosen, selection = choose_lm_sites(model, tokenizer, SOURCE, TARGET, support="unbounded")
    assert set(selection.scores) == set(CANDIDATES) and selection.heldout == (4, 4)
    assert chosen == CANDIDATES[selection.chosen]
    assert selection.scores[selection.chosen] == min(selection.scores.values())
    # texts this unlike: some group closes most of the held-out gap, so no warning
    assert selection.scores[selection.chosen] < 0.9 and not selection.warnings
    # the baseline: the held-out final-norm outputs, unsteered, compared here as samples (per
    # unit, sorted values against sorted values)
    from act_core.hf import record_texts

    out = final_norm_site(model)
    src = record_texts(model, tokenizer, SOURCE[8:], [out])[out].double()
    tgt = record_texts(model, tokenizer, TARGET[8:], [out])[out].double()
    by_hand = float((src.sort(0).values - tgt.sort(0).values).pow(2).mean())
    assert selection.baseline_gap == pytest.approx(by_hand) and not selection.paired
    # act fit --sites auto: the same choice, fitted on every text, recorded in the file
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    (tmp_path / "s.txt").write_text("\n".join(SOURCE) + "\n")
    (tmp_path / "t.txt").write_text("\n".join(TARGET) + "\n")
    args = ["fit", "--model", str(tmp_path / "m"), "--source", str(tmp_path / "s.txt"),
            "--target", str(tmp_path / "t.txt"), "--sites", "auto", "--all-at-once",
            "--auto-support", "unbounded", "-o", str(tmp_path / "a.safetensors")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"sites = auto chose {selection.chosen!r} (4 source / 4 target prompts" in printed
    maps = load_maps(tmp_path / "a.safetensors")
    assert maps.metadata["extra"]["auto"]["chosen"] == selection.chosen
    assert maps.metadata["extra"]["sites"] == list(chosen)  # what was learned, not "auto"
    from act_core.hf import lm_sites

    assert sorted(maps) == sorted(str(s) for s in lm_sites(model, list(chosen)))
    assert main(["info", str(tmp_path / "a.safetensors")]) == 0
    assert f"sites = auto chose {selection.chosen!r}" in capsys.readouterr().out


def test_auto_says_when_no_group_brings_the_texts_closer():
    model, tokenizer = tiny_causal_lm("llama")
    gen = torch.Generator().manual_seed(0)
    words = ["cat", "dog", "sun", "tree", "road", "blue", "red", "sat", "ran", "big"]
    texts = [" ".join(words[int(i)] for i in torch.randint(0, 10, (6,), generator=gen))
             for _ in range(60)]
    # source and target drawn alike: nothing to bring closer (10 texts held out per side; with
    # fewer the score is noisy: docs/llm.md)
    _, selection = choose_lm_sites(model, tokenizer, texts[:30], texts[30:])
    assert selection.warnings and "no site group brought" in selection.warnings[0]
    assert choose_lm_sites(model, tokenizer, texts[:1], texts[1:])[1] is None  # too few
