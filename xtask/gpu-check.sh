#!/bin/sh
# `lth gpu-check` and two smoke reproduces on a GPU machine that has no Rust toolchain: unpacks
# the CUDA binary that `cargo xtask cuda-build` packed (target/lth-cuda.xz), points the loader at
# the CUDA 13 libraries of the machine's Python wheels (PyTorch's nvidia-* packages) unless
# LD_LIBRARY_PATH already has them, then runs, within 5 minutes in all:
#   - lth gpu-check: parity of a training step (CPU kernels against the GPU) for LeNet, Conv-2,
#     VGG-19 and ResNet-18, and throughput of every network dense and sparse;
#   - a smoke reproduce of Figure 3 (LeNet, real MNIST: set LTH_DATA_MIRROR where the GPU
#     machine cannot download it) and of Figure 8 (ResNet-18, synthetic data) with --device cuda.
# One `verdict: <item>: ok|FAILED (...)` line per item (docs/gpu.md). Exit status: 1 if any
# item failed.
set -eu
cd "$(dirname "$0")/.."
packed=target/lth-cuda.xz
if [ ! -f "$packed" ]; then
    echo "gpu-check: $packed is missing; run \`cargo xtask cuda-build\` on a machine with Rust and copy it here" >&2
    exit 2
fi
if ! nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null; then
    echo "gpu-check: no NVIDIA GPU or driver here (nvidia-smi failed); run this on a GPU machine" >&2
    exit 2
fi
python=${LTH_PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if command -v xz >/dev/null 2>&1; then
    xz -dc "$packed" > "$work/lth"
else
    "$python" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$packed" "$work/lth"
fi
chmod +x "$work/lth"
cuda_libs=$("$python" -c 'import os, site; print(os.path.join(site.getsitepackages()[0], "nvidia", "cu13", "lib"))' 2>/dev/null || true)
if [ -n "$cuda_libs" ] && [ -d "$cuda_libs" ]; then
    export LD_LIBRARY_PATH="$cuda_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
device=${LTH_DEVICE:-cuda}
status=0
timeout 180 "$work/lth" gpu-check --device "$device" || status=1
# Smoke reproduces into a scratch folder: what a user's first GPU run does, end to end.
reproduce() { # <item> <seconds> <figure> [options...]
    item=$1 seconds=$2 figure=$3
    shift 3
    if timeout "$seconds" "$work/lth" reproduce "$figure" --scale smoke --device "$device" --out "$work/results" \
        --figures-dir "$work/figures" "$@" > "$work/$figure.log" 2>&1 && [ -s "$work/figures/$figure.csv" ]; then
        echo "verdict: $item: ok ($(($(wc -l < "$work/figures/$figure.csv") - 1)) table rows; figures/$figure.csv holds the CPU's)"
    else
        tail -n 5 "$work/$figure.log"
        echo "verdict: $item: FAILED (see the lines above)"
        status=1
    fi
}
reproduce "smoke reproduce of Figure 3 (LeNet) on $device" 60 fig3
reproduce "smoke reproduce of Figure 8 (ResNet-18, synthetic data) on $device" 60 fig8 --data synthetic
exit $status
