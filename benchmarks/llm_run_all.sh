#!/usr/bin/env bash
# Reproduce docs/llm.md's SmolLM2 tables (CPU, nice): dev sweep for diff_means' strength, then the
# toxicity table on the eval split, concept induction and overhead. Results in benchmarks/results/.
# Sizes are arguments so a faster machine can run the full splits:
#   benchmarks/llm_run_all.sh [EVAL_PROMPTS=64] [DEV_PROMPTS=32] [SAMPLES=32] [PPL_TEXTS=16]
set -euo pipefail
cd "$(dirname "$0")/.."
EVAL=${1:-64}; DEV=${2:-32}; SAMPLES=${3:-32}; PPL=${4:-16}
PY="nice -n 19 .venv/bin/python"
OUT=benchmarks/results
mkdir -p "$OUT"
$PY benchmarks/llm_toxicity.py --split dev --limit "$DEV" --all-at-once --methods diff_means \
  --strengths 2 4 8 --ppl-texts "$PPL" --out "$OUT/llm_toxicity_dev.json"
BEST=$(.venv/bin/python -c "import json,sys; sys.path.insert(0,'benchmarks'); \
from llm_toxicity import best_strength; print(best_strength(json.load(open('$OUT/llm_toxicity_dev.json'))))")
echo "diff_means strength chosen on dev: $BEST"
$PY benchmarks/llm_toxicity.py --split eval --limit "$EVAL" --seeds 0 1 2 --all-at-once \
  --diff-means-strength "$BEST" --ppl-texts "$PPL" --out "$OUT/llm_toxicity_eval.json"
$PY benchmarks/llm_concepts.py --all-at-once --samples "$SAMPLES" --strengths 0 1 --ppl-texts "$PPL" \
  --out "$OUT/llm_concepts.json"
$PY benchmarks/llm_overhead.py --rounds 3 --new-tokens 16 --out "$OUT/llm_overhead.json"
