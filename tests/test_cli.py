"""The ``act`` command line, in-process, on a tiny config-built model saved to disk."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")

from act_core.hf.cli import build_parser, main  # noqa: E402
from harness.hf_tiny import tiny_causal_lm  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    model, tokenizer = tiny_causal_lm("llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("texts")
    (folder / "src.txt").write_text("shut up\n\nyou are awful\n# a comment\ngo away\n")
    (folder / "tgt.txt").write_text("thank you\nyou are kind\ncome in\nhave a nice day\n")
    return folder


def test_help_lists_every_command_and_a_quick_start(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for word in ("fit", "generate", "strength", "export", "info", "sites", "data", "quick start",
                 "--strength"):
        assert word in out
    assert build_parser().parse_args(["info", "m.safetensors"]).command == "info"


def test_fit_info_generate_roundtrip(model_dir, texts, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    assert main(["fit", "--model", str(model_dir), "--source", str(texts / "src.txt"),
                 "--target", str(texts / "tgt.txt"), "--sites", "post_norms", "--stages", "2",
                 "-o", str(out)]) == 0
    assert "wrote 4 maps" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert '"family": "llama"' in info and "model.layers.0.input_layernorm" in info
    assert '"data": "files"' in info
    args = ["generate", "--model", str(model_dir), "--prompt", "hello", "--prompt", "why",
            "--max-new-tokens", "4", "--greedy", "--json"]
    assert main(args) == 0
    plain = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["prompt"] for r in plain] == ["hello", "why"]
    assert main(args + ["--maps", str(out), "--strength", "3", "--support", "unbounded"]) == 0
    steered = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in steered] != [r["text"] for r in plain]


def test_fit_skip_first_token_is_recorded_for_generate(model_dir, texts, tmp_path, capsys):
    from act_core import hf
    from act_core.mapfile import load_maps

    out = tmp_path / "skip.safetensors"
    assert main(["fit", "--model", str(model_dir), "--source", str(texts / "src.txt"),
                 "--target", str(texts / "tgt.txt"), "--sites", "mlp_out", "--all-at-once",
                 "--skip-first-token", "-o", str(out)]) == 0
    assert main(["info", str(out)]) == 0
    assert '"skip_first_token": true' in capsys.readouterr().out
    plain = tmp_path / "plain.safetensors"
    assert main(["fit", "--model", str(model_dir), "--source", str(texts / "src.txt"),
                 "--target", str(texts / "tgt.txt"), "--sites", "mlp_out", "--all-at-once",
                 "-o", str(plain)]) == 0
    a, b = load_maps(out), load_maps(plain)
    assert hf.skips_first_token(a)
    assert not hf.skips_first_token(b)
    # the two fits pool different tokens, so the maps differ
    site = next(iter(a))
    assert not torch.allclose(a[site].shift, b[site].shift)


def test_sites_and_data_commands(model_dir, tmp_path, capsys):
    assert main(["sites", "--model", str(model_dir), "--sites", "attn_out"]) == 0
    assert capsys.readouterr().out.split() == ["model.layers.0.self_attn.o_proj",
                                               "model.layers.1.self_attn.o_proj"]
    assert main(["sites", "--model", str(model_dir)]) == 0  # the default preset is attn_out
    assert capsys.readouterr().out.split() == ["model.layers.0.self_attn.o_proj",
                                               "model.layers.1.self_attn.o_proj"]
    assert build_parser().parse_args(["fit", "-o", "m.safetensors"]).sites == ["attn_out"]
    assert main(["data"]) == 0
    assert "concept:football" in capsys.readouterr().out.split()
    assert main(["data", "concept:space", "--out-dir", str(tmp_path)]) == 0
    assert len((tmp_path / "target.txt").read_text().splitlines()) == 60


def test_errors_name_the_fix(model_dir, texts, tmp_path, capsys):
    with pytest.raises(SystemExit, match="--data NAME, or both"):
        main(["fit", "--model", str(model_dir), "--source", str(texts / "src.txt"),
              "-o", str(tmp_path / "x.safetensors")])
    with pytest.raises(SystemExit, match="--prompt"):
        main(["generate", "--model", str(model_dir)])
    gpt2_dir = tmp_path / "gpt2"
    model, tokenizer = tiny_causal_lm("gpt2")
    model.save_pretrained(gpt2_dir)
    tokenizer.save_pretrained(gpt2_dir)
    maps = tmp_path / "llama.safetensors"
    main(["fit", "--model", str(model_dir), "--source", str(texts / "src.txt"), "--target",
          str(texts / "tgt.txt"), "--all-at-once", "-o", str(maps)])
    code = main(["generate", "--model", str(gpt2_dir), "--maps", str(maps), "--prompt", "x"])
    assert code == 2
    assert "fit maps for this model" in capsys.readouterr().err


def test_export_writes_a_checkpoint_that_generates_like_the_hooked_model(model_dir, texts,
                                                                        tmp_path, capsys):
    maps = tmp_path / "dm.safetensors"
    assert main(["fit", "--model", str(model_dir), "--source", str(texts / "src.txt"),
                 "--target", str(texts / "tgt.txt"), "--sites", "post_norms", "mlp_out",
                 "attn_out", "--method", "diff_means", "--all-at-once", "-o", str(maps)]) == 0
    args = ["generate", "--prompt", "hello", "--prompt", "why", "--max-new-tokens", "6",
            "--greedy", "--json"]
    assert main([*args, "--model", str(model_dir), "--maps", str(maps), "--strength", "4",
                 "--support", "unbounded"]) == 0
    capsys.readouterr()
    out = tmp_path / "steered"
    assert main(["export", "--model", str(model_dir), "--maps", str(maps), "--strength", "4",
                 "-o", str(out)]) == 0
    written = capsys.readouterr()
    assert "LlamaForCausalLM checkpoint with 8 maps" in written.out
    # the file records minmax (act fit's default), which the fold cannot apply: said, not hidden
    assert "records support minmax, which act generate applies by default" in written.err
    assert main([*args, "--model", str(model_dir), "--maps", str(maps), "--strength", "4",
                 "--support", "unbounded"]) == 0
    hooked = [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()]
    assert main([*args, "--model", str(out)]) == 0
    exported = [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()]
    assert main([*args, "--model", str(model_dir)]) == 0
    plain = [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()]
    assert exported == hooked != plain
    # refusals: a bounded support; a control vector for maps that are not all on mlp_out
    assert main(["export", "--model", str(model_dir), "--maps", str(maps), "--support",
                 "minmax", "-o", str(tmp_path / "x")]) == 2
    assert "support is 'minmax'" in capsys.readouterr().err
    assert main(["export", "--maps", str(maps), "--format", "control-vector",
                 "-o", str(tmp_path / "x.gguf")]) == 2
    assert "not a feed-forward output" in capsys.readouterr().err
    unbounded = tmp_path / "unbounded.safetensors"  # recorded as the export applies: no note
    assert main(["fit", "--model", str(model_dir), "--source", str(texts / "src.txt"),
                 "--target", str(texts / "tgt.txt"), "--sites", "mlp_out", "--all-at-once",
                 "--support", "unbounded", "-o", str(unbounded)]) == 0
    capsys.readouterr()
    assert main(["export", "--model", str(model_dir), "--maps", str(unbounded), "-o",
                 str(tmp_path / "u")]) == 0
    assert "act export: note" not in capsys.readouterr().err


def test_export_control_vector(model_dir, texts, tmp_path, capsys):
    from act_core.hf.gguf_export import read_control_vector
    from act_core.mapfile import load_maps

    maps = tmp_path / "mlp.safetensors"
    assert main(["fit", "--model", str(model_dir), "--source", str(texts / "src.txt"),
                 "--target", str(texts / "tgt.txt"), "--sites", "model.layers.1.mlp.down_proj",
                 "--method", "mean_act", "--all-at-once", "-o", str(maps)]) == 0
    out = tmp_path / "cv.gguf"
    assert main(["export", "--maps", str(maps), "--format", "control-vector", "--strength",
                 "0.5", "-o", str(out)]) == 0
    vectors, fields = read_control_vector(out)
    assert list(vectors) == [1] and fields["controlvector.model_hint"] == "llama"
    shift = load_maps(maps)["model.layers.1.mlp.down_proj"].shift
    torch.testing.assert_close(torch.from_numpy(vectors[1]), 0.5 * shift.float())


@pytest.mark.slow  # several seconds: left out of the fast command
def test_fit_method_lineas_and_the_diagnosis_in_fit_and_info(model_dir, texts, tmp_path,
                                                              capsys):
    out = tmp_path / "lineas.safetensors"
    assert main(["fit", "--model", str(model_dir), "--source", str(texts / "src.txt"),
                 "--target", str(texts / "tgt.txt"), "--sites", "post_norms", "--method",
                 "lineas", "--lineas-steps", "5", "--lineas-batch", "2", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "wrote 4 maps (lineas)" in printed and "separation" in printed
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "method lineas" in info and "separation" in info and "kept=" in info
    for site in ("model.layers.0.input_layernorm", "model.layers.1.post_attention_layernorm"):
        assert sum(site in line for line in info.splitlines()) >= 2  # map line + diagnosis


@pytest.mark.slow  # several seconds: left out of the fast command
def test_fit_lineas_init_linear_act_starts_at_the_linear_act_maps(model_dir, texts, tmp_path):
    """One step at a negligible rate: the first site's map is still its Linear-AcT map."""
    from act_core.mapfile import load_maps

    paths = {name: tmp_path / f"{name}.safetensors" for name in ("act", "warm")}
    common = ["fit", "--model", str(model_dir), "--source", str(texts / "src.txt"),
              "--target", str(texts / "tgt.txt"), "--sites", "post_norms"]
    assert main([*common, "--all-at-once", "-o", str(paths["act"])]) == 0
    assert main([*common, "--method", "lineas", "--lineas-init", "linear_act",
                 "--lineas-steps", "1", "--lineas-lr", "1e-7", "-o", str(paths["warm"])]) == 0
    act, warm = (load_maps(paths[name]) for name in ("act", "warm"))
    first = "model.layers.0.input_layernorm"
    assert warm[first].method == "lineas"
    torch.testing.assert_close(warm[first].scale, act[first].scale, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(warm[first].shift, act[first].shift, atol=1e-4, rtol=1e-3)
    assert (act[first].scale - 1).abs().max() > 1e-2  # a map that is not the identity


def test_fit_unit_z_leaves_the_units_whose_means_barely_differ_alone(model_dir, texts,
                                                                      tmp_path, capsys):
    import numpy as np

    from act_core import hf

    out = tmp_path / "z.safetensors"
    assert main(["fit", "--model", str(model_dir), "--source", str(texts / "src.txt"),
                 "--target", str(texts / "tgt.txt"), "--sites", "post_norms", "--all-at-once",
                 "--unit-z", "1.5", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    maps = hf.load_lm_maps(out)
    # which units should keep a map, by the Welch statistic computed here with numpy
    model, tokenizer = hf.load_causal_lm(str(model_dir))
    lines = [t for t in (texts / "src.txt").read_text().splitlines() if t and t[0] != "#"]
    source = hf.record_texts(model, tokenizer, lines, "post_norms")
    target = hf.record_texts(model, tokenizer, (texts / "tgt.txt").read_text().splitlines(),
                             "post_norms")
    expected_total = 0
    for site, tmap in maps.items():
        a, b = source[site].double().numpy(), target[site].double().numpy()
        z = np.abs(b.mean(0) - a.mean(0)) / np.sqrt(a.var(0, ddof=1) / len(a)
                                                    + b.var(0, ddof=1) / len(b))
        moved = ((tmap.scale != 1) | (tmap.shift != 0)).numpy()
        np.testing.assert_array_equal(moved, z > 1.5)
        expected_total += int((z > 1.5).sum())
    assert 0 < expected_total < 4 * 32  # some units kept, not all
    assert f"--unit-z 1.5: {expected_total} of 128 units keep a map" in printed
    assert maps.metadata["extra"]["units_kept"] == expected_total
    base = ["fit", "--model", str(model_dir), "--source", str(texts / "src.txt"), "--target",
            str(texts / "tgt.txt"), "-o", str(tmp_path / "l.safetensors")]
    with pytest.raises(SystemExit, match="LinEAS selects units with its own sparsity"):
        main(base + ["--method", "lineas", "--unit-z", "2"])
    with pytest.raises(SystemExit, match="--unit-z must be a finite number >= 0"):
        main(base + ["--unit-z", "-1"])
    assert not (tmp_path / "l.safetensors").exists()


def test_fit_unit_stat_paired_reads_the_differences_of_the_pairs(model_dir, tmp_path, capsys):
    import numpy as np

    from act_core import hf

    source = ["the cat sat on the mat", "a dog ran in the park", "we ate bread at noon",
              "she read a long book", "the sun rose over the hill", "he sang a quiet song"]
    target = [line.replace("the ", "this ").replace("a ", "one ") + " today" for line in source]
    (tmp_path / "src.txt").write_text("\n".join(source) + "\n")
    (tmp_path / "tgt.txt").write_text("\n".join(target) + "\n")
    base = ["fit", "--model", str(model_dir), "--source", str(tmp_path / "src.txt"),
            "--target", str(tmp_path / "tgt.txt"), "--sites", "post_norms", "--all-at-once"]
    out = tmp_path / "paired.safetensors"
    assert main(base + ["--unit-z", "2", "--unit-stat", "paired", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    maps = hf.load_lm_maps(out)
    # the units that should keep a map: the paired statistic, computed here with numpy
    model, tokenizer = hf.load_causal_lm(str(model_dir))
    a = hf.record_texts(model, tokenizer, source, "post_norms")
    b = hf.record_texts(model, tokenizer, target, "post_norms")
    expected_total = 0
    for site, tmap in maps.items():
        d = b[site].double().numpy() - a[site].double().numpy()
        z = np.abs(d.mean(0)) / (d.std(0, ddof=1) / np.sqrt(len(d)))
        moved = ((tmap.scale != 1) | (tmap.shift != 0)).numpy()
        np.testing.assert_array_equal(moved, z > 2)
        expected_total += int((z > 2).sum())
    assert 0 < expected_total < 4 * 32
    assert f"--unit-z 2 (paired): {expected_total} of 128 units keep a map" in printed
    assert maps.metadata["extra"]["unit_stat"] == "paired"
    assert maps.metadata["extra"]["units_kept"] == expected_total
    # refused before the model loads, and no file written: unequal counts, or no --unit-z
    (tmp_path / "short.txt").write_text("\n".join(target[:4]) + "\n")
    bad = tmp_path / "bad.safetensors"
    with pytest.raises(SystemExit, match="one target line per source line.*6 source and 4"):
        main(base[:6] + [str(tmp_path / "short.txt"), "--unit-z", "2", "--unit-stat",
                         "paired", "-o", str(bad)])
    with pytest.raises(SystemExit, match="give --unit-z Z as well"):
        main(base + ["--unit-stat", "paired", "-o", str(bad)])
    assert not bad.exists()


def test_fit_warns_when_source_and_target_are_the_same(model_dir, texts, tmp_path, capsys):
    out = tmp_path / "same.safetensors"
    assert main(["fit", "--model", str(model_dir), "--source", str(texts / "src.txt"),
                 "--target", str(texts / "src.txt"), "--sites", "post_norms",
                 "-o", str(out)]) == 0
    assert "barely differ" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    assert "barely differ" in capsys.readouterr().out


def test_generate_with_two_map_files_applies_them_in_order(model_dir, texts, tmp_path, capsys):
    from contextlib import ExitStack

    from act_core import hf
    from act_core.hf.generate import steering_many

    paths = [tmp_path / "a.safetensors", tmp_path / "b.safetensors"]
    for path, (src, tgt) in zip(paths, [("src", "tgt"), ("tgt", "src")]):
        assert main(["fit", "--model", str(model_dir), "--source", str(texts / f"{src}.txt"),
                     "--target", str(texts / f"{tgt}.txt"), "--sites", "post_norms",
                     "--all-at-once", "-o", str(path)]) == 0
    args = ["generate", "--model", str(model_dir), "--prompt", "hello", "--max-new-tokens",
            "6", "--greedy", "--json", "--support", "unbounded", "--maps", str(paths[0])]

    def texts_of(extra):
        assert main(args + extra) == 0
        return [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()
                if line.startswith("{")]

    alone = texts_of(["--strength", "2"])
    assert texts_of(["--maps", str(paths[1]), "--strength", "2", "--strength", "0"]) == alone
    with pytest.raises(SystemExit, match="one per --maps"):
        main(args + ["--maps", str(paths[1]), "--strength", "1", "--strength", "1",
                     "--strength", "1"])
    # the library: one patch per site, the same logits as the nested single-set contexts
    model, tokenizer = hf.load_causal_lm(str(model_dir))
    sets = [hf.load_lm_maps(p, model) for p in paths]
    batch = tokenizer(["hello there", "why"], return_tensors="pt", padding=True)
    with torch.no_grad():
        with steering_many(model, sets, [2.0, 0.7], "unbounded"):
            composed = model(**batch).logits
        with ExitStack() as stack:
            for maps, strength in zip(sets, [2.0, 0.7]):
                stack.enter_context(hf.steering(model, maps, strength, "unbounded"))
            nested = model(**batch).logits
        plain = model(**batch).logits
    assert torch.equal(composed, nested) and not torch.equal(composed, plain)


def test_info_into_a_pipe_closed_early_is_not_an_error():
    """`act info maps.safetensors | head -1`: the reader leaves, act exits 0 without a trace."""
    import subprocess
    import sys
    from pathlib import Path

    maps = Path(__file__).resolve().parents[1] / "toyworld/maps/toyworld_striped.safetensors"
    proc = subprocess.Popen([sys.executable, "-m", "act_core.hf.cli", "info", str(maps)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before act has written anything: every write meets a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


PROSE = ["the river ran past the old mill", "she opened the window and looked out",
         "a cat slept on the warm stones", "the train was late again today"]


def _perplexity_by_hand(model_dir, texts):
    """exp(mean next-token NLL over every text's tokens), one text at a time, plain transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    total, count = 0.0, 0
    for text in texts:
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            loss = model(ids, labels=ids).loss
        total += float(loss) * (ids.shape[1] - 1)
        count += ids.shape[1] - 1
    return float(torch.tensor(total / count).exp())


def test_strength_sweeps_perplexity_and_suggests_the_largest_strength_within_the_budget(
        model_dir, texts, tmp_path, capsys):
    maps = tmp_path / "m.safetensors"
    assert main(["fit", "--model", str(model_dir), "--source", str(texts / "src.txt"),
                 "--target", str(texts / "tgt.txt"), "--sites", "post_norms", "--all-at-once",
                 "-o", str(maps)]) == 0
    assert f"act strength --model {model_dir} --maps {maps}" in capsys.readouterr().out  # a hint
    prose = tmp_path / "prose.txt"
    prose.write_text("\n".join(PROSE) + "\n")
    common = ["strength", "--model", str(model_dir), "--maps", str(maps), "--texts", str(prose),
              "--support", "unbounded", "--strengths", "2", "0.5", "1"]
    assert main([*common, "--json"]) == 0
    sweep = json.loads(capsys.readouterr().out)
    rows = sweep["rows"]
    assert [r["strength"] for r in rows] == [0, 0.5, 1, 2]  # 0 added, sorted
    assert rows[0]["change"] == 0
    assert rows[0]["perplexity"] == pytest.approx(_perplexity_by_hand(model_dir, PROSE), rel=1e-4)
    assert all(r["perplexity"] != rows[0]["perplexity"] for r in rows[1:])  # the maps act
    # a budget just above strength 1's cost suggests the largest strength that fits under it
    budget = max(rows[2]["change"], 0.0) + 1e-6
    expected = max(r["strength"] for r in rows[1:] if r["change"] <= budget)
    assert main([*common, "--json", "--budget", str(100 * budget)]) == 0
    assert json.loads(capsys.readouterr().out)["suggested"] == expected >= 1
    # the text form: the table, one greedy continuation per strength, the suggestion
    assert main([*common, "--prompt", "hello", "--max-new-tokens", "3"]) == 0
    text = capsys.readouterr().out
    assert text.count("hello") == 4 and "suggested strength" in text
    # past the maps' documented range: refused with the range, nothing measured
    assert main([*common[:-4], "--strengths", "3"]) == 2
    assert "outside the documented range [0, 2]" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no such file"):
        main([*common[:5], "--texts", str(tmp_path / "missing.txt")])
    with pytest.raises(SystemExit, match="--budget"):
        main([*common, "--budget", "-5"])


def test_a_sweep_with_no_strength_within_the_budget_says_so():
    from act_core.hf.strength_sweep import StrengthRow, StrengthSweep

    rows = [StrengthRow(0.0, 10.0, 0.0), StrengthRow(1.0, 13.0, 0.3), StrengthRow(2.0, 15.0, 0.5)]
    assert StrengthSweep(rows, 0.1, 4, []).suggested is None
    assert "no strength above 0 keeps perplexity within +10%" in StrengthSweep(rows, 0.1, 4,
                                                                                 []).text()
    assert StrengthSweep(rows, 0.3, 4, []).suggested == 1.0  # within: <= the budget


def test_fit_records_a_support_that_generate_and_strength_apply_unless_told_otherwise(
        model_dir, texts, tmp_path, capsys):
    fit = ["fit", "--model", str(model_dir), "--source", str(texts / "src.txt"), "--target",
           str(texts / "tgt.txt"), "--sites", "post_norms", "--all-at-once"]
    q_maps, plain_maps = tmp_path / "q.safetensors", tmp_path / "plain.safetensors"
    assert main([*fit, "--support", "q0.05-0.95", "-o", str(q_maps)]) == 0
    assert main([*fit, "-o", str(plain_maps)]) == 0
    assert main(["info", str(q_maps)]) == 0
    assert "method linear_act, support q0.05-0.95," in capsys.readouterr().out
    gen = ["generate", "--model", str(model_dir), "--prompt", "hello", "--prompt", "why",
           "--max-new-tokens", "6", "--greedy", "--json", "--strength", "3"]

    def texts_of(*extra):
        assert main([*gen, *extra]) == 0
        captured = capsys.readouterr()
        return [json.loads(line)["text"] for line in captured.out.splitlines()], captured.err

    recorded, err = texts_of("--maps", str(q_maps))
    assert "support q0.05-0.95, as the map file records" in err
    assert texts_of("--maps", str(q_maps), "--support", "q0.05-0.95")[0] == recorded
    assert texts_of("--maps", str(q_maps), "--support", "unbounded")[0] != recorded
    # a file without a choice applies min-max, as before
    assert texts_of("--maps", str(plain_maps))[0] == texts_of("--maps", str(plain_maps),
                                                              "--support", "minmax")[0]
    # two files recording different supports: refused with the fix, unless --support chooses
    both = ["--maps", str(q_maps), "--maps", str(plain_maps)]
    assert main([*gen, *both]) == 2
    assert "record different supports (q0.05-0.95, minmax)" in capsys.readouterr().err
    assert main([*gen, *both, "--support", "minmax"]) == 0
    capsys.readouterr()
    # act strength measures at the recorded support and says which
    prose = tmp_path / "prose.txt"
    prose.write_text("\n".join(PROSE) + "\n")
    strength = ["strength", "--model", str(model_dir), "--maps", str(q_maps), "--texts",
                str(prose), "--strengths", "1", "--json"]
    assert main(strength) == 0
    recorded_sweep = json.loads(capsys.readouterr().out)
    assert recorded_sweep["support"] == "q0.05-0.95"
    assert main([*strength, "--support", "q0.05-0.95"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == recorded_sweep["rows"]
    # a typo fails before anything is loaded or written
    typo = tmp_path / "typo.safetensors"
    assert main([*fit, "--support", "q0.05-0.95x", "-o", str(typo)]) == 2
    assert "cannot parse support 'q0.05-0.95x'" in capsys.readouterr().err
    assert not typo.exists()
    assert main([*gen, "--maps", str(q_maps), "--support", "maxmin"]) == 2
    assert "cannot parse support 'maxmin'" in capsys.readouterr().err
