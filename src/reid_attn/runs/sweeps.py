"""The jobs of one or several ablation sweep directories, merged into one set of rows.

A sweep directory is what ``python -m reid_attn.train --multirun experiment=ablation...``
writes: ``multirun.yaml`` and one sub-directory per job (``<row>-seed<seed>``) holding
``config.yaml`` (written when the job starts) and ``metrics.json`` (written when it ends).
A sweep too long for one session runs in parts (one seed, or some rows, per part), each
part in a directory of its own; :func:`collect` merges them and refuses, with one message
naming the jobs and directories:

* a (row, seed) job finished in more than one directory (which copy would count?);
* a job some directory's ``multirun.yaml`` expects that is finished in none of them
  (missing, or unfinished: no ``metrics.json``); a job a part left unfinished counts once
  another directory holds it finished;
* rows that do not all hold the seeds of the row with the fewest (rows may have more seeds
  than others, e.g. the two rows of the headline comparison);
* jobs whose settings differ beyond their row and seed (data, schedule, trainer, ...), such
  as parts run with different epochs;
* jobs trained at different resolved precisions (their ``machine.json``).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from reid_attn.metrics import METRIC_NAMES

#: Config keys (and their sub-keys) that differ between the jobs of one ablation: the row
#: (its attention and loss), the seed, the run's folder; and keys that only say where or how
#: fast a job ran. Every other key must be equal in the jobs merged into one table.
PER_JOB_KEYS = (
    "ablation",
    "model.attention",
    "model.attention_kwargs",
    "loss",
    "seed",
    "data.seed",
    "output_dir",
    "resume",
    "data.root",
    "data.num_workers",
    "data.eval_batch_size",
    "data.verify_images",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
)


class SweepError(Exception):
    """Sweep directories that are missing, empty, unfinished, overlapping or not mergeable."""


@dataclass
class AblationRow:
    """All seeds of one ablation row; metric values in percent; ``jobs``: each seed's job
    directory, in the order of ``seeds``."""

    row: str
    name: str
    order: int
    attention: str
    loss: str
    paper_rank1: float | None
    paper_mAP: float | None
    seeds: list[int] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in METRIC_NAMES})
    jobs: list[Path] = field(default_factory=list)

    def mean(self, key: str) -> float:
        """Mean over seeds (percent)."""
        return float(np.mean(self.values[key]))

    def std(self, key: str) -> float:
        """Sample standard deviation over seeds (percent); 0 for a single seed."""
        vals = self.values[key]
        return float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0


def _sweep_values(multirun: dict, key: str) -> list[str] | None:
    """Values of ``key`` the sweep ran over: a command-line sweep overrides the sweeper's."""
    for override in multirun.get("hydra", {}).get("overrides", {}).get("task", []):
        name, _, value = override.partition("=")
        if name.lstrip("+") == key:
            return [v.strip() for v in value.split(",")]
    params = multirun.get("hydra", {}).get("sweeper", {}).get("params") or {}
    if key in params:
        return [v.strip() for v in str(params[key]).split(",")]
    return None


def expected_jobs(sweep_dir: Path) -> list[str] | None:
    """Sub-directory names the sweep should contain (``<row>-seed<seed>``), from
    ``multirun.yaml``; None when the file does not say."""
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return None
    multirun = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    rows, seeds = _sweep_values(multirun, "ablation"), _sweep_values(multirun, "seed")
    if rows is None:
        raise SweepError(
            f"{sweep_dir} is not an ablation sweep: multirun.yaml sweeps no 'ablation'"
        )
    if seeds is None:
        seeds = [str(multirun.get("seed", 0))]
    return [f"{row}-seed{seed}" for row, seed in itertools.product(rows, seeds)]


@dataclass
class Job:
    """One finished job: its sweep directory, job directory and saved config."""

    sweep_dir: Path
    path: Path
    cfg: DictConfig

    @property
    def key(self) -> str:
        """``<row>-seed<seed>``, from the job's own config."""
        return f"{self.cfg.ablation.row}-seed{self.cfg.seed}"


