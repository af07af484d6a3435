"""The hyper-parameter search behind ``python -m reid_attn.tune``, on Optuna (>= 4).

A search is an Optuna study in a persistent storage (:func:`open_storage`) driven by
:func:`run_search` with Optuna's ask-and-tell interface. Each trial is an ordinary training
run (:func:`reid_attn.training.train`) of the composed config with the trial's values of
``tune.space`` (:func:`search_space`), in its own folder ``<search dir>/trialNNN``; its
objective is the best validation value of ``checkpoint.monitor`` (val/mAP, held-out training
identities), and :class:`TrialPruning` reports that value to the trial after every validated
epoch and stops the run when the pruner says so.

Several processes (on one machine, or on several with an RDB storage) may run the same
command at once: they share ``tune.n_trials`` (:func:`trials_counted`) and never run a trial
twice. A trial whose process died (SIGKILL, a lost node) is marked FAIL and re-queued with its
parameters (:func:`fail_interrupted_trials`), so running the command again continues the
study. What the search leaves (:func:`write_outputs`): ``trials.csv``, ``tuned/best.yaml``
(``python -m reid_attn.train --config-dir <search dir> tuned=best``), ``history.png`` and
``importance.png``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import socket
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import pytorch_lightning as pl
import sqlalchemy.exc
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, Trial, TrialState

from reid_attn.callbacks import NonFiniteLossError
from reid_attn.config import ConfigError, validate_train_config
from reid_attn.runs.files import OutputError, config_differences
from reid_attn.training import train

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; workers rely on the retries alone
    fcntl = None

#: ``tune.pruner`` values.
PRUNER_NAMES = ("none", "median", "hyperband")
#: Keys of a search-space leaf: a range, or a list of choices.
RANGE_KEYS = ("low", "high", "log", "step", "int")
#: Config keys a search never chooses: seeds (``seed``, ``data.synthetic.seed``, ...) and the
#: ablation's rows, which are what a study compares, not what it tunes.
NEVER_SEARCHED = ("seed", "ablation", "experiment")
#: Training-config keys that may differ between the workers of one study (paths, loader
#: settings, the progress bar): everything else must equal the study's first settings.
NOT_COMPARED = (
    "output_dir",
    "resume",
    "data.root",
    "data.num_workers",
    "data.pipeline",
    "data.memory_fraction",
    "data.verify_images",
    "trainer.enable_progress_bar",
    "model.pretrained_path",
    "evaluation.chunk_size",
)
#: Trials that take a place of ``tune.n_trials``: finished ones and those running or queued.
COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
#: Attempts at opening an RDB storage that other workers are creating at the same moment, and
#: what the database says when they collide (SQLite, PostgreSQL, MySQL wordings).
STORAGE_ATTEMPTS = 5
SCHEMA_RACE_MARKERS = ("locked", "already exists", "no such table", "duplicate key")
#: The study's default storage, a journal file in the search folder.
DEFAULT_JOURNAL = "study.journal"
#: Files the search writes into its folder.
TRIALS_CSV = "trials.csv"
BEST_CONFIG = Path("tuned") / "best.yaml"
HISTORY_PNG = "history.png"
IMPORTANCE_PNG = "importance.png"


# ---------------------------------------------------------------- configuration


def search_space(space: Mapping[str, Any], prefix: str = "") -> dict[str, BaseDistribution]:
    """Optuna distributions of ``tune.space``, keyed by dotted config key (``optimizer.lr``).

    A leaf is a mapping ``{low, high}`` (a float range; ``log: true`` for a log scale,
    ``step`` for a grid, ``int: true`` for integers) or ``{choices: [...]}``; any other mapping
    nests keys. Raises :class:`ConfigError` naming the bad entry."""
    distributions: dict[str, BaseDistribution] = {}
    for key, node in space.items():
        name = f"{prefix}{key}"
        if not isinstance(node, Mapping) or not node:
            raise ConfigError(
                f"tune.space.{name}={node!r}: expected {{low: a, high: b}} (log, step, int "
                "optional), {choices: [...]}, or a mapping of such entries"
            )
        if "choices" in node:
            distributions[name] = _choices(name, node)
        elif "low" in node or "high" in node:
            distributions[name] = _range(name, node)
        else:
            distributions.update(search_space(node, prefix=f"{name}."))
    return distributions


def _choices(name: str, node: Mapping[str, Any]) -> CategoricalDistribution:
    choices = node["choices"]
    if set(node) != {"choices"} or not isinstance(choices, Sequence | ListConfig) or not choices:
        raise ConfigError(f"tune.space.{name}: a choice is {{choices: [a, b, ...]}} alone")
    values = tuple(OmegaConf.to_container(choices) if isinstance(choices, ListConfig) else choices)
    if not all(v is None or isinstance(v, bool | int | float | str) for v in values):
        raise ConfigError(f"tune.space.{name}: choices must be numbers, strings, booleans or null")
    return CategoricalDistribution(values)


def _range(name: str, node: Mapping[str, Any]) -> BaseDistribution:
    unknown = sorted(set(node) - set(RANGE_KEYS))
    if unknown or "low" not in node or "high" not in node:
        raise ConfigError(
            f"tune.space.{name}: a range needs low and high (and optionally "
            f"{', '.join(RANGE_KEYS[2:])}); got {', '.join(map(str, node))}"
        )
    try:
        if node.get("int", False):
            return IntDistribution(
                int(node["low"]),
                int(node["high"]),
                log=bool(node.get("log", False)),
                step=int(node.get("step") or 1),
            )
        return FloatDistribution(
            float(node["low"]),
            float(node["high"]),
            log=bool(node.get("log", False)),
            step=None if node.get("step") is None else float(node["step"]),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"tune.space.{name}: {exc}") from exc


_ABSENT = object()


def check_space(space: Mapping[str, BaseDistribution], cfg: DictConfig) -> None:
    """Refuse a search over seeds or ablation rows (:data:`NEVER_SEARCHED`) and keys the
    training config does not have. Raises :class:`ConfigError`."""
    if not space:
        raise ConfigError("tune.space is empty: give the search at least one key to choose")
    for name in space:
        parts = name.split(".")
        if parts[0] in NEVER_SEARCHED or parts[-1] == "seed":
            raise ConfigError(
                f"tune.space.{name}: a search chooses hyper-parameters, never seeds or ablation "
                f"rows (remove it: ~tune.space.{name}); compare those with a multirun and "
                "python -m reid_attn.report"
            )
        if OmegaConf.select(cfg, name, default=_ABSENT) is _ABSENT:
            raise ConfigError(f"tune.space.{name}: {name} is not a key of the training config")


def check_preset_sweeps(sweep_params: Mapping[str, Any] | None, overrides: Sequence[str]) -> None:
    """Refuse the sweep lists of a preset (``hydra.sweeper.params``, e.g. ``ablation`` and
    ``seed`` from ``experiment=ablation_cpu``) unless the command line fixes each of those keys:
    a search runs one training config per trial, never a multirun's lists. Raises
    :class:`ConfigError`."""
    fixed = {o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o}
    swept = [str(key) for key in (sweep_params or {}) if str(key) not in fixed]
    if swept:
        raise ConfigError(
            f"the config sweeps {', '.join(swept)} (hydra.sweeper.params, set by a preset such "
            "as experiment=ablation_cpu), which a search never searches over: fix each on the "
            f"command line ({' '.join(f'{key}=...' for key in swept)}, e.g. ablation=cbam seed=0)"
        )


def check_tune_config(cfg: DictConfig) -> None:
    """Check the ``tune`` section and what a trial needs of the training config (one process
    per trial, a monitored validation). Raises :class:`ConfigError`."""
    tune = cfg.tune
    if tune.n_trials < 0:
        raise ConfigError(f"tune.n_trials={tune.n_trials} is out of range; it must be >= 0")
    if tune.direction not in ("maximize", "minimize"):
        raise ConfigError(f"tune.direction={tune.direction}; allowed values: maximize, minimize")
    expected = "maximize" if cfg.checkpoint.mode == "max" else "minimize"
    if tune.direction != expected:
        raise ConfigError(
            f"tune.direction={tune.direction} contradicts checkpoint.mode={cfg.checkpoint.mode} "
            f"(the best epoch of {cfg.checkpoint.monitor}); pass tune.direction={expected}"
        )
    if tune.pruner not in PRUNER_NAMES:
        raise ConfigError(f"tune.pruner={tune.pruner}; allowed values: {', '.join(PRUNER_NAMES)}")
    if tune.heartbeat_s < 1 or tune.max_retries < 0:
        raise ConfigError("tune.heartbeat_s must be >= 1 and tune.max_retries >= 0")
    if cfg.get("objective") != cfg.checkpoint.monitor:
        raise ConfigError(
            f"objective={cfg.get('objective')}: a search optimises the checkpoint monitor "
            f"({cfg.checkpoint.monitor}); leave objective as tune.yaml sets it"
        )
    trainer = cfg.trainer
    if str(trainer.get("devices", 1)) != "1" or int(trainer.get("num_nodes", 1)) != 1:
        raise ConfigError(
            f"a search trial trains in one process (trainer.devices={trainer.get('devices')}, "
            f"trainer.num_nodes={trainer.get('num_nodes', 1)}): pass trainer.devices=1 and run "
            "several workers on the same tune.storage instead"
        )


def make_pruner(tune: DictConfig) -> optuna.pruners.BasePruner:
    """The pruner ``tune.pruner`` names, with its settings from ``tune.pruners.<name>``."""
    settings = dict(tune.pruners.get(tune.pruner) or {})
    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(**settings)
    if tune.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(**settings)
    return optuna.pruners.NopPruner()


def make_sampler(sampler_cfg: DictConfig, trial_number: int) -> optuna.samplers.BaseSampler:
    """``tune.sampler`` instantiated for trial ``trial_number``: its ``seed`` (when it has one)
    becomes ``seed + trial_number``, so every trial draws reproducibly and workers that ask at
    the same moment draw different values. The samplers keep their history in the storage."""
    overrides = {}
    if sampler_cfg.get("seed") is not None:
        overrides["seed"] = int(sampler_cfg.seed) + trial_number
    return instantiate(sampler_cfg, **overrides)


def open_storage(
    storage: str | None, search_dir: Path, heartbeat_s: int = 60, max_retries: int = 3
) -> BaseStorage:
    """The study's storage: ``None``, a journal file ``search_dir/study.journal``; an RDB URL
    (``sqlite:///search.db``, ``postgresql://...``), with heartbeats every ``heartbeat_s``
    seconds so that a dead worker's trial is failed and re-queued (at most ``max_retries``
    times) after ``2 * heartbeat_s``; any other string, a journal file at that path.
    Raises :class:`ConfigError` naming the storage, in one line."""
    try:
        with quiet_experimental():
            return _open_storage(storage, search_dir, heartbeat_s, max_retries)
    except ImportError as exc:  # Optuna wraps the driver's ModuleNotFoundError
        module = getattr(exc.__cause__, "name", None) or exc.name or "?"
        raise ConfigError(
            f"tune.storage={storage}: its database driver is not installed (module {module}); "
            "install it (e.g. pip install psycopg2-binary for postgresql://) or use sqlite:///"
        ) from exc
    except Exception as exc:
        raise ConfigError(
            f"tune.storage={storage} cannot be opened ({_first_line(exc)}); expected an RDB URL "
            "such as sqlite:///search.db or postgresql://user:password@host/db, or the path of a "
            "journal file"
        ) from exc


def _open_storage(
    storage: str | None, search_dir: Path, heartbeat_s: int, max_retries: int
) -> BaseStorage:
    if storage is None or "://" not in str(storage):
        path = Path(storage).expanduser() if storage else search_dir / DEFAULT_JOURNAL
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    # SQLite: wait for another worker's write instead of failing after SQLite's 5 s default
    engine = {"connect_args": {"timeout": 60}} if str(storage).startswith("sqlite") else None
    for attempt in range(STORAGE_ATTEMPTS):
        try:
            with creation_lock(str(storage)):
                return RDBStorage(
                    str(storage),
                    engine_kwargs=engine,
                    heartbeat_interval=heartbeat_s,
                    grace_period=2 * heartbeat_s,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retries),
                )
        except sqlalchemy.exc.DBAPIError as exc:
            # workers that start together on a new database race to create its tables
            racing = isinstance(exc, sqlalchemy.exc.IntegrityError) or any(
                marker in str(exc) for marker in SCHEMA_RACE_MARKERS
            )
            if not racing or attempt == STORAGE_ATTEMPTS - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


@contextlib.contextmanager
def creation_lock(url: str) -> Iterator[None]:
    """For a SQLite file URL, hold an exclusive lock on ``<database>.lock`` (the processes of
    one machine open, and maybe create, the database one at a time); else nothing."""
    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else ""
    if not path or path.startswith(":memory:") or fcntl is None:
        yield
        return
    lock_path = Path(path.split("?")[0] + ".lock")
    if not lock_path.parent.is_dir():  # SQLite names the missing folder itself
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def quiet_experimental() -> Iterator[None]:
    """Hide Optuna's ExperimentalWarning (heartbeats, the retry callback, the plots) in the
    block: the search relies on those parts on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        yield


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line.split(" (Background on this error")[0]


