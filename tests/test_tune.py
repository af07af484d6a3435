"""The hyper-parameter search (``python -m reid_attn.tune``) on Optuna, on tiny synthetic data.

Trials train ``debug=fast`` runs (10 training identities at 64x32, 3 held out for
validation); each check reads what the search wrote back from the study's storage and the
trials' own files. The command-line cases run the real command in a subprocess; the kill and
two-worker cases are slow (several process starts).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

import reid_attn.runs
from conftest import CONF_DIR, compose_config
from reid_attn.config import ConfigError
from reid_attn.data import ReIDDataModule
from reid_attn.runs.files import USER_ERRORS, run_entry
from reid_attn.runs.tuning import (
    best_params_config,
    check_preset_sweeps,
    fail_interrupted_trials,
    make_pruner,
    open_storage,
    search_space,
    this_worker,
    trial_rows,
    trials_counted,
)
from reid_attn.tune import MissingDependencyError, tune

SEARCH_RANGES = {  # conf/tune.yaml's tune.space
    "loss.scale": (16.0, 128.0),
    "loss.margin": (0.1, 0.5),
    "loss.triplet_margin": (0.1, 0.6),
    "optimizer.lr": (1.0e-4, 1.0e-3),
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic-data cache for the module's searches."""
    return tmp_path_factory.mktemp("tune_data")


def search_overrides(search: Path, data: Path, *extra: str) -> list[str]:
    """Overrides of a search of ``debug=fast`` trials in ``search``, data cached in ``data``."""
    return ["debug=fast", f"output_dir={search}", f"data.root={data}", *extra]


def load_study(search: Path, name: str = "circle_joint_loss") -> optuna.Study:
    """The study of the search in ``search`` (its default journal storage)."""
    return optuna.load_study(study_name=name, storage=open_storage(None, search))


def best_validation_map(run: Path) -> float:
    """The largest val/mAP in the run's CSV log: an independent record of the objective."""
    return max(validation_maps(run).values())


def validation_maps(run: Path) -> dict[int, float]:
    """val/mAP by 0-based epoch from the run's CSV log."""
    with open(run / "csv" / "metrics.csv") as file:
        rows = [r for r in csv.DictReader(file) if r.get("val/mAP")]
    return {int(r["epoch"]): float(r["val/mAP"]) for r in rows}


def read_trials_csv(search: Path) -> list[dict[str, str]]:
    with open(search / "trials.csv") as file:
        return list(csv.DictReader(file))


