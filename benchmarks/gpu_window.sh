#!/usr/bin/env bash
# One GPU window (docs/PERFORMANCE.md, "GPU window"): train the default preset time-boxed, evaluate the
# full Beauty test split (both tasks), the engine-vs-generate and served-load benchmarks and the ONNX
# Runtime CUDA parity check; every result JSON, the logs and summary.json under OUT.
#
#   benchmarks/gpu_window.sh [OUT]          # OUT defaults to $OUT (the device machine sets it)
#   DRY=1 benchmarks/gpu_window.sh /tmp/gw  # the CPU rehearsal: tiny preset, 100 users, cpu, seconds
#
# Variables (all optional): DRY, PRESET (small), DEVICE (cuda), TRAIN_MINUTES (2.5), TRAIN_ARGS,
# LIMIT_USERS, WINDOW_S (570), BUDGET_<STAGE> (seconds), WHEELS (.whl: wheels pip-installs with
# --no-index first; made here by benchmarks/gpu_wheels.sh), PACK (1: one tarball + summary.json in OUT),
# ENGINE_USERS, ONNX_USERS, ONNX_DEVICE, SERVE_LEVELS, SERVE_SECONDS, WORK (bundle and site folder).
# Stdlib-only orchestration in benchmarks/gpu_window.py; each stage is a `python -m ...` command.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export GPU_WINDOW_ENTRY="benchmarks/gpu_window.sh"
exec "${PYTHON:-python3}" -m benchmarks.gpu_window "$@"
