"""The hyper-parameter search's output: the best trial's parameters as a config to train with.

``hparams_search=circle_optuna`` runs the search with hydra-optuna-sweeper, which writes
``optimization_results.yaml`` (``best_params`` as dotted override keys, ``best_value``) into
the sweep folder. :class:`WriteBestParams`, a Hydra callback the search config installs, turns
it into ``<sweep dir>/tuned/best.yaml``, a config of the group ``tuned`` that the user passes
back with ``--config-dir <sweep dir> tuned=best``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from reid_attn.run_files import atomic_write

RESULTS_FILE = "optimization_results.yaml"


def best_params_config(results: DictConfig, sweep_dir: Path) -> str:
    """The text of ``tuned/best.yaml`` for an Optuna sweeper's ``results`` (``best_params``:
    ``{"loss.margin": 0.3, ...}``, ``best_value``): a global-package config setting each key."""
    if "best_params" not in results:
        raise ValueError(f"{sweep_dir / RESULTS_FILE} has no best_params (several objectives?)")
    nested = OmegaConf.create({})
    for key, value in results.best_params.items():
        OmegaConf.update(nested, str(key), value, force_add=True)
    header = (
        "# @package _global_\n"
        f"# Best trial of the search in {sweep_dir}: objective {results.best_value}.\n"
        f"#   python -m reid_attn.train --config-dir {sweep_dir} tuned=best\n"
    )
    return header + OmegaConf.to_yaml(nested)


class WriteBestParams(Callback):
    """Hydra callback: after a multirun, write ``tuned/best.yaml`` from the sweeper's results
    (nothing when the sweeper wrote none, e.g. a plain ``--multirun``)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        results_path = sweep_dir / RESULTS_FILE
        if not results_path.is_file():
            return
        text = best_params_config(OmegaConf.load(results_path), sweep_dir)
        target = atomic_write(sweep_dir / "tuned" / "best.yaml", lambda f: f.write(text.encode()))
        print(f"best parameters: {target}")