def run_tune_cli(args: list[str], cwd: Path, **popen) -> subprocess.Popen:
    """``python -m reid_attn.tune *args`` started in a fresh process (one thread)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.Popen(
        [sys.executable, "-m", "reid_attn.tune", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def finish(proc: subprocess.Popen, timeout: float = 900) -> tuple[str, str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-3000:]}\n{err[-3000:]}"
    return out, err


# ---------------------------------------------------------------- a whole search


def test_three_trial_study_objectives_files_and_best_params_pass_back(tmp_path, data_root):
    search = tmp_path / "search"
    # two training steps an epoch: the assertions are about the search's bookkeeping, not
    # about what a trial learns
    short = ["trainer.max_epochs=2", "trainer.limit_train_batches=2"]
    cfg = compose_config(
        "tune", search_overrides(search, data_root, "tune.n_trials=3", *short, "tune.pruner=none")
    )
    study = tune(cfg, overrides=["debug=fast", *short, "tune.n_trials=3"])

    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2]
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    for trial in trials:
        run = search / f"trial{trial.number:03d}"
        assert trial.user_attrs["run_dir"] == str(run)
        # objective = the best val/mAP of the trial's own CSV log = metrics.json's objective
        assert trial.value == pytest.approx(best_validation_map(run), abs=1e-6)
        objective = json.loads((run / "metrics.json").read_text())["objective"]
        assert objective == {"name": "val/mAP", "best_validation_value": trial.value}
        # each epoch's validation was reported to the trial
        assert trial.intermediate_values == pytest.approx(validation_maps(run))
        assert trial.user_attrs["epochs"] == 2
        saved = OmegaConf.load(run / "config.yaml")
        for key, value in trial.params.items():
            assert OmegaConf.select(saved, key) == pytest.approx(value)
            low, high = SEARCH_RANGES[key]
            assert low <= value <= high
        assert "tune" not in saved and saved.objective == "val/mAP"
        assert not (run / "checkpoints").exists()  # tune.keep_checkpoints=false
    assert set(trials[0].params) == set(SEARCH_RANGES)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 3

    rows = read_trials_csv(search)
    assert [(r["number"], r["state"], r["epochs"]) for r in rows] == [
        (str(n), "COMPLETE", "2") for n in range(3)
    ]
    for row, trial in zip(rows, trials, strict=True):
        assert float(row["objective"]) == pytest.approx(trial.value)
        assert float(row["wall_s"]) > 0
        assert {k: float(row[k]) for k in SEARCH_RANGES} == pytest.approx(trial.params)
    for name in ("history.png", "importance.png"):
        assert (search / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # tuned/best.yaml, passed back with --config-dir <search> tuned=best, sets the best values
    best = max(trials, key=lambda t: t.value)
    assert study.best_trial.number == best.number
    text = (search / "tuned" / "best.yaml").read_text()
    assert f"--config-dir {search} tuned=best debug=fast {' '.join(short)}\n" in text
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"hydra.searchpath=[file://{search}]", "tuned=best", "output_dir=x"],
        )
    assert {key: OmegaConf.select(cfg, key) for key in SEARCH_RANGES} == pytest.approx(best.params)
    assert cfg.loss.classifier == "circle" and cfg.objective is None


def test_search_validation_identities_are_disjoint_from_training_and_test(tmp_path) -> None:
    cfg = compose_config("tune", ["debug=fast", "output_dir=x", f"data.root={tmp_path}"])
    assert cfg.objective == cfg.checkpoint.monitor == "val/mAP"
    datamodule = ReIDDataModule(**OmegaConf.to_container(cfg.data, resolve=True))
    datamodule.prepare_data()
    datamodule.setup("fit")
    val = datamodule.val_query + datamodule.val_gallery
    train_paths = {path for path, _, _ in datamodule.train_items}
    val_paths = {path for path, _, _ in val}
    test_paths = {path for path, _, _ in datamodule.dataset.query + datamodule.dataset.gallery}
    assert len({pid for _, pid, _ in val}) == cfg.data.val_identities
    assert not train_paths & val_paths and not val_paths & test_paths
    # the held-out images are training-split images, and none of their identities is trained
    original = datamodule.dataset.train
    assert val_paths <= {path for path, _, _ in original}
    held_pids = {pid for path, pid, _ in original if path in val_paths}
    assert not {pid for path, pid, _ in original if path in train_paths} & held_pids


# ---------------------------------------------------------------- pruning


def test_trial_below_the_median_is_pruned_after_its_first_epoch(tmp_path, data_root) -> None:
    search = tmp_path / "search"
    # Two finished trials in the storage, as earlier workers leave them, at 0.99 each epoch
    space = search_space(OmegaConf.to_container(compose_config("tune", []).tune.space))
    study = optuna.create_study(
        study_name="circle_joint_loss", storage=open_storage(None, search), direction="maximize"
    )
    for params in ({"optimizer.lr": 2e-4}, {"optimizer.lr": 5e-4}):
        study.add_trial(
            optuna.create_trial(
                params={**{k: d.low for k, d in space.items()}, **params},
                distributions=space,
                value=0.99,
                intermediate_values={0: 0.99, 1: 0.99, 2: 0.99},
            )
        )
    cfg = compose_config(
        "tune",
        search_overrides(
            search,
            data_root,
            "tune.n_trials=3",
            "trainer.max_epochs=3",
            "tune.pruner=median",
            "tune.pruners.median.n_warmup_steps=0",
            "tune.pruners.median.n_startup_trials=2",
        ),
    )
    trial = tune(cfg).trials[2]
    assert trial.state == TrialState.PRUNED
    run = search / "trial002"
    assert trial.user_attrs["epochs"] == 1  # of 3
    assert trial.intermediate_values == pytest.approx(validation_maps(run))
    assert list(trial.intermediate_values) == [0]
    assert trial.value == pytest.approx(trial.intermediate_values[0])  # the last reported
    assert not (run / "metrics.json").exists()  # stopped before the test
    row = read_trials_csv(search)[2]
    assert (row["state"], row["epochs"]) == ("PRUNED", "1")
    assert row["note"] == "pruned by the median pruner after epoch 1"


def test_diverging_learning_rate_trial_is_pruned(tmp_path, data_root) -> None:
    search = tmp_path / "search"
    cfg = compose_config(
        "tune",
        search_overrides(
            search,
            data_root,
            "tune.n_trials=1",
            "trainer.max_epochs=3",
            "~tune.space",
            "+tune.space={optimizer: {lr: {choices: [1.0e12]}}}",
        ),
    )
    (trial,) = tune(cfg).trials
    assert trial.params == {"optimizer.lr": 1e12}
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["epochs"] < 3
    assert trial.user_attrs["note"].startswith("diverged: training stopped: the loss is nan")
    row = read_trials_csv(search)[0]
    assert row["state"] == "PRUNED" and int(row["epochs"]) < 3
    assert not (search / "tuned" / "best.yaml").exists()  # no complete trial


def test_pruner_choice() -> None:
    def pruner(*overrides: str):
        return make_pruner(compose_config("tune", list(overrides)).tune)

    median = pruner()
    assert isinstance(median, optuna.pruners.MedianPruner)  # the default
    assert (median._n_startup_trials, median._n_warmup_steps) == (4, 2)
    assert isinstance(pruner("tune.pruner=hyperband"), optuna.pruners.HyperbandPruner)
    assert isinstance(pruner("tune.pruner=none"), optuna.pruners.NopPruner)


# ---------------------------------------------------------------- kills and workers


def test_trial_of_a_dead_process_is_failed_and_queued_again(tmp_path) -> None:
    storage = open_storage(None, tmp_path)
    study = optuna.create_study(storage=storage, study_name="s")
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )  # a process that has ended (and been reaped)
    space = {"optimizer.lr": FloatDistribution(1e-4, 1e-3, log=True)}
    for worker in ({**this_worker(), "pid": int(gone.stdout)}, this_worker()):
        study.ask(space).set_user_attr("worker", worker)
    assert fail_interrupted_trials(study, storage, max_retries=3) == [0]
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    assert trials[2].params == trials[0].params  # the retry carries the dead trial's values
    assert trials_counted(trials) == 2  # the live one and the retry; the failed one is replaced
    notes = [row["note"] for row in trial_rows(study, space)]
    assert notes == ["interrupted: its process is gone; retried as trial 2", "", "retry of trial 0"]
    assert fail_interrupted_trials(study, storage, max_retries=3) == []  # nothing more


@pytest.mark.slow
def test_sigkill_during_the_second_trial_then_the_same_command_continues(tmp_path, data_root):
    search = tmp_path / "search"
    args = [*search_overrides(search, data_root, "tune.n_trials=3"), "tune.pruner=none"]
    args[1] = f"hydra.run.dir={search}"  # as a user runs it: the search folder is Hydra's
    proc = run_tune_cli(args, tmp_path)
    deadline = time.monotonic() + 900
    while not (search / "trial001" / "config.yaml").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not (search / "trial001" / "metrics.json").exists()  # killed inside trial 1
    killed = load_study(search).trials
    assert [t.state for t in killed] == [TrialState.COMPLETE, TrialState.RUNNING]

    out, _ = finish(run_tune_cli(args, tmp_path))
    assert "trial 1: its process is gone: FAIL, queued again" in out
    trials = load_study(search).trials
    states = [t.state for t in trials]
    assert states == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.COMPLETE,
        TrialState.COMPLETE,
    ]
    assert trials[2].params == trials[1].params  # trial 1 retried with its values
    assert trials[0].value == killed[0].value  # the finished trial kept, not rerun
    rows = read_trials_csv(search)
    assert [r["note"] for r in rows] == [
        "",
        "interrupted: its process is gone; retried as trial 2",
        "retry of trial 1",
        "",
    ]
    for trial in (trials[0], trials[2], trials[3]):
        run = search / f"trial{trial.number:03d}"
        assert trial.value == pytest.approx(best_validation_map(run), abs=1e-6)
    assert (search / "tuned" / "best.yaml").is_file()


@pytest.mark.slow
def test_two_workers_on_one_storage_share_the_trials(tmp_path, data_root) -> None:
    search = tmp_path / "search"
    storage = f"sqlite:///{tmp_path / 'search.db'}"
    args = [
        *search_overrides(search, data_root, "tune.n_trials=4", f"tune.storage={storage}"),
        "tune.pruner=none",
    ]
    args[1] = f"hydra.run.dir={search}"
    workers = [run_tune_cli([*args, f"tune.worker={w}"], tmp_path) for w in (0, 1)]
    for proc in workers:
        finish(proc)
    study = optuna.load_study(study_name="circle_joint_loss", storage=storage)
    trials = study.get_trials()
    run = [t for t in trials if "not run" not in t.user_attrs.get("note", "")]
    assert len(run) == 4 and all(t.state == TrialState.COMPLETE for t in run)
    assert sorted(p.name for p in search.glob("trial[0-9]*")) == [
        f"trial{t.number:03d}" for t in run
    ]
    assert {t.user_attrs["worker_label"] for t in run} == {0, 1}  # both workers trained
    assert len({t.user_attrs["worker"]["pid"] for t in run}) == 2
    assert len({tuple(sorted(t.params.items())) for t in run}) == 4  # no draw repeated


# ---------------------------------------------------------------- guards and errors


def test_bad_storage_url_is_one_line_on_the_command_line(tmp_path) -> None:
    proc = run_tune_cli(
        ["debug=fast", "tune.storage=nosuchdb://x/y", f"hydra.run.dir={tmp_path / 's'}"],
        tmp_path,
    )
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 1
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: tune.storage=nosuchdb://x/y cannot be opened (")
    assert "expected an RDB URL such as sqlite:///search.db" in err


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ("sqlite:////nonexistent/folder/search.db", "cannot be opened"),
        ("postgresql://user@localhost/db", "database driver is not installed"),
        ("not a url://", "cannot be opened"),
    ],
)
def test_bad_storage_is_a_config_error(tmp_path, storage, message) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        open_storage(storage, tmp_path)
    assert "\n" not in str(info.value)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # threads share
def test_workers_starting_together_open_one_new_sqlite_database(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    with ThreadPoolExecutor(4) as pool:  # each open creates the tables or finds them
        storages = list(pool.map(lambda _: open_storage(url, tmp_path), range(4)))
    study = optuna.create_study(storage=storages[0], study_name="s")
    assert optuna.load_study(study_name="s", storage=storages[3]).study_name == study.study_name


def test_missing_optuna_is_one_clear_line(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ModuleNotFoundError
    monkeypatch.delitem(sys.modules, "reid_attn.runs.tuning")
    monkeypatch.delattr(reid_attn.runs, "tuning")
    cfg = compose_config("tune", ["debug=fast", f"output_dir={tmp_path}"])
    with pytest.raises(SystemExit) as info:
        run_entry(tune, cfg, errors=(*USER_ERRORS, MissingDependencyError))
    assert str(info.value) == (
        "error: the hyper-parameter search needs Optuna >= 4, and module optuna is not "
        "installed: pip install 'reid-attn[tune]' (or pip install 'optuna>=4')"
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["+tune.space.seed={choices: [0, 1]}"], r"tune.space.seed: a search chooses"),
        (["+tune.space.data.seed={low: 0, high: 9, int: true}"], "never seeds or ablation"),
        (["+tune.space.ablation.row={choices: [a, b]}"], "never seeds or ablation"),
        (["+tune.space.loss.nosuch={low: 0, high: 1}"], "not a key of the training config"),
        (["tune.space.loss.margin={low: 0.5, high: 0.1}"], "tune.space.loss.margin: "),
        (["~tune.space.loss.margin.high"], "a range needs low and high"),
        (["~tune.space", "+tune.space={}"], "tune.space is empty"),
        (["tune.pruner=sometimes"], "allowed values: none, median, hyperband"),
        (["tune.direction=minimize"], "contradicts checkpoint.mode=max"),
        (["objective=null"], "a search optimises the checkpoint monitor"),
        (["data.val_identities=0"], "held-out training identities"),
        (["trainer.devices=2"], "a search trial trains in one process"),
        (["experiment=ablation_cpu"], r"the config sweeps ablation, seed \(hydra.sweeper"),
        (["experiment=ablation_cpu", "ablation=cbam"], r"the config sweeps seed \("),
    ],
)
def test_bad_search_settings_are_refused_before_training(tmp_path, overrides, message) -> None:
    cfg = compose_config("tune", ["debug=fast", f"output_dir={tmp_path / 's'}", *overrides])
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        hydra_cfg = compose("tune", overrides=overrides, return_hydra_config=True).hydra
    params = hydra_cfg.sweeper.params
    sweeps = OmegaConf.to_container(params) if params else None
    with pytest.raises(ConfigError, match=message):
        tune(cfg, overrides=overrides, sweep_params=sweeps)
    assert not (tmp_path / "s" / "trial000").exists()


def test_preset_sweeps_pass_when_the_command_line_fixes_them() -> None:
    sweeps = {"ablation": "baseline,cbam", "seed": "0,1,2"}
    check_preset_sweeps(sweeps, ["experiment=ablation_cpu", "ablation=cbam", "seed=0"])
    check_preset_sweeps(None, [])


def test_a_study_continued_with_other_settings_is_refused(tmp_path) -> None:
    base = ["debug=fast", f"output_dir={tmp_path / 's'}", "tune.n_trials=0"]
    tune(compose_config("tune", base))  # creates the study, trains nothing
    assert read_trials_csv(tmp_path / "s") == []
    tune(compose_config("tune", [*base, "data.num_workers=1", "tune.pruner=none"]))  # allowed
    with pytest.raises(ConfigError, match=r"trainer.max_epochs \(run: 1, now: 2\)"):
        tune(compose_config("tune", [*base, "trainer.max_epochs=2"]))


def test_search_space_forms() -> None:
    space = search_space(
        {
            "optimizer": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}},
            "data": {"num_instances": {"low": 2, "high": 8, "int": True, "step": 2}},
            "loss": {"classifier": {"choices": ["linear", "circle"]}},
        }
    )
    assert space == {
        "optimizer.lr": FloatDistribution(1e-4, 1e-2, log=True),
        "data.num_instances": optuna.distributions.IntDistribution(2, 8, step=2),
        "loss.classifier": optuna.distributions.CategoricalDistribution(("linear", "circle")),
    }


def test_best_params_config_nests_dotted_keys(tmp_path) -> None:
    text = best_params_config(
        {"loss.margin": 0.2, "optimizer.lr": 3e-4},
        0.5,
        tmp_path,
        ["trainer.max_epochs=6", "tune.n_trials=9", "hydra.run.dir=x"],
    )
    assert text.startswith("# @package _global_\n")
    assert "tuned=best trainer.max_epochs=6\n" in text
    assert yaml.safe_load(text) == {"loss": {"margin": 0.2}, "optimizer": {"lr": 3e-4}}
