"""Map files: round trip, refusal of bad files with helpful messages, atomic saves, MapSet."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import safetensors.torch
import torch

from act_core import (
    MapCompatibilityError,
    MapFileError,
    MapSet,
    fit,
    load_maps,
    mapfile,
    prompt_hash,
    save_maps,
)
from act_core.mapset import check_compatible


@pytest.fixture()
def maps():
    torch.manual_seed(0)
    source = torch.randn(40, 6)
    source[:, 5] = 1.0  # one guarded unit
    return {
        "down.0.norm": fit(source, torch.randn(50, 6) * 2, mode="channels"),
        "blocks.1.attn:0": fit(torch.randn(30, 4), torch.randn(30, 4) + 1, "diff_means"),
    }


def _write(path, tensors, act=None, extra_meta=None):
    meta = dict(extra_meta or {})
    if act is not None:
        meta["act"] = json.dumps(act)
    safetensors.torch.save_file(tensors, str(path), metadata=meta or None)


def _parts(path):
    with open(path, "rb") as handle:
        data = handle.read()
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    tensors = safetensors.torch.load(data)
    return tensors, json.loads(header["__metadata__"]["act"])


def test_round_trip_keeps_every_tensor_and_field(tmp_path, maps):
    path = tmp_path / "style.safetensors"
    digest = prompt_hash(["a cat"], ["a cat, watercolor"])
    save_maps(path, maps, {"concept": "watercolor", "steps": [1, 2]},
              model={"family": "sd15", "arch": "UNet2DConditionModel"}, prompt_hash=digest,
              support="q0.05-0.95")
    loaded = load_maps(path)
    assert list(loaded) == list(maps)
    for site, tmap in maps.items():
        got = loaded[site]
        for field in ("scale", "shift", "lo", "hi", "quantiles"):
            assert torch.equal(getattr(got, field), getattr(tmap, field))
        for field in ("method", "mode", "n_source", "n_target", "guarded", "quantile_levels",
                      "unbounded_strength"):
            assert getattr(got, field) == getattr(tmap, field)
    meta = loaded.metadata
    assert meta["format"] == "act-maps" and meta["version"] == 1
    assert meta["method"] == "mixed" and meta["support"] == "q0.05-0.95"
    assert meta["model"] == {"family": "sd15", "arch": "UNet2DConditionModel"}
    assert meta["prompt_hash"] == digest and meta["created_with"].startswith("act_core ")
    assert meta["extra"] == {"concept": "watercolor", "steps": [1, 2]}
    assert meta["sites"]["down.0.norm"]["guarded"] == 1
    assert meta["sites"]["down.0.norm"]["mode"] == "channels"
    assert loaded.support == "q0.05-0.95" and "D=6" in repr(loaded["down.0.norm"])
    assert loaded.family == "sd15" and loaded.widths() == {"down.0.norm": 6, "blocks.1.attn:0": 4}


def test_resaving_a_mapset_keeps_its_metadata(tmp_path, maps):
    save_maps(tmp_path / "a.safetensors", maps, {"k": 1}, model={"family": "llama"})
    save_maps(tmp_path / "b.safetensors", load_maps(tmp_path / "a.safetensors"))
    meta = load_maps(tmp_path / "b.safetensors").metadata
    assert meta["extra"] == {"k": 1} and meta["model"] == {"family": "llama"}


def test_mapset_is_read_only(maps):
    mapset = MapSet(maps, {"model": {"family": "x"}})
    with pytest.raises(TypeError):
        mapset["x"] = maps["down.0.norm"]  # type: ignore[index]
    mapset.metadata["model"]["family"] = "changed"
    assert mapset.family == "x"


def test_missing_file(tmp_path):
    with pytest.raises(MapFileError, match="no map file"):
        load_maps(tmp_path / "nope.safetensors")


def test_pickles_are_refused_without_unpickling(tmp_path, maps):
    for name, kwargs in (("zip.pt", {}), ("legacy.pt", {"_use_new_zipfile_serialization": False})):
        path = tmp_path / name
        torch.save({"scale": maps["down.0.norm"].scale}, path, **kwargs)
        with pytest.raises(MapFileError, match="pickle/PyTorch checkpoint.*refusing to unpickle"):
            load_maps(path)


def test_foreign_safetensors_is_not_a_map_file(tmp_path):
    path = tmp_path / "model.safetensors"
    _write(path, {"weight": torch.zeros(3)}, extra_meta={"format": "pt"})
    with pytest.raises(MapFileError, match="not an AcT map file"):
        load_maps(path)


def test_truncated_and_corrupted_files(tmp_path, maps):
    path = tmp_path / "m.safetensors"
    save_maps(path, maps)
    data = path.read_bytes()
    cases = {
        "short": data[:5],
        "cut_data": data[:-10],
        "cut_header": data[:200],
        "garbage": b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + data[24:],
        "text": b"hello world, this is not a map file",
        "bad_json_in_header": data[:8] + b"{" + data[9:20].replace(b'"', b"'") + data[20:],
    }
    for name, content in cases.items():
        broken = tmp_path / f"{name}.safetensors"
        broken.write_bytes(content)
        with pytest.raises(MapFileError) as info:
            load_maps(broken)
        assert str(broken) in str(info.value), name


def test_newer_version_and_foreign_act_metadata(tmp_path, maps):
    path = tmp_path / "m.safetensors"
    save_maps(path, maps)
    tensors, act = _parts(path)
    _write(path, tensors, dict(act, version=mapfile.VERSION + 1))
    with pytest.raises(MapFileError, match="newer act_core.*update"):
        load_maps(path)
    _write(path, tensors, dict(act, format="something-else"))
    with pytest.raises(MapFileError, match="does not describe"):
        load_maps(path)
    _write(path, tensors, extra_meta={"act": "{not json"})
    with pytest.raises(MapFileError, match="not valid JSON"):
        load_maps(path)


def test_missing_extra_and_malformed_tensors(tmp_path, maps):
    path = tmp_path / "m.safetensors"
    save_maps(path, maps)
    tensors, act = _parts(path)
    site = "down.0.norm"

    def variant(name, **changes):
        changed = dict(tensors)
        changed.update(changes)
        changed = {k: v for k, v in changed.items() if v is not None}
        _write(path, changed, act)
        with pytest.raises(MapFileError, match=name):
            load_maps(path)

    variant("missing.*down.0.norm.hi", **{f"{site}.hi": None})
    variant("unexpected.*stray", stray=torch.zeros(2))
    variant("dtype torch.float16", **{f"{site}.scale": tensors[f"{site}.scale"].half()})
    variant("shift has shape", **{f"{site}.shift": torch.zeros(5)})
    variant("quantiles has shape", **{f"{site}.quantiles": torch.zeros(3, 6)})
    variant("NaN or infinite", **{f"{site}.scale": torch.full((6,), float("inf"))})


def test_save_is_atomic(tmp_path, maps, monkeypatch):
    path = tmp_path / "m.safetensors"

    def failing_write(handle, data):
        handle.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(mapfile, "_write_bytes", failing_write)
    with pytest.raises(OSError, match="disk full"):
        save_maps(path, maps)
    assert not path.exists() and os.listdir(tmp_path) == []
    monkeypatch.undo()
    save_maps(path, {"down.0.norm": maps["down.0.norm"]})
    before = path.read_bytes()
    monkeypatch.setattr(mapfile, "_write_bytes", failing_write)
    with pytest.raises(OSError):
        save_maps(path, maps)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.safetensors"]
    assert list(load_maps(path)) == ["down.0.norm"]


def test_save_refuses_bad_input(tmp_path, maps):
    with pytest.raises(MapFileError, match="empty"):
        save_maps(tmp_path / "m.safetensors", {})
    with pytest.raises(MapFileError, match="JSON"):
        save_maps(tmp_path / "m.safetensors", maps, {"bad": object()})
    assert not (tmp_path / "m.safetensors").exists()


def test_check_compatible_names_every_problem(maps):
    mapset = MapSet(maps, {"model": {"family": "sd15"}})
    check_compatible(mapset, {"down.0.norm": 6, "blocks.1.attn:0": 4, "other": 9}, "sd15")
    with pytest.raises(MapCompatibilityError) as info:
        check_compatible(mapset, {"down.0.norm": 8}, "sdxl")
    message = str(info.value)
    assert "'sd15'" in message and "'sdxl'" in message
    assert "blocks.1.attn:0" in message and "map D=6, model D=8" in message


def test_prompt_hash_is_canonical_and_order_sensitive():
    digest = prompt_hash(["a", "b"], ["c"])
    # the documented canonical form, hashed here independently of the code under test
    canonical = '{"source":["a","b"],"target":["c"]}'
    assert digest == hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    assert prompt_hash(["é"], []) == hashlib.sha256(
        '{"source":["é"],"target":[]}'.encode()).hexdigest()  # UTF-8, not \u escapes
    assert digest == prompt_hash(("a", "b"), ("c",))
    assert digest != prompt_hash(["b", "a"], ["c"])
    assert digest != prompt_hash(["c"], ["a", "b"])
    assert digest != prompt_hash(["a", "b", "c"], [])


def test_header_length_starting_like_a_pickle_is_still_read(tmp_path, maps):
    # a header length such as 0x280 is stored as b"\x80\x02...": the opening of a pickle
    path = tmp_path / "m.safetensors"
    one = {"s": maps["blocks.1.attn:0"]}
    for pad in range(1600):
        save_maps(path, one, {"pad": "x" * pad})
        if path.read_bytes()[:1] == b"\x80" and path.read_bytes()[1] in (2, 3, 4, 5):
            break
    else:
        pytest.skip("could not produce a header of the wanted length")
    assert load_maps(path).metadata["extra"]["pad"]


def test_resaving_a_mapset_keeps_its_recommended_support(tmp_path):
    import torch

    from act_core import MapSet, fit, load_maps, save_maps

    torch.manual_seed(0)
    maps = MapSet({"a": fit(torch.randn(8, 4), torch.randn(8, 4))},
                  {"support": "unbounded", "model": {"family": "toy"}})
    save_maps(tmp_path / "m.safetensors", maps)
    assert load_maps(tmp_path / "m.safetensors").metadata["support"] == "unbounded"
    save_maps(tmp_path / "n.safetensors", maps, support="q0.05-0.95")
    assert load_maps(tmp_path / "n.safetensors").metadata["support"] == "q0.05-0.95"
