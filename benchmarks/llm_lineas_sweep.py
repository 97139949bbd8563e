"""Dev sweep for issue 21's small-data toxicity row: LinEAS settings and strength, chosen on dev.

Fits Linear-AcT once and LinEAS once per ``--configs`` entry (``lr:steps``) on the first ``--n``
source and target texts of ``toxicity:paired`` (the same texts as
``benchmarks/llm_lineas_small.py --parts small``), evaluates each LinEAS fit at every
``--strengths`` value on the dev prefixes (``benchmarks.llm_toxicity.evaluate``: toxic fraction
over prefixes x seeds, perplexity on the dev prose passages), and applies the rule fixed before
the sweep ran:

    among the LinEAS rows whose perplexity change is at most Linear-AcT's (at strength 1), take
    the one with the fewest toxic continuations (ties: the lower strength, then the fewer
    steps); when none qualifies, the strength-1 row with the fewest.

The chosen ``lr``, ``steps`` and strength go to ``llm_lineas_small --lineas-lr --lineas-steps
--lineas-strength`` for the one eval run.

With ``--n 86`` (every text: the full-data part, nothing held out) and ``--max-ppl-change
0.03`` (the full-data criterion's bound), the rule pools the LinEAS rows whose perplexity change
is at most +3% instead of Linear-AcT's; the rest is the same.

    ACT_CACHE_DIR=/tmp/act_cache python -m benchmarks.llm_lineas_sweep --seeds 0 1 2 \\
        --out benchmarks/results/llm_lineas_sweep_dev

The unpaired round (fixed 2026-12-05 16:40 UTC, before its dev run): every earlier round
fitted ``toxicity:paired``, whose two sets differ only where the offensive words are. The
paper's own setting is unpaired toxic against non-toxic texts, which ``--data toxicity`` is
(the first 32 toxic and the first 32 non-toxic ``fit`` prefixes). Same rule as above, with
``--data toxicity --configs 0.01:100 0.01:100:linear_act --strengths 1 1.5 2``; the chosen
row then runs once on eval with ``llm_lineas_small --parts small --data toxicity``.

The matched-perplexity round (fixed 2026-12-05 17:52 UTC, after the unpaired eval above, before
its own dev run): on unpaired data Linear-AcT at strength 1 doubles perplexity, so the rule above
compares LinEAS with a row no user would keep. ``--resume`` of the unpaired dev rows with
``--act-strengths 1 0.25 0.5 0.75`` adds Linear-AcT's curve. Take the LinEAS row from the
identity at strength 2 (dev 4.4% at +15.7%) and the Linear-AcT row with the largest perplexity
change not above it; only if LinEAS has fewer toxic continuations on dev, run both once on eval
(``llm_lineas_small --parts small --data toxicity --strength S --lineas-strength 2``).
(Dev: Linear-AcT 0.25, 8.5% at +9.9%; eval, once: LinEAS 5.0% at +15.8%, Linear-AcT 7.5% at
+5.6%: more reduction at more perplexity, unsettled.)

The frontier round (fixed 2026-12-05 19:09 UTC, before any of its rows ran): the matched round
left the comparison unsettled because Linear-AcT's eval point sat at a lower perplexity than
LinEAS's. Nothing is chosen here: LinEAS's eval point is the one already measured (the dev
choice, 5.0% toxic at +15.8%), and this round only measures the baseline's trade-off curve on
eval, ``--split eval --limit 240 --seeds 0 1 2 --data toxicity --configs --act-strengths 0.375
0.5 0.75`` (the unsteered row again, as a check on the earlier eval run's 10.1% and 93.1).
Criterion, read as "at no more perplexity cost": take Linear-AcT's toxic fraction at LinEAS's
perplexity change, linearly interpolated in perplexity change between the two adjacent
measured Linear-AcT strengths of {0.25, 0.375, 0.5, 0.75, 1} (0.25 and 1 from the earlier eval
runs, same seeds and prefixes); LinEAS meets the small-data criterion in the unpaired setting
if its 5.0% is at most that. Either way the curve and the verdict are reported.

The 1000-step round (fixed 2026-12-05 23:15 UTC, before its dev run; dev only this session):
every LinEAS fit so far stopped at 100 steps (lr 0.01), where its maps stay near the identity;
the authors run 1000. Full data, ``--n 86 --max-ppl-change 0.03 --seeds 0 1 2 --strengths 1
1.5 2 --configs 0.01:1000``, the rule of the full-data part above (LinEAS rows within +3% dev
perplexity, fewest toxic). It is worth an eval run only if the chosen row's dev toxic fraction is
at most a quarter of the unsteered one (the ">= 4x"); otherwise the result is reported as a dev
negative and nothing runs on eval. The 100-step dev rows it is read against: 7.8% at +0.80%
(strength 1) and 6.7% at +3.19% (2), unsteered 10.4%.
Outcome (23:36 UTC, ``llm_lineas_sweep_dev_full_1000``): 7.8% at +1.81% (1), 8.1% at +3.28%
(1.5), 8.5% at +5.61% (2); the rule chose strength 1, far from 2.6%: no eval run.

The own-pairs round (fixed 2026-12-07 11:35 UTC, commit cee3b28, before any run of it). Every
small-data round above fitted text the model reads; the model's own toxic continuations and their
softened texts
(``benchmarks/llm_own_pairs.py``, seeds 0-15: 424 pairs, no dev or eval text) made Linear-AcT's
full-data map cheap (docs/results.md). This round fits both estimators on the first 32 of those
pairs alone (``--extra-pairs $ACT_CACHE_DIR/toxicity_own --extra-only``; the next 32 are held
out for ``held_closed``), at the 120 sites, q0.05-0.95, ``act fit``'s LinEAS defaults
(identity start, lr 0.01, 100 steps, batch 8). Dev: the steadier read of ``llm_toxicity.py``'s
fifth check (90 dev prefixes x seeds 0-9, 64 dev passages; the unsteered row reused from
``llm_toxicity_dev10_linear_act.json``), Linear-AcT at 1 and LinEAS at 1, 2, 3 and 5, in two
processes joined by ``--merge``. The rule at the top (LinEAS rows at no more dev perplexity
change than Linear-AcT at 1, then the fewest toxic; none: the strength-1 row). Eval once, only
if the chosen row's dev toxic fraction is at most Linear-AcT's: ``llm_lineas_small --parts small
--split eval --limit 240 --seeds 0 1 2`` on the same pairs, LinEAS at the chosen strength and
Linear-AcT at 1, read against the small-data criterion; otherwise a dev negative, no eval.

    ACT_CACHE_DIR=/tmp/act_cache OMP_NUM_THREADS=1 python -m benchmarks.llm_lineas_sweep \
        --limit 90 --seeds 0 1 2 3 4 5 6 7 8 9 --ppl-texts 64 --extra-pairs \
        /tmp/act_cache/toxicity_own --extra-only --configs 0.01:100 \
        --baseline-from benchmarks/results/llm_toxicity_dev10_linear_act.json \
        --strengths 1 2 --out benchmarks/results/llm_lineas_sweep_dev10_own_a
    # beside it: --act-strengths --strengths 3 5 --out ..._own_b; then
    python -m benchmarks.llm_lineas_sweep --merge \
        benchmarks/results/llm_lineas_sweep_dev10_own_{a,b}.json

(Outcome: LinEAS 9.7% / 8.6% / 6.8% / 4.6% toxic at 1 / 2 / 3 / 5, at -0.58% to +1.35%;
Linear-AcT 2.9% at -2.70%. No LinEAS row within Linear-AcT's perplexity: the rule took LinEAS at
1, more toxic than Linear-AcT, so no eval. docs/results.md.)

The unbounded round (fixed 2026-12-07 after the own-pairs round's dev rows, before any run of
it). Every LinEAS row of these rounds was applied with the q0.05-0.95 support, Linear-AcT's dev
choice (docs/llm.md), under which a unit's value outside the source's 5-95% range keeps its
value. LinEAS's maps are learned applied to every value (``act_core.lineas``: the end-to-end
pass has no support), so that support applies something other than what was optimised, and it
leaves the tails alone, where the offensive words may sit. Setting: the own-pairs round's
LinEAS fit, unchanged, applied with ``--lineas-support unbounded`` at strengths 1, 1.5, 2 and
3; the same dev read; the rule at the top against the own-pairs round's Linear-AcT row
(q0.05-0.95, strength 1: 2.9% at -2.70%), over the unbounded LinEAS rows only (``--merge
..._own_a.json ..._own_unb_{a,b}.json --lineas-support unbounded``). Eval once, only if the
chosen row's dev toxic fraction is at most Linear-AcT's: ``llm_lineas_small --parts small
--split eval --limit 240 --seeds 0 1 2`` on the same pairs with ``--lineas-support unbounded
--lineas-strength S`` (Linear-AcT at 1, q0.05-0.95), read against the small-data criterion.

    ... the own-pairs round's command with --act-strengths --lineas-support unbounded \
        --strengths 1 1.5 (and 2 3) --out benchmarks/results/llm_lineas_sweep_dev10_own_unb_a (_b)

(Outcome: LinEAS unbounded 5.6% / 3.0% / 2.1% / 0.4% toxic at 1 / 1.5 / 2 / 3, at +1.58% /
+5.00% / +10.35% / +30.3%; none within Linear-AcT's -2.70%, so the rule took strength 1, more
toxic than Linear-AcT's 2.9%: no eval. docs/results.md.)

The full-data unbounded round (fixed 2026-12-07 after the unbounded round's rows at strengths 1
and 2, before any run of it). Unbounded, LinEAS on the 32 own pairs removed far more per unit of
strength (5.6% at 1, 2.1% at 2 on dev) at a perplexity cost (+1.6%, +10.4%). The full-data bar
is read for LinEAS: >= 4x at <= +3%. Setting: LinEAS (``act fit``'s defaults) on all the
sixth check's data, ``toxicity:paired`` + the 424 own pairs (``--n 510 --extra-pairs
$ACT_CACHE_DIR/toxicity_own``; nothing held out), applied unbounded at strengths 1, 1.25, 1.5
and 1.75; the same 10-seed dev read; ``--max-ppl-change 0.075`` (the fifth check's dev budget,
about +3% on eval); among the rows within it, the fewest toxic. Eval once, only if that row
reads at most 1.67% on dev (the best dev read so far, which gave 3.84x on eval):
``llm_lineas_small --parts full --split eval --limit 240 --seeds 0 1 2 --extra-pairs ...
--lineas-support unbounded --lineas-strength S``, read against the full-data criterion.

    ... --n 510 --extra-pairs /tmp/act_cache/toxicity_own --configs 0.01:100 --act-strengths \
        --lineas-support unbounded --max-ppl-change 0.075 --strengths 1 1.5 (and 1.25 1.75) \
        --out benchmarks/results/llm_lineas_sweep_dev10_full_own_unb_a (_b)

(Outcome: 8.3% / 6.2% / 5.7% / 4.9% toxic at 1 / 1.25 / 1.5 / 1.75, at +0.76% to +5.12%; the
rule took 1.75, above 1.67%: no eval. docs/results.md.)

The converged full-data round (fixed 2026-12-07 17:21 UTC, before any run of it). With 510 pairs
LinEAS moved less than with the 32 own pairs alone (8.3% against 5.6% toxic at strength 1,
unbounded), yet its 100 steps of 8 saw each source text only about 1.6 times, against 25 times
for the 32. Setting: the full-data unbounded round's, unchanged but for 300 steps (``--configs
0.01:300``, about 4.7 passes). Two processes, each fitting the same (deterministic) maps: one
applies them unbounded at strengths 1.5 and 2, the other with q0.05-0.95 (Linear-AcT's support)
at 3 and 5, where the 32-pair fit was cheap (4.6% at +1.35% at 5). Rule: ``--merge`` of both
runs with ``--max-ppl-change 0.075`` and no support filter (every LinEAS row within +7.5% dev
perplexity, the fewest toxic); eval once only if that row reads at most 1.67% on dev, as above.

    ... --n 510 --extra-pairs /tmp/act_cache/toxicity_own --configs 0.01:300 --act-strengths \
        --max-ppl-change 0.075 --lineas-support unbounded --strengths 1.5 2 \
        --out benchmarks/results/llm_lineas_sweep_dev10_full_own_300_unb
    # beside it: (no --lineas-support) --strengths 3 5 --out ..._full_own_300_q

(Outcome: unbounded 3.4% at +5.50% (1.5, chosen), 2.2% at +11.27% (2); q0.05-0.95 5.0% at
+2.02% (3), 3.4% at +7.61% (5): above 1.67%, no eval. docs/results.md.)

The shift-only round (fixed 2026-12-07 18:06 UTC, before any run of it). LinEAS's loss reads
pooled text means, whose spread across texts is small, but its maps scale every token: a scale
that narrows or widens the pooled spread moves each token's activation by that factor, a cost
the loss never sees, while a shift moves the pooled mean and the tokens alike. Linear-AcT's
maps on these pairs are near-pure shifts (scales 0.95-1.05 for 80% of units). Setting: the
own-pairs round's (the first 32 own pairs alone, the 120 sites, lr 0.01, 100 steps, batch 8,
the next 32 held out), with ``--lineas-shift-only`` (``LineasConfig.scale = False``: omega held
at 1), applied unbounded (as learned) at strengths 1, 1.5, 2 and 3; the 10-seed dev read; the
rule at the top against the own-pairs round's Linear-AcT row (q0.05-0.95, strength 1: 2.9% at
-2.70%), over these rows only. Eval once, only if the chosen row's dev toxic fraction is at
most Linear-AcT's: ``llm_lineas_small --parts small --split eval --limit 240 --seeds 0 1 2`` on
the same pairs, ``--lineas-shift-only --lineas-support unbounded --lineas-strength S``.
Whatever the rule says, the rows are read against the own-pairs rounds' LinEAS rows with
scales (unbounded: 5.6% / 3.0% / 2.1% at 1 / 1.5 / 2, +1.58% / +5.00% / +10.35%).

    ... the own-pairs round's command with --act-strengths --lineas-shift-only \
        --lineas-support unbounded --strengths 1 1.5 (and 2 3) \
        --out benchmarks/results/llm_lineas_sweep_dev10_own_shift_{a,b}
    python -m benchmarks.llm_lineas_sweep --merge \
        benchmarks/results/llm_lineas_sweep_dev10_own_a.json \
        benchmarks/results/llm_lineas_sweep_dev10_own_shift_{a,b}.json --lineas-support unbounded

(Outcome: shifts only, 6.1% / 4.8% / 3.4% / 1.6% toxic at 1 / 1.5 / 2 / 3, at -1.73% / -1.37%
/ -0.22% / +4.60%: no row within -2.70%, so the rule took strength 1, more toxic than 2.9%: no
eval. At matched perplexity half the toxic continuations of LinEAS with scales. docs/results.md.)

The shift-only full-data round (fixed 2026-12-07 18:28 UTC, after the shift-only round's rows,
before any run of it). Shifts only made LinEAS's trade twice as good on the 32 own pairs (1.6%
at +4.6% where LinEAS with scales read 3.0% at +5.0%). Setting: the converged full-data
round's, unchanged (510 pairs, 300 steps, unbounded) but for ``--lineas-shift-only``, at
strengths 2 and 3.5 in one process and 2.5 and 3 in the other; its rule unchanged: every row
within +7.5% dev perplexity, the fewest toxic; eval once only if that row reads at most 1.67%
on dev: ``llm_lineas_small --parts full --split eval --limit 240 --seeds 0 1 2 --n 510
--extra-pairs ... --lineas-steps 300 --lineas-shift-only --lineas-support unbounded
--lineas-strength S``, read against the full-data criterion (>= 4x at <= +3%).

    ... the converged round's command with --lineas-shift-only --lineas-support unbounded \
        --strengths 2 3.5 (and 2.5 3) \
        --out benchmarks/results/llm_lineas_sweep_dev10_full_own_shift_{a,b}

(Outcome: 4.3% / 2.7% / 2.0% / 1.7% toxic at 2 / 2.5 / 3 / 3.5, at +3.55% / +6.06% / +9.27% /
+13.37%; the rule took 2.5, above 1.67%: no eval. docs/results.md.)

The shift-only written-pairs round (fixed 2026-12-07 19:09 UTC, before any run of it). The issue's
small-data texts are the first 32 + 32 of ``toxicity:paired``, the first rounds' (Linear-AcT at
1 read 4.8% at +6.90% on their 3-seed dev read, 3.3% at +2.5% on eval). Shifts only were cheap
on the 32 own pairs; are they on these? Setting: those texts (the next 32 held out), the 120
sites, ``act fit``'s LinEAS defaults (100 steps) with ``--lineas-shift-only``, applied unbounded
at 1, 2 and 3, and Linear-AcT at 1 (q0.05-0.95), on the 10-seed dev read; the rule at the top
(LinEAS rows at no more perplexity change than Linear-AcT's, the fewest toxic; none: the
strength-1 row). Eval once, in this stop or a later one, only if the chosen row's dev toxic
fraction is at most Linear-AcT's: ``llm_lineas_small --parts small --split eval --limit 240
--seeds 0 1 2 --lineas-shift-only --lineas-support unbounded --lineas-strength S``.

    ACT_CACHE_DIR=/tmp/act_cache OMP_NUM_THREADS=1 python -m benchmarks.llm_lineas_sweep \
        --limit 90 --seeds 0 1 2 3 4 5 6 7 8 9 --ppl-texts 64 --configs 0.01:100 \
        --baseline-from benchmarks/results/llm_toxicity_dev10_linear_act.json \
        --lineas-shift-only --lineas-support unbounded --strengths 1 \
        --out benchmarks/results/llm_lineas_sweep_dev10_written_shift_a
    # beside it: --act-strengths --strengths 2 3 --out ..._written_shift_b; then --merge both

(Outcome: Linear-AcT 3.3% at +6.90%; shifts only 6.3% / 3.7% / 2.1% at 1 / 2 / 3, at +0.88% /
+5.10% / +12.76%; the rule took 2 (3.7%, 33 of 900 against Linear-AcT's 30): no eval.
docs/results.md.)

The own-pairs-only full-data round (fixed 2026-12-07 20:26 UTC, before any run of it). Shifts
only were cheap on the first 32 own pairs (3.4% at -0.22%, 1.6% at +4.6% on dev) and not on all
510 pairs (2.7% at +6.06%), which add the 86 written pairs to the 424 own ones. Is it the
written pairs that cost perplexity? Setting: the shift-only full-data round's (300 steps,
unbounded, shifts only) on the 424 own pairs alone (``--extra-only --n 424``: every own pair,
nothing held out), at strengths 2.5, 3 and 3.5 in one process; the full-data rule unchanged:
every row within +7.5% dev perplexity, the fewest toxic; eval once only if that row reads at most
1.67% on dev: ``llm_lineas_small --parts full --split eval --limit 240 --seeds 0 1 2
--extra-pairs ... --extra-only --lineas-steps 300 --lineas-shift-only --lineas-support unbounded
--lineas-strength S``, read against the full-data criterion (>= 4x at <= +3%).

    ... the shift-only full-data round's command with --n 424 --extra-only \
        --strengths 2.5 3 3.5 --out benchmarks/results/llm_lineas_sweep_dev10_ownonly_shift

(Outcome: 2.1% at +3.67% (2.5, chosen), 2.6% at +6.44% (3), 1.6% at +9.98% (3.5, over); above
1.67%: no eval by this rule.)

Its eval read, a rule written on 2026-12-07 at 21:11 UTC after the round's dev rows. In fairness:
the round's own bar (1.67%) said no eval; this rule lowers it after seeing the rows, to the
1000-step round's bar (a quarter of the unsteered dev fraction, 2.7%). Why spend the read: the
chosen row is 5.1x on dev at +3.67%, the cheapest dev row at that toxicity of any estimator so
far (Linear-AcT on the 510 pairs read 1.67% at +5.35% and gave 3.84x at +0.87% on eval). Eval
once, nothing chosen from it: ``llm_lineas_small --parts full --split eval --limit 240 --seeds
0 1 2 --extra-pairs $ACT_CACHE_DIR/toxicity_own --extra-only --lineas-steps 300
--lineas-shift-only --lineas-support unbounded --lineas-strength 2.5``, read against the
full-data criterion (>= 4x at <= +3%); Linear-AcT at 1 on the same 424 pairs, in the same run,
reported beside it.
(Outcome, ``llm_lineas_full_eval_ownonly_shift``: LinEAS 3.5% toxic, 2.92x, at +1.2%: not
met; Linear-AcT at 1 on the same pairs 2.9%, 3.48x, at -4.0%. docs/results.md.)

Linear-AcT's curve on the 424 own pairs alone (fixed 2026-12-07 22:03 UTC, after the eval read
above, before any run of it). That read put Linear-AcT at 1 on these pairs at 3.48x and -4.0%:
is there room for 4x at <= +3%? Dev only this stop: Linear-AcT (q0.05-0.95) at 1.25, 1.5 and
2 on the 10-seed dev read (``--configs`` with none: no LinEAS row, nothing chosen). An eval
read, in a later stop, only if the row within +7.5% dev perplexity with the fewest toxic
continuations reads at most 1.67% on dev (the full-data rule's bar); it is Linear-AcT's row,
reported as the baseline's reach, not as LinEAS meeting the criterion.

    ... --n 424 --extra-pairs /tmp/act_cache/toxicity_own --extra-only --configs \
        --act-strengths 1.25 1.5 2 --out benchmarks/results/llm_lineas_sweep_dev10_ownonly_act

(Outcome: 3.2% at +0.40% (1.25), 1.67% at +2.58% (1.5), 1.0% at +9.28% (2, over): the row
within +7.5% with the fewest toxic, 1.5, reads 1.67%, at the bar: an eval read of Linear-AcT at
1.5 on these pairs is due in a later stop, by this rule. It was run in this stop after all, as
time allowed: only its timing differs from the rule. ``llm_toxicity --split eval --limit 240
--seeds 0 1 2 --ppl-texts 64 --methods linear_act --strengths 1.5 --extra-pairs ...
--extra-only --baseline-from benchmarks/results/llm_toxicity_eval_paired_mlp_attn.json``, the
unsteered row of the 3.84x read's. Eval: 2.22% toxic (16 of 720), 4.56x, at -1.37%.
A replication written at 22:35 UTC, before it ran, nothing chosen from it: the same command
with ``--seeds 3 4 5`` and no ``--baseline-from`` (the unsteered row measured again on those
seeds), ``--out benchmarks/results/llm_toxicity_eval_own_only_1.5_seeds345.json``: unsteered
11.1%, the map 2.5% (4.44x) at -1.37%. docs/results.md.)

The shift-only written-pairs grid round (fixed 2026-12-07 20:26 UTC, after the shift-only
written-pairs round's rows, before any run of it). That round's strengths 2 and 3 lay either side
of Linear-AcT's perplexity (+5.10% and +12.76% against +6.90%). Setting: that round's, unchanged
(the same deterministic fit), at strengths 2.25 and 2.5. Rule: the rule at the top over the
LinEAS rows of both rounds (``--merge ..._written_shift_{a,b}.json ..._written_shift_c.json``,
against that round's Linear-AcT row, 3.3% at +6.90%); eval once only if the chosen row's dev
toxic fraction is at most Linear-AcT's (30 of 900), with that round's eval command.

    ... the shift-only written-pairs round's command with --act-strengths --strengths 2.25 2.5 \
        --out benchmarks/results/llm_lineas_sweep_dev10_written_shift_c

(Outcome: 3.1% at +6.67% (2.25) and 3.1% at +8.46% (2.5); merged with the earlier round, the
rule took 2.25: 28 toxic of 900 against Linear-AcT's 30, within its +6.90%: to eval. Eval,
once (``llm_lineas_small_eval_written_shift``): LinEAS 4.0% at +4.4%, Linear-AcT 3.2% at +2.5%:
not met, worse on both. docs/results.md.)

The warm-start own-pairs round (fixed 2026-12-07 23:38 UTC, before any run of it). Linear-AcT
fitted site by site on the 424 own pairs alone reached the full-data bar on eval (4.56x at
-1.37%, strength 1.5); LinEAS from the identity on the same pairs did not (2.92x). LinEAS's
``init = "linear_act"`` starts every site at its own Linear-AcT map and lets the end-to-end loss
correct what the maps do together; on the 32 + 32 texts that start overfitted (dev 4.1%, eval
8.1%), but there each text was seen about 250 times, here about 6 times. Setting: the
own-pairs-only round's (``--n 424 --extra-pairs $ACT_CACHE_DIR/toxicity_own --extra-only``,
the 120 sites, 300 steps, lr 0.01, batch 8, applied unbounded), with ``--configs
0.01:300:linear_act``: one process learns scales and shifts, the other ``--lineas-shift-only``
(its shifts start at the difference of the means), each at strengths 1, 1.5 and 2, on the
10-seed dev read. Rule: the full-data rule unchanged, over the rows of both processes
(``--merge`` of both, ``--max-ppl-change 0.075 --lineas-support unbounded``): every LinEAS row
within +7.5% dev perplexity, the fewest toxic; eval once only if that row reads at most 1.67% on
dev (the bar is not lowered this time): ``llm_lineas_small --parts full --split eval --limit
240 --seeds 0 1 2 --extra-pairs ... --extra-only --lineas-steps 300 --lineas-init linear_act
[--lineas-shift-only] --lineas-support unbounded --lineas-strength S``, read against the
full-data criterion (>= 4x at <= +3%), Linear-AcT at 1 beside it. Said before it runs: the
eval prefixes have served about a dozen toxicity choices, and this round exists because of
Linear-AcT's eval read on these pairs; a pass would carry that caveat.

    ... --n 424 --extra-pairs /tmp/act_cache/toxicity_own --extra-only --configs \
        0.01:300:linear_act --act-strengths --lineas-support unbounded --max-ppl-change 0.075 \
        --strengths 1 1.5 2 --out benchmarks/results/llm_lineas_sweep_dev10_ownonly_warm_a
    # beside it: the same with --lineas-shift-only --out ..._ownonly_warm_b

(Outcome: scales and shifts 5.8% / 5.3% / 3.1% toxic at 1 / 1.5 / 2, at +1.29% / +4.99% /
+11.18%; shifts only 6.2% / 4.0% / 4.6%, at -0.16% / +0.58% / +1.85%; the rule took shifts only
at 1.5, above 1.67%: no eval. The steps undo the start: loss 24.7 -> 1.0. docs/results.md.)

The sparsity written-pairs round (fixed 2026-12-08 at 03:07 UTC, before any run of it). Every
LinEAS fit on toxicity so far ran without the paper's sparsity penalty, whose stated purpose is
to keep the model's utility: the proximal group step shrinks each site's ``(omega - 1, b)`` by
``lr * group * sqrt(2 D)`` per step, so a site whose Adam steps do not agree across units stays
at or near the identity. Setting: the shift-only written-pairs round's, unchanged (the issue's
32 + 32 texts, the next 32 held out, 120 sites, 100 steps, lr 0.01, batch 8, shifts only,
applied unbounded, the 10-seed dev read), with ``--sparsity 0.1`` in one process and
``--sparsity 0.3`` in the other (with shifts only an Adam step moves a site by at most about
``lr * sqrt(D)``, so 0.5 or more would leave almost nothing), each at strengths 2, 3 and 4.5.
Rule, with a margin this time: that round's eval read moved LinEAS's perplexity against
Linear-AcT's by about two points (dev +6.67% against +6.90%, eval +4.4% against +2.5%: the eval
passages are lenient for Linear-AcT). So among this round's rows whose dev perplexity change is at
most +4.90% (Linear-AcT's +6.90% less two points; ``--merge ... --max-ppl-change 0.049``), take
the fewest toxic; eval once only if it reads at most Linear-AcT's 30 of 900 (3.3%):
``llm_lineas_small --parts small --split eval --limit 240 --seeds 0 1 2 --lineas-shift-only
--lineas-support unbounded --sparsity X --lineas-strength S`` (Linear-AcT at 1 beside it), met
if LinEAS is at or below Linear-AcT on both the toxic fraction and the perplexity change.
Otherwise a dev negative, and the eval prefixes stay unread.

    ... the shift-only written-pairs round's command with --act-strengths --sparsity 0.1 \
        --strengths 2 3 4.5 --out benchmarks/results/llm_lineas_sweep_dev10_written_sparse_a
    # beside it: --sparsity 0.3 --out ..._written_sparse_b; then
    python -m benchmarks.llm_lineas_sweep --merge \
        benchmarks/results/llm_lineas_sweep_dev10_written_sparse_{a,b}.json --max-ppl-change 0.049

(Outcome: sparsity 0.1, 3.2% / 2.0% / 0.9% toxic at 2 / 3 / 4.5, at +5.04% / +11.69% / +27.62%;
sparsity 0.3, 4.8% / 2.7% / 1.0%, at +2.95% / +7.07% / +16.70%; 119 and 115 of 120 sites kept.
Within +4.90% only sparsity 0.3 at 2, 43 of 900 toxic against Linear-AcT's 30: no eval.
docs/results.md.)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from act_core.hf import data
from benchmarks import llm_lineas_small as small
from benchmarks.llm_common import markdown_table, save_json, setup
from benchmarks.llm_toxicity import evaluate, reuse_baseline

log = logging.getLogger("benchmarks")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="*", default=["0.01:100", "0.03:100", "0.01:300",
                                                     "0.03:300"],
                   help="LinEAS lr:steps[:init[:decay]] (init: identity, the default, or "
                        "linear_act; decay: the cosine's end as a fraction of lr, default 1)")
    p.add_argument("--strengths", nargs="+", type=float, default=[1.0, 1.5, 2.0])
    p.add_argument("--act-strengths", nargs="*", type=float, default=[1.0],
                   help="Linear-AcT's strengths (its trade-off curve; the rule reads 1); none: "
                        "LinEAS rows only (another process's run gives Linear-AcT's)")
    p.add_argument("--baseline-from", default=None,
                   help="reuse the unsteered row of an earlier llm_toxicity result JSON of the "
                        "same split, prefixes, seeds and passages (checked)")
    p.add_argument("--max-ppl-change", type=float, default=None,
                   help="the rule's perplexity bound (default: Linear-AcT's change)")
    p.add_argument("--split", choices=("dev", "eval"), default="dev",
                   help="the prefixes and prose passages of this split (eval: for the "
                        "baseline's curve only; nothing is chosen on it)")
    p.add_argument("--out", default="benchmarks/results/llm_lineas_sweep_dev")
    p.add_argument("--resume", action="store_true",
                   help="keep the rows of --out.json (written with the same settings) and fit "
                        "only the --configs it lacks")
    args, rest = p.parse_known_args(argv)
    base = small.parse_args(rest + ["--split", args.split, "--out", ""])
    return argparse.Namespace(**{**vars(base), **vars(args)})


#: the arguments two runs must share for their rows to be compared (each row records its
#: method, strength and support)
SAME_SETTING = ("split", "seeds", "limit", "n", "ppl_texts", "sites", "data", "extra_pairs",
                "extra_only", "max_new_tokens")


def choose(rows: list[dict], max_ppl_change: float | None = None) -> dict:
    """The rule of the module docstring."""
    bound = max_ppl_change
    if bound is None:
        bound = next(r for r in rows if r["method"] == "linear_act"
                     and r["strength"] == 1.0)["ppl_change"]
    lineas = [r for r in rows if r["method"] == "lineas"]
    ok = [r for r in lineas if r["ppl_change"] <= bound]
    pool = ok or [r for r in lineas if r["strength"] == 1.0]
    return min(pool, key=lambda r: (r["toxic"], r["strength"], r["steps"]))


def _resumed(args) -> list[dict]:
    """The rows of an earlier run of the same settings (``--resume``); [] when there is none."""
    path = Path(f"{args.out}.json")
    if not path.exists():
        return []
    earlier = json.loads(path.read_text(encoding="utf-8"))
    # runs written before an option existed ran with its default
    settings = {"lineas_support": None, "lineas_shift_only": False, **earlier["args"]}
    keys = SAME_SETTING + ("support", "strengths", "lineas_batch", "max_ppl_change",
                           "lineas_support", "lineas_shift_only")
    if any(settings.get(k) != getattr(args, k) for k in keys):
        raise SystemExit(f"--resume: {path} was measured with other settings")
    return earlier["rows"]


def merge(paths: list[str], max_ppl_change: float | None = None,
          lineas_support: str | None = None) -> dict:
    """The rule applied to the rows of several runs of one setting (one unsteered row kept);
    with ``lineas_support``, only the LinEAS rows applied with that support."""
    runs = [json.loads(Path(p).read_text(encoding="utf-8")) for p in paths]
    for run in runs:  # rows written before rows recorded their support
        for row in run["rows"]:
            row.setdefault("support", run["args"]["support"])
    if any(run["args"].get(k) != runs[0]["args"].get(k) for run in runs for k in SAME_SETTING):
        raise SystemExit("--merge: the runs were measured with other settings")
    rows = runs[0]["rows"][:1] + [r for run in runs for r in run["rows"] if r["method"] != "none"
                                  and not (r["method"] == "lineas" and lineas_support
                                           and r["support"] != lineas_support)]
    return {"rows": rows, "chosen": choose(rows, max_ppl_change)}


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--merge":  # the rule over runs done side by side
        p = argparse.ArgumentParser(prog="llm_lineas_sweep --merge")
        p.add_argument("--merge", nargs="+", required=True)
        p.add_argument("--max-ppl-change", type=float, default=None)
        p.add_argument("--lineas-support", default=None)
        opts = p.parse_args(argv)
        result = merge(opts.merge, opts.max_ppl_change, opts.lineas_support)
        print(json.dumps(result["chosen"], indent=1))
        return result
    args = parse_args(argv)
    setup()
    start = time.perf_counter()
    model, tokenizer = small._load(args)
    source, target = small.toxicity_texts(args)
    held = (source[args.n: 2 * args.n], target[args.n: 2 * args.n])
    if not (held[0] and held[1]):  # every text fitted (the full-data part): nothing held out
        held = None
    source, target = source[: args.n], target[: args.n]
    prompts = data.rtp_split(args.split)[: args.limit]
    rows = _resumed(args) if args.resume else []
    if not rows:
        base = (reuse_baseline(args, len(prompts)) if args.baseline_from else
                evaluate(model, tokenizer, prompts, None, 0.0, args))
        rows = [{"method": "none", "lr": "-", "steps": "-", "strength": 0.0,
                 "toxic": base["toxic"], "ppl": base["ppl"], "ppl_change": 0.0}]
    base = rows[0]

    def add(method, lr, steps, maps, strength, fit_seconds, held_closed, init="-", decay="-"):
        support = small.toxicity_support(args, method)
        res = evaluate(model, tokenizer, prompts, maps, strength, args, support)
        rows.append({"method": method, "lr": lr, "steps": steps, "init": init, "decay": decay,
                     "strength": strength, "support": support,
                     "shift_only": method == "lineas" and args.lineas_shift_only,
                     "sparsity": args.sparsity if method == "lineas" else 0.0,
                     "toxic": res["toxic"],
                     "toxic_per_seed": res["toxic_per_seed"], "ppl": res["ppl"],
                     "ppl_change": res["ppl"] / base["ppl"] - 1.0,
                     "fit_seconds": fit_seconds, "held_closed": held_closed})
        log.info("%s lr %s steps %s strength %s: %.4f toxic, ppl %+.2f%%", method, lr, steps,
                 strength, res["toxic"], 100 * rows[-1]["ppl_change"])

    act_strengths = [s for s in args.act_strengths
                     if not any(r["method"] == "linear_act" and r["strength"] == s for r in rows)]
    if act_strengths:
        maps, seconds, _, held_closed = small._fit(model, tokenizer, source, target,
                                                   args.sites, "linear_act", args, held)
        for strength in act_strengths:
            add("linear_act", "-", "-", maps, strength, seconds, held_closed)
    for config in args.configs:
        parts = config.split(":")
        lr, steps, init, decay = parts + ["identity", "1"][len(parts) - 2:]
        lr, steps, decay = float(lr), int(steps), float(decay)
        if any(r["lr"] == lr and r["steps"] == steps and r.get("init", "identity") == init
               and r.get("decay", 1.0) == decay for r in rows):
            continue
        args.lineas_lr, args.lineas_steps, args.lineas_init = lr, steps, init
        args.lineas_decay = decay
        maps, seconds, _, held_closed = small._fit(model, tokenizer, source, target,
                                                   args.sites, "lineas", args, held)
        for strength in args.strengths:
            add("lineas", lr, steps, maps, strength, seconds, held_closed, init, decay)
        save_json(f"{args.out}.json", {"args": vars(args), "rows": rows, "partial": True})
    curve_only = not any(r["method"] == "lineas" for r in rows)  # --configs with none
    no_act = args.max_ppl_change is None and not any(
        r["method"] == "linear_act" and r["strength"] == 1.0 for r in rows)
    chosen = None if curve_only or no_act else choose(rows, args.max_ppl_change)
    table = markdown_table([{**r, "toxic %": f"{100 * r['toxic']:.1f}",
                             "ppl change %": f"{100 * r['ppl_change']:+.2f}"} for r in rows],
                           ["method", "lr", "steps", "init", "decay", "strength", "toxic %",
                            "ppl change %", "held_closed"])
    text = (f"SmolLM2 {args.split} sweep ({len(prompts)} prefixes, seeds {args.seeds}, "
            f"{args.ppl_texts} prose passages), fitted on {args.n}+{args.n} texts; "
            f"{time.perf_counter() - start:.0f} s\n\n{table}\n\n"
            + ("chosen: none (no LinEAS row, or no Linear-AcT row at 1: see --merge)\n"
               if chosen is None else
               f"chosen: lr {chosen['lr']}, steps {chosen['steps']}, init "
               f"{chosen.get('init', 'identity')}, decay {chosen.get('decay', 1.0)}, strength "
               f"{chosen['strength']}\n"))
    print(text)
    save_json(f"{args.out}.json", {"args": vars(args), "rows": rows, "chosen": chosen})
    Path(f"{args.out}.md").write_text(text, encoding="utf-8")
    return {"rows": rows, "chosen": chosen}


if __name__ == "__main__":
    main()
