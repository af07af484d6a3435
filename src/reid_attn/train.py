"""``python -m reid_attn.train [overrides]``: train, test on the test split, write metrics.json."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint, RichProgressBar
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from reid_attn.config import validate_train_config
from reid_attn.data import ReIDDataModule
from reid_attn.models.pretrained import load_imagenet_weights
from reid_attn.module import ReIDModule
from reid_attn.run_files import format_metrics, run_entry, write_metrics


def build_trainer(
    trainer_cfg: DictConfig, output_dir: Path, monitor: str | None, mode: str = "max"
) -> tuple[pl.Trainer, ModelCheckpoint]:
    """Trainer from ``trainer_cfg`` with checkpoints (last + best by ``monitor``), CSV and
    TensorBoard logs in ``output_dir``, and the rich progress bar when enabled."""
    checkpoint = ModelCheckpoint(
        dirpath=output_dir / "checkpoints",
        filename="best-epoch{epoch:03d}" if monitor else "epoch{epoch:03d}",
        monitor=monitor,
        mode=mode,
        save_top_k=1,
        save_last=True,
        auto_insert_metric_name=False,
    )
    callbacks: list[pl.Callback] = [checkpoint]
    if trainer_cfg.get("enable_progress_bar", True):
        callbacks.append(RichProgressBar())
    loggers = [
        CSVLogger(save_dir=output_dir, name="csv", version=""),
        TensorBoardLogger(save_dir=output_dir, name="tensorboard", version=""),
    ]
    trainer = instantiate(
        trainer_cfg,
        callbacks=callbacks,
        logger=loggers,
        default_root_dir=str(output_dir),
        use_distributed_sampler=False,  # the PK sampler splits batches across ranks itself
        limit_val_batches=None if monitor else 0,
    )
    return trainer, checkpoint


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train the configured model, test the last checkpoint on the test split, write
    ``metrics.json`` and ``config.yaml`` into ``cfg.output_dir``; return the test metrics."""
    validate_train_config(cfg)
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)
    pl.seed_everything(cfg.seed, workers=True)

    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    datamodule = ReIDDataModule(**data_cfg)
    if data_cfg["name"] == "synthetic":  # the checkpoint records the full spec, renderer included
        data_cfg["synthetic"] = asdict(datamodule.synthetic)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = ReIDModule(
        num_classes=datamodule.num_classes,
        model=OmegaConf.to_container(cfg.model, resolve=True),
        loss=OmegaConf.to_container(cfg.loss, resolve=True),
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
        evaluation=OmegaConf.to_container(cfg.evaluation, resolve=True),
        data=data_cfg,
    )
    if cfg.model.get("pretrained"):
        report = load_imagenet_weights(module.net.backbone, cfg.model.get("pretrained_path"))
        print(
            f"loaded ImageNet weights: {len(report['missing'])} attention tensors left at their "
            f"initialisation, ignored {report['unexpected']}"
        )
    monitor = cfg.checkpoint.monitor if datamodule.val_query else None
    trainer, checkpoint = build_trainer(cfg.trainer, output_dir, monitor, cfg.checkpoint.mode)
    trainer.fit(module, datamodule=datamodule)
    # Reported figures come from the last checkpoint, never from one picked on the test split.
    trainer.test(module, datamodule=datamodule, ckpt_path=checkpoint.last_model_path, verbose=False)
    results = module.test_results
    write_metrics(results, output_dir)
    print(f"test ({datamodule.name}, last checkpoint): {format_metrics(results)}")
    print(f"run directory: {output_dir}")
    return results


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    """Console entry point (``reid-attn-train``)."""
    run_entry(train, cfg)


if __name__ == "__main__":
    main()
