"""Does asking the model itself give a gate that knows offensive words it was not fitted on?

Issue 23's sequence gate is a token probe fitted on ``toxicity:paired``: it learns the words of
its 86 pairs and ranks texts with words it never saw at an AUROC of 0.87-0.90
(``llm_gate_unseen_probe.py``). An instruct model can be asked: this wraps each text in the
chat template with a question ("Is the following text rude, vulgar or offensive?") and reads
(a) the model's own answer, log p(yes) - log p(no), with nothing fitted, and (b) a text-level
probe (a discriminant with Ledoit-Wolf shrinkage) on the hidden state at the answer position,
per layer. As a control, (c) the same probe on each text's mean hidden state without the
question. The probes are fitted on one half of the pairs and read on the other, both ways
round, as ``llm_gate_unseen_probe.py`` does; the numbers are AUROCs of the held-out toxic texts
(all, and those with a swapped word the fitting half never swapped) against the held-out
softened texts. Fitting texts only, no generation, about two minutes:

    python -m benchmarks.llm_gate_template_probe \\
        --out benchmarks/results/llm_gate_template_probe.json
"""

from __future__ import annotations

import argparse
import logging

import torch

from act_core.gate import separation_auroc
from act_core.seqgate import shrunk_discriminant
from benchmarks.llm_common import load_model, save_json, setup
from benchmarks.llm_gate_unseen_probe import two_fold_pairs

log = logging.getLogger("benchmarks")
QUESTION = "Is the following text rude, vulgar or offensive? Answer yes or no.\n\n"


@torch.inference_mode()
def _features(model, tokenizer, texts: list, asked: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per text: hidden states (layers + 1, D) at the answer position (``asked``) or averaged
    over the text's tokens after the first, and the answer's log p(yes) - log p(no)."""
    def ids(words):
        return [tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words]

    yes, no = ids([" yes", "Yes"]), ids([" no", "No"])
    states, answers = [], []
    for text in texts:
        if asked:
            text = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION + text}],
                                                 tokenize=False, add_generation_prompt=True)
        out = model(**tokenizer([text], return_tensors="pt"), output_hidden_states=True)
        hidden = torch.stack(out.hidden_states)[:, 0].float()  # (layers + 1, T, D)
        states.append(hidden[:, -1] if asked else hidden[:, 1:].mean(1))
        logp = out.logits[0, -1].float().log_softmax(-1)
        answers.append(float(logp[yes].logsumexp(0) - logp[no].logsumexp(0)))
    return torch.stack(states), torch.tensor(answers)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    setup()
    model, tokenizer = load_model()
    source, target, positives, ids, halves = two_fold_pairs(tokenizer)
    result = {"question": QUESTION, "pairs": len(source)}
    for asked in (True, False):
        src, src_answer = _features(model, tokenizer, source, asked)
        tgt, tgt_answer = _features(model, tokenizer, target, asked)
        key = "asked" if asked else "mean_state"
        result[f"{key}_answer_auroc"] = separation_auroc(src_answer, tgt_answer)
        rows = []
        for layer in range(1, src.shape[1]):
            aurocs = []
            for fit, held in (halves, halves[::-1]):
                w = shrunk_discriminant(src[fit, layer].double(), tgt[fit, layer].double())
                words = set(torch.cat([ids[i][positives[i]] for i in fit]).tolist())
                new = torch.tensor([any(t not in words for t in ids[i][positives[i]].tolist())
                                    for i in held])
                s, t = src[held, layer].double() @ w, tgt[held, layer].double() @ w
                aurocs.append((separation_auroc(s, t), separation_auroc(s[new], t)))
            rows.append({"layer": layer, "auroc_texts": sum(a[0] for a in aurocs) / 2,
                         "auroc_unseen_word_texts": sum(a[1] for a in aurocs) / 2})
            log.info("%s layer %d: %s", key, layer, rows[-1])
        result[key] = rows
        best = max(rows, key=lambda r: r["auroc_unseen_word_texts"])
        print(f"{key}: the model's answer {result[f'{key}_answer_auroc']:.3f}; best probe "
              f"layer {best['layer']}: all {best['auroc_texts']:.3f}, unseen-word texts "
              f"{best['auroc_unseen_word_texts']:.3f}")
    if args.out:
        save_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
