"""The core's layout: host subpackages imported on first use, and short source files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_bare_import_leaves_the_host_libraries_alone_until_a_host_is_used():
    code = ("import sys, act_core\n"
            "assert not {'transformers', 'diffusers'} & set(sys.modules), 'eager host import'\n"
            "assert 'act_core.hf' not in sys.modules and 'act_core.diffusers' not in sys.modules\n"
            "assert callable(act_core.hf.fit_lm) and act_core.diffusers.__name__\n"
            "from act_core.diffusers import pipeline\n"
            "from act_core.hf import cli, data, export, generate, gguf_export, lineas\n"
            "assert not {'transformers', 'diffusers'} & set(sys.modules), 'host module import'\n"
            "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_no_source_file_of_the_core_or_the_nodes_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for folder in ("act_core", "nodes")
            for p in (ROOT / folder).rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long, long
