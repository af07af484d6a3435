"""``python -m reid_attn.train [overrides]``: train, test on the test split, write metrics.json.

``resume=true`` with the run's folder (``hydra.run.dir=RUN`` or ``output_dir=RUN``) and its
original overrides continues a killed run from ``RUN/checkpoints/last.ckpt``; the interrupted
epoch is replayed and the run ends with the figures an uninterrupted run gets.

The command is thin: :func:`reid_attn.training.train` does the work (re-exported here with
the trainer helpers, for callers that import them from this module).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from reid_attn.runs.files import run_entry
from reid_attn.training import best_validation_value, build_trainer, describe_run, train

__all__ = ["best_validation_value", "build_trainer", "describe_run", "main", "train"]


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Console entry point (``reid-attn-train``). Returns the objective's best validation value
    when ``objective`` is set (what an optimising sweeper such as Optuna reads), else None."""
    results = run_entry(train, cfg)
    return results["objective"]["best_validation_value"] if "objective" in results else None


if __name__ == "__main__":
    main()
