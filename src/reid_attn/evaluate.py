"""``python -m reid_attn.evaluate ckpt_path=PATH [data=...] [rerank=true] [flip=true]``: test a
checkpoint alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from reid_attn.config import validate_data_config
from reid_attn.data import ReIDDataModule
from reid_attn.inference import load_module
from reid_attn.runs.files import format_metrics, run_entry, write_metrics


def evaluation_overrides(cfg: DictConfig) -> dict[str, Any]:
    """The non-null evaluation settings of an evaluate config: ``rerank``, ``flip`` and the
    keys of its ``evaluation`` section."""
    overrides = {k: cfg.get(k) for k in ("rerank", "flip")}
    section = cfg.get("evaluation") or {}
    overrides.update(OmegaConf.to_container(section, resolve=True) if section else {})
    return {k: v for k, v in overrides.items() if v is not None}


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Rebuild the module from ``cfg.ckpt_path`` (its saved hyper-parameters; the evaluation
    settings overridden by :func:`evaluation_overrides`), test it on the checkpoint's data (or
    ``cfg.data`` when given), write ``metrics.json`` to ``cfg.output_dir``."""
    module = load_module(cfg.ckpt_path, evaluation_overrides(cfg))
    hparams = module.hparams
    if cfg.get("data") is not None:
        data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    elif hparams.get("data"):
        data_cfg = dict(hparams["data"])
    else:
        raise ValueError(
            f"{cfg.ckpt_path} stores no data config; pass data=... on the command line"
        )
    validate_data_config(OmegaConf.create(data_cfg))
    datamodule = ReIDDataModule(**data_cfg)
    trainer = pl.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.test(module, datamodule=datamodule, verbose=False)
    results = module.test_results
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_metrics(results, output_dir)
    extras = [k for k in ("rerank", "flip") if hparams["evaluation"].get(k)]
    setting = ", ".join([data_cfg["name"], str(cfg.ckpt_path), *extras])
    print(f"test ({setting}): {format_metrics(results)}")
    return results


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    """Console entry point (``reid-attn-evaluate``)."""
    run_entry(evaluate, cfg)


if __name__ == "__main__":
    main()