def study_settings(cfg: DictConfig, space: Mapping[str, BaseDistribution]) -> dict[str, Any]:
    """What makes the trials of one study comparable: the resolved training config, flat
    (dotted keys), without the searched keys and :data:`NOT_COMPARED`, with the search space
    and direction. Kept in the study; a worker with other settings is refused."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    tune = plain.pop("tune")
    flat = _flatten(plain)
    skipped = (*NOT_COMPARED, *space)
    settings = {
        key: value
        for key, value in flat.items()
        if not any(key == s or key.startswith(f"{s}.") for s in skipped)
    }
    settings["tune.direction"] = tune["direction"]
    settings["tune.space"] = {name: repr(d) for name, d in space.items()}
    return settings


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict) or not node:
        return {prefix[:-1]: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(_flatten(value, f"{prefix}{key}."))
    return flat


def trial_config(cfg: DictConfig, params: Mapping[str, Any], output_dir: Path) -> DictConfig:
    """The training config of one trial: ``cfg`` without its ``tune`` section, with the trial's
    ``params`` (dotted keys), its own ``output_dir`` and the objective set."""
    trial_cfg = cfg.copy()
    with open_dict(trial_cfg):
        del trial_cfg["tune"]
        trial_cfg.output_dir = str(output_dir)
        trial_cfg.resume = False
        trial_cfg.objective = cfg.checkpoint.monitor
    for name, value in params.items():
        OmegaConf.update(trial_cfg, name, value, merge=False)
    return trial_cfg


# ---------------------------------------------------------------- a trial


class TrialPruning(pl.Callback):
    """Report ``monitor`` to an Optuna ``trial`` after every validation (step: the 0-based
    epoch) and raise :class:`optuna.TrialPruned` when the study's pruner says so.

    ``epochs`` counts the training epochs the run completed (a pruned run: up to and including
    the epoch of its last validation); ``pruned_epoch`` is that epoch's index, or None.
    Optuna's own Lightning callback (optuna-integration) targets the ``lightning`` package;
    this project trains with ``pytorch_lightning``."""

    def __init__(self, trial: Trial, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor
        self.epochs = 0
        self.pruned_epoch: int | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        epoch = trainer.current_epoch
        self.epochs = epoch + 1  # validation runs after the epoch's last training batch
        self.trial.report(float(value), step=epoch)
        if self.trial.should_prune():
            self.pruned_epoch = epoch
            raise optuna.TrialPruned(
                f"trial {self.trial.number}: {self.monitor}={float(value):.4f} after epoch "
                f"{epoch + 1}, pruned"
            )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epochs = trainer.current_epoch + 1


def suggest(trial: Trial, name: str, distribution: BaseDistribution) -> Any:
    """The trial's value of ``name`` from ``distribution`` (drawn by the study's sampler, or the
    value a re-queued trial carries)."""
    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(
            name, distribution.low, distribution.high, log=distribution.log, step=distribution.step
        )
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(
            name, distribution.low, distribution.high, log=distribution.log, step=distribution.step
        )
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    raise TypeError(f"unsupported distribution {distribution!r}")


# ---------------------------------------------------------------- workers and their trials


def process_start(pid: int) -> str | None:
    """An identity of the live process ``pid`` that a later process with the same number does
    not share (its start time in clock ticks since boot, from ``/proc``); ``"?"`` where
    ``/proc`` is not there and the process exists; None when it is gone (or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "?"
    except OSError:
        return "?"
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    if fields[0] in ("Z", "X"):  # exited, not yet reaped
        return None
    return fields[19]  # field 22 of proc(5): starttime


def this_worker() -> dict[str, Any]:
    """The ``worker`` attribute a trial carries: host, process id and process start."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": process_start(pid)}


def worker_alive(worker: Mapping[str, Any]) -> bool:
    """Whether the worker process of a trial (:func:`this_worker`) still runs; a process on
    another host counts as alive (its heartbeat, with an RDB storage, says otherwise)."""
    if worker.get("host") != socket.gethostname():
        return True
    start = process_start(int(worker["pid"]))
    return start is not None and (start == worker.get("start") or "?" in (start, worker["start"]))


def fail_interrupted_trials(
    study: optuna.Study, storage: BaseStorage, max_retries: int
) -> list[int]:
    """Mark FAIL the RUNNING trials whose worker process is gone (on this host at once; on
    other hosts by the RDB storage's heartbeat) and re-queue each with its parameters, at most
    ``max_retries`` times per original trial. Returns the numbers of the trials failed here."""
    with quiet_experimental():
        retry = RetryHeartbeatStaleTrialCallback(max_retries)
    study_id = storage.get_study_id_from_name(study.study_name)
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if not worker or worker_alive(worker):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            storage.set_trial_user_attr(trial_id, "note", "interrupted: its process is gone")
            if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:  # another worker got there first
            continue
        retry(study, storage.get_trial(trial_id))
        failed.append(trial.number)
    with quiet_experimental():
        optuna.storages.fail_stale_trials(study)  # heartbeats: RDB storages only
    return failed


def trials_counted(trials: Sequence[FrozenTrial], before: int | None = None) -> int:
    """How many of ``trials`` take a place of ``tune.n_trials`` (:data:`COUNTED_STATES`),
    only those numbered below ``before`` when it is given."""
    return sum(t.state in COUNTED_STATES and (before is None or t.number < before) for t in trials)


@contextlib.contextmanager
def heartbeat(storage: BaseStorage, trial_id: int) -> Iterator[None]:
    """Record the trial's heartbeat in the storage every interval while the block runs (RDB
    storages with heartbeats; elsewhere nothing)."""
    interval = storage.get_heartbeat_interval() if isinstance(storage, RDBStorage) else None
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_trial(
    study: optuna.Study,
    storage: BaseStorage,
    trial: Trial,
    cfg: DictConfig,
    space: Mapping[str, BaseDistribution],
    search_dir: Path,
) -> FrozenTrial:
    """Train trial ``trial`` and tell the study how it ended: COMPLETE with its objective,
    PRUNED when the pruner stopped it or its loss diverged (non-finite), FAIL (re-queued when
    the process is being interrupted) on any other error, which is raised again."""
    monitor = cfg.checkpoint.monitor
    study.sampler = make_sampler(cfg.tune.sampler, trial.number)
    params = {name: suggest(trial, name, d) for name, d in space.items()}
    run_dir = search_dir / f"trial{trial.number:03d}"
    for key, value in (
        ("worker", this_worker()),
        ("run_dir", str(run_dir)),
        ("worker_label", cfg.tune.get("worker", 0)),
    ):
        trial.set_user_attr(key, value)
    shown = " | ".join(f"{name}={_format(value)}" for name, value in params.items())
    print(f"trial {trial.number}: {shown} -> {run_dir}", flush=True)
    pruning = TrialPruning(trial, monitor)
    started = time.monotonic()
    state, value, note = TrialState.FAIL, None, ""
    study_id = storage.get_study_id_from_name(study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    try:
        with heartbeat(storage, trial_id):
            results = train(trial_config(cfg, params, run_dir), extra_callbacks=[pruning])
        state = TrialState.COMPLETE
        value = float(results["objective"]["best_validation_value"])
    except optuna.TrialPruned:
        state = TrialState.PRUNED
        note = f"pruned by the {cfg.tune.pruner} pruner after epoch {pruning.pruned_epoch + 1}"
    except NonFiniteLossError as exc:
        state = TrialState.PRUNED
        note = f"diverged: {_first_line(exc).split(';')[0]}"
    except (KeyboardInterrupt, SystemExit):
        note = "interrupted"
        raise
    except BaseException as exc:
        note = f"error: {_first_line(exc)}"
        raise
    finally:
        trial.set_user_attr("epochs", pruning.epochs)
        trial.set_user_attr("wall_s", round(time.monotonic() - started, 1))
        trial.set_user_attr("note", note)
        study.tell(trial, value, state=state)
        if note == "interrupted":
            RetryHeartbeatStaleTrialCallback(cfg.tune.max_retries)(
                study, storage.get_trial(trial_id)
            )
        if not cfg.tune.keep_checkpoints:
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        frozen = storage.get_trial(trial_id)
        print(f"trial {trial.number}: {describe_trial(frozen, monitor)}", flush=True)
    return frozen


def describe_trial(trial: FrozenTrial, monitor: str = "val/mAP") -> str:
    """One line: state, objective (or last reported value), epochs, wall time, note."""
    value = "" if trial.value is None else f", {monitor} {trial.value:.4f}"
    epochs = trial.user_attrs.get("epochs")
    wall = trial.user_attrs.get("wall_s")
    ran = f", {epochs} epochs" if epochs is not None else ""
    took = f" in {wall:.0f} s" if wall is not None else ""
    note = trial.user_attrs.get("note")
    return f"{trial.state.name}{value}{ran}{took}{f' ({note})' if note else ''}"


def _format(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------- the search


def run_search(
    cfg: DictConfig,
    overrides: Sequence[str] = (),
    sweep_params: Mapping[str, Any] | None = None,
) -> optuna.Study:
    """Run (or continue) the study ``cfg.tune.study_name`` in ``cfg.tune.storage`` until it
    holds ``cfg.tune.n_trials`` trials that are complete, pruned, running or queued, training
    each trial into ``cfg.output_dir/trialNNN``; then write the search's files
    (:func:`write_outputs`) into ``cfg.output_dir`` and return the study.

    ``overrides``: the command line's overrides (for the guard against a preset's sweep lists
    and the header of ``tuned/best.yaml``); ``sweep_params``: the composed
    ``hydra.sweeper.params``. Raises :class:`ConfigError` for bad settings, before any
    training."""
    check_tune_config(cfg)
    space = search_space(OmegaConf.to_container(cfg.tune.space, resolve=True))
    check_space(space, cfg)
    check_preset_sweeps(sweep_params, overrides)
    search_dir = Path(cfg.output_dir).expanduser()
    validate_train_config(trial_config(cfg, {}, search_dir / "trial"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with quiet_experimental():
        storage = open_storage(
            cfg.tune.storage, search_dir, cfg.tune.heartbeat_s, cfg.tune.max_retries
        )
        study = optuna.create_study(
            study_name=cfg.tune.study_name,
            storage=storage,
            direction=cfg.tune.direction,
            sampler=make_sampler(cfg.tune.sampler, 0),
            pruner=make_pruner(cfg.tune),
            load_if_exists=True,
        )
        _check_settings(study, study_settings(cfg, space), cfg.tune.storage or search_dir)
        where = cfg.tune.storage or search_dir / DEFAULT_JOURNAL
        print(
            f"search: study {study.study_name} in {where}, {cfg.tune.n_trials} trials", flush=True
        )
        while True:
            for number in fail_interrupted_trials(study, storage, cfg.tune.max_retries):
                print(f"trial {number}: its process is gone: FAIL, queued again", flush=True)
            trials = study.get_trials(deepcopy=False)
            waiting = any(t.state == TrialState.WAITING for t in trials)
            if not waiting and trials_counted(trials) >= cfg.tune.n_trials:
                break
            trial = study.ask()
            if trials_counted(study.get_trials(deepcopy=False), before=trial.number) >= (
                cfg.tune.n_trials
            ):  # another worker took the last place at the same moment
                trial.set_user_attr("note", "not run: the study had its n_trials already")
                study.tell(trial, state=TrialState.FAIL)
                break
            run_trial(study, storage, trial, cfg, space, search_dir)
            write_trials_csv(study, search_dir / TRIALS_CSV, space)
        write_outputs(study, search_dir, space, overrides, cfg.checkpoint.monitor)
    return study


def _check_settings(study: optuna.Study, settings: dict[str, Any], where: Any) -> None:
    saved = study.user_attrs.get("settings")
    if saved is None:
        study.set_user_attr("settings", settings)
        return
    differences = config_differences(saved, settings)
    if differences:
        raise ConfigError(
            f"study {study.study_name} in {where} was started with other settings: "
            f"{'; '.join(differences[:4])}{' ...' if len(differences) > 4 else ''}. Repeat its "
            "overrides to continue it, or start another study (tune.study_name=...)"
        )


# ---------------------------------------------------------------- what the search leaves


def write_text(path: Path, text: str | bytes) -> Path:
    """Write ``path`` through a uniquely named temporary file renamed into place: several
    workers may rewrite the same file at once, and a reader sees a whole version."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def trial_rows(study: optuna.Study, space: Mapping[str, BaseDistribution]) -> list[dict[str, Any]]:
    """One row per trial: number, state, objective (a pruned trial's: its last reported
    value), epochs run, wall time in seconds, the parameters, the trial's run folder, a note
    (why it was pruned or failed, which trial it retries)."""
    trials = study.get_trials(deepcopy=False)
    retried_as = {
        t.system_attrs["retry_history"][-1]: t.number
        for t in trials
        if t.system_attrs.get("retry_history")
    }
    rows = []
    for trial in trials:
        notes = []
        if trial.system_attrs.get("retry_history"):
            notes.append(f"retry of trial {trial.system_attrs['retry_history'][-1]}")
        if trial.state.is_finished() and trial.user_attrs.get("note"):
            notes.append(trial.user_attrs["note"])
        if trial.number in retried_as:
            notes.append(f"retried as trial {retried_as[trial.number]}")
        note = "; ".join(notes)
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "objective": "" if trial.value is None else trial.value,
                "epochs": trial.user_attrs.get("epochs", ""),
                "wall_s": trial.user_attrs.get("wall_s", ""),
                **{name: trial.params.get(name, "") for name in space},
                "run_dir": trial.user_attrs.get("run_dir", ""),
                "note": note,
            }
        )
    return rows


