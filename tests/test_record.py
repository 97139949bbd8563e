"""Recording pooled activations: oracle on a tiny Llama, layouts, masks, hook cleanup."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from act_core import ActivationError, Site, SiteError, record_activations


@pytest.fixture(scope="module")
def llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=100)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # transformers installs its own capture hooks on the first call
        model(input_ids=torch.zeros(1, 2, dtype=torch.long), output_hidden_states=True)
    return model


def _hooks(model: nn.Module) -> set[tuple[str, int]]:
    return {(name, key) for name, m in model.named_modules() for key in m._forward_hooks}


def _masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.double().unsqueeze(-1)  # (B, T, 1)
    return (hidden.double() * weights).sum(1) / weights.sum(1)


@pytest.mark.parametrize("padding", ["left", "right"])
def test_recording_equals_pooled_hidden_states(llama, padding):
    torch.manual_seed(1)
    lengths = [6, 3, 5]
    ids = torch.randint(0, 100, (3, 6))
    mask = torch.zeros(3, 6, dtype=torch.long)
    for row, length in enumerate(lengths):
        if padding == "left":
            mask[row, 6 - length:] = 1
        else:
            mask[row, :length] = 1
    sites = ["model.layers.0", "model.norm"]
    hooks = _hooks(llama)
    with torch.no_grad(), record_activations(llama, sites) as recorder:
        recorder.token_mask = mask
        output = llama(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        recorder.token_mask = mask[:2]
        llama(input_ids=ids[:2], attention_mask=mask[:2])
    stacked = recorder.stacked()
    hidden = output.hidden_states  # embeddings, after layer 0, after the final norm
    for site, states in zip(sites, (hidden[1], hidden[2]), strict=True):
        expected = _masked_mean(states, mask)
        assert stacked[site].shape == (5, 32) and stacked[site].dtype == torch.float32
        torch.testing.assert_close(stacked[site][:3].double(), expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(stacked[site][3:].double(), expected[:2], rtol=1e-5, atol=1e-6)
    assert recorder.layouts == {site: "tokens" for site in sites}
    assert recorder.order == sites
    assert _hooks(llama) == hooks


def test_tuple_outputs_need_no_index_and_accept_one(llama):
    ids = torch.randint(0, 100, (2, 4))
    with torch.no_grad(), record_activations(llama, ["model.layers.0.self_attn",
                                                     "model.layers.1.self_attn:0"]) as recorder:
        llama(input_ids=ids)
    assert {k: v.shape for k, v in recorder.stacked().items()} == {
        "model.layers.0.self_attn": (2, 32), "model.layers.1.self_attn:0": (2, 32)}


class Shapes(nn.Module):
    """Emits a vector (B, D), tokens (B, T, D) and a feature map (B, C, H, W); runs b before a."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Identity()
        self.b = nn.Identity()
        self.c = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.b(x.mean(dim=(2, 3)))  # (B, C)
        self.a(x.flatten(2).transpose(1, 2))  # (B, H*W, C)
        return self.c(x)  # (B, C, H, W)


def test_layouts_are_detected_and_pooled():
    torch.manual_seed(0)
    model, x = Shapes(), torch.randn(4, 3, 5, 2)
    with record_activations(model, ["a", "b", "c"]) as recorder:
        model(x)
        model(x[:1])
    stacked = recorder.stacked()
    assert recorder.layouts == {"a": "tokens", "b": "vector", "c": "channels"}
    assert recorder.order == ["b", "a", "c"]  # forward order, not registration order
    pooled = torch.cat([x, x[:1]]).mean(dim=(2, 3))
    for site in "abc":
        torch.testing.assert_close(stacked[site], pooled)
    assert recorder.counts() == {"a": 5, "b": 5, "c": 5}


def test_explicit_layout_is_checked():
    model = Shapes()
    with pytest.raises(ActivationError, match="does not fit layout 'vector'"):
        with record_activations(model, [Site("c", layout="vector")]):
            model(torch.randn(2, 3, 4, 4))
    assert not model.c._forward_hooks


def test_bad_token_masks_are_refused():
    model = Shapes()
    with record_activations(model, ["a"]) as recorder:
        with pytest.raises(ActivationError, match="token_mask has shape"):
            recorder.token_mask = torch.ones(2, 7)
            model(torch.randn(2, 3, 2, 2))
        with pytest.raises(ActivationError, match="no non-padding token"):
            recorder.token_mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])
            model(torch.randn(2, 3, 2, 2))
        with pytest.raises(ActivationError, match=r"\(B, T\)"):
            recorder.token_mask = torch.ones(4)


def test_non_finite_activations_name_the_site():
    model = Shapes()
    x = torch.randn(2, 3, 2, 2)
    x[1, 0, 0, 0] = float("inf")
    with pytest.raises(ActivationError, match="site 'c'.*NaN or infinite"):
        with record_activations(model, ["c"]):
            model(x)


def test_padding_values_are_ignored_even_when_not_finite():
    model = Shapes()
    x = torch.randn(1, 3, 2, 2)
    x[0, :, 1, 1] = float("nan")  # the last token of site a
    with record_activations(model, ["a"]) as recorder:
        recorder.token_mask = torch.tensor([[1, 1, 1, 0]])
        model(x)
    torch.testing.assert_close(recorder.stacked()["a"], x.flatten(2)[..., :3].mean(-1))


def test_hooks_are_removed_when_the_forward_raises():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    x = torch.randn(3, 4)
    before = model(x)
    with pytest.raises(RuntimeError, match="shape"):
        with record_activations(model, ["0", "1", "2"]) as recorder:
            model(x)
            model(torch.randn(3, 5))  # wrong width: the forward raises
    assert all(not m._forward_hooks for m in model.modules())
    assert torch.equal(model(x), before)
    assert recorder.counts()["0"] == 3


def test_unknown_site_is_refused_before_any_hook():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    with pytest.raises(SiteError, match="no module named '2'"):
        with record_activations(model, ["0", "2"]):
            pass
    assert all(not m._forward_hooks for m in model.modules())


def test_a_paused_recorder_keeps_nothing():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    x = torch.randn(5, 3)
    with record_activations(model, ["1"]) as recorder:
        model(x)
        recorder.paused = True
        model(torch.randn(7, 3))  # not recorded
        recorder.paused = False
        model(x)
    assert recorder.counts() == {"1": 10}
    assert torch.equal(recorder.stacked()["1"], torch.cat([model(x), model(x)]).detach())
