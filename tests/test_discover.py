"""Site discovery by structure (act_core.discover) on small plain-torch models."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from act_core import Site, SiteError, record_activations
from act_core.block_stacks import find_block_stacks
from act_core.discover import discover_sites, probe_outputs
from act_core.patch import interventions


class Attention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.norm_q = nn.LayerNorm(dim // 2)  # per-head query norm: not a site
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, _, v = self.qkv(x).chunk(3, dim=-1)
        q = self.norm_q(q.unflatten(-1, (2, -1)))  # (B, T, heads, head_dim)
        return self.proj(v * q.flatten(-2).sigmoid())


class DualBlock(nn.Module):
    """Returns (img, txt): txt is updated, except in the last block where it passes through."""

    def __init__(self, dim: int, last: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)  # no affine weight
        self.attn = Attention(dim)
        self.txt_mlp = nn.Linear(dim, dim)
        self.last = last

    def forward(self, img: torch.Tensor, txt: torch.Tensor):
        img = img + self.attn(self.norm1(img)) + self.norm2(img)
        return img, (txt if self.last else txt + self.txt_mlp(txt))


class GridBlock(nn.Module):
    """Channel-last video grid (B, T, H, W, D), as Cosmos' blocks."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attn = Attention(dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm(self.attn(x))


class Net(nn.Module):
    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(4, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.mlps = nn.ModuleList([nn.Sequential(nn.Linear(dim, dim)) for _ in range(3)])
        self.blocks = nn.ModuleList([DualBlock(dim), DualBlock(dim, last=True)])
        self.grid = nn.ModuleList([GridBlock(dim) for _ in range(2)])
        self.unused = nn.ModuleList([GridBlock(dim) for _ in range(2)])  # never runs
        self.frames = nn.ModuleList([GridBlock(dim) for _ in range(2)])  # batch folded

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, T, 4)
        img = self.embed(x)
        txt = img.flip(1)
        for mlp in self.mlps:
            txt = mlp(txt)
        for block in self.blocks:
            img, txt = block(img, txt)
        grid = img.unflatten(1, (2, 2, -1)).unsqueeze(1)  # (B, 1, 2, 2, T/4, D)
        grid = grid.flatten(1, 2)  # (B, 2, 2, T/4, D): channel-last
        for block in self.grid:
            grid = block(grid)
        folded = grid.flatten(0, 1)  # (B * 2, 2, T/4, D): frames in the batch
        for block in self.frames:
            folded = block(folded)
        return grid.flatten(1, 3) + folded.unflatten(0, (x.shape[0], -1)).flatten(1, 3)


def _run(model: nn.Module, batch: int = 3):
    x = torch.randn(batch, 8, 4, generator=torch.Generator().manual_seed(0))
    return lambda: model(x)


def test_stacks_are_the_lists_of_repeated_attention_blocks():
    net = Net()
    stacks = {s.name: (s.block_type, s.blocks) for s in find_block_stacks(net)}
    assert stacks == {"blocks": ("DualBlock", ("blocks.0", "blocks.1")),
                      "grid": ("GridBlock", ("grid.0", "grid.1")),
                      "unused": ("GridBlock", ("unused.0", "unused.1")),
                      "frames": ("GridBlock", ("frames.0", "frames.1"))}  # not the MLP list


def test_probe_records_computed_tensors_and_leaves_no_hook():
    net = Net()
    seen = probe_outputs(net, ["blocks.0", "blocks.1", "unused.0"], _run(net))
    assert [e.index for e in seen["blocks.0"]] == [0, 1]
    assert [e.index for e in seen["blocks.1"]] == [0]  # txt passed through unchanged
    assert "unused.0" not in seen
    assert not interventions(net)
    with torch.inference_mode():  # as ComfyUI runs models: inference tensors work too
        assert probe_outputs(net, ["blocks.0", "blocks.1"], _run(net)) == {
            k: seen[k] for k in ("blocks.0", "blocks.1")}


