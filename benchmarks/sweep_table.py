"""The development sweep's results as one table: ``benchmarks/results/llm_dev_sweep.csv``.

``python -m benchmarks.llm_dev_sweep --run NAME ...`` puts its rows into the CSV under ``NAME``
(replacing that run's earlier rows); ``python -m benchmarks.sweep_table`` writes the whole table
as Markdown into ``docs/llm_dev_sweep.md`` (between its markers). ``--fold FOLDER`` reads the
one-JSON-per-run files the sweep wrote before (their sampled example continuations are not
kept; they stay in git history).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from benchmarks.timing import write_section

__all__ = ["COLUMNS", "markdown", "read_table", "run_rows", "write_run"]

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "benchmarks" / "results" / "llm_dev_sweep.csv"
DOCS = ROOT / "docs" / "llm_dev_sweep.md"
BEGIN, END = "<!-- llm_dev_sweep: begin -->", "<!-- llm_dev_sweep: end -->"
# per run (the sweep's arguments), then per configuration (its rows)
RUN_COLUMNS = ["run", "data", "method", "source_files", "target_files", "add_files",
               "skip_first_token", "seeds", "limit", "samples", "dev_prose", "dev_prose_offset"]
ROW_COLUMNS = ["sites", "fit", "support", "strength", "n_sites", "ppl", "ppl change %", "about",
               "mean_prob", "toxic", "seconds"]
COLUMNS = RUN_COLUMNS + ROW_COLUMNS


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def run_rows(run: str, args: dict, rows: list[dict]) -> list[dict[str, str]]:
    """The CSV rows of one sweep run: its arguments repeated on each of its result rows."""
    head = {"run": run, **{k: _cell(args.get(k)) for k in RUN_COLUMNS[1:]}}
    head["add_files"] = _cell(bool(args.get("add_files")))
    head["skip_first_token"] = _cell(bool(args.get("skip_first_token")))
    return [{**head, **{k: _cell(row.get(k)) for k in ROW_COLUMNS}} for row in rows]


def read_table(path: Path = TABLE) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def write_run(run: str, args: dict, rows: list[dict], path: Path = TABLE) -> None:
    """Put one run's rows into the table, in place of that run's earlier rows (if any)."""
    old = read_table(path)
    new = run_rows(run, args, rows)
    at = next((i for i, r in enumerate(old) if r["run"] == run), len(old))
    kept = [r for r in old if r["run"] != run]
    table = kept[:at] + new + kept[at:]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(table)


def _fitting(row: dict[str, str]) -> str:
    if not row["source_files"] and not row["target_files"]:
        return "built-in"
    files = " -> ".join(" ".join(Path(p).stem for p in row[k].split()) or "built-in"
                        for k in ("source_files", "target_files"))
    return ("built-in + " if row["add_files"] == "True" else "") + files


def _num(text: str, fmt: str, scale: float = 1.0) -> str:
    return format(float(text) * scale, fmt) if text else "-"


def markdown(rows: list[dict[str, str]]) -> str:
    """The table in Markdown: one line per configuration, runs in the table's order."""
    lines = [BEGIN, "",
             "| run | data | method | fitted on | skip 1st | seeds | sites | fit | support | "
             "λ | dev ppl | ppl change | about | mean p(toxic) | toxic |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['data']} | {r['method']} | {_fitting(r)} | "
            f"{'yes' if r['skip_first_token'] == 'True' else ''} | {r['seeds']} | "
            f"{r['sites']} | {r['fit']} | {r['support']} | {_num(r['strength'], 'g')} | "
            f"{_num(r['ppl'], '.1f')} | {_num(r['ppl change %'], '+.1f')}% | "
            f"{_num(r['about'], '.1%')} | {_num(r['mean_prob'], '.3f')} | "
            f"{_num(r['toxic'], '.1%')} |")
    return "\n".join(lines + ["", END]) + "\n"


def fold(folder: Path, path: Path = TABLE) -> int:
    """Add every ``<run>.json`` of ``folder`` (the sweep's old output) to the table."""
    files = sorted(folder.glob("*.json"))
    for file in files:
        payload = json.loads(file.read_text(encoding="utf-8"))
        write_run(file.stem, payload["args"], payload["rows"], path)
    return len(files)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fold", type=Path, default=None,
                    help="a folder of the sweep's old per-run JSON files to add first")
    ap.add_argument("--table", type=Path, default=TABLE)
    ap.add_argument("--docs", type=Path, default=DOCS)
    args = ap.parse_args(argv)
    if args.fold:
        print(f"folded {fold(args.fold, args.table)} runs into {args.table}")
    write_section(args.docs, markdown(read_table(args.table)), BEGIN, END)


if __name__ == "__main__":
    main()
