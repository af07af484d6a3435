"""Training machinery shared by the commands: the Lightning trainer of a run and
:func:`train`, one training run from a composed config (``python -m reid_attn.train`` runs it
once; ``python -m reid_attn.tune`` once per trial of a search).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint, RichProgressBar
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only

from reid_attn.callbacks import (
    EpochLength,
    EstimateRunTime,
    SeedEachEpoch,
    StopOnNonFiniteLoss,
)
from reid_attn.config import resolve_precision, validate_sampling, validate_train_config
from reid_attn.data import ReIDDataModule
from reid_attn.models.pretrained import load_imagenet_weights
from reid_attn.module import ReIDModule
from reid_attn.runs.files import (
    AtomicCheckpointIO,
    ResumedCSVLogger,
    format_metrics,
    prepare_output_dir,
    write_machine,
    write_metrics,
)


def build_trainer(
    trainer_cfg: DictConfig,
    output_dir: Path,
    monitor: str | None,
    mode: str = "max",
    seed: int = 0,
    loss_check_every_n_steps: int = 1,
    last_every_n_epochs: int = 1,
    resume: bool = False,
    extra_callbacks: Sequence[pl.Callback] = (),
) -> tuple[pl.Trainer, Path]:
    """Trainer from ``trainer_cfg`` with checkpoints in ``output_dir/checkpoints`` (written
    atomically), CSV and TensorBoard logs in ``output_dir`` (with ``resume``, the killed
    run's CSV log is continued, not replaced), per-epoch re-seeding from ``seed``, its pace
    printed after the first epoch, a stop at the first non-finite loss (read every
    ``loss_check_every_n_steps`` steps), ``extra_callbacks`` (e.g. a search trial's pruning
    callback) and the rich progress bar when enabled.
    Returns the trainer and the path of ``last.ckpt``.

    ``last.ckpt`` is rewritten after every epoch (every ``last_every_n_epochs``: a resume
    then replays the epochs since, with the same result) by a checkpoint callback of its own
    (``ModelCheckpoint(save_last=True)`` rewrites it only in epochs that also save a top-k
    checkpoint, i.e. not when ``monitor`` failed to improve); with a ``monitor``,
    ``best-epochNNN.ckpt`` keeps the best epoch's weights (weights only: no optimiser state,
    a third of ``last.ckpt``'s size; it evaluates, a resume starts from ``last.ckpt``). The
    best callback runs first, so the state ``last.ckpt`` records for it (which a resume
    restores) includes the epoch's decision.
    """
    folder = output_dir / "checkpoints"
    last = ModelCheckpoint(
        dirpath=folder,
        filename="last",
        enable_version_counter=False,
        every_n_epochs=last_every_n_epochs,
    )
    checkpoints = [last]
    if monitor:
        best = ModelCheckpoint(
            dirpath=folder,
            filename="best-epoch{epoch:03d}",
            monitor=monitor,
            mode=mode,
            save_top_k=1,
            auto_insert_metric_name=False,
            save_weights_only=True,  # evaluation needs no optimiser state; resume uses last.ckpt
        )
        checkpoints.insert(0, best)
    last_path = folder / "last.ckpt"
    callbacks: list[pl.Callback] = [
        *checkpoints,
        SeedEachEpoch(seed),
        EpochLength(),
        StopOnNonFiniteLoss(last_path, loss_check_every_n_steps),
        EstimateRunTime(),
        *extra_callbacks,
    ]
    if trainer_cfg.get("enable_progress_bar", True):
        callbacks.append(RichProgressBar())
    loggers = [
        (ResumedCSVLogger if resume else CSVLogger)(save_dir=output_dir, name="csv", version=""),
        TensorBoardLogger(save_dir=output_dir, name="tensorboard", version=""),
    ]
    # Without a validation split there is nothing to validate, whatever limit_val_batches says.
    no_validation = {} if monitor else {"limit_val_batches": 0}
    trainer = instantiate(
        trainer_cfg,
        callbacks=callbacks,
        logger=loggers,
        default_root_dir=str(output_dir),
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,  # the PK sampler splits batches across ranks itself
        **no_validation,
    )
    return trainer, last_path


def best_validation_value(trainer: pl.Trainer, monitor: str) -> float:
    """The best value of ``monitor`` over the run's validations, as the checkpoint callback
    that keeps the best epoch recorded it."""
    for callback in trainer.checkpoint_callbacks:
        if callback.monitor == monitor and callback.best_model_score is not None:
            return float(callback.best_model_score)
    raise RuntimeError(f"no validation recorded {monitor}; was any validation epoch run?")


def describe_run(cfg: DictConfig, module: ReIDModule, datamodule: ReIDDataModule) -> str:
    """One line saying what trains: attention, loss, parameter count, input size, batch,
    epochs and precision (in place of Lightning's model summary table)."""
    params = sum(p.numel() for p in module.parameters()) / 1e6
    batch = cfg.data.num_identities * cfg.data.num_instances
    weights = (
        ("CE", "ce_weight"),
        ("triplet", "triplet_weight"),
        ("pair circle", "circle_pair_weight"),
    )
    terms = " + ".join(name for name, key in weights if cfg.loss.get(key, 0) > 0)
    return (
        f"model: ResNet50 + {cfg.model.attention}, {params:.1f} M parameters | loss {terms} "
        f"({cfg.loss.classifier} classifier) | input {cfg.data.height}x"
        f"{cfg.data.width}, batch {batch} = {cfg.data.num_identities} ids x "
        f"{cfg.data.num_instances} | {cfg.trainer.max_epochs} epochs, "
        f"precision {cfg.trainer.precision}"
    )


def train(cfg: DictConfig, extra_callbacks: Sequence[pl.Callback] = ()) -> dict[str, Any]:
    """Train the configured model, test the last checkpoint on the test split, write
    ``metrics.json`` and ``config.yaml`` into ``cfg.output_dir``; return the test metrics
    (with ``cfg.objective`` set, also ``objective``: its best validation value).
    With ``cfg.resume`` continue the run in ``cfg.output_dir`` from its ``last.ckpt``
    (see :func:`reid_attn.runs.files.prepare_output_dir`). ``extra_callbacks`` join the
    trainer's own (:func:`build_trainer`); an exception one of them raises ends the run
    there, before the test."""
    validate_train_config(cfg)
    output_dir = Path(cfg.output_dir)
    # DDP processes after the first are started by it, into the folder it has prepared
    resume_from = prepare_output_dir(cfg, main_process=rank_zero_only.rank == 0)
    # after prepare_output_dir: config.yaml (and a resume's comparison) keeps "auto"
    cfg.trainer.precision = resolve_precision(
        str(cfg.trainer.precision), cfg.trainer.get("accelerator")
    )
    if rank_zero_only.rank == 0:
        write_machine(output_dir, str(cfg.trainer.precision))
    pl.seed_everything(cfg.seed, workers=True)

    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    datamodule = ReIDDataModule(**data_cfg)
    if data_cfg["name"] == "synthetic":  # the checkpoint records the full spec, renderer included
        data_cfg["synthetic"] = asdict(datamodule.synthetic)
    datamodule.prepare_data()
    datamodule.setup("fit")
    topped_up = validate_sampling(cfg.data.num_instances, [p for _, p, _ in datamodule.train_items])
    if topped_up:
        print(
            f"note: {topped_up} training identities have fewer than data.num_instances="
            f"{cfg.data.num_instances} images; their images repeat within a batch"
        )
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
    if rank_zero_only.rank == 0:
        print(describe_run(cfg, module, datamodule))
    monitor = cfg.checkpoint.monitor if datamodule.val_query else None
    trainer, last_checkpoint = build_trainer(
        cfg.trainer,
        output_dir,
        monitor,
        cfg.checkpoint.mode,
        cfg.seed,
        cfg.get("loss_check_every_n_steps", 1),
        cfg.checkpoint.get("every_n_epochs", 1),
        resume=resume_from is not None,
        extra_callbacks=extra_callbacks,
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
    objective = best_validation_value(trainer, cfg.objective) if cfg.get("objective") else None
    # Reported figures come from the last checkpoint, never from one picked on the test split.
    # trainer.fast_dev_run writes no checkpoint: its one-batch test uses the weights in memory.
    tested = None if trainer.fast_dev_run else last_checkpoint
    trainer.test(module, datamodule=datamodule, ckpt_path=tested, verbose=False)
    results = dict(module.test_results)
    if objective is not None:
        results["objective"] = {"name": cfg.objective, "best_validation_value": objective}
    if trainer.is_global_zero:
        write_metrics(results, output_dir)
        weights = "fast_dev_run, weights in memory" if tested is None else "last checkpoint"
        print(f"test ({datamodule.name}, {weights}): {format_metrics(results)}")
        if objective is not None:
            print(f"objective: best validation {cfg.objective} = {objective:.4f}")
        print(f"run directory: {output_dir}")
    return results
