"""Running at scale: the submitit launchers, multi-node DDP under SLURM, the Optuna search."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from pytorch_lightning.plugins.environments import SLURMEnvironment

from conftest import CONF_DIR, run_train_cli
from reid_attn.config import ConfigError, validate_train_config
from reid_attn.data import ReIDDataModule
from reid_attn.report import collect
from reid_attn.tuning import best_params_config

SEARCH_RANGES = {  # hparams_search/circle_optuna.yaml
    "loss.scale": (16.0, 128.0),
    "loss.margin": (0.1, 0.5),
    "loss.triplet_margin": (0.1, 0.6),
    "optimizer.lr": (1.0e-4, 1.0e-3),
}


def test_slurm_launcher_renders_the_documented_settings(tmp_path) -> None:
    proc = run_train_cli(
        [
            "experiment=ablation",
            "hydra/launcher=slurm",
            "hydra.launcher.partition=a100",
            "--cfg",
            "hydra",
            "-p",
            "hydra.launcher",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    launcher = yaml.safe_load(proc.stdout.split("# @package hydra.launcher", 1)[1])
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert launcher["partition"] == "a100"
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (1, 1, 1)
    assert (launcher["cpus_per_task"], launcher["mem_gb"]) == (10, 48)
    assert (launcher["timeout_min"], launcher["array_parallelism"]) == (720, 18)
    info = run_train_cli(["hydra/launcher=slurm", "--info", "defaults"], tmp_path)
    assert info.returncode == 0, info.stderr[-2000:]
    assert "hydra/launcher/slurm" in info.stdout and "submitit_slurm" in info.stdout


@pytest.mark.slow  # end to end: subprocess runs of whole sweeps (make test-slow)
def test_submitit_local_runs_the_ablation_sweep_and_the_report_collects_it(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_train_cli(
        [
            "--multirun",
            "hydra/launcher=submitit_local",
            "experiment=ablation",
            "debug=fast",
            "ablation=tri,cbam",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert any((sweep / ".submitit").iterdir())  # the jobs went through submitit
    for job in ("tri-seed0", "cbam-seed0"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert 0 <= metrics["mAP"] <= 1
    assert [row.row for row in collect(sweep)] == ["tri", "cbam"]


@pytest.mark.slow  # end to end: subprocess runs of whole sweeps (make test-slow)
def test_parallel_launcher_runs_two_jobs_at_once(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_train_cli(
        [
            "--multirun",
            "hydra/launcher=parallel",
            "hydra.launcher.n_jobs=2",
            "debug=fast",
            "seed=0,1",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    jobs = [sweep / "0", sweep / "1"]
    for job, seed in zip(jobs, (0, 1), strict=True):
        assert OmegaConf.load(job / ".hydra" / "config.yaml").seed == seed
        assert 0 <= json.loads((job / "metrics.json").read_text())["mAP"] <= 1
    # each job's config is written when it starts and its metrics when it ends: both started
    # before either ended
    started = [(job / ".hydra" / "config.yaml").stat().st_mtime for job in jobs]
    ended = [(job / "metrics.json").stat().st_mtime for job in jobs]
    assert max(started) < min(ended)


def _best_validation_map(run: Path) -> float:
    """The largest val/mAP in the run's CSV log: an independent record of the objective."""
    with open(run / "csv" / "metrics.csv") as file:
        return max(float(r["val/mAP"]) for r in csv.DictReader(file) if r.get("val/mAP"))


