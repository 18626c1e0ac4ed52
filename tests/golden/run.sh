#!/usr/bin/env bash
# Byte-for-byte regression check: run a fixed set of psi-gpu commands with the binary BIN and
# write every output plus SHA256SUMS into OUT. Run it with the binary before a change and after,
# then `diff OUT_BEFORE/SHA256SUMS OUT_AFTER/SHA256SUMS` — a refactor must leave them equal.
#
#   tests/golden/run.sh target/release/psi-gpu /tmp/golden-after
#   PSI_GPU_BACKEND=gl PRECISIONS=f32 tests/golden/run.sh target/release/psi-gpu /tmp/golden-after-gl
#
# Tiled runs use --batch 1 (or --tile 0), as they did when the blend used float atomics (its
# order is now fixed: batch > 1 gives the same bytes). safetensors files are hashed as their
# tensors plus their header with sorted keys, as they were before the writer sorted them itself.
set -euo pipefail
BIN=$(realpath "$1")
OUT=$2
cd "$(dirname "$0")/../.."
F=tests/fixtures
rm -rf "$OUT"
mkdir -p "$OUT"
run() { "$BIN" "$@" > /dev/null 2>> "$OUT/stderr.log"; }

# classical solver, per pixel: tiled (batch 1), one tile, quality map, preview, another height range
run infer $F/psi_frame_96x128.npy -o "$OUT/classical_tiled.npy" --tile 64 --overlap 16 --batch 1 \
    --quality "$OUT/classical_quality.npy" --preview "$OUT/classical_preview.png" --unwrap per-pixel
run infer $F/psi_frame_96x128.npy -o "$OUT/classical_whole.npy" --tile 0 --unwrap per-pixel
run infer $F/psi_frame_96x128.npy -o "$OUT/classical_range.npy" --tile 48 --overlap 8 --batch 1 \
    --height-range -20,30 --unwrap per-pixel
# the default (robust): tiled with the reason mask, one tile, weighted
run infer $F/psi_frame_96x128.npy -o "$OUT/robust_tiled.npy" --tile 48 --batch 1 --mask "$OUT/robust_mask.npy"
run infer $F/psi_frame_96x128.npy -o "$OUT/robust_whole.npy" --tile 0
run infer $F/psi_frame_96x128.npy -o "$OUT/weighted_whole.npy" --tile 0 --unwrap weighted
# U-Net with committed weights, f32 and f16, whole frame and tiled (batch 1)
for p in ${PRECISIONS:-f32 f16}; do
    run infer $F/frame_64x64.npy --weights $F/unet_b8.safetensors --precision $p --tile 0 -o "$OUT/unet_b8_$p.npy"
    run infer $F/frame_100x75.npy --weights $F/unet_b16.safetensors --precision $p --tile 48 --overlap 16 \
        --batch 1 -o "$OUT/unet_b16_tiled_$p.npy"
    run infer $F/frame3_37x50.npy --weights $F/unet_b8_c3.safetensors --precision $p --tile 0 -o "$OUT/unet_c3_$p.npy"
done
# generate: the seed surface (f32) and a random noisy u8 frame with truth and preview
run generate "$OUT/gen_seed.npy" --height 40 --width 56 --truth "$OUT/gen_seed_truth.npy"
run generate "$OUT/gen_random.npy" --height 48 --width 64 --dtype u8 --shape random --seed 7 --noise 2 \
    --ab-variation 0.1 --truth "$OUT/gen_random_truth.npy" --preview "$OUT/gen_random_truth.png"
run generate "$OUT/gen_u16.npy" --height 33 --width 47 --dtype u16 --shape random --seed 3 \
    --height-scale 0.02 --height-offset 1.25 --wavelengths 5,6,7 --buckets 5
# eval with JSON, an error map and a mask
run eval "$OUT/classical_tiled.npy" $F/psi_truth_96x128.npy --json "$OUT/eval.json" --error-map "$OUT/eval_error.png"
run eval $F/eval_pred.npy $F/eval_truth.npy --mask $F/eval_mask.npy --json "$OUT/eval_masked.json"
# convert: npy -> PNG images -> npy
run convert "$OUT/gen_random.npy" "$OUT/convert_png" --format png
run convert "$OUT/convert_png" "$OUT/convert_back.npy"
# 3 training steps (synthetic frames, f32) and a checkpoint; then 2 steps resumed
run train --steps 3 --synthetic 4 --synthetic-size 48 --batch 2 --patch 32 --seed 1 \
    -o "$OUT/train.safetensors" --checkpoint-every 3 --history "$OUT/train_history.csv"
run train --steps 2 --synthetic 2 --synthetic-size 32 --batch 2 --patch 0 --loss physics --seed 2 \
    --init $F/unet_b8.safetensors -o "$OUT/train_physics.safetensors"
# finetune 2 L-BFGS iterations on the head
run finetune --weights $F/unet_b8.safetensors --frames $F/frame_64x64.npy --patch 32 --crops 2 --batch 2 \
    --iterations 2 -o "$OUT/finetune.safetensors"
# Scaled-cPIKAN on the pixel grid, and a short fit
run pinn eval --weights $F/cpikan_2_16_16_1.safetensors --height 20 --width 30 -o "$OUT/pinn_eval.npy"
run pinn fit $F/psi_frame_96x128.npy --region 10,20,16,24 -o "$OUT/pinn_fit.npy" --save-model "$OUT/pinn_fit.safetensors" \
    --supervised-steps 20 --adam-steps 5 --lbfgs-iters 5
run pinn fit $F/frame_64x64.npy --region 5,5,24,24 -o "$OUT/pinn_fit_unet.npy" --init unet:$F/unet_b8.safetensors \
    --supervised-steps 20 --adam-steps 5 --lbfgs-iters 5

cd "$OUT"
python3 - <<'PY' > SHA256SUMS
import hashlib, json, os, struct
for root, _, files in sorted(os.walk(".")):
    for name in sorted(files):
        path = os.path.join(root, name)[2:]
        if path in ("SHA256SUMS", "stderr.log"):
            continue
        data = open(path, "rb").read()
        if path.endswith(".safetensors"):
            n = struct.unpack("<Q", data[:8])[0]
            header = json.loads(data[8:8 + n])
            data = json.dumps(header, sort_keys=True).encode() + data[8 + n:]
        print(hashlib.sha256(data).hexdigest(), path)
PY
wc -l < SHA256SUMS
