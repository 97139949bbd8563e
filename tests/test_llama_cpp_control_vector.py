"""Opt-in: the exported control vector in llama.cpp itself gives the hooked model's greedy tokens.

Needs what CI does not have: llama.cpp's Python binding (``llama-cpp-python``, built from its
source package: about 40 minutes on 2 CPU cores) and an F32 GGUF of the cached SmolLM2 weights
(made with llama.cpp's ``convert_hf_to_gguf.py --outtype f32`` from ``.cache/smollm2``), named by
``ACT_LLAMA_CPP_GGUF``. Skipped otherwise. See docs/export.md.

Maps: mean_act (a pure shift) on the feed-forward outputs of layers 1-29 (llama.cpp has no slot
for layer 0), fitted on the built-in football concept. The file is written by
:func:`act_core.hf.gguf_export.write_control_vector` and loaded into llama.cpp the way its own
``common_control_vector_load`` does: ``direction.N`` at offset ``(N - 1) * n_embd`` of the
buffer given to ``llama_set_adapter_cvec``.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os

import numpy as np
import pytest

pytestmark = [
    pytest.mark.llm, pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("ACT_LLAMA_CPP_GGUF")
                       or importlib.util.find_spec("llama_cpp") is None,
                       reason="opt-in: needs llama-cpp-python and ACT_LLAMA_CPP_GGUF"),
]
PROMPTS = ["Once upon a time", "The weather today is", "My favourite hobby is",
           "In the morning I", "The best way to learn is"]
NEW_TOKENS = 16


def _llama_cpp_greedy(llm, lib, tokens_in, buffer, n_embd, n_layer) -> list[int]:
    if buffer is None:
        assert lib.llama_set_adapter_cvec(llm.ctx, None, 0, n_embd, -1, -1) == 0
    else:
        data = buffer.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        assert lib.llama_set_adapter_cvec(llm.ctx, data, buffer.size, n_embd, 1,
                                          n_layer - 1) == 0
    llm.reset()
    out = []
    for token in llm.generate(tokens_in, top_k=1, temp=0.0, reset=True):
        out.append(int(token))
        if len(out) == NEW_TOKENS:
            break
    return out


def test_llama_cpp_with_the_control_vector_matches_the_hooked_model(tmp_path):
    import llama_cpp
    import torch
    from gguf import GGUFReader

    from act_core import hf
    from act_core.hf import data
    from act_core.hf.gguf_export import write_control_vector
    from act_core.mapset import MapSet

    model, tokenizer = hf.load_causal_lm("smollm2")
    source, target = data.load_builtin("concept:football")
    sites = [f"model.layers.{n}.mlp.down_proj" for n in range(1, 30)]
    maps = hf.fit_lm(model, tokenizer, source, target, sites, method="mean_act",
                     incremental=False)
    maps = MapSet(dict(maps), {"support": "unbounded"})
    path = write_control_vector(tmp_path / "football.gguf", maps, 1.0)

    n_embd, n_layer = model.config.hidden_size, model.config.num_hidden_layers
    buffer = np.zeros(n_embd * (n_layer - 1), dtype=np.float32)
    for tensor in GGUFReader(str(path)).tensors:  # as llama.cpp's common loader places them
        layer = int(tensor.name.split(".")[1])
        buffer[(layer - 1) * n_embd: layer * n_embd] += np.asarray(tensor.data, np.float32)

    llm = llama_cpp.Llama(os.environ["ACT_LLAMA_CPP_GGUF"], n_ctx=256, n_threads=2,
                          verbose=False)
    same_plain = same_steered = changed = 0
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            plain = model.generate(ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                                   do_sample=False)[0, ids.shape[1]:].tolist()
            with hf.steering(model, maps, 1.0, "unbounded"):
                hooked = model.generate(ids, max_new_tokens=NEW_TOKENS,
                                        min_new_tokens=NEW_TOKENS,
                                        do_sample=False)[0, ids.shape[1]:].tolist()
        tokens_in = ids[0].tolist()
        cpp_plain = _llama_cpp_greedy(llm, llama_cpp, tokens_in, None, n_embd, n_layer)
        cpp_steered = _llama_cpp_greedy(llm, llama_cpp, tokens_in, buffer, n_embd, n_layer)
        same_plain += cpp_plain == plain
        same_steered += cpp_steered == hooked
        changed += hooked != plain
    assert changed >= 3, "the maps should change most continuations"
    assert same_plain == len(PROMPTS), "llama.cpp and transformers disagree without steering"
    assert same_steered == len(PROMPTS)
