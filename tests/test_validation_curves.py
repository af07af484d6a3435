"""Validation curves from CSV logs, the convergence rule, and run wall times from run files."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from reid_attn.runs.timing import epoch_seconds, job_wall_seconds
from reid_attn.runs.validation_curves import (
    ValidationLog,
    levelled_epoch,
    read_validation_log,
    row_curve,
)


def _write_csv(run: Path, lines: list[dict]) -> None:
    (run / "csv").mkdir(parents=True)
    columns = ["epoch", "step", "train/loss_step", "val/mAP", "val/rank1", "test/mAP"]
    with (run / "csv" / "metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(lines)


def test_read_validation_log_keeps_validation_lines_in_percent(tmp_path) -> None:
    _write_csv(
        tmp_path,
        [
            {"epoch": 0, "step": 4, "train/loss_step": 3.0},
            {"epoch": 1, "step": 9, "val/mAP": 0.25, "val/rank1": 0.5},
            {"epoch": 3, "step": 19, "val/mAP": 0.40, "val/rank1": 0.625},
            # a resumed run replays epoch index 3: its last line counts
            {"epoch": 3, "step": 19, "val/mAP": 0.45, "val/rank1": 0.75},
            {"epoch": 3, "step": 20, "test/mAP": 0.3},
        ],
    )
    log = read_validation_log(tmp_path)
    assert log.epochs.tolist() == [2, 4]  # completed epochs
    assert log.values["mAP"] == pytest.approx([25.0, 45.0])
    assert log.values["rank1"] == pytest.approx([50.0, 75.0])


def test_read_validation_log_without_validation(tmp_path) -> None:
    assert read_validation_log(tmp_path) is None  # no csv/metrics.csv
    _write_csv(tmp_path, [{"epoch": 0, "step": 4, "train/loss_step": 3.0}])
    assert read_validation_log(tmp_path) is None


@pytest.mark.parametrize(
    ("values", "tolerance", "confirm", "expected"),
    [
        ([10, 50, 70, 70.5, 70.2], 1.0, 2, 6),  # gains after epoch 6: 0.5
        ([10, 50, 70, 70.5, 70.2], 0.4, 2, None),  # epoch 8 has one later validation only
        ([10, 50, 70, 70.5, 70.2, 70.3], 0.4, 2, 8),  # the best: nothing after it gains
        ([10, 50, 70, 71.5, 71.0, 71.2], 1.0, 2, 8),  # from epoch 6 it gains 1.5
        ([10, 50, 70, 70.5, 70.2], 1.0, 3, None),  # epoch 6 lacks 3 later validations
        ([10, 20, 30, 40, 50], 1.0, 2, None),  # still climbing
        ([60, 59, 58, 57, 56], 1.0, 2, 2),  # falling: nothing to gain from epoch 2 on
        ([10, 20], 1.0, 2, None),  # too short to confirm
    ],
)
def test_levelled_epoch_by_hand(values, tolerance, confirm, expected) -> None:
    epochs = np.array([2, 4, 6, 8, 10, 12][: len(values)])
    assert levelled_epoch(epochs, np.array(values, float), tolerance, confirm) == expected


def test_row_curve_is_mean_min_max_over_seeds_at_common_epochs() -> None:
    logs = [
        ValidationLog(np.array([2, 4, 6]), {"mAP": np.array([10.0, 20, 30]), "rank1": np.zeros(3)}),
        ValidationLog(np.array([2, 4, 6]), {"mAP": np.array([14.0, 26, 33]), "rank1": np.ones(3)}),
        # a seed validated once more (epoch 8): only the shared epochs count
        ValidationLog(
            np.array([2, 4, 6, 8]), {"mAP": np.array([12.0, 23, 36, 40]), "rank1": np.ones(4)}
        ),
    ]
    curve = row_curve("+CBAM", logs)
    assert curve.epochs.tolist() == [2, 4, 6] and curve.seeds == 3
    assert curve.mean["mAP"] == pytest.approx([12.0, 23.0, 33.0])
    assert curve.low["mAP"].tolist() == [10.0, 20.0, 30.0]
    assert curve.high["mAP"].tolist() == [14.0, 26.0, 36.0]
    assert curve.mean["rank1"] == pytest.approx([2 / 3] * 3)
    assert curve.levelled(tolerance=10.0, confirm=1) == 4  # 33 - 23 = 10 <= 10


def test_complete_row_curve_leaves_out_a_seed_that_skipped_validations() -> None:
    from reid_attn.runs.validation_curves import complete_row_curve

    def log(epochs, values):
        return ValidationLog(
            np.array(epochs), {"mAP": np.array(values, float), "rank1": np.zeros(len(epochs))}
        )

    full_a = log([1, 2, 3, 4, 5], [10, 50, 70, 80, 80.5])
    full_b = log([1, 2, 3, 4, 5], [20, 60, 72, 82, 82.5])
    sparse = log([1, 3, 5], [30, 40, 95])
    curve = complete_row_curve("+CBAM", {"seed 0": full_a, "seed 1": full_b, "seed 2": sparse})
    # Seeds 0 and 1 at every epoch; seed 2 is named with its count, and its values count nowhere.
    assert curve.seeds == 2 and curve.epochs.tolist() == [1, 2, 3, 4, 5]
    assert curve.mean["mAP"] == pytest.approx([15, 55, 71, 81, 81.5])
    assert curve.left_out == ("seed 2 (3 of 5 validations)",)
    # All complete, or none complete: every seed counts, at the epochs they share.
    both = complete_row_curve("r", {"seed 0": full_a, "seed 1": full_b})
    assert both.seeds == 2 and both.left_out == ()
    other_sparse = log([2, 3, 5], [1, 2, 3])
    none = complete_row_curve("r", {"seed 0": sparse, "seed 1": other_sparse})
    assert none.seeds == 2 and none.left_out == () and none.epochs.tolist() == [3, 5]
    assert none.mean["mAP"] == pytest.approx([21, 49])
    with pytest.raises(ValueError, match="no validation logs"):
        complete_row_curve("x", {})
    # The figure's legend says how many of the row's seeds its curve averages.
    from reid_attn.viz.ablation import validation_curves_figure

    fig = validation_curves_figure([curve, both, row_curve("one", [full_a])], "t")
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "+CBAM (2 of 3 seeds)",
        "r (2 seeds)",
        "one",
    ]


def test_row_curve_bad_input() -> None:
    with pytest.raises(ValueError, match="no validation logs"):
        row_curve("x", [])
    a = ValidationLog(np.array([2]), {"mAP": np.ones(1), "rank1": np.ones(1)})
    b = ValidationLog(np.array([4]), {"mAP": np.ones(1), "rank1": np.ones(1)})
    with pytest.raises(ValueError, match="share no validated epoch"):
        row_curve("x", [a, b])


def test_job_wall_seconds_from_file_times(tmp_path) -> None:
    assert job_wall_seconds(tmp_path) is None
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    (tmp_path / "metrics.json").write_text("{}")
    os.utime(tmp_path / "config.yaml", (1_000_000, 1_000_000))
    os.utime(tmp_path / "metrics.json", (1_000_754.5, 1_000_754.5))
    assert job_wall_seconds(tmp_path) == pytest.approx(754.5)


def test_epoch_seconds_from_tensorboard_wall_times(tmp_path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    assert epoch_seconds(tmp_path).size == 0  # no log
    ends = [1000.0, 1012.5, 1020.0, 1031.0]  # end of epochs 1..4
    with SummaryWriter(tmp_path / "tensorboard") as writer:
        for epoch, wall in enumerate(ends):
            writer.add_scalar("train/loss_step", 1.0, 10 * epoch + 5, walltime=wall - 3)
            writer.add_scalar("train/loss_epoch", 1.0, 10 * epoch + 9, walltime=wall)
    assert epoch_seconds(tmp_path).tolist() == pytest.approx([12.5, 7.5, 11.0])


def test_trailing_mean_and_settled_at_end_by_hand() -> None:
    from reid_attn.runs.validation_curves import settled_at_end, trailing_mean

    np.testing.assert_allclose(trailing_mean([3, 6, 9, 0], 3), [3, 4.5, 6, 5])
    np.testing.assert_allclose(trailing_mean([3, 6], 1), [3, 6])
    assert settled_at_end([10, 50, 50.4, 49.6, 50.5])  # max - min of the last 3 = 0.9
    assert not settled_at_end([50, 51.2, 50])
    assert settled_at_end([50, 51.2, 50], tolerance=1.5)
    assert not settled_at_end([50, 50])  # fewer validations than asked
    # RowCurve.levelled applies the trailing mean before the levelling rule
    values = np.array([0, 30, 60, 90, 61, 62.0])
    log = ValidationLog(np.arange(1, 7), {"mAP": values, "rank1": np.zeros(6)})
    curve = row_curve("r", [log])
    assert curve.levelled(1.0, 1) == 4  # the spike of 90 at epoch 4 is never exceeded
    assert curve.levelled(1.0, 1, window=3) == 5  # means 0 15 30 60 70.3 71