def write_trials_csv(
    study: optuna.Study, path: Path, space: Mapping[str, BaseDistribution]
) -> Path:
    """Write :func:`trial_rows` as CSV at ``path``."""
    buffer = io.StringIO()
    fields = ["number", "state", "objective", "epochs", "wall_s", *space, "run_dir", "note"]
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(trial_rows(study, space))
    return write_text(path, buffer.getvalue())


def best_params_config(
    params: Mapping[str, Any],
    value: float,
    search_dir: Path,
    overrides: Sequence[str] = (),
    label: str = "",
) -> str:
    """The text of ``tuned/best.yaml``: a ``_global_`` config setting each dotted key of
    ``params`` (``{"loss.margin": 0.3}`` -> ``loss: {margin: 0.3}``), headed by the objective
    ``value`` and the command that trains with it (the search's other ``overrides`` included).
    """
    nested = OmegaConf.create({})
    for key, param in params.items():
        OmegaConf.update(nested, str(key), param, force_add=True)
    again = " ".join(o for o in overrides if not o.lstrip("+~").startswith(("tune.", "hydra.")))
    header = (
        "# @package _global_\n"
        f"# Best trial of the search in {search_dir}{label}: objective {value}.\n"
        f"#   python -m reid_attn.train --config-dir {search_dir} tuned=best"
        f"{' ' + again if again else ''}\n"
    )
    return header + OmegaConf.to_yaml(nested)


