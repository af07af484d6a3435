#!/usr/bin/env bash
# Issue 16's GPU checks in one script, sized for one device call (600 s at most: the budget
# below; each step has its own limit, and what a step leaves unused goes to the next):
#   0. environment; Hydra's wheels from .whl/ (made here by experiments/gpu_wheels.sh and
#      carried); the Market-sized synthetic data generated in the background;
#   1. experiments/pace.py: the fast step (bf16, batch 64 = 16 x 4, 256x128, memory pipeline on
#      the GPU, CUDA graphs, fused Adam) for none / SE / ECA / CBAM, each alone on the GPU, the
#      memory pipeline's images/s against the model's, 1 / 2 / 4 CBAM jobs at once, and the
#      fast step's losses against the eager step's (bf16 and fp32) over 200 steps;
#   2. the paper's schedule on Market-sized data from scratch with trainer=gpu_fast
#      (experiment=paper_market1501: 120 epochs, validation every 10, test): wall time and test
#      figures (stopped at its limit, paper.log still shows the epochs reached in time);
#   3. the tests with CUDA cases (memory pipeline, speed options, evaluation), if time is left.
# Everything lands in $OUT (default /tmp/gpu_pace), at most 7 files:
#   gpu_pace.log pace.json pace.md paper.log paper_metrics.json paper_metrics.csv tests.log
#   bash experiments/gpu_pace.sh [all|pace|paper] [BUDGET_SECONDS]     (default: all 585)
set -uo pipefail
OUT=${OUT:-/tmp/gpu_pace}
PART=${1:-all}
BUDGET=${2:-585}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_pace.log") 2>&1
START=$SECONDS
left() { echo $((BUDGET - (SECONDS - START))); }
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, pytorch_lightning as pl, hydra; print('torch', torch.__version__, \
'lightning', pl.__version__, 'hydra', hydra.__version__, torch.cuda.get_device_name())" || exit 1

echo "== 0. Market-sized synthetic data (cached in \$REID_ATTN_CACHE), in the background"
(
    SECONDS=0
    python3 - <<'PY'
import sys

sys.path.insert(0, "experiments")
from harness import compose_train_config
from omegaconf import OmegaConf

from reid_attn.data import ReIDDataModule

cfg = compose_train_config(["data=synthetic_large"])
ReIDDataModule(**OmegaConf.to_container(cfg.data, resolve=True)).prepare_data()
PY
    echo "data ready in ${SECONDS}s"
) &
DATA_PID=$!

if [ "$PART" != paper ]; then
    echo "== 1. pace.py: throughput per attention, pipeline vs model, jobs at once, tracking"
    STEP=$SECONDS
    # nine workers compile at once: two compile threads each share the 16 cores
    TORCHINDUCTOR_COMPILE_THREADS=2 timeout 300 python3 experiments/pace.py --device cuda \
        --out "$OUT" --timeout 260 --window 5
    echo "pace rc=$? in $((SECONDS - STEP))s"
fi

wait $DATA_PID
if [ "$PART" != pace ]; then
    echo "== 2. paper_market1501 on synthetic_large, trainer=gpu_fast, 120 epochs"
    LIMIT=$(( $(left) - 40 ))
    STEP=$SECONDS
    rm -rf /tmp/pace_run
    timeout "$LIMIT" python3 -m reid_attn.train experiment=paper_market1501 \
        data=synthetic_large model.pretrained=null trainer=gpu_fast \
        hydra.run.dir=/tmp/pace_run >"$OUT/paper.log" 2>&1 &
    TRAIN_PID=$!
    # progress for a run stopped at its limit: seconds, and the CSV log's last epoch
    while kill -0 $TRAIN_PID 2>/dev/null; do
        sleep 15
        EPOCH=$(python3 -c "import csv; rows = list(csv.DictReader(open(
'/tmp/pace_run/csv/metrics.csv'))); print(rows[-1].get('epoch'))" 2>/dev/null)
        echo "progress: $((SECONDS - STEP))s epoch ${EPOCH:-?}" >>"$OUT/paper.log"
    done
    wait $TRAIN_PID
    echo "paper run rc=$? in $((SECONDS - STEP))s (limit ${LIMIT}s)"
    grep -E "decoded|^test|progress|Error|error" "$OUT/paper.log" | tail -8
    cp /tmp/pace_run/metrics.json "$OUT/paper_metrics.json" 2>/dev/null
    cp /tmp/pace_run/csv/metrics.csv "$OUT/paper_metrics.csv" 2>/dev/null
    cat "$OUT/paper_metrics.json" 2>/dev/null
fi

echo "== 3. tests with CUDA cases"
LIMIT=$(( $(left) - 3 ))
if [ "$LIMIT" -lt 25 ]; then
    echo "skipped: $(left)s of the budget left"
else
    timeout "$LIMIT" python3 -m pytest -q -p no:cacheprovider tests/test_memory_pipeline.py \
        tests/test_speed_options.py tests/test_rank.py -k "cuda" >"$OUT/tests.log" 2>&1
    echo "tests rc=$?"; tail -3 "$OUT/tests.log"
fi
echo "total $((SECONDS - START))s"
