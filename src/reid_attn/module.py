"""ReIDModule: the LightningModule that trains the re-id network with the configured losses."""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler, SequentialSampler

from reid_attn.losses import cross_entropy_loss, pairwise_circle_loss, triplet_loss
from reid_attn.metrics import METRIC_NAMES, ReIDMetric
from reid_attn.models import build_reid_net

#: ``evaluation`` config keys passed to :class:`ReIDMetric` (with their defaults, which also
#: apply to checkpoints saved before the key existed).
METRIC_DEFAULTS = {
    "distance": "euclidean",
    "max_rank": 50,
    "rerank": False,
    "rerank_k1": 20,
    "rerank_k2": 6,
    "rerank_lambda": 0.3,
    "chunk_size": None,
}


def eval_sample_order(loaders: Any) -> Tensor | None:
    """Dataset index of each sample an evaluation loader yields, in yield order, or ``None``.

    The rule: a single ``DataLoader`` that batches (fixed ``batch_size``, in order) the indices
    of a ``SequentialSampler`` (the plain eval loader: every process sees every item) or of a
    ``DistributedSampler`` (Lightning's distributed eval loader: this rank's share, padded with
    repeated items) yields exactly ``list(loader.sampler)``, which is deterministic for both
    (a ``DistributedSampler`` reshuffles only on ``set_epoch``). Any other sampler (random,
    custom batch sampler) or several loaders: ``None``, and no de-duplication happens.
    """
    if isinstance(loaders, (list, tuple)):
        if len(loaders) != 1:
            return None
        loaders = loaders[0]
    if not isinstance(loaders, DataLoader) or loaders.batch_size is None:
        return None
    if not isinstance(loaders.sampler, (SequentialSampler, DistributedSampler)):
        return None
    return torch.as_tensor(list(loaders.sampler), dtype=torch.long)


def warmup_step_factor(
    epoch: int, warmup_epochs: int, warmup_factor: float, milestones: list[int], gamma: float
) -> float:
    """Learning-rate multiplier at ``epoch`` (0-based): linear warm-up from ``warmup_factor``
    to 1 over ``warmup_epochs``, then multiplied by ``gamma`` at each milestone passed."""
    if epoch < warmup_epochs:
        return warmup_factor + (1.0 - warmup_factor) * epoch / warmup_epochs
    return gamma ** bisect_right(sorted(milestones), epoch)


