"""Shared fixtures: compose the real Hydra configs with all outputs under tmp_path."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import reid_attn

CONF_DIR = Path(reid_attn.__file__).parent / "conf"
EXPERIMENTS_DIR = Path(__file__).resolve().parents[1] / "experiments"
#: The small synthetic set of the data tests, as ``data.synthetic`` takes it (the fields of
#: :class:`~reid_attn.data.synthetic.SyntheticSpec`): 6 training and 4 test identities, 3
#: distractors, 2 junk images, 64 x 32 pixels.
SMALL_SYNTHETIC = {
    "num_train_ids": 6,
    "num_test_ids": 4,
    "num_distractors": 3,
    "num_junk": 2,
    "height": 64,
    "width": 32,
}


def compose_config(name: str, overrides: list[str]) -> DictConfig:
    """Compose ``conf/<name>.yaml`` with ``overrides`` (no Hydra run needed)."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(name, overrides=overrides)


def load_experiment(name: str) -> ModuleType:
    """Import ``experiments/<name>.py``, whose references the tests share (one copy). The
    scripts import their siblings by name, as when run from experiments/."""
    if str(EXPERIMENTS_DIR) not in sys.path:
        sys.path.insert(0, str(EXPERIMENTS_DIR))
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # registered, as an import would (dataclasses look it up)
    spec.loader.exec_module(module)
    return module


def run_train_cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """``python -m reid_attn.train *args`` in a fresh process, data cached under ``tmp_path``."""
    env = {**os.environ, "REID_ATTN_CACHE": str(tmp_path / "data")}
    return subprocess.run(
        [sys.executable, "-m", "reid_attn.train", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


@pytest.fixture
def train_cfg_factory(tmp_path: Path):
    """Build a fast train config (``debug=fast``) writing into ``tmp_path``."""

    def make(*overrides: str, run: str = "run") -> DictConfig:
        return compose_config("train", [*fast_train_overrides(tmp_path, run), *overrides])

    return make


@pytest.fixture
def compose_cfg():
    """The :func:`compose_config` function, as a fixture."""
    return compose_config


def fast_train_overrides(root: Path, run: str = "run") -> list[str]:
    """Overrides of a seconds-long training run whose files all land under ``root``."""
    return ["debug=fast", f"output_dir={root / run}", f"data.root={root / 'data'}"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One tiny CBAM + joint_circle training run shared by the tests: (run dir, test metrics)."""
    from reid_attn.train import train

    root = tmp_path_factory.mktemp("trained")
    cfg = compose_config("train", fast_train_overrides(root))
    return Path(cfg.output_dir), train(cfg)


def stand_in_trainer(
    epoch: int, loader=None, *, rank: int = 0, overfit_batches: float = 0
) -> SimpleNamespace:
    """A stand-in for a Lightning trainer at ``epoch`` (on rank ``rank``, on the CPU): what
    :class:`~reid_attn.callbacks.SeedEachEpoch` (``loader`` is its ``train_dataloader``) and the
    datamodule's ``train_dataloader`` and pipeline choice read from a real one."""
    import torch

    progress = SimpleNamespace(current=SimpleNamespace(processed=epoch))
    return SimpleNamespace(
        current_epoch=epoch,
        global_rank=rank,
        overfit_batches=overfit_batches,
        train_dataloader=loader,
        fit_loop=SimpleNamespace(epoch_progress=progress),
        strategy=SimpleNamespace(root_device=torch.device("cpu")),
    )


def make_loss_nan_at_step(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Stand in for a run that diverges at global step ``step``: ``ReIDModule.compute_losses``
    returns a NaN loss there (its other terms, and every other step, unchanged)."""
    from reid_attn.module import ReIDModule

    original = ReIDModule.compute_losses

    def poisoned(self, outputs, pids):
        terms = original(self, outputs, pids)
        if self.global_step == step:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(ReIDModule, "compute_losses", poisoned)


@pytest.fixture(scope="session")
def fake_imagenet_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for torchvision's ImageNet ResNet50 weights: its state dict (random weights,
    seed 0) under the IMAGENET1K_V1 file name."""
    import torch
    import torchvision

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet50-0676ba61.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    return path