def _finished_jobs(sweep_dir: Path) -> tuple[list[Job], list[str]]:
    """The finished jobs of one sweep directory and the names of its expected, unfinished
    ones."""
    if not sweep_dir.is_dir():
        raise SweepError(f"sweep directory {sweep_dir} does not exist")
    job_dirs = sorted(p.parent for p in sweep_dir.glob("*/config.yaml"))
    if not job_dirs:
        raise SweepError(
            f"{sweep_dir} holds no jobs (no */config.yaml); run "
            "`python -m reid_attn.train --multirun experiment=ablation` first"
        )
    expected = expected_jobs(sweep_dir) or [p.name for p in job_dirs]
    jobs, unfinished = [], []
    for name in expected:
        path = sweep_dir / name
        if not (path / "metrics.json").is_file():
            unfinished.append(name)
            continue
        cfg = OmegaConf.load(path / "config.yaml")
        if "ablation" not in cfg or cfg.ablation is None:
            raise SweepError(f"{path} is not an ablation job (no 'ablation' config)")
        jobs.append(Job(sweep_dir, path, cfg))
    return jobs, unfinished


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def job_setting(cfg: DictConfig) -> dict[str, Any]:
    """The job's config as dotted keys, without :data:`PER_JOB_KEYS`: what every job of one
    table must share."""
    flat = _flatten(OmegaConf.to_container(cfg, resolve=True))
    return {
        key: value
        for key, value in flat.items()
        if not any(key == k or key.startswith(k + ".") for k in PER_JOB_KEYS)
    }


def _check_same_setting(jobs: list[Job]) -> None:
    reference = jobs[0]
    setting = job_setting(reference.cfg)
    for job in jobs[1:]:
        other = job_setting(job.cfg)
        differing = sorted(
            k for k in setting.keys() | other.keys() if setting.get(k) != other.get(k)
        )
        if differing:
            key = differing[0]
            more = f" (and {len(differing) - 1} more keys)" if len(differing) > 1 else ""
            raise SweepError(
                f"jobs differ in their setting beyond row and seed: {key} is "
                f"{setting.get(key)!r} in {reference.path} but {other.get(key)!r} in "
                f"{job.path}{more}; merge only sweeps run with the same settings"
            )


def _check_seed_sets(jobs: list[Job]) -> None:
    """Rows may have different seed counts (more seeds for the rows a comparison needs), but
    every row must hold the seeds of the row with the fewest: means over disjoint seed sets
    would differ by the seeds as much as by the rows."""
    seeds_by_row: dict[str, set[int]] = {}
    for job in jobs:
        seeds_by_row.setdefault(job.cfg.ablation.row, set()).add(int(job.cfg.seed))
    core = min(seeds_by_row.values(), key=lambda seeds: (len(seeds), sorted(seeds)))
    lacking = [
        f"{row}-seed{seed}" for row, seeds in seeds_by_row.items() for seed in sorted(core - seeds)
    ]
    if lacking:
        raise SweepError(
            f"rows do not share the seeds {', '.join(map(str, sorted(core)))} of the row with "
            f"the fewest: missing jobs {', '.join(lacking)}; run them, or leave out the folders "
            "that add the other seeds"
        )


def job_machines(job_dir: Path) -> list[dict[str, Any]]:
    """The machines a job ran on (its ``machine.json``: one entry per start, resumes
    included); [] for a job written before runs recorded them."""
    path = Path(job_dir) / "machine.json"
    return json.loads(path.read_text()) if path.is_file() else []


