#!/usr/bin/env bash
# cnnzoo on a CUDA machine, in under 8 minutes: install, the device-independent tests on the GPU,
# LeNet-5 and ResNet-20 trained with bf16/fp16 autocast, channels_last and torch.compile, DDP over the
# GPUs present (torchrun), then images/s and time to 99% per run.
#
#   bash bench/gpu_check.sh              # .venv/bin/python when there is one; PYTHON=... to pick another
#   GPU_CHECK_CPU=1 bash bench/gpu_check.sh   # dry run of the same steps on the CPU, tiny (tests the script)
#
# Without a CUDA GPU (or without PyTorch) it says so and exits 0. Each step has its own time limit, and
# a failing step is reported and counted, not fatal: the last line sums up, and the exit status is the
# number of failed steps (0 = all passed).

set -u
cd "$(dirname "$0")/.."
# the project's environment where `make setup` made one (the system python3 lacks cnnzoo and its packages)
if [ -x .venv/bin/python ]; then PY=${PYTHON:-.venv/bin/python}; else PY=${PYTHON:-python3}; fi
export PYTHONUNBUFFERED=1
DRY=${GPU_CHECK_CPU:-0}
OUT=${GPU_CHECK_OUT:-$(mktemp -d /tmp/cnnzoo-gpu-check.XXXXXX)}
START=$(date +%s)
FAILED=()

if [ "$DRY" = 1 ]; then
    DEVICE=cpu NGPU=1 SUBSET=(--train-subset 2000) EPOCHS=1 TESTS_LIMIT=60
    echo "GPU_CHECK_CPU=1: dry run on the CPU with 2,000 training images"
else
    if ! NGPU=$("$PY" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)' 2>/dev/null) \
        || [ "${NGPU:-0}" -lt 1 ]; then
        echo "no CUDA GPU here (or no PyTorch in $PY): nothing to check"
        exit 0
    fi
    DEVICE=cuda SUBSET=() EPOCHS=3 TESTS_LIMIT=180
fi

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, report, remember failures
    local name=$1 limit=$2
    shift 2
    echo
    echo "=== $name (limit ${limit} s, $(($(date +%s) - START)) s elapsed)"
    timeout --kill-after=10 "$limit" "$@"
    local rc=$?
    if [ $rc -ne 0 ]; then
        echo "--- $name FAILED (exit $rc$([ $rc -eq 124 ] && echo ': time limit'))"
        FAILED+=("$name")
    fi
    return 0
}

echo "=== machine"
"$PY" - <<'EOF'
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"  cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, bf16 {torch.cuda.is_bf16_supported()}")
EOF

# 1. install: the dev extras where the network allows; offline, the package alone on what is there
install() {
    "$PY" -m pip install -q -e ".[dev]" 2>/dev/null && return 0
    echo "pip install -e .[dev] failed (offline?): installing cnnzoo alone, without dependencies"
    "$PY" -m pip install -q --no-deps --no-build-isolation -e . && return 0
    echo "pip failed too: using PYTHONPATH=src"
    return 1
}
echo
echo "=== install"
install || export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
"$PY" -c 'import cnnzoo, torch; print("cnnzoo", cnnzoo.__file__)' || { echo "cnnzoo does not import"; exit 1; }

# 2. the device-independent tests: models and the engine pick the GPU by themselves (device auto)
if "$PY" -c 'import pytest' 2>/dev/null; then
    step "tests on $DEVICE" "$TESTS_LIMIT" "$PY" -m pytest -q -x -p no:cacheprovider \
        tests/models "tests/engine/test_train.py::test_default_recipe_learns_at_every_length" tests/data/test_loader.py tests/data/test_augment.py
else
    echo "pytest is missing: tests skipped"
fi

# 3. training: LeNet-5 and ResNet-20 on MNIST in each precision, memory format and with compile
train() {  # train NAME MODEL EXTRA_ARGS...
    local name=$1 model=$2
    shift 2
    step "train $name" 150 "$PY" -m cnnzoo train "$model" --data mnist --device "$DEVICE" --epochs "$EPOCHS" \
        --eval-every 1 --quiet "${SUBSET[@]}" --out "$OUT/$name" "$@"
}
PRECISIONS=(bf16 fp16)
[ "$DRY" = 1 ] && PRECISIONS=(bf16)
for p in "${PRECISIONS[@]}"; do
    train "lenet5-$p" lenet5 --precision "$p"
done
train lenet5-bf16-channels_last lenet5 --precision bf16 --channels-last
train lenet5-bf16-compile lenet5 --precision bf16 --compile
train resnet20-bf16-channels_last resnet20 --precision bf16 --channels-last --batch-size 256
[ "$DRY" = 1 ] || train resnet20-fp16-compile resnet20 --precision fp16 --compile --batch-size 256

# 4. DistributedDataParallel over the GPUs present (one process per GPU; NCCL, or gloo on the CPU)
if "$PY" -c 'import torch.distributed.run' 2>/dev/null; then
    step "ddp x$NGPU" 150 "$PY" -m torch.distributed.run --standalone --nproc_per_node="$NGPU" -m cnnzoo train lenet5 \
        --data mnist --device "$DEVICE" --epochs "$EPOCHS" --eval-every 1 --quiet "${SUBSET[@]}" --out "$OUT/ddp-x$NGPU"
fi

# 5. speed of a few architectures on this device (forward and training images/s)
step "bench_models" 90 "$PY" bench/bench_models.py --device "$DEVICE" --models "lenet5,resnet20,resnet18" \
    --batch 256 --native-batch 64 --min-time 0.5 --out "$OUT/speed.json"

# 6. the figures: images/s and time to 99% of every run above, from its metrics.jsonl
echo
echo "=== results ($OUT)"
"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

rows = []
for metrics in sorted(Path(sys.argv[1]).glob("*/metrics.jsonl")):
    recs = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    recs = [r for r in recs if "epoch" in r]
    if not recs:
        continue
    rate = max(r.get("images_per_s", 0) for r in recs)
    hit = next((r["time"] for r in recs if r.get("test_acc", 0) >= 99.0), None)
    final = next((r["test_acc"] for r in reversed(recs) if "test_acc" in r), float("nan"))
    rows.append((metrics.parent.name, len(recs), rate, hit, final, recs[-1].get("time", float("nan"))))
print(f"{'run':32s} {'epochs':>6s} {'images/s':>10s} {'to 99%':>8s} {'final':>7s} {'total':>7s}")
for name, n, rate, hit, final, total in rows:
    to99 = f"{hit:.1f} s" if hit is not None else "-"
    print(f"{name:32s} {n:6d} {rate:10,.0f} {to99:>8s} {final:6.2f}% {total:6.1f} s")
if not rows:
    print("no run finished")
EOF

echo
ELAPSED=$(($(date +%s) - START))
if [ ${#FAILED[@]} -eq 0 ]; then
    echo "gpu_check: all steps passed in ${ELAPSED} s"
else
    echo "gpu_check: ${#FAILED[@]} step(s) failed in ${ELAPSED} s: ${FAILED[*]}"
fi
exit ${#FAILED[@]}
