#!/usr/bin/env bash
# The GPU ablation (experiment=ablation_gpu: 7 rows x 3 seeds on data=synthetic_large) in
# device leases of ~15 minutes, one prepared command per lease. Results go to $OUT (default
# /tmp/ablation_gpu), at most 8 files:
#
#   bash experiments/ablation_gpu.sh curve [CURVE_EPOCHS] [PAPER_EPOCHS]
#     first lease: (a) the measuring runs: the CBAM and Baseline rows (seed 0; CURVE_ROWS)
#     trained CURVE_EPOCHS (default 40) epochs at a constant learning rate after the warm-up,
#     validated every epoch, side by side on the GPU; the sweep's epochs chosen from their
#     curves by experiments/choose_epochs.py (curve.json, curve.png); (d) the paper's full
#     setting (experiment=paper_market1501 data=synthetic_large model.pretrained=null) timed
#     over PAPER_EPOCHS (default 10) of its 120 epochs (paper_timing.json: s/epoch, the
#     projection to 120 epochs); the runs without checkpoints in curve_runs.tar.gz.
#   bash experiments/ablation_gpu.sh sweep SEED EPOCHS [ROWS]
#     each later lease: (b) one seed's jobs (ROWS: comma list, default all 7) at EPOCHS epochs
#     (decays at 2/3 and 7/8 of them), in LANES (default 2) multirun processes sharing the
#     GPU, each writing its own sweep folder; (c) the report merging them (report.md,
#     report.png, report_validation_curves.png); the folders without checkpoints in
#     sweep_seed<SEED>.tar.gz (file times kept, for the report's wall times). Merge the
#     parts of all leases locally with python -m reid_attn.report (docs/ablation.md).
#
# Environment: OUT; WORK (runs, logs, checkpoints; default a new /tmp folder); LANES;
# CURVE_ROWS; REID_ATTN_CACHE; time limits in seconds, which keep either stage inside one
# 600 s device command: DATA_LIMIT (120), CURVE_LIMIT (300; a measuring run stopped there
# still leaves its curve so far), PAPER_LIMIT (140), SWEEP_LIMIT (420); and
# ABLATION_GPU_OVERRIDES, train overrides added to every run (the CPU test runs this script
# on tiny settings with them). Wheels in .whl/ (hydra-core, omegaconf,
# antlr4-python3-runtime, which the GPU machine lacks) are installed first when present.
set -uo pipefail
STAGE=${1:-}
OUT=${OUT:-/tmp/ablation_gpu}
LANES=${LANES:-2}
CURVE_ROWS=${CURVE_ROWS:-cbam,baseline}
read -r -a EXTRA <<<"${ABLATION_GPU_OVERRIDES:-}"
usage="usage: bash experiments/ablation_gpu.sh curve [CURVE_EPOCHS] [PAPER_EPOCHS]"
usage+=" | sweep SEED EPOCHS [ROWS]"
case "$STAGE" in
    curve) CURVE_EPOCHS=${2:-40}; PAPER_EPOCHS=${3:-10} ;;
    sweep) SEED=${2:?$usage}; EPOCHS=${3:?$usage}
           ROWS=${4:-cbam,cbam_bn,se,eca,baseline,tri,tri_cir} ;;
    *) echo "$usage" >&2; exit 2 ;;
esac
mkdir -p "$OUT"
exec > >(tee "$OUT/summary.txt") 2>&1
source "$(dirname "$0")/gpu_env.sh"
WORK=${WORK:-$(mktemp -d /tmp/ablation_gpu_work.XXXX)}  # runs, logs, checkpoints
mkdir -p "$WORK"
# data workers per process: the machine's cores shared by the processes running together
PROCESSES=2  # the two measuring runs
[[ $STAGE == sweep ]] && PROCESSES=$LANES
WORKERS=$(( ($(nproc) - 2) / PROCESSES ))
(( WORKERS < 1 )) && WORKERS=1
echo "== $* ($(date -u +%FT%TZ)); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader
python3 -c "import torch, pytorch_lightning as pl, hydra; print('torch', torch.__version__, \
'lightning', pl.__version__, 'hydra', hydra.__version__, 'cuda', torch.cuda.is_available())" \
    || exit 1

echo "== data: synthetic_large generated once into \$REID_ATTN_CACHE"
SECONDS=0
timeout "${DATA_LIMIT:-120}" python3 - "${EXTRA[@]}" <<'PY' || { echo "data failed: rc=$?"; exit 1; }
import sys

sys.path.insert(0, "experiments")
from harness import compose_train_config
from omegaconf import OmegaConf

from reid_attn.data import ReIDDataModule

cfg = compose_train_config(["experiment=ablation_gpu", *sys.argv[1:]])
ReIDDataModule(**OmegaConf.to_container(cfg.data, resolve=True)).prepare_data()
PY
echo "data in ${SECONDS}s"

