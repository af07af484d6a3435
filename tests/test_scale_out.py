"""Running at scale: the submitit launchers, multi-node DDP under SLURM (the Optuna search:
test_tune.py)."""

from __future__ import annotations

import json

import pytest
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf
from pytorch_lightning.plugins.environments import SLURMEnvironment
from pytorch_lightning.utilities import rank_zero_only

from conftest import run_train_cli
from reid_attn.config import ConfigError, validate_train_config
from reid_attn.report import collect


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


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["objective=val/rank1"], r"allowed: null or the checkpoint monitor \(val/mAP\)"),
        (["objective=val/mAP", "data.val_identities=0"], "data.val_identities=0"),
    ],
)
def test_bad_objective_is_refused(compose_cfg, overrides, message) -> None:
    cfg = compose_cfg("train", ["debug=fast", "output_dir=x", *overrides])
    with pytest.raises(ConfigError, match=message):
        validate_train_config(cfg)


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
    # The trainer sets Lightning's process-wide rank (3 here): restored after the test, or
    # every later run in this process would skip its rank-zero files (config.yaml, CSV log).
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)
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
