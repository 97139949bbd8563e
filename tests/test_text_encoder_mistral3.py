"""Mistral 3 (Flux.2's text encoder) through the text-encoder matrix, with a transformers that
ComfyUI supports.

ComfyUI 0.30 builds Mistral 3's tokenizer with transformers' ``MistralConverter(vocab=...)``
(comfy/text_encoders/flux.py); transformers 5 (the venv's) refuses that call, and ComfyUI's
requirements ask only ``transformers>=4.50.3``. ``scripts/setup_env.sh`` installs transformers
4.57.6 (pinned, hash-checked: scripts/transformers4-requirements.txt) into
``.cache/transformers-4.57.6``; this test runs the matrix's Mistral 3 row in a subprocess with
that folder first on PYTHONPATH, through ComfyUI's own CLIP classes, unmodified. In the main
process the row is skipped with that reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.encoder_recipes import TRANSFORMERS4_DIR

pytestmark = pytest.mark.comfyui

ROOT = Path(__file__).resolve().parent.parent
TRANSFORMERS4 = TRANSFORMERS4_DIR  # scripts/setup_env.sh's; $ACT_TRANSFORMERS4_DIR overrides


def test_the_mistral3_row_passes_the_matrix_with_transformers_4():
    if not (TRANSFORMERS4 / "transformers").is_dir():
        pytest.fail(f"transformers 4.57.6 is not installed in {TRANSFORMERS4}: run "
                    "scripts/setup_env.sh --with-comfyui (make test does it)", pytrace=False)
    path = os.pathsep.join([str(TRANSFORMERS4), str(ROOT), os.environ.get("PYTHONPATH", "")])
    probe = subprocess.run([sys.executable, "-c", "import transformers, tokenizers; "
                            "print(transformers.__version__, tokenizers.__version__)"],
                           env={**os.environ, "PYTHONPATH": path}, capture_output=True,
                           text=True, timeout=120, check=True)
    assert probe.stdout.split() == ["4.57.6", "0.22.2"]
    # every check of the row ran, LinEAS and sites = auto included (one encoder: "one of
    # several steered alone" is skipped)
    result, tail = _run_with_transformers4("tests/test_text_encoders_matrix.py", "Flux2", 7)
    assert "MistralConverter" not in result.stdout, tail


def test_the_generated_mistral_rows_pass_the_matrix_with_transformers_4():
    """Flux.2's pruned Mistral 3 and ERNIE-Image's Ministral 3, as CLIPLoader builds them
    (tests/test_clip_loaders_matrix.py's generated rows), with transformers 4.57.6."""
    if not (TRANSFORMERS4 / "transformers").is_dir():
        pytest.fail(f"transformers 4.57.6 is not installed in {TRANSFORMERS4}", pytrace=False)
    result, tail = _run_with_transformers4("tests/test_clip_loaders_matrix.py",
                                           "MISTRAL or MINISTRAL", 2)
    assert "skipped" not in result.stdout, tail


def _run_with_transformers4(test_file: str, select: str, expected: int
                            ) -> tuple[subprocess.CompletedProcess, str]:
    """Run ``pytest test_file -k select`` with transformers 4.57.6 first on PYTHONPATH; assert
    it passed ``expected`` tests."""
    path = os.pathsep.join([str(TRANSFORMERS4), str(ROOT), os.environ.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", test_file,
         "-k", select],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True,
        timeout=600)
    tail = result.stdout[-4000:] + result.stderr[-2000:]
    assert result.returncode == 0, tail
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed and int(passed.group(1)) == expected, tail
    return result, tail