class ReIDModule(pl.LightningModule):
    """Trains :func:`build_reid_net` with CE (linear or circle classifier), triplet and
    pairwise-circle terms; evaluates retrieval (CMC, mAP, mINP) on val and test loaders.

    All arguments are plain containers (saved as hyper-parameters, so a checkpoint rebuilds the
    module alone): ``model`` (attention, attention_kwargs, last_stride, channels_last, compile,
    compile_mode), ``loss`` (see ``conf/loss``), ``optimizer`` (a ``_partial_`` Hydra target;
    ``fused: auto`` uses fused Adam when the parameters are on CUDA), ``scheduler``
    (warm-up and step decay), ``evaluation`` (distance, max_rank), ``data`` (the data config it
    was trained on).
    """

    def __init__(
        self,
        num_classes: int,
        model: dict,
        loss: dict,
        optimizer: dict,
        scheduler: dict,
        evaluation: dict,
        data: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.loss_cfg = loss
        self.net = build_reid_net(
            num_classes,
            attention=model["attention"],
            attention_kwargs=model.get("attention_kwargs") or {},
            last_stride=model.get("last_stride", 1),
            classifier=loss["classifier"],
            scale=loss.get("scale", 64.0),
            margin=loss.get("margin", 0.35),
        )
        self.channels_last = bool(model.get("channels_last", False))
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        # the training step's forward and losses, compiled into one graph with model.compile
        # (parameter names, and so checkpoints, stay the same; evaluation stays eager)
        self.compiled = bool(model.get("compile", False))
        self.step_losses = (
            torch.compile(self.forward_losses, mode=model.get("compile_mode"))
            if self.compiled
            else self.forward_losses
        )
        metric_kwargs = {k: evaluation.get(k, v) for k, v in METRIC_DEFAULTS.items()}
        self.val_metric = ReIDMetric(**metric_kwargs)
        self.test_metric = ReIDMetric(**metric_kwargs)
        self.flip = bool(evaluation.get("flip", False))
        self.eval_bf16 = str(evaluation.get("precision", "32")) == "bf16"
        self.test_results: dict[str, Any] = {}
        self._eval_order: Tensor | None = None
        self._eval_seen = 0

    def prepare_images(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` images in the network's memory format (channels-last if set)."""
        if self.channels_last:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def forward(self, images: Tensor) -> Tensor:
        """Retrieval embeddings ``(B, 2048)`` of images ``(B, 3, H, W)``."""
        return self.net.embed(self.prepare_images(images))

    def compute_losses(self, outputs: dict[str, Tensor], pids: Tensor) -> dict[str, Tensor]:
        """Each weighted loss term under its own name, plus ``loss`` (their sum)."""
        cfg = self.loss_cfg
        terms: dict[str, Tensor] = {}
        if cfg["ce_weight"] > 0:
            terms["loss_ce"] = cfg["ce_weight"] * cross_entropy_loss(
                outputs["logits"], pids, cfg.get("label_smoothing", 0.0)
            )
        if cfg["triplet_weight"] > 0:
            terms["loss_triplet"] = cfg["triplet_weight"] * triplet_loss(
                outputs["global"], pids, cfg["triplet_margin"], cfg.get("soft_margin", False)
            )
        if cfg.get("circle_pair_weight", 0) > 0:
            terms["loss_circle_pair"] = cfg["circle_pair_weight"] * pairwise_circle_loss(
                outputs["embedding"], pids, cfg["circle_pair_margin"], cfg["circle_pair_gamma"]
            )
        terms["loss"] = torch.stack(list(terms.values())).sum()
        return terms

    def forward_losses(self, images: Tensor, pids: Tensor) -> dict[str, Tensor]:
        """The training forward pass on ``(B, 3, H, W)`` images with labels ``(B,)``:
        :meth:`compute_losses`' terms plus ``acc`` (the batch's identity accuracy)."""
        outputs = self.net(self.prepare_images(images), pids)
        terms = self.compute_losses(outputs, pids)
        terms["acc"] = (outputs["scores"].argmax(1) == pids).float().mean()
        return terms

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        """Losses of one batch (:attr:`step_losses`: compiled with ``model.compile``); every
        term is logged without reading it on the host (the logger does every
        ``trainer.log_every_n_steps`` steps)."""
        images, pids, _camids, _ = batch
        if self.compiled:  # a new step: the CUDA graphs' previous outputs may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        terms = self.step_losses(images, pids)
        logged = {k: v.detach().clone() if self.compiled else v for k, v in terms.items()}
        accuracy = logged.pop("acc")
        self.log_dict({f"train/{k}": v for k, v in logged.items()}, prog_bar=True, on_epoch=True)
        self.log("train/acc", accuracy, on_epoch=True)
        return terms["loss"]

    def embed_for_eval(self, images: Tensor, flip: bool | None = None) -> Tensor:
        """Float32 retrieval embeddings ``(B, D)`` of ``(B, 3, H, W)`` images; with ``flip``
        (``None``: ``evaluation.flip``), the mean of the embeddings of the images and of their
        horizontal (width-axis) flips. Computed in float32 whatever the training precision's
        autocast, or in bf16 autocast with ``evaluation.precision=bf16``; so a checkpoint
        evaluated alone gives the same figures."""
        flip = self.flip if flip is None else flip
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=self.eval_bf16):
            embedding = self(images)
            if flip:
                embedding = (embedding + self(images.flip(-1))) / 2.0
        return embedding.float()

    def _start_eval_epoch(self, loaders: Any) -> None:
        self._eval_order = eval_sample_order(loaders)
        self._eval_seen = 0

    def on_validation_epoch_start(self) -> None:
        self._start_eval_epoch(self.trainer.val_dataloaders)

    def on_test_epoch_start(self) -> None:
        self._start_eval_epoch(self.trainer.test_dataloaders)

    def _update_metric(self, metric: ReIDMetric, batch: tuple[Tensor, ...]) -> None:
        images, pids, camids, is_query = batch
        indices = None
        if self._eval_order is not None:
            indices = self._eval_order[self._eval_seen : self._eval_seen + len(pids)]
            self._eval_seen += len(pids)
        metric.update(self.embed_for_eval(images), pids, camids, is_query, indices)

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self._update_metric(self.val_metric, batch)

    def _compute(self, metric: ReIDMetric, stage: str) -> dict[str, Tensor]:
        """``metric.compute()``; when a limit on the evaluation batches (``trainer.limit_val_
        batches`` / ``limit_test_batches``, ``fast_dev_run``) left no query with a true match,
        the error says which setting to raise."""
        try:
            return metric.compute()
        except ValueError as exc:
            limit = getattr(self.trainer, f"limit_{stage}_batches", 1.0)
            if isinstance(limit, int) or limit < 1.0:
                raise ValueError(
                    f"{exc}; trainer.limit_{stage}_batches={limit} evaluated too few images: "
                    "raise it (a fraction of the batches, or more of them)"
                ) from exc
            raise

    def on_validation_epoch_end(self) -> None:
        result = self._compute(self.val_metric, "val")
        self.log_dict({f"val/{k}": result[k].float() for k in METRIC_NAMES}, prog_bar=True)
        self.val_metric.reset()

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self._update_metric(self.test_metric, batch)

    def on_test_epoch_end(self) -> None:
        result = self._compute(self.test_metric, "test")
        self.log_dict({f"test/{k}": result[k].float() for k in METRIC_NAMES})
        self.test_results = {k: float(result[k]) for k in METRIC_NAMES}
        self.test_results["cmc"] = result["cmc"].tolist()
        self.test_metric.reset()

    def configure_optimizers(self) -> dict:
        settings = dict(self.hparams.optimizer)
        fused = settings.pop("fused", None)  # auto: fused (one kernel) when on CUDA
        if fused == "auto":
            fused = True if all(p.is_cuda for p in self.parameters()) else None
        extra = {} if fused is None else {"fused": bool(fused)}
        optimizer = instantiate(settings)(params=self.parameters(), **extra)
        sched = self.hparams.scheduler
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda epoch: warmup_step_factor(
                epoch,
                sched["warmup_epochs"],
                sched["warmup_factor"],
                list(sched["milestones"]),
                sched["gamma"],
            ),
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }
