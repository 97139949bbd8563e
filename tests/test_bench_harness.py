"""The benchmarks' shared harness: alternation, ratios, docs sections, the dev-sweep table."""

import pytest

from benchmarks import sweep_table
from benchmarks.timing import Clocks, alternate, ratios, rotation, write_section


def test_alternate_warms_up_once_then_rotates_the_order():
    calls = []
    variants = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = alternate(variants, repeats=3, calls=2)
    warmup, timed_calls = calls[:3], calls[3:]
    assert warmup == ["a", "b", "c"]
    # each repeat runs every variant `calls` times, starting one place later each repeat
    assert timed_calls == ["a", "a", "b", "b", "c", "c",
                           "b", "b", "c", "c", "a", "a",
                           "c", "c", "a", "a", "b", "b"]
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(isinstance(t, Clocks) and t.wall >= 0 for v in times.values() for t in v)
    assert rotation(["a", "b"], 3) == ["b", "a"]


def test_ratios_are_medians_of_the_clock_asked_for():
    base = [Clocks(1.0, 2.0, 1.0), Clocks(2.0, 2.0, 1.0), Clocks(4.0, 2.0, 1.0)]
    mine = [Clocks(3.0, 1.0, 1.0), Clocks(2.0, 1.0, 1.0), Clocks(4.0, 1.0, 1.0)]
    median, of_medians, paired = ratios(mine, base, "cpu")
    assert (median, of_medians, paired) == (3.0, 1.5, 1.0)  # per repeat: 3, 1, 1
    assert ratios(mine, base, "wall") == (1.0, 0.5, 0.5)
    with pytest.raises(ValueError, match="as many repeats"):
        ratios(mine[:2], base, "cpu")


def test_write_section_replaces_only_its_part(tmp_path):
    doc = tmp_path / "results.md"
    begin, end = "<!-- x: begin -->", "<!-- x: end -->"
    write_section(doc, f"{begin}\none\n{end}\n", begin, end)  # a missing file is created
    doc.write_text("# Title\n\n" + doc.read_text() + "\nafter\n")
    write_section(doc, f"{begin}\ntwo\n{end}\n", begin, end)
    assert doc.read_text() == f"# Title\n\n{begin}\ntwo\n{end}\n\nafter\n"


def test_a_sweep_run_replaces_its_own_rows_only(tmp_path):
    table = tmp_path / "sweep.csv"
    args = {"data": "toxicity", "method": "linear_act", "seeds": [0, 1], "limit": 90}
    base = {"sites": "-", "fit": "-", "support": "-", "strength": 0.0, "ppl": 86.6,
            "ppl change %": 0.0, "mean_prob": 0.196, "toxic": 0.144}
    steered = {**base, "sites": "attn_out", "fit": "inc6", "support": "minmax",
               "strength": 1.0, "n_sites": 30, "ppl": 95.8, "ppl change %": 10.7}
    sweep_table.write_run("a", args, [base, steered], table)
    sweep_table.write_run("b", args, [base], table)
    sweep_table.write_run("a", args, [steered], table)  # re-run: its old rows go
    rows = sweep_table.read_table(table)
    assert [(r["run"], r["sites"]) for r in rows] == [("a", "attn_out"), ("b", "-")]
    assert rows[0]["seeds"] == "0 1" and rows[0]["ppl change %"] == "10.7"
    text = sweep_table.markdown(rows)
    assert "| a | toxicity | linear_act | built-in |  | 0 1 | attn_out | inc6 | minmax | 1 | " \
           "95.8 | +10.7% | - | 0.196 | 14.4% |" in text