def _check_same_precision(jobs: list[Job]) -> None:
    """Every job must have trained at one resolved precision (``trainer.precision=auto``
    resolves to bf16-mixed on some CPUs and 32-true on others: equal configs, different
    arithmetic)."""
    seen: dict[str, Path] = {}
    for job in jobs:
        for machine in job_machines(job.path):
            seen.setdefault(str(machine.get("precision")), job.path)
    if len(seen) > 1:
        listed = ", ".join(f"{precision} (e.g. {path})" for precision, path in seen.items())
        raise SweepError(
            f"jobs trained at different precisions: {listed}; one table must not mix them "
            "(fix trainer.precision, e.g. 32-true, and rerun the odd part)"
        )


def collect(sweep_dirs: str | Path | Sequence[str | Path]) -> list[AblationRow]:
    """Read and merge the finished jobs of one or several sweep directories; rows sorted by
    their configured order, seeds ascending.

    Raises :class:`SweepError` on a missing or empty directory, and on duplicate, missing or
    unfinished jobs, unequal seed sets or unequal settings (see the module docstring); the
    message names the jobs and directories."""
    if isinstance(sweep_dirs, (str, Path)):
        sweep_dirs = [sweep_dirs]
    dirs = [Path(d) for d in sweep_dirs]
    if not dirs:
        raise SweepError("no sweep directory given")
    by_key: dict[str, list[Job]] = {}
    unfinished: dict[Path, list[str]] = {}
    expected_count = 0
    for sweep_dir in dirs:
        jobs, missing = _finished_jobs(sweep_dir)
        expected_count += len(jobs) + len(missing)
        unfinished[sweep_dir] = missing
        for job in jobs:
            by_key.setdefault(job.key, []).append(job)
    duplicates = {key: jobs for key, jobs in by_key.items() if len(jobs) > 1}
    if duplicates:
        listed = "; ".join(
            f"{key} in {', '.join(str(j.sweep_dir) for j in jobs)}"
            for key, jobs in duplicates.items()
        )
        raise SweepError(
            f"{len(duplicates)} jobs are finished in more than one folder: {listed}; "
            "merge each job once (leave out or delete one copy)"
        )
    missing = {d: [n for n in names if n not in by_key] for d, names in unfinished.items()}
    missing = {d: names for d, names in missing.items() if names}
    if missing:
        count = sum(len(names) for names in missing.values())
        listed = "; ".join(f"{d}: {', '.join(names)}" for d, names in missing.items())
        raise SweepError(
            f"{count} of {expected_count} expected jobs have no metrics.json in any folder "
            f"(missing or unfinished): {listed}"
        )
    jobs = [job_list[0] for job_list in by_key.values()]
    _check_seed_sets(jobs)
    _check_same_setting(jobs)
    _check_same_precision(jobs)
    return _rows(jobs)


def _rows(jobs: list[Job]) -> list[AblationRow]:
    rows: dict[str, AblationRow] = {}
    for job in sorted(jobs, key=lambda j: int(j.cfg.seed)):
        cfg, ab = job.cfg, job.cfg.ablation
        row = rows.setdefault(
            ab.row,
            AblationRow(
                ab.row,
                ab.name,
                ab.order,
                cfg.model.attention,
                loss_name(cfg),
                ab.paper_rank1,
                ab.paper_mAP,
            ),
        )
        metrics = json.loads((job.path / "metrics.json").read_text())
        row.seeds.append(int(cfg.seed))
        row.jobs.append(job.path)
        for key in METRIC_NAMES:
            row.values[key].append(100.0 * float(metrics[key]))
    return sorted(rows.values(), key=lambda r: r.order)


def loss_name(cfg: DictConfig) -> str:
    """The job's loss terms in words, e.g. ``circle-CE + triplet``."""
    loss = cfg.loss
    parts = [("circle-CE" if loss.classifier == "circle" else "CE")] if loss.ce_weight > 0 else []
    if loss.triplet_weight > 0:
        parts.append("triplet")
    if loss.circle_pair_weight > 0:
        parts.append("pair-circle")
    return " + ".join(parts)


def sweep_config(rows: list[AblationRow]) -> DictConfig:
    """The saved config of the first job: the setting all merged jobs share."""
    return OmegaConf.load(rows[0].jobs[0] / "config.yaml")
