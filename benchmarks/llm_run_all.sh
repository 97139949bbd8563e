#!/usr/bin/env bash
# Reproduce docs/llm.md's SmolLM2 tables (CPU, nice): the toxicity table on the eval split,
# concept induction, overhead, then the dev sweep that chooses diff_means' strength and its eval
# row. Results (JSON + markdown tables) in benchmarks/results/. Sizes are arguments so a faster
# machine can run the full splits (240 eval prefixes, 90 dev prefixes):
#   benchmarks/llm_run_all.sh [EVAL_PROMPTS=240] [DEV_PROMPTS=90] [SAMPLES=64] [PPL_TEXTS=64]
set -euo pipefail
cd "$(dirname "$0")/.."
EVAL=${1:-240}; DEV=${2:-90}; SAMPLES=${3:-64}; PPL=${4:-64}
PY="nice -n 19 .venv/bin/python"
OUT=benchmarks/results
mkdir -p "$OUT"
$PY benchmarks/llm_toxicity.py --split eval --limit "$EVAL" --seeds 0 1 2 --all-at-once \
  --methods linear_act mean_act gaussian_ot aura --ppl-texts "$PPL" \
  --out "$OUT/llm_toxicity_eval.json"
$PY benchmarks/llm_concepts.py --all-at-once --samples "$SAMPLES" --strengths 0 1 \
  --ppl-texts "$PPL" --out "$OUT/llm_concepts.json"
$PY benchmarks/llm_overhead.py --rounds 3 --new-tokens 16 --out "$OUT/llm_overhead.json"
$PY benchmarks/llm_toxicity.py --split dev --limit "$DEV" --all-at-once --methods diff_means \
  --strengths 2 4 8 --ppl-texts "$PPL" --out "$OUT/llm_toxicity_dev.json"
BEST=$(.venv/bin/python -c "import json,sys; sys.path.insert(0,'benchmarks'); \
from llm_toxicity import best_strength; print(best_strength(json.load(open('$OUT/llm_toxicity_dev.json'))))")
echo "diff_means strength chosen on dev: $BEST"
$PY benchmarks/llm_toxicity.py --split eval --limit "$EVAL" --seeds 0 1 2 --all-at-once \
  --methods diff_means --diff-means-strength "$BEST" --ppl-texts "$PPL" \
  --out "$OUT/llm_toxicity_eval_diff_means.json"