def test_block_sites_per_stream_with_their_layout():
    net = Net()
    sites = discover_sites(net, _run(net), "blocks")
    assert sites == [Site("blocks.0", 0, "tokens"), Site("blocks.0", 1, "tokens"),
                     Site("blocks.1", 0, "tokens"),
                     Site("grid.0", None, "tokens"), Site("grid.1", None, "tokens")]


def test_norm_sites_are_affine_feature_norms_only():
    net = Net()
    sites = discover_sites(net, _run(net), "norms")
    assert [str(s) for s in sites] == ["blocks.0.norm1", "blocks.1.norm1", "grid.0.norm",
                                       "grid.1.norm"]
    assert {s.layout for s in sites} == {"tokens"}


def test_discovered_sites_record_one_vector_per_item():
    """Channel-last grids pool over every position, frames included."""
    net = Net()
    sites = discover_sites(net, _run(net), "blocks+norms")
    with record_activations(net, sites) as recorder:
        _run(net, batch=5)()
    stacked = recorder.stacked()
    assert set(stacked) == {str(s) for s in sites}
    assert all(v.shape == (5, 8) for v in stacked.values())
    grid = {}
    net.grid[1].register_forward_hook(lambda m, a, out: grid.setdefault("x", out))
    _run(net, batch=5)()
    torch.testing.assert_close(stacked["grid.1"], grid["x"].mean(dim=(1, 2, 3)))


def test_a_model_without_repeated_blocks_is_refused_with_the_fix():
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    with pytest.raises(SiteError, match="no list of >= 2 repeated blocks"):
        discover_sites(net, lambda: net(torch.zeros(1, 4)))
    with pytest.raises(SiteError, match="kind must be one of"):
        discover_sites(Net(), lambda: None, "everything")


def _seq_first_encoder() -> nn.TransformerEncoder:
    """torch's own encoder with ``batch_first=False``: its layers return (T, B, D)."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=False)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()


def test_a_second_pass_with_twice_the_batch_finds_sequence_first_sites():
    """(T, B, D) outputs: the dim that doubles with the batch is dim -2: seq_first sites."""
    net = _seq_first_encoder()
    x = torch.randn(5, 1, 8)  # (T, B, D)
    assert {s.layout for s in discover_sites(net, lambda: net(x))} == {"tokens"}  # T as batch
    sites = discover_sites(net, lambda: net(x), "blocks+norms",
                           run_double=lambda: net(x.repeat(1, 2, 1)))
    assert sites[:3] == [Site("layers.0.norm1", None, "seq_first"),
                         Site("layers.0.norm2", None, "seq_first"),
                         Site("layers.0", None, "seq_first")]
    assert {s.layout for s in sites} == {"seq_first"} and len(sites) == 6


def test_seq_first_sites_pool_per_item_and_take_per_item_strengths():
    """Recording pools each item over its positions; a (B,) strength moves item b of dim -2
    only, exactly as a batch-first (B, T, D) transport of the same values would."""
    from act_core import TransportMap, apply_transport
    from act_core.apply import transport_output

    net = _seq_first_encoder()
    x = torch.randn(5, 3, 8)  # (T, B, D)
    site = Site("layers.0", None, "seq_first")
    with record_activations(net, [site]) as recorder:
        net(x)
    out = {}
    handle = net.layers[0].register_forward_hook(lambda m, a, o: out.setdefault("x", o))
    net(x)
    handle.remove()
    torch.testing.assert_close(recorder.stacked()["layers.0"], out["x"].mean(dim=0))  # (B, D)
    gen = torch.Generator().manual_seed(1)
    zeros = torch.zeros(8)
    tmap = TransportMap(scale=1 + 0.1 * torch.rand(8, generator=gen),
                        shift=torch.randn(8, generator=gen), lo=zeros - 9, hi=zeros + 9,
                        quantiles=torch.zeros(13, 8), mode="seq_first")
    strength = torch.tensor([0.0, 1.0, 0.5])
    y = transport_output(out["x"], tmap, strength, "unbounded")
    assert torch.equal(y[:, 0], out["x"][:, 0])  # strength 0: that item's own bits
    batch_first = transport_output(out["x"].transpose(0, 1).contiguous(),
                                   TransportMap(**{**tmap.__dict__, "mode": "tokens"}),
                                   strength, "unbounded")
    assert torch.equal(y, batch_first.transpose(0, 1))
    with apply_transport(net, {"layers.0": tmap}, strength, "unbounded"):
        steered = net(x)
    assert not torch.allclose(steered[:, 1], net(x)[:, 1])


class _BatchOne(nn.Module):
    """A model that takes batch 1 only and runs its blocks on one unbatched (S, D) sequence,
    as MiniMax H3 packs text, audio and video tokens."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0)
        self.blocks = nn.ModuleList([layer, copy.deepcopy(layer)]).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (1, S, D) -> (1, S, D)
        if x.shape[0] != 1:
            raise ValueError("this model supports batch size 1")
        h = x[0]  # (S, D): no batch dim from here on
        for block in self.blocks:
            h = block(h)
        return h.unsqueeze(0)


