#!/usr/bin/env bash
# The real-size benchmarks on a GPU machine, as one prepared script (at most 8 minutes there).
#
# The GPU machine lent to some sessions (see the device tool) has Python 3.12 and PyTorch with
# CUDA but reaches no package registry, so what the benchmark needs beyond that travels with the
# call, in the git-ignored folder .gpu/ (about 45 MiB, most of it the av wheel):
#   .gpu/ComfyUI/  ComfyUI's Python sources from this checkout's .comfyui/ (no tokenizer data,
#                  no front end: the benchmark builds models from configurations, random weights)
#   .gpu/whl/      wheels for Python 3.12 of ComfyUI requirements that image lacks
#
#   benchmarks/gpu_check.sh pack    # here: fill .gpu/ (needs scripts/setup_env.sh --with-comfyui)
#   benchmarks/gpu_check.sh cpu     # here: the same run at CPU size, to check the script
#   benchmarks/gpu_check.sh run     # there (device tool: carry [".gpu"]), writes $OUT/ if set
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
WHEELS="av==18.1.0 comfy-aimdo==0.4.11 torchsde==0.2.6 trampoline==0.1.2"  # av: comfy_api imports it

pack() {
  [ -d .comfyui/ComfyUI/comfy ] || { echo "run scripts/setup_env.sh --with-comfyui first" >&2; exit 2; }
  rm -rf .gpu && mkdir -p .gpu/whl .gpu/ComfyUI
  # Python sources and small configuration files only (tokenizer vocabularies are not needed)
  (cd .comfyui/ComfyUI && find . \( -path ./custom_nodes -o -path ./tests -o -path ./tests-unit \
     -o -path ./comfy_api_nodes -o -path ./blueprints \) -prune -o -type f \( -name '*.py' \
     -o \( \( -name '*.json' -o -name '*.yaml' \) -size -64k \) \) -print0 \
     | tar --null -cf - -T -) | tar -xf - -C .gpu/ComfyUI
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .gpu/whl $WHEELS
  # comfy_kitchen: ComfyUI 0.30 runs Flux's rotary embedding through it. Its wheel (45 MB, CUDA
  # and ROCm extensions) does not fit the 64 MiB a call carries; its Python part does, and
  # without the extensions it runs its triton and eager (PyTorch) backends, as on a machine
  # where the CUDA extension does not load. The same for every variant of a model.
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 -d .gpu/ck comfy-kitchen==0.2.26
  mkdir -p .gpu/site && unzip -q .gpu/ck/*.whl -x '*/_C.abi3.so' -d .gpu/site && rm -rf .gpu/ck
  du -sh .gpu
}

bench() {  # bench DEVICE OUTDIR SIZE STEPS REPEATS UNET_ARCH UNET_DTYPE FLUX_DTYPE [FLUX_ARGS...]
  local device=$1 out=$2 size=$3 steps=$4 repeats=$5 unet=$6 unet_dtype=$7 flux_dtype=$8
  shift 8
  mkdir -p "$out"
  export PYTHONUNBUFFERED=1
  timeout 200 python3 -m benchmarks.bench_realsize --device "$device" --dtype "$unet_dtype" \
    --archs "$unet" --size "$size" --steps "$steps" --repeats "$repeats" --prompts 8 \
    --samples 2 --out "$out/$unet.json" 2>&1 | tee "$out/$unet.log" || echo "[gpu_check] $unet: exit $?"
  [ "${ACT_GPU_CHECK_FLUX:-1}" = 1 ] || return 0
  timeout 230 python3 -m benchmarks.bench_realsize --device "$device" --dtype "$flux_dtype" \
    --archs flux --size "$size" --steps "$steps" --repeats "$repeats" --prompts 8 --samples 1 \
    --out "$out/flux.json" "$@" 2>&1 | tee "$out/flux.log" || echo "[gpu_check] flux: exit $?"
}

case "${1:-run}" in
  pack) pack ;;
  cpu)  # the script's own check, here, at a size 2 cores run in minutes
    ACT_COMFYUI_DIR="$ROOT/.gpu/ComfyUI" PYTHONPATH="$ROOT" PATH="$ROOT/.venv/bin:$PATH" \
      bench cpu out/gpu_check_cpu 64 2 1 sd15 fp32 fp32 --flux-depth 1 ;;
  run)
    [ -d .gpu/ComfyUI ] || { echo "no .gpu/: run 'benchmarks/gpu_check.sh pack' here and carry .gpu" >&2; exit 2; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/act_site .gpu/whl/*.whl
    export PYTHONPATH="/tmp/act_site:$ROOT/.gpu/site:$ROOT" ACT_COMFYUI_DIR="$ROOT/.gpu/ComfyUI"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
    bench cuda "${OUT:-out}/gpu_check" 1024 8 "${ACT_GPU_CHECK_REPEATS:-3}" sdxl fp16 bf16
    ;;
  *) echo "usage: $0 pack|cpu|run" >&2; exit 2 ;;
esac
