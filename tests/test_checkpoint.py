"""The toy checkpoint's delta mechanism: tensors written over a safetensors file in place."""

import pytest
import torch
from safetensors.torch import load, save

from toyworld.checkpoint import DELTA_NAME, STAGE1_NAME, expected_sha256, patch_tensors


def _file():
    tensors = {"a": torch.arange(6, dtype=torch.float16).reshape(2, 3),
               "b": torch.ones(4, dtype=torch.float32)}
    return tensors, save(tensors, metadata={"note": "base"})


def test_patching_replaces_only_the_named_tensor_and_keeps_the_header():
    tensors, base = _file()
    new_a = torch.full((2, 3), -2.5, dtype=torch.float16)
    out = patch_tensors(base, {"a": new_a})
    assert len(out) == len(base)
    size = int.from_bytes(base[:8], "little")
    assert out[:8 + size] == base[:8 + size]
    loaded = load(out)
    assert torch.equal(loaded["a"], new_a)
    assert torch.equal(loaded["b"], tensors["b"])


def test_patching_refuses_unknown_names_and_other_shapes_or_dtypes():
    _, base = _file()
    with pytest.raises(KeyError, match="c is not a tensor"):
        patch_tensors(base, {"c": torch.zeros(1)})
    with pytest.raises(ValueError, match="a: base has F16"):
        patch_tensors(base, {"a": torch.zeros(3, 2, dtype=torch.float16)})
    with pytest.raises(ValueError, match="b: base has F32"):
        patch_tensors(base, {"b": torch.zeros(4, dtype=torch.float16)})


def test_every_committed_file_has_a_recorded_sha256():
    for name in (STAGE1_NAME, DELTA_NAME, "act_toyworld_sd15.safetensors"):
        assert len(expected_sha256(name)) == 64
