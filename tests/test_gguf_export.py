"""llama.cpp control vectors: written with ``gguf``, read back, and exact where llama.cpp adds them.

llama.cpp adds ``direction.N`` to the residual stream at the end of decoder layer N (after the
feed-forward residual add; read in its source: ``llama_adapter_cvec::apply`` fills layer ``il``
from ``direction.il``, and the Llama graph calls ``build_cvec`` after the FFN add). The test
emulates that on a tiny config-built Llama with a hook on the layer's output and compares it
with the hooked map on ``mlp.down_proj``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from act_core import MapSet, TransportMap
from act_core.fold import FoldError
from act_core.hf import steering
from act_core.hf.gguf_export import ARCH, control_vectors, read_control_vector, write_control_vector
from harness.hf_tiny import tiny_causal_lm


def _tmap(d: int, seed: int, slope: bool = False) -> TransportMap:
    gen = torch.Generator().manual_seed(seed)
    levels = torch.linspace(-3, 3, 13).unsqueeze(1).expand(13, d).contiguous()
    scale = 0.9 + 0.2 * torch.rand(d, generator=gen) if slope else torch.ones(d)
    return TransportMap(scale=scale, shift=torch.randn(d, generator=gen), lo=-3 * torch.ones(d),
                        hi=3 * torch.ones(d), quantiles=levels, method="diff_means")


def _maps(*layers: int, slope: bool = False, **meta) -> MapSet:
    return MapSet({f"model.layers.{n}.mlp.down_proj": _tmap(32, n, slope) for n in layers},
                  {"support": "unbounded", **meta})


def test_the_file_reads_back_to_the_shifts_it_was_written_from(tmp_path):
    maps = _maps(1, 3, 2)
    path = write_control_vector(tmp_path / "cv.gguf", maps, 0.7, model_hint="llama")
    vectors, fields = read_control_vector(path)
    assert fields == {"general.architecture": ARCH, f"{ARCH}.model_hint": "llama",
                      f"{ARCH}.layer_count": 3}
    assert sorted(vectors) == [1, 2, 3]
    for layer, vector in vectors.items():
        expected = (0.7 * maps[f"model.layers.{layer}.mlp.down_proj"].shift.double()).float()
        np.testing.assert_array_equal(vector, expected.numpy())


def test_adding_the_vector_after_the_layer_equals_the_hooked_map():
    """llama.cpp's semantics, emulated: add direction.N to decoder layer N's output."""
    model, tokenizer = tiny_causal_lm("llama", seed=5)
    maps = _maps(1)
    vectors = control_vectors(maps, 0.8)
    ids = tokenizer(["hello world", "a cat"], return_tensors="pt", padding=True)

    def add(layer):
        def hook(module, args, output):
            vector = torch.from_numpy(vectors[layer])
            if isinstance(output, tuple):
                return (output[0] + vector, *output[1:])
            return output + vector
        return hook

    handles = [model.model.layers[n].register_forward_hook(add(n)) for n in vectors]
    try:
        with torch.no_grad():
            emulated = model(**ids).logits
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad(), steering(model, maps, 0.8, "unbounded"):
        hooked = model(**ids).logits
    with torch.no_grad():
        plain = model(**ids).logits
    assert (hooked - plain).abs().max() > 0.05
    torch.testing.assert_close(emulated, hooked, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("maps", "support", "message"), [
    (_maps(1, slope=True), "unbounded", "omega != 1"),
    (_maps(0, 1), "unbounded", "layer 0"),
    (_maps(1), "minmax", "support is 'minmax'"),
    (_maps(1, extra={"skip_first_token": True}), "unbounded", "first token"),
    (MapSet({"model.layers.1.self_attn.o_proj": _tmap(32, 1)}, {}), "unbounded",
     "not a feed-forward output"),
])
def test_maps_without_an_exact_control_vector_are_refused(maps, support, message):
    with pytest.raises(FoldError, match=message):
        control_vectors(maps, 1.0, support)
