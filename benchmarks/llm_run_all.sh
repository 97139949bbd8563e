#!/usr/bin/env bash
# Reproduce docs/llm.md's SmolLM2 tables (CPU, nice, one torch thread per job, one job at a
# time). The configurations were chosen on development data only by
# benchmarks/llm_dev_sweep.py (its commands are in docs/llm.md); the benchmarks' defaults are
# those configurations. Toxicity: the toxic fit prefixes -> the same prefixes with their
# offensive words swapped (toxicity:paired), post_norms + mlp_out + attn_out sites, all at
# once, support q0.05-0.95.
# Results (JSON + markdown tables) in benchmarks/results/. Sizes are arguments:
#   benchmarks/llm_run_all.sh [EVAL_PROMPTS=240] [DEV_PROMPTS=90] [SAMPLES=64] [PPL_TEXTS=64]
set -euo pipefail
cd "$(dirname "$0")/.."
EVAL=${1:-240}; DEV=${2:-90}; SAMPLES=${3:-64}; PPL=${4:-64}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PY="nice -n 10 .venv/bin/python"
OUT=benchmarks/results
mkdir -p "$OUT"
# The diff_means strength chosen on dev from a dev result file (llm_toxicity.best_strength).
best_strength() {
  .venv/bin/python -c "import json,sys; from benchmarks.llm_toxicity import best_strength; \
print(best_strength(json.load(open(sys.argv[1]))))" "$1"
}
# Toxicity, Table 2 rows of the AcT estimators (same data, sites, fitting and support for each).
MAIN="$OUT/llm_toxicity_eval_paired_mlp_attn.json"
$PY -m benchmarks.llm_toxicity --split eval --limit "$EVAL" --seeds 0 1 2 \
  --methods linear_act mean_act gaussian_ot aura --ppl-texts "$PPL" --out "$MAIN"
# Linear-AcT at half strength (the dial; no choice depends on it).
$PY -m benchmarks.llm_toxicity --split eval --limit "$EVAL" --seeds 0 1 2 --methods linear_act \
  --strengths 0.5 --ppl-texts "$PPL" --baseline-from "$MAIN" \
  --out "$OUT/llm_toxicity_eval_paired_mlp_attn_half.json"
# diff_means (additive steering, unbounded support): strength chosen on dev (perplexity on dev
# passages 500+), then one eval row.
$PY -m benchmarks.llm_toxicity --split dev --limit "$DEV" --methods diff_means \
  --strengths 0.5 1 2 4 --ppl-texts 16 --out "$OUT/llm_toxicity_dev_paired_mlp_attn.json"
BEST=$(best_strength "$OUT/llm_toxicity_dev_paired_mlp_attn.json")
echo "diff_means strength chosen on dev: $BEST"
$PY -m benchmarks.llm_toxicity --split eval --limit "$EVAL" --seeds 0 1 2 \
  --methods diff_means --diff-means-strength "$BEST" --ppl-texts "$PPL" --baseline-from "$MAIN" \
  --out "$OUT/llm_toxicity_eval_paired_mlp_attn_diff_means.json"
# Comparison rows: post_norms + mlp_out (the dev choice before 2026-12-04), post_norms alone
# (paired; the estimators and diff_means' own dev choice), and post_norms with the non-toxic
# prefixes as the target (unpaired).
$PY -m benchmarks.llm_toxicity --split eval --limit "$EVAL" --seeds 0 1 2 --sites post_norms+mlp_out \
  --methods linear_act mean_act gaussian_ot aura --ppl-texts "$PPL" --baseline-from "$MAIN" \
  --out "$OUT/llm_toxicity_eval_paired_mlp.json"
$PY -m benchmarks.llm_toxicity --split dev --limit "$DEV" --methods diff_means \
  --sites post_norms+mlp_out --strengths 0.5 1 2 4 --ppl-texts 16 \
  --out "$OUT/llm_toxicity_dev_paired_mlp.json"
BEST=$(best_strength "$OUT/llm_toxicity_dev_paired_mlp.json")
$PY -m benchmarks.llm_toxicity --split eval --limit "$EVAL" --seeds 0 1 2 --sites post_norms+mlp_out \
  --methods diff_means --diff-means-strength "$BEST" --ppl-texts "$PPL" --baseline-from "$MAIN" \
  --out "$OUT/llm_toxicity_eval_paired_mlp_diff_means.json"
$PY -m benchmarks.llm_toxicity --split eval --limit "$EVAL" --seeds 0 1 2 --sites post_norms \
  --methods linear_act mean_act gaussian_ot aura --ppl-texts "$PPL" \
  --baseline-from "$MAIN" --out "$OUT/llm_toxicity_eval_paired.json"
$PY -m benchmarks.llm_toxicity --split dev --limit "$DEV" --methods diff_means --sites post_norms \
  --strengths 0.5 1 2 4 --ppl-texts 16 --out "$OUT/llm_toxicity_dev_paired.json"
BEST=$(best_strength "$OUT/llm_toxicity_dev_paired.json")
$PY -m benchmarks.llm_toxicity --split eval --limit "$EVAL" --seeds 0 1 2 --sites post_norms \
  --methods diff_means --diff-means-strength "$BEST" --ppl-texts "$PPL" \
  --baseline-from "$MAIN" \
  --out "$OUT/llm_toxicity_eval_paired_diff_means.json"
$PY -m benchmarks.llm_toxicity --split eval --limit "$EVAL" --seeds 0 1 2 --methods linear_act \
  --data toxicity --sites post_norms --ppl-texts "$PPL" \
  --baseline-from "$MAIN" --out "$OUT/llm_toxicity_eval_unpaired.json"
# Concept induction ("Once upon a time", unbounded support).
$PY -m benchmarks.llm_concepts --samples "$SAMPLES" --strengths 0 0.5 1 --ppl-texts "$PPL" \
  --out "$OUT/llm_concepts.json"
# The same with the dev choice of 2026-12-03: mlp_out, each text's first token skipped.
$PY -m benchmarks.llm_concepts --sites mlp_out --skip-first-token --samples "$SAMPLES" \
  --strengths 0 0.5 1 --ppl-texts "$PPL" --out "$OUT/llm_concepts_mlp_skip1.json"
# And with attn_out + mlp_out, first token skipped (the dev choice that followed).
$PY -m benchmarks.llm_concepts --sites attn_out+mlp_out --skip-first-token --samples "$SAMPLES" \
  --strengths 0 1 --ppl-texts "$PPL" --out "$OUT/llm_concepts_attn_mlp_skip1.json"
# Overhead: maps on every norm site (61) vs none, alternating in one process.
$PY -m benchmarks.llm_overhead --threads 1 --rounds 5 --new-tokens 32 \
  --out "$OUT/llm_overhead.json"
