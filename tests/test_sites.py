"""Site syntax, resolution by patterns/presets/types, and reading/writing module outputs."""

from __future__ import annotations

from collections import OrderedDict, namedtuple

import pytest
import torch
from torch import nn

from act_core import Site, SiteError, read_output, resolve_sites, write_output
from act_core.sites import find_module


class FancyRMSNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.out_proj = nn.Linear(8, 8)
        self.rms = FancyRMSNorm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        return self.rms(self.out_proj(self.attn(h, h, h)[0]) + x)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.group = nn.GroupNorm(2, 8)
        self.blocks = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(8, 4)


def test_parse_and_format_round_trip():
    for text in ("blocks.0.attn:0", "encoder:last_hidden_state", "head", "a.b:-1"):
        assert str(Site.parse(text)) == text
    assert Site.parse("blocks.0.attn:0").output_index == 0
    assert Site.parse("x:last").output_index == "last"
    with pytest.raises(SiteError, match="empty output index"):
        Site.parse("x:")
    with pytest.raises(SiteError, match="layout"):
        Site("x", layout="pixels")


def test_presets_globs_regexes_and_types_in_registration_order():
    net = Net()
    names = [str(s) for s in resolve_sites(net, "norms")]
    assert names == ["group", "blocks.0.norm", "blocks.0.rms", "blocks.1.norm", "blocks.1.rms"]
    assert [s.name for s in resolve_sites(net, "blocks.?.out_proj")] == [
        "blocks.0.out_proj", "blocks.1.out_proj"]
    assert len(resolve_sites(net, "blocks.*.out_proj")) == 4  # fnmatch: * also matches dots
    assert [s.name for s in resolve_sites(net, r"re:blocks\.\d\.(norm|rms)")] == [
        "blocks.0.norm", "blocks.0.rms", "blocks.1.norm", "blocks.1.rms"]
    assert [s.name for s in resolve_sites(net, types=["*Norm"])] == [
        "group", "blocks.0.norm", "blocks.0.rms", "blocks.1.norm", "blocks.1.rms"]
    assert [s.name for s in resolve_sites(net, "blocks.1.*", types=[nn.Linear])] == [
        "blocks.1.attn.out_proj", "blocks.1.out_proj"]
    assert [s.name for s in resolve_sites(net, "linear_out")] == [
        "blocks.0.attn.out_proj", "blocks.0.out_proj", "blocks.1.attn.out_proj",
        "blocks.1.out_proj"]
    assert [s.name for s in resolve_sites(net, "conv")] == ["conv"]


def test_union_of_patterns_is_deduplicated_and_ordered_with_indices():
    net = Net()
    sites = resolve_sites(net, ["head", "blocks.*.attn:0", "group", "head"])
    assert [str(s) for s in sites] == ["group", "blocks.0.attn:0", "blocks.1.attn:0", "head"]


def test_pattern_matching_nothing_lists_available_modules():
    with pytest.raises(SiteError, match="matches no module.*conv \\(Conv2d\\).*norms"):
        resolve_sites(Net(), "decoder.*")
    with pytest.raises(SiteError, match="matches no module"):
        resolve_sites(Net(), "head", types=["GroupNorm"])


def test_unknown_module_suggests_close_names():
    with pytest.raises(SiteError, match="did you mean.*blocks.0.norm"):
        find_module(Net(), "blocks.0.nrom")


def test_read_and_write_outputs_of_every_shape():
    x, y, new = torch.zeros(2), torch.ones(2), torch.full((2,), 5.0)
    assert read_output(x, Site("m")) is x and write_output(x, Site("m"), new) is new
    pair = (x, y)
    assert read_output(pair, Site("m")) is x and read_output(pair, Site("m", 1)) is y
    assert write_output(pair, Site("m", 1), new) == (x, new) and pair[1] is y
    assert write_output([x, y], Site("m"), new)[0] is new
    Pair = namedtuple("Pair", "a b")
    replaced = write_output(Pair(x, y), Site("m", 0), new)
    assert isinstance(replaced, Pair) and replaced.a is new
    mapping = OrderedDict(hidden=x, extra=y)
    assert read_output(mapping, Site("m")) is x and read_output(mapping, Site("m", "extra")) is y
    out = write_output(mapping, Site("m", "extra"), new)
    assert out["extra"] is new and mapping["extra"] is y


def test_model_output_objects_are_copied_not_modified():
    from transformers.modeling_outputs import BaseModelOutput

    x, new = torch.zeros(1, 2, 3), torch.ones(1, 2, 3)
    output = BaseModelOutput(last_hidden_state=x)
    replaced = write_output(output, Site("m"), new)
    assert type(replaced) is BaseModelOutput and replaced.last_hidden_state is new
    assert output.last_hidden_state is x


@pytest.mark.parametrize(
    ("output", "site", "message"),
    [
        (torch.zeros(2), Site("m", 0), "returns a tensor"),
        ((torch.zeros(2),), Site("m", 3), "length 1"),
        ((None, torch.zeros(2)), Site("m"), "not a tensor"),
        ({"a": torch.zeros(2)}, Site("m", "b"), "keys"),
        (3.0, Site("m"), "cannot read"),
    ],
)
def test_unreadable_outputs_raise_site_errors(output, site, message):
    with pytest.raises(SiteError, match=message):
        read_output(output, site)


class _RMSNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))


class _Conv1D(nn.Module):  # GPT-2's transposed linear: weight (in, out)
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_in, n_out))


_Conv1D.__name__ = "Conv1D"


@pytest.mark.parametrize(("module", "width"), [
    (nn.Linear(3, 5), 5), (nn.Conv2d(3, 7, 1), 7), (nn.GroupNorm(2, 6), 6),
    (nn.LayerNorm(9, elementwise_affine=False), 9), (_RMSNorm(11), 11), (_Conv1D(4, 13), 13),
    (nn.Sequential(nn.Linear(2, 3)), None), (nn.ReLU(), None), (None, None)])
def test_module_width_reads_every_kind_of_site(module, width):
    from act_core.sites import module_width

    assert module_width(module) == width


def test_site_widths_fall_back_to_the_maps_and_leave_missing_sites_to_the_check():
    from act_core import MapCompatibilityError, TransportMap, check_compatible
    from act_core.sites import site_widths

    def _map(d: int) -> TransportMap:
        quantiles = torch.linspace(-1, 1, 13).unsqueeze(1).expand(13, d).contiguous()
        return TransportMap(scale=torch.ones(d), shift=torch.zeros(d), lo=quantiles[0].clone(),
                            hi=quantiles[-1].clone(), quantiles=quantiles)

    model = nn.Sequential(OrderedDict(norm=nn.LayerNorm(4), block=nn.Sequential(nn.Linear(4, 4))))
    maps = {name: _map(d) for name, d in
            (("norm", 4), ("block", 6), ("norm@1", 4), ("gone", 4))}
    widths = site_widths(model, maps, maps)
    assert widths == {"norm": 4, "block": 6, "norm@1": 4}  # block: width unknown -> the map's
    with pytest.raises(MapCompatibilityError, match="gone"):
        check_compatible(maps, widths)
    wrong = {"norm": _map(3)}
    with pytest.raises(MapCompatibilityError, match="map D=3, model D=4"):
        check_compatible(wrong, site_widths(model, wrong, wrong))
