"""``python -m reid_attn.tune [train overrides] [tune.n_trials=N] [tune.storage=URL]``: search
hyper-parameters with Optuna.

Every trial trains the train config (the same overrides) with the trial's values of
``tune.space`` (conf/tune.yaml) in ``<search dir>/trialNNN``; its objective is the best
validation mAP on held-out training identities, and the pruner stops a trial that falls
behind. The study lives in ``tune.storage`` (default: ``<search dir>/study.journal``): the
same command run again continues it, and several running at once share its trials. The
search leaves ``trials.csv``, ``tuned/best.yaml``, ``history.png`` and ``importance.png``;
``python -m reid_attn.train --config-dir <search dir> tuned=best`` trains with the best
parameters. The machinery is :mod:`reid_attn.runs.tuning`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from reid_attn.runs.files import USER_ERRORS, run_entry

if TYPE_CHECKING:
    import optuna

#: Modules of the optional packages the search needs (the ``tune`` extra: Optuna and what it
#: installs for its storages).
OPTIONAL_MODULES = ("optuna", "sqlalchemy", "alembic")
#: The oldest Optuna major version the search runs on.
MIN_OPTUNA = 4


class MissingDependencyError(ImportError):
    """An optional package the command needs is not installed (or too old)."""


def load_tuning() -> ModuleType:
    """The :mod:`reid_attn.runs.tuning` module; :class:`MissingDependencyError` naming what to
    install when Optuna (>= 4) is missing."""
    hint = "pip install 'reid-attn[tune]' (or pip install 'optuna>=4')"
    try:
        import optuna

        from reid_attn.runs import tuning
    except ModuleNotFoundError as exc:
        root = (exc.name or "").split(".")[0]
        if root not in OPTIONAL_MODULES:
            raise
        raise MissingDependencyError(
            f"the hyper-parameter search needs Optuna >= {MIN_OPTUNA}, and module {root} is not "
            f"installed: {hint}"
        ) from exc
    major = int(optuna.__version__.split(".")[0])
    if major < MIN_OPTUNA:
        raise MissingDependencyError(
            f"the hyper-parameter search needs Optuna >= {MIN_OPTUNA}, found {optuna.__version__}: "
            f"{hint}"
        )
    return tuning


def tune(
    cfg: DictConfig,
    overrides: Sequence[str] = (),
    sweep_params: Mapping[str, Any] | None = None,
) -> optuna.Study:
    """Run or continue the search of ``cfg`` (conf/tune.yaml composed with the overrides);
    return the Optuna study. See :func:`reid_attn.runs.tuning.run_search`."""
    return load_tuning().run_search(cfg, overrides, sweep_params)


@hydra.main(version_base="1.3", config_path="conf", config_name="tune")
def main(cfg: DictConfig) -> None:
    """Console entry point (``reid-attn-tune``)."""
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    params = hydra_cfg.sweeper.get("params")
    sweep_params = OmegaConf.to_container(params) if params else None
    run_entry(
        lambda c: tune(c, overrides, sweep_params),
        cfg,
        errors=(*USER_ERRORS, MissingDependencyError),
    )


if __name__ == "__main__":
    main()
