"""A quiet console: a run prints our lines only; other warnings still show."""

from __future__ import annotations

import logging
import re
import warnings

from conftest import run_train_cli
from reid_attn.runs.console import quiet_third_party

#: Every line a default-style run may print (progress bar off): the split table, the model
#: line, the result line, the run directory.
OUR_LINES = (
    r"=> synthetic loaded from .*",
    r"  subset +\| # ids \| # images \| # cameras",
    r"  -+\+-+\+-+\+-+",
    r"  (train|query|gallery) +\| +\d+ \| +\d+ \| +\d+",
    r"model: ResNet50 \+ cbam, [\d.]+ M parameters \| loss CE \+ triplet \(circle classifier\) .*",
    r"test \(synthetic, last checkpoint\): Rank-1 .*",
    r"run directory: .*",
)


def test_a_run_prints_only_our_lines(tmp_path) -> None:
    proc = run_train_cli(["debug=fast", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    strangers = [line for line in lines if not any(re.fullmatch(p, line) for p in OUR_LINES)]
    assert not strangers, strangers
    assert any(line.startswith("test (synthetic") for line in lines)


def test_only_the_known_warnings_and_info_lines_are_hidden(caplog) -> None:
    quiet_third_party()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        quiet_third_party()  # after simplefilter, as at the start of an entry point
        warnings.warn(
            "`isinstance(treespec, LeafSpec)` is deprecated, use ... instead.",
            FutureWarning,
            stacklevel=2,
        )
        warnings.warn("something else is deprecated", FutureWarning, stacklevel=2)
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", UserWarning, stacklevel=2)
    assert [str(w.message) for w in seen] == [
        "something else is deprecated",
        "`isinstance(treespec, LeafSpec)` is deprecated",
    ]
    lightning = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    with caplog.at_level(logging.INFO):
        quiet_third_party()
        lightning.info("GPU available: False, used: False")
        lightning.warning("a real warning")
    assert [r.getMessage() for r in caplog.records] == ["a real warning"]
