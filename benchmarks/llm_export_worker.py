"""Fresh-process half of benchmarks/llm_export.py: plain transformers, no import of act_core.

Run with ``python -I`` (no script folder, cwd or PYTHONPATH on sys.path); an import blocker
makes any attempt to import ``act_core`` fail loudly. Reads a JSON job on stdin, prints JSON.

Job: {"exported": folder, "plain": folder, "prompts": [...], "new_tokens": n, "rounds": r,
      "speed_prompts": k}. Output: greedy token ids of the exported model per prompt, and
tokens per second of both models, alternating, one prompt at a time (batch 1).
"""

import importlib.abc
import json
import statistics
import sys
import time


class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "act_core" or name.startswith("act_core."):
            raise ImportError("act_core must not be imported here")
        return None


sys.meta_path.insert(0, _Block())

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402


def _greedy(model, tokenizer, prompt, new_tokens, fixed=False):
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    extra = {"min_new_tokens": new_tokens} if fixed else {}
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, **extra)
    return out[0, ids.shape[1]:].tolist()


def main():
    job = json.loads(sys.stdin.read())
    torch.set_num_threads(job.get("threads", 2))
    exported = AutoModelForCausalLM.from_pretrained(job["exported"]).eval()
    plain = AutoModelForCausalLM.from_pretrained(job["plain"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(job["exported"])
    n = job["new_tokens"]
    tokens = [_greedy(exported, tokenizer, p, n) for p in job["prompts"]]
    speed = {"exported": [], "plain": []}
    prompts = job["prompts"][: job["speed_prompts"]]
    for r in range(job["rounds"]):
        order = ("plain", "exported") if r % 2 == 0 else ("exported", "plain")
        for name in order:
            model = exported if name == "exported" else plain
            start = time.perf_counter()
            count = sum(len(_greedy(model, tokenizer, p, n, fixed=True)) for p in prompts)
            speed[name].append(count / (time.perf_counter() - start))
    print(json.dumps({
        "tokens": tokens, "class": type(exported).__name__,
        "config_bias": {k: getattr(exported.config, k, None)
                        for k in ("attention_bias", "mlp_bias")},
        "act_core_imported": any(m.startswith("act_core") for m in sys.modules),
        "tokens_per_s": speed,
        "ratio_median": statistics.median(speed["exported"]) / statistics.median(speed["plain"]),
    }))


if __name__ == "__main__":
    main()