def write_outputs(
    study: optuna.Study,
    search_dir: Path,
    space: Mapping[str, BaseDistribution],
    overrides: Sequence[str] = (),
    monitor: str = "val/mAP",
) -> dict[str, Path]:
    """Write ``trials.csv``, ``tuned/best.yaml`` (when a trial is complete), ``history.png``
    and ``importance.png`` (when the trials allow) into ``search_dir``; print a summary.
    Returns the paths written, by name."""
    written = {"trials": write_trials_csv(study, search_dir / TRIALS_CSV, space)}
    trials = study.get_trials(deepcopy=False)
    states = {s: sum(t.state == s for t in trials) for s in TrialState}
    summary = ", ".join(f"{n} {s.name.lower()}" for s, n in states.items() if n)
    print(f"search: {len(trials)} trials ({summary or 'none'}) in {search_dir}", flush=True)
    if states[TrialState.COMPLETE]:
        best = study.best_trial
        text = best_params_config(
            best.params, best.value, search_dir, overrides, label=f" (trial {best.number})"
        )
        written["best"] = write_text(search_dir / BEST_CONFIG, text)
        shown = " | ".join(f"{k}={_format(v)}" for k, v in best.params.items())
        print(f"best: trial {best.number}, objective {best.value:.4f}: {shown}", flush=True)
    written.update(write_plots(study, search_dir, monitor))
    for path in written.values():
        print(f"  {path}", flush=True)
    return written


