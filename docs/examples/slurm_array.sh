#!/usr/bin/env bash
# A Slurm array job: frames.txt lists one frame per line; task k of the array infers every
# N-th frame starting at line k (N = the array's size), one process and one engine per task,
# on the one GPU Slurm gave it.
#
#   sbatch --array=0-7 docs/examples/slurm_array.sh frames.txt heights/
#
# Slurm sets CUDA_VISIBLE_DEVICES for --gpus; Vulkan ignores it, so the task opens its GPU by
# PCI bus id (psi_gpu.distributed.assigned_adapter asks nvidia-smi). The outputs are
# heights/<stem>.height.npy, as `psi-gpu infer A.npy B.npy -o heights/` names them.
#SBATCH --job-name=psi-gpu
#SBATCH --gpus=1
#SBATCH --cpus-per-task=4
#SBATCH --time=01:00:00
#SBATCH --output=psi-gpu-%A_%a.log
set -euo pipefail
list=${1:?frames.txt}
out=${2:?output folder}
mkdir -p "$out"
python3 - "$list" "$out" "${SLURM_ARRAY_TASK_ID:-0}" "${SLURM_ARRAY_TASK_COUNT:-1}" <<'PY'
import sys, time
from pathlib import Path
from psi_gpu.distributed import output_for, process_engine

listing, out, task, tasks = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
frames = [l.strip() for l in Path(listing).read_text().splitlines() if l.strip()][task::tasks]
engine = process_engine()  # on assigned_adapter(): the GPU Slurm gave this task
print(f"task {task}/{tasks}: {len(frames)} frames on {engine}", flush=True)
t = time.perf_counter()
for f in frames:
    stats = engine.infer_file(f, output_for(f, out))
    print(f"{f}: {stats['seconds']:.2f} s, {stats['invalid_pixels']} NaN pixels", flush=True)
print(f"task {task}: {len(frames)} frames in {time.perf_counter() - t:.1f} s", flush=True)
PY
