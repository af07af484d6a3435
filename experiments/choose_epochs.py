"""Choose the GPU ablation's epochs from measured validation curves.

The measuring runs train at a constant learning rate after the warm-up
(``scheduler.milestones=[]``) and validate every epoch (held-out training identities, never
the test split). A run's curve has levelled off at the first epoch after which its
validation mAP (its trailing mean over ``--window`` validations, against a small validation
split's noise) gains at most ``--tolerance`` points, confirmed by ``--confirm`` later
validations (:func:`reid_attn.runs.validation_curves.levelled_epoch`). The sweep's schedule puts
its first learning-rate decay no earlier than that: ``E = 1.5 x`` the latest levelled epoch
of the runs, rounded up to a multiple of ``--multiple``, decays x0.1 at ``2/3 E`` and
``7/8 E`` (:func:`milestones_for`).

    python3 experiments/choose_epochs.py RUN_DIR [RUN_DIR ...] --out DIR   # curve.json, curve.png
    python3 experiments/choose_epochs.py --milestones 30                     # prints [20,26]

Exits with status 2 when a run has not levelled off (measure longer).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from reid_attn.runs.validation_curves import read_validation_log, row_curve
from reid_attn.viz.ablation import save_figure, validation_curves_figure


def milestones_for(epochs: int) -> list[int]:
    """The sweep's learning-rate decays for ``epochs`` epochs: at 2/3 and 7/8 of them
    (rounded half up)."""
    return [int(2 * epochs / 3 + 0.5), int(7 * epochs / 8 + 0.5)]


def sweep_epochs(levelled: int, multiple: int = 5) -> int:
    """Epochs whose first decay (2/3 of them) comes no earlier than the ``levelled`` epoch of
    the constant-rate curve: ``1.5 * levelled`` rounded up to a multiple of ``multiple``."""
    return multiple * math.ceil(1.5 * levelled / multiple)


def choose(
    run_dirs: list[Path], tolerance: float, confirm: int, multiple: int, window: int = 1
) -> dict[str, object]:
    """Each run's levelled epoch and, when all have levelled off, the sweep's epochs and
    milestones (None otherwise). Raises SystemExit naming a run without a validation log."""
    runs, curves = {}, []
    for run in run_dirs:
        log = read_validation_log(run)
        if log is None:
            sys.exit(f"error: {run} has no validation lines in csv/metrics.csv")
        curve = row_curve(run.name, [log])
        curves.append(curve)
        runs[run.name] = {
            "levelled_epoch": curve.levelled(tolerance, confirm, window),
            "last_epoch": int(log.epochs[-1]),
            "last_val_mAP": round(float(log.values["mAP"][-1]), 2),
            "best_val_mAP": round(float(log.values["mAP"].max()), 2),
        }
    levelled = [r["levelled_epoch"] for r in runs.values()]
    epochs = None if None in levelled else sweep_epochs(max(levelled), multiple)
    return {
        "runs": runs,
        "tolerance": tolerance,
        "confirm": confirm,
        "window": window,
        "epochs": epochs,
        "milestones": None if epochs is None else milestones_for(epochs),
        "curves": curves,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="measuring runs' folders")
    parser.add_argument("--out", type=Path, help="folder for curve.json and curve.png")
    parser.add_argument("--tolerance", type=float, default=1.0, help="points of val mAP")
    parser.add_argument("--confirm", type=int, default=2, help="later validations required")
    parser.add_argument("--multiple", type=int, default=5, help="round epochs up to this")
    parser.add_argument(
        "--window", type=int, default=1, help="trailing mean over this many validations first"
    )
    parser.add_argument("--milestones", type=int, metavar="EPOCHS", help="print the decays")
    args = parser.parse_args()
    if args.milestones is not None:
        print(json.dumps(milestones_for(args.milestones)).replace(" ", ""))
        return
    if not args.runs:
        parser.error("give the measuring runs' folders (or --milestones EPOCHS)")
    result = choose(args.runs, args.tolerance, args.confirm, args.multiple, args.window)
    curves = result.pop("curves")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "curve.json").write_text(json.dumps(result, indent=2) + "\n")
        title = "Validation at a constant learning rate (measuring runs)"
        save_figure(validation_curves_figure(curves, title), args.out / "curve.png")
    for name, run in result["runs"].items():
        levelled = run["levelled_epoch"]
        state = "not levelled off" if levelled is None else f"levelled from epoch {levelled}"
        print(
            f"{name}: validation mAP {state} (last epoch {run['last_epoch']}: "
            f"{run['last_val_mAP']}, best {run['best_val_mAP']})"
        )
    if result["epochs"] is None:
        print("not levelled off within the measured epochs: measure longer", file=sys.stderr)
        sys.exit(2)
    print(f"epochs {result['epochs']} milestones {milestones_for(result['epochs'])}")


if __name__ == "__main__":
    main()