def write_plots(study: optuna.Study, search_dir: Path, monitor: str = "val/mAP") -> dict[str, Path]:
    """``history.png`` (objective per trial and the best so far) once a trial is complete, and
    ``importance.png`` (PED-ANOVA parameter importances, no scikit-learn needed) once two are;
    a plot Optuna cannot draw is skipped with a note."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.importance import PedAnovaImportanceEvaluator
    from optuna.visualization import matplotlib as optuna_plots

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    plots: dict[str, tuple[str, Callable[[], Any]]] = {}
    if complete:
        plots["history"] = (HISTORY_PNG, lambda: optuna_plots.plot_optimization_history(study))
    if len(complete) >= 2 and len(study.best_trial.params) >= 1:
        plots["importance"] = (
            IMPORTANCE_PNG,
            lambda: optuna_plots.plot_param_importances(
                study, evaluator=PedAnovaImportanceEvaluator()
            ),
        )
    written = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, (filename, draw) in plots.items():
            try:
                axes = draw()
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                print(f"note: no {filename}: {_first_line(exc)}", flush=True)
                continue
            figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
            if name == "history":
                axes.set_ylabel(f"objective: best {monitor} of the trial")
            else:
                axes.set_title("Parameter importances (PED-ANOVA)")
            figure.set_size_inches(8, 5)
            figure.tight_layout()
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=100)
            plt.close(figure)
            written[name] = write_text(search_dir / filename, buffer.getvalue())
    return written
