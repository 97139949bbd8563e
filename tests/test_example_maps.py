"""install_example_maps: copies the shipped map files into a ComfyUI models folder."""

from toyworld import example_maps


def test_install_copies_once_and_replaces_a_changed_file(tmp_path, monkeypatch):
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "a.safetensors").write_bytes(b"maps a")
    monkeypatch.setattr(example_maps, "MAPS_DIR", shipped)
    models = tmp_path / "models"
    target = models / "act_maps" / "a.safetensors"

    assert example_maps.install_example_maps(models) == [target]
    assert target.read_bytes() == b"maps a"
    assert example_maps.install_example_maps(models) == []  # identical: left alone
    target.write_bytes(b"changed")
    assert example_maps.install_example_maps(models) == [target]
    assert target.read_bytes() == b"maps a"
    assert not list(models.glob("act_maps/*.partial"))


def test_install_without_shipped_files_warns(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(example_maps, "MAPS_DIR", tmp_path / "none")
    assert example_maps.install_example_maps(tmp_path / "models") == []
    assert "python -m harness.build_maps" in caplog.text