def test_a_model_that_refuses_twice_the_batch_gets_unbatched_sites():
    """The second pass raises BatchSizeError: the blocks' (S, D) outputs are one item's tokens
    ('unbatched' sites, norms too), pooled to one vector per call and transported per token;
    without the refusal they are no sites (dim 0 is not the batch)."""
    from act_core import TransportMap, apply_transport
    from act_core.errors import BatchSizeError

    net, x = _BatchOne(), torch.randn(1, 5, 8)

    def refuse():
        try:
            net(x.repeat(2, 1, 1))
        except ValueError as error:
            raise BatchSizeError(str(error)) from error

    with pytest.raises(SiteError, match="no blocks sites ran"):
        discover_sites(net, lambda: net(x), run_double=lambda: net(x))
    sites = discover_sites(net, lambda: net(x), "blocks+norms", run_double=refuse)
    assert sites[:3] == [Site("blocks.0.norm1", None, "unbatched"),
                         Site("blocks.0.norm2", None, "unbatched"),
                         Site("blocks.0", None, "unbatched")]
    assert {s.layout for s in sites} == {"unbatched"} and len(sites) == 6
    with record_activations(net, [sites[2]]) as recorder:
        net(x)
        net(x + 1)
    inner = net.blocks[0](x[0])  # (S, D)
    torch.testing.assert_close(recorder.stacked()["blocks.0"][0], inner.mean(dim=0))  # (2, D)
    zeros = torch.zeros(8)
    tmap = TransportMap(scale=torch.full((8,), 1.5), shift=torch.ones(8), lo=zeros - 9,
                        hi=zeros + 9, quantiles=torch.zeros(13, 8), mode="unbatched")
    plain = net(x)
    for strength, changes in ((torch.tensor([0.0]), False), (torch.tensor([1.0]), True),
                              (1.0, True)):
        with apply_transport(net, {"blocks.0": tmap}, strength, "unbounded"):
            assert torch.equal(net(x), plain) is not changes


def test_blocks_run_only_outside_the_models_forward_are_not_probed():
    """A host may run part of a model while preparing its inputs (MiniMax H3's text refiner
    runs once per conditioning, outside the denoiser calls a host steers): only calls inside
    the model's own forward count, when the model runs."""
    net, x = _BatchOne(), torch.randn(1, 5, 8)

    def run() -> None:
        net.blocks[0](x[0])  # outside: preparing
        net.blocks[1](x[0])
        net(x)

    inside = probe_outputs(net, ["", "blocks.1", "blocks.0"], run)
    assert list(inside) == ["blocks.0", "blocks.1", ""]  # in the order the calls returned
    assert inside["blocks.0"][0].shape == (5, 8)
    assert list(probe_outputs(net, ["blocks.1", "blocks.0"], run)) == ["blocks.0", "blocks.1"]
    # a model whose own forward never runs (a CLIP's encoders are called one by one): every call
    assert list(probe_outputs(net, ["", "blocks.1"], lambda: net.blocks[1](x[0]))) == ["blocks.1"]