def test_optuna_search_three_trials_and_the_best_parameters_pass_back(tmp_path) -> None:
    sweep = tmp_path / "search"
    proc = run_train_cli(
        [
            "hparams_search=circle_optuna",
            "debug=fast",
            "trainer.max_epochs=2",
            "hydra.sweeper.n_trials=3",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    objectives, params = [], []
    for trial in range(3):
        run = sweep / f"trial{trial}"
        objective = json.loads((run / "metrics.json").read_text())["objective"]
        assert objective["name"] == "val/mAP"
        assert objective["best_validation_value"] == pytest.approx(_best_validation_map(run))
        objectives.append(objective["best_validation_value"])
        overrides = OmegaConf.load(run / ".hydra" / "overrides.yaml")
        params.append(dict(o.split("=", 1) for o in overrides if o.split("=")[0] in SEARCH_RANGES))
    for trial_params in params:
        assert set(trial_params) == set(SEARCH_RANGES)
        for key, (low, high) in SEARCH_RANGES.items():
            assert low <= float(trial_params[key]) <= high
    assert len({tuple(sorted(p.items())) for p in params}) == 3  # three different trials

    results = OmegaConf.load(sweep / "optimization_results.yaml")
    best = max(range(3), key=objectives.__getitem__)
    assert results.best_value == pytest.approx(objectives[best])
    assert {k: float(v) for k, v in params[best].items()} == pytest.approx(
        dict(results.best_params)
    )
    # tuned/best.yaml passed back (--config-dir <sweep> tuned=best) sets the best values
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"hydra.searchpath=[file://{sweep}]", "tuned=best", "output_dir=x"],
        )
    chosen = {key: OmegaConf.select(cfg, key) for key in SEARCH_RANGES}
    assert chosen == pytest.approx(dict(results.best_params))
    assert cfg.loss.classifier == "circle" and cfg.objective is None


def test_search_validation_identities_are_disjoint_from_training_and_test(tmp_path) -> None:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hparams_search=circle_optuna", "debug=fast", f"data.root={tmp_path}"],
        )
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


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["objective=val/rank1"], r"allowed: null or the checkpoint monitor \(val/mAP\)"),
        (["objective=val/mAP", "data.val_identities=0"], "data.val_identities=0"),
        (["hparams_search=circle_optuna", "data.val_identities=0"], "held-out training"),
    ],
)
def test_bad_objective_is_refused(compose_cfg, overrides, message) -> None:
    cfg = compose_cfg("train", ["debug=fast", "output_dir=x", *overrides])
    with pytest.raises(ConfigError, match=message):
        validate_train_config(cfg)


def test_best_params_config_nests_dotted_keys(tmp_path) -> None:
    results = OmegaConf.create(
        {"best_params": {"loss.margin": 0.2, "optimizer.lr": 3e-4}, "best_value": 0.5}
    )
    text = best_params_config(results, tmp_path)
    assert text.startswith("# @package _global_\n")
    assert yaml.safe_load(text) == {"loss": {"margin": 0.2}, "optimizer": {"lr": 3e-4}}
    with pytest.raises(ValueError, match="no best_params"):
        best_params_config(OmegaConf.create({"solutions": []}), tmp_path)


def test_multi_node_ddp_config_reads_its_ranks_from_slurm(compose_cfg, monkeypatch) -> None:
    # Rank 3 of 2 nodes x 2 processes, as srun would start it (node 1, local rank 1).
    slurm = {
        "SLURM_NTASKS": "4",
        "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_PROCID": "3",
        "SLURM_LOCALID": "1",
        "SLURM_NODEID": "1",
        "SLURM_JOB_NAME": "reid-ablation",
        "SLURM_JOB_ID": "4242",
        "SLURM_NODELIST": "gpu[07-08]",
    }
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    cfg = compose_cfg(
        "train",
        [
            "trainer=ddp",
            "trainer.num_nodes=2",
            "trainer.accelerator=cpu",  # the GPU settings cannot instantiate here
            "trainer.precision=32-true",
            "trainer.sync_batchnorm=false",
            "output_dir=x",
        ],
    )
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.devices == 2
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    environment = trainer.strategy.cluster_environment
    assert isinstance(environment, SLURMEnvironment)
    assert (trainer.num_nodes, trainer.world_size, trainer.global_rank) == (2, 4, 3)
    assert (trainer.local_rank, trainer.node_rank) == (1, 1)
    assert environment.main_address == "gpu07"
