#!/usr/bin/env bash
# The GPU check on the lent GPU machine (one H200): LoRA, Bone, Bat x ZeRO-2, ZeRO-3, bf16, CUDA.
#
# Prepare here, once (nothing of it is committed: .whl/ and .gpucheck/ are git-ignored):
#   DISHA_BENCH_DATA=../shared/data python benchmarks/gpu_check.py prepare --out .gpucheck   # ~3 MB
#   DS_BUILD_OPS=0 pip wheel deepspeed==0.19.8 --no-deps --no-build-isolation -w .whl
#     (no wheel on PyPI: this builds a py3-none-any one, 2 MB, against the installed torch)
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     hjson==3.1.0 pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2 \
#     peft==0.21.2 transformers==5.25.0 huggingface_hub==2.4.0 kernels==0.19.1 tomlkit regex==2026.5.9 \
#     httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5
#   (transformers >= 5.24 is the harness's floor, the image has 5.17; 5.25 needs huggingface_hub 2.x:
#   23 MB of wheels in all)
#   (peft is carried: the image's may predate Bat, which needs >= 0.20; the check refuses to run without it)
#   (the machine's image has torch, transformers, peft, einops, msgpack, ninja, psutil, py-cpuinfo,
#   nvidia-ml-py; check pydantic-core's wheel is the cp312 manylinux one)
#   GPU_CHECK_SKIP_WHEELS=1 DS_ACCELERATOR=cpu bash benchmarks/gpu_check.sh --tiny   # dry run here (the wheels are cp312)
# Then, with the device tool (one call, < 10 minutes):
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl", ".gpucheck"], timeout_s=600)
# Its figures come back in $OUT/gpu_check.json and $OUT/gpu_check.log.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${GPU_CHECK_SKIP_WHEELS:-}" ] && compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-/tmp/torch_extensions}"
OUT="${OUT:-/tmp/gpu_check}"
mkdir -p "$OUT"
if [ ! -f .gpucheck/gsm8k_train.npz ]; then
  echo "error: .gpucheck/gsm8k_train.npz missing: run 'python benchmarks/gpu_check.py prepare' here and carry .gpucheck" >&2
  exit 2
fi
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, peft, deepspeed; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'from', peft.__file__, 'deepspeed', deepspeed.__version__, 'cuda', torch.cuda.is_available())"
# Bat (MissConfig(init_weights="bat")) needs peft >= 0.20; the harness pins 0.21.x: carry its wheel.
python3 -c "import sys, peft; from packaging.version import Version; v = Version(peft.__version__); sys.exit(0 if Version('0.21') <= v < Version('0.22') else 'error: peft ' + peft.__version__ + ' loaded; carry the peft==0.21.2 wheel in .whl (see the header)')"
set -o pipefail
timeout 480 python3 benchmarks/gpu_check.py run --data .gpucheck --json "$OUT/gpu_check.json" "$@" 2>&1 | tee "$OUT/gpu_check.log" || true
# With time to spare (a call has 10 minutes): the A/B again with ZeRO off, to show what ZeRO-2's wrapper costs.
if [ "$SECONDS" -lt 500 ] && [[ " $* " != *" --tiny "* ]]; then
  timeout $((560 - SECONDS)) python3 benchmarks/bench_harness_vs_plain.py --size gpu --precision bf16 --data .gpucheck \
    --zero-stage 0 --methods lora bone --steps 20 --warmup 3 --block 5 2>&1 | grep -E "^(RESULT|harness vs|lowest)" | tee -a "$OUT/gpu_check.log" || true
fi
