#!/usr/bin/env bash
# One prepared GPU run of at most 10 minutes: the CUDA tests, then CIFAR Glow (K=32, L=3, width 512, affine, LU,
# 32x32x3) training img/s for cinn and rosinality/glow-pytorch side by side, backprop by inversion's memory,
# a profile of the bf16 step, torch.compile, and the training and sampling img/s of the attention subnets and the
# spline and mixture maps against the conv/affine Glow. Everything it prints also goes to $OUT (default runs/gpu).
#
# Prepare here, once (nothing of it is committed):
#   python3 -m pip wheel --no-deps -w .whl FrEIA==0.2           # pure Python: a wheel for any Python 3
#   git clone https://github.com/rosinality/glow-pytorch scratch/glow-pytorch      # the peer
# Rehearse on any CPU (toy sizes, every step of the script):
#   bash benchmarks/gpu.sh --dry-run
# On the GPU machine (carry .whl and scratch/glow-pytorch):
#   bash benchmarks/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
PEER=${PEER:-scratch/glow-pytorch}

if [[ "${1:-}" == "--dry-run" ]]; then
    DEVICE=cpu K=1 ROUNDS=1 SIZES=("2 fp32" "2 bf16") INVERSION_BATCH=2 PROFILE_BATCH=2
    INGREDIENTS=(--config configs/glow/tiny.yaml --shape 1 8 8 --steps 1 --sample-batch 2 --train.batch_size=2)
else
    DEVICE=cuda K=32 ROUNDS=8 SIZES=("64 fp32" "256 fp32" "512 bf16") INVERSION_BATCH=64 PROFILE_BATCH=512
    INGREDIENTS=(--config configs/glow/cifar10.yaml --shape 3 32 32 --steps 10 --sample-batch 256
                 --train.batch_size=64 --model.steps_per_level=8)
fi

step() {  # step NAME TIMEOUT COMMAND...: run it, log it to $OUT/NAME.txt, go on whatever it returns
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*" | tee "$OUT/$name.txt"
    timeout "$limit" "$@" 2>&1 | tee -a "$OUT/$name.txt"
    echo "== $name: exit ${PIPESTATUS[0]}" | tee -a "$OUT/$name.txt"
}

# 1. What the GPU machine lacks (its torch, scikit-image, matplotlib, tensorboard, pytest are there).
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl && export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
step environment 30 "$PYTHON" -c "import torch, FrEIA, cinn; print('torch', torch.__version__, '| cuda',
    torch.cuda.is_available() and torch.cuda.get_device_name(), '| cinn', cinn.__version__)"

# 2. The tests that need CUDA (they skip, saying "no CUDA device", elsewhere).
step pytest_cuda 100 "$PYTHON" -m pytest -o addopts="" -p no:cacheprovider -q -rs -m cuda tests/test_cuda.py

# 3. Training img/s, side by side in one run per setting (peer first: the ratios are to it).
for size in "${SIZES[@]}"; do
    read -r batch precision <<< "$size"
    step "throughput_b${batch}_${precision}" 80 "$PYTHON" benchmarks/train_vs_peer.py --device "$DEVICE" \
        --peer "$PEER" --implementations peer,cinn --precision "$precision" --steps-per-level "$K" \
        --batch-size "$batch" --rounds "$ROUNDS" --warmup 3 --json "$OUT/throughput_b${batch}_${precision}.json"
done

# 4. Backprop by inversion: memory (max_memory_allocated) and step time against standard backprop.
step inversion 70 "$PYTHON" benchmarks/train_vs_peer.py --device "$DEVICE" --implementations cinn,cinn-inversion \
    --steps-per-level "$K" --batch-size "$INVERSION_BATCH" --rounds "$ROUNDS" --json "$OUT/inversion.json"

# 5. Where the bf16 step's time goes, and the fraction of the measured bf16 matrix rate it reaches.
step profile_bf16 60 "$PYTHON" benchmarks/profile_step.py --device "$DEVICE" --precision bf16 \
    --steps-per-level "$K" --batch-size "$PROFILE_BATCH" --steps 3 --rows 15
# 6. torch.compile (default mode) against eager at the bf16 setting: whether it is worth its compile time.
read -r batch precision <<< "${SIZES[-1]}"
step compile 90 "$PYTHON" benchmarks/train_vs_peer.py --device "$DEVICE" --implementations cinn,cinn-compile \
    --precision "$precision" --steps-per-level "$K" --batch-size "$batch" --rounds "$ROUNDS" --warmup 3 \
    --json "$OUT/compile.json"
# 7. The couplings and subnets of this decade, each against the conv subnet with the affine map (K=8 per level):
#    training and sampling img/s in bf16 (`bench`).
VARIANTS=("affine_conv|" "vit_attention|--model.subnet=vit_attention"
          "gated_attention|--model.subnet=gated_attention"
          "spline|--model.coupling={map: rational_quadratic_spline}"
          "mixture|--model.coupling={map: logistic_mixture_cdf}")
for variant in "${VARIANTS[@]}"; do
    name=${variant%%|*} override=${variant#*|}
    step "ingredient_$name" 45 "$PYTHON" -m tasks.glow bench "${INGREDIENTS[@]}" --train.device="$DEVICE" \
        --train.precision=bf16 ${override:+"$override"}
done
echo "results in $OUT"
