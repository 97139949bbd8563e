"""What pip users get: the wheel's contents, ``import act_core`` and ``act`` from a fresh virtual
environment without ComfyUI or the checkout, and the model cache in the user's cache folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "maps_v1_timestep_ranges.safetensors"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the sources (no stale build/ folder, no network)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "act_core", src / "act_core",
                    ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "-w", str(out), str(src)], check=True)
    return next(out.glob("activation_transport-*.whl"))


@pytest.mark.slow  # pip builds the wheel in a subprocess
def test_the_wheel_holds_the_library_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"act_core", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    modules = {name for name in names if name.endswith(".py")}
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "act_core").rglob("*.py")}
    assert modules == sources  # every module of the package, nothing else
    assert "act_core/hf_tiny.py" not in modules  # a test helper (harness/hf_tiny.py)
    data = {p.relative_to(ROOT).as_posix() for p in (ROOT / "act_core" / "hf" / "data").rglob("*")
            if p.is_file() and p.suffix in (".txt", ".json", ".tsv")}
    assert data and data <= set(names)
    info = zipfile.ZipFile(wheel)
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "act = act_core.hf.cli:main" in info.read(entry).decode()
    requires = [line for line in info.read(meta).decode().splitlines()
                if line.startswith("Requires-Dist:")]
    assert 'Requires-Dist: transformers>=4.45; extra == "transformers"' in requires
    assert not [line for line in requires if "comfy" in line.lower()]


@pytest.mark.slow  # several seconds: left out of the fast command
def test_a_fresh_venv_without_comfyui_imports_act_core_and_runs_act(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True)
    # torch, safetensors, transformers: taken from this environment instead of the registry
    # (a path line in a .pth file; this environment's own .pth files, such as the checkout's
    # editable install, are not run)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], check=True, capture_output=True, text=True)
    Path(site.stdout.strip(), "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    code = ("import importlib.util, act_core, torch\n"
            "assert importlib.util.find_spec('comfy') is None\n"
            "for name in ('toyworld', 'harness', 'evaluation', 'benchmarks'):\n"
            "    assert importlib.util.find_spec(name) is None, name\n"
            "m = act_core.fit(torch.randn(64, 4), torch.randn(64, 4) + 1)\n"
            "print(act_core.__file__, float(act_core.transport(torch.zeros(4), m, 1.0).mean()))")
    run = subprocess.run([str(python), "-c", code], cwd=tmp_path, env=env, check=True,
                         capture_output=True, text=True)
    assert run.stdout.startswith(str(venv))  # the installed copy, not the checkout
    info = subprocess.run([str(venv / "bin" / "act"), "info", str(FIXTURE)], cwd=tmp_path,
                          env=env, capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    assert "input_blocks.1.1.norm" in info.stdout


def test_the_model_cache_is_in_the_users_cache_folder(monkeypatch, tmp_path):
    from act_core.hf.models import cache_dir

    monkeypatch.delenv("ACT_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "activation-transport"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "activation-transport"
    monkeypatch.setenv("ACT_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