if [[ $STAGE == curve ]]; then
    echo "== (a) measuring runs ($CURVE_ROWS, seed 0): $CURVE_EPOCHS epochs, constant lr," \
        "validation every epoch"
    SECONDS=0
    pids=()
    for row in ${CURVE_ROWS//,/ }; do
        timeout "${CURVE_LIMIT:-300}" python3 -m reid_attn.train experiment=ablation_gpu \
            ablation="$row" seed=0 trainer.max_epochs="$CURVE_EPOCHS" \
            trainer.check_val_every_n_epoch=1 "scheduler.milestones=[]" \
            data.num_workers="$WORKERS" hydra.run.dir="$WORK/curve_$row" "${EXTRA[@]}" \
            >"$WORK/curve_$row.log" 2>&1 &
        pids+=($!)
    done
    wait "${pids[@]}"  # a bare wait would also wait for the tee above
    echo "measuring runs in ${SECONDS}s"
    for row in ${CURVE_ROWS//,/ }; do grep -h "^test" "$WORK/curve_$row.log"; done
    python3 experiments/choose_epochs.py "$WORK"/curve_*/ --out "$OUT"
    echo "choose_epochs rc=$?"

    echo "== (d) paper_market1501 setting on synthetic_large, from scratch: $PAPER_EPOCHS epochs"
    SECONDS=0
    timeout "${PAPER_LIMIT:-140}" python3 -m reid_attn.train experiment=paper_market1501 \
        data=synthetic_large model.pretrained=null trainer.max_epochs="$PAPER_EPOCHS" \
        trainer.enable_progress_bar=false hydra.run.dir="$WORK/paper" "${EXTRA[@]}" \
        >"$WORK/paper.log" 2>&1
    echo "paper run rc=$? in ${SECONDS}s"
    python3 - "$WORK/paper" "$SECONDS" "$OUT/paper_timing.json" <<'PY'
import json
import sys
from pathlib import Path

import numpy as np

from reid_attn.runs.timing import epoch_seconds

run, wall, out = Path(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3])
epochs = epoch_seconds(run)
per_epoch = float(np.median(epochs)) if epochs.size else None
done = len(epochs) + 1 if epochs.size else 0
metrics = run / "metrics.json"
timing = {
    "epochs_run": done,
    "job_wall_s": wall,
    "median_epoch_s": per_epoch,
    "projected_120_epochs_s": None if per_epoch is None else wall + (120 - done) * per_epoch,
    "test_metrics": (
        {k: v for k, v in json.loads(metrics.read_text()).items() if k != "cmc"}
        if metrics.is_file()
        else None
    ),
}
out.write_text(json.dumps(timing, indent=2) + "\n")
print(json.dumps({k: v for k, v in timing.items() if k != "test_metrics"}))
PY
    tar -czf "$OUT/curve_runs.tar.gz" --exclude=checkpoints -C "$WORK" .
else
    MILESTONES=$(python3 experiments/choose_epochs.py --milestones "$EPOCHS") || exit 1
    PART=ablation_gpu_seed${SEED}_$(date -u +%Y%m%d-%H%M%S)
    echo "== (b) seed $SEED, rows $ROWS: $EPOCHS epochs, decays at $MILESTONES, $LANES lanes"
    IFS=, read -r -a rows <<<"$ROWS"
    lanes=()
    for i in "${!rows[@]}"; do
        lane=$(( i % LANES ))
        lanes[lane]=${lanes[lane]:+${lanes[lane]},}${rows[i]}
    done
    mkdir -p "$WORK/$PART"
    SECONDS=0
    pids=()
    for lane in "${!lanes[@]}"; do
        timeout "${SWEEP_LIMIT:-420}" python3 -m reid_attn.train --multirun \
            experiment=ablation_gpu seed="$SEED" ablation="${lanes[lane]}" \
            trainer.max_epochs="$EPOCHS" "scheduler.milestones=$MILESTONES" \
            data.num_workers="$WORKERS" hydra.sweep.dir="$WORK/$PART/lane$lane" "${EXTRA[@]}" \
            >"$WORK/$PART/lane$lane.log" 2>&1 &
        pids+=($!)
    done
    wait "${pids[@]}"
    echo "sweep in ${SECONDS}s"
    grep -h "^test" "$WORK/$PART"/lane*.log
    echo "== (c) report"
    python3 -m reid_attn.report "$WORK/$PART"/lane*/ --out "$WORK/$PART" --name report \
        && cp "$WORK/$PART"/report.md "$WORK/$PART"/report*.png "$OUT/"
    tar -czf "$OUT/sweep_seed$SEED.tar.gz" --exclude=checkpoints -C "$WORK" "$PART"
fi
ls -la "$OUT"
