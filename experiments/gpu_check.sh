#!/usr/bin/env bash
# The GPU checks in one script, for a GPU machine that has PyTorch, Lightning and friends but
# perhaps not Hydra (carry the wheels in .whl/, see the README's "Training speed" section):
#   1. experiments/bench_train.py on the GPU: fp32 for all attention types, bf16 autocast and
#      bf16 + channels-last for none / cbam, at 256x128 and 128x64, batch 64 (16 ids x 4);
#   2. a short real training run of the paper's 256x128 setting (experiment=paper_market1501:
#      trainer=gpu, 16-mixed, CBAM + joint circle loss) on the Market-sized synthetic data;
#   3. the tests that have CUDA cases (rank, re-ranking, speed options, models) on the GPU.
# Results go to $OUT (default /tmp/gpu_check): bench_train_cuda.{json,md}, the logs and
# train_metrics.json. Each step has its own time limit so the script ends inside a lease.
#   bash experiments/gpu_check.sh [EPOCHS]
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
EPOCHS=${1:-15}
mkdir -p "$OUT"
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, pytorch_lightning as pl; print('torch', torch.__version__, \
'lightning', pl.__version__, torch.cuda.get_device_name())" || exit 1

echo "== 0. generate the Market-sized synthetic data (cached in \$REID_ATTN_CACHE)"
SECONDS=0
timeout 150 python3 - <<'PY' || exit 1
import sys

sys.path.insert(0, "experiments")
from harness import compose_train_config
from omegaconf import OmegaConf

from reid_attn.data import ReIDDataModule

cfg = compose_train_config(["data=synthetic_large"])
ReIDDataModule(**OmegaConf.to_container(cfg.data, resolve=True)).prepare_data()
PY
echo "data in ${SECONDS}s"

echo "== 1. bench_train on the GPU"
SECONDS=0
timeout 240 python3 experiments/bench_train.py --device cuda --batch 64 --warmup 3 --steps 15 \
    --rounds 1 --variants fp32,bf16,bf16+channels_last --data synthetic_large \
    --model-variant bf16+channels_last >"$OUT/bench.log" 2>&1
echo "bench rc=$? in ${SECONDS}s"
grep -E "^round" "$OUT/bench.log"
cp experiments/results/bench_train_cuda.* "$OUT/" 2>/dev/null && cat "$OUT/bench_train_cuda.md"

echo "== 2. training: paper_market1501 setting on synthetic_large, $EPOCHS epochs"
SECONDS=0
timeout 200 python3 -m reid_attn.train experiment=paper_market1501 data=synthetic_large \
    model.pretrained=null model.channels_last=true trainer.max_epochs="$EPOCHS" \
    trainer.check_val_every_n_epoch=5 scheduler.warmup_epochs=2 \
    "scheduler.milestones=[$((EPOCHS * 2 / 3)),$((EPOCHS * 7 / 8))]" \
    trainer.enable_progress_bar=false hydra.run.dir=/tmp/gpu_run >"$OUT/train.log" 2>&1
echo "train rc=$? in ${SECONDS}s"
tail -25 "$OUT/train.log"
cp /tmp/gpu_run/metrics.json "$OUT/train_metrics.json" 2>/dev/null
cp /tmp/gpu_run/csv/metrics.csv "$OUT/train_metrics.csv" 2>/dev/null
cat "$OUT/train_metrics.json" 2>/dev/null

echo "== 3. tests with CUDA cases"
SECONDS=0
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_rank.py tests/test_rerank.py \
    tests/test_rerank_features.py tests/test_speed_options.py tests/test_models.py \
    >"$OUT/tests.log" 2>&1
echo "tests rc=$? in ${SECONDS}s"; tail -3 "$OUT/tests.log"
