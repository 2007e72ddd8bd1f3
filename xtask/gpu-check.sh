#!/bin/sh
# `lth gpu-check` on a GPU machine that has no Rust toolchain: unpacks the CUDA binary that
# `cargo xtask cuda-build` packed (target/lth-cuda.xz), points the loader at the CUDA 13
# libraries of the machine's Python wheels (PyTorch's nvidia-* packages) unless
# LD_LIBRARY_PATH already has them, and runs the check under a 5-minute limit.
# Exit status: lth's (1 if CPU and GPU disagree).
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
timeout 300 "$work/lth" gpu-check --device "${LTH_DEVICE:-cuda}"
