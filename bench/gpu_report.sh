#!/usr/bin/env bash
# Issue 16's GPU report (and issue 22's detail rows, 150 s more, issue 31/38's latent rows, 120 s more) in one run
# that fits 12 minutes: per quality mode and precision (fp32, bf16, fp16),
# 4 candidates at full size, torch.compile off and on (bf16): seconds per candidate, peak memory, achieved
# fraction of peak, max difference of bf16/fp16 results against fp32. Writes into ${OUT:-bench/out}.
#
#   bash bench/gpu_report.sh            # on the GPU machine, from the repository root
#   bash bench/gpu_report.sh --dry-run  # anywhere: tiny models on the CPU, checks the script in seconds
set -euo pipefail
cd "$(dirname "$0")/.."
# The project's .venv where it exists; on a lent GPU machine (no .venv) its own python3, with the engine's
# packages it lacks carried as wheels (see the device tool's notes).
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
OUT="${OUT:-bench/out}"
mkdir -p "$OUT"
LIMIT=440  # the hard stop; the script's own budget (420 s) stops starting new rows first
{
  date -u
  if [ "${1:-}" != "--dry-run" ]; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; fi
  "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
} > "$OUT/gpu_env.txt" 2>&1 || true
PYTHONPATH=. timeout "$LIMIT" "$PYTHON" bench/gpu_report.py --json "$OUT/gpu_report.json" "$@" \
  | tee "$OUT/gpu_report.md"
# Issue 22: the full-resolution detail stage on 1024x1024 and 2048x2048 selections (one candidate, the
# default strength, batch_size 4, bf16): seconds, tile-steps, peak memory (compare the paper rows' peak).
PYTHONPATH=. timeout 150 "$PYTHON" bench/detail_bench.py --json "$OUT/detail_bench.json" \
  $( [ "${1:-}" = "--dry-run" ] && echo --dry-run ) | tee -a "$OUT/gpu_report.md" || true
# Issue 31: Blended Latent Diffusion through the engine's loop on the real architectures with random weights:
# SD 1.5 at 512 px (4 candidates, fp16) and SDXL at 1024 px (1 candidate, bf16 UNet): seconds, peak memory;
# issue 38: the same at a few-step model's 4 LCM steps, one UNet pass a step.
PYTHONPATH=. timeout 120 "$PYTHON" bench/latent_gpu.py --json "$OUT/latent_gpu.json" \
  $( [ "${1:-}" = "--dry-run" ] && echo --dry-run ) | tee -a "$OUT/gpu_report.md" || true
