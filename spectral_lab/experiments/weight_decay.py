"""Weight decay (SPEC section 2): the grokking run at several weight decays, on any sweep engine.

* :class:`WeightDecaySweep` - the runs; ``configs()`` gives one
  :class:`~spectral_lab.experiments.grokking.GrokkingConfig` per weight decay.
* :func:`run_weight_decay_sweep` - trains them through :func:`spectral_lab.sweep`
  (serial by default; ``engine="processes"``, ``"local"``, ``"dask"`` or ``"ray"`` spread
  the runs over processes or machines). With an ``out`` folder every run lands as
  ``out/wd_<wd>-<config key>.npz`` when it finishes and keeps a checkpoint under
  ``out/partial/`` while it runs, so a sweep interrupted on a GPU resumes where it
  stopped, run by run and step by step.
* :func:`load_or_run_sweep` - the chapter's entry: the paper-scale sweep from disk
  when all of it is there, else the quick one.
* :func:`sweep_summary` - what the chapter reads from the records.

Chapter: "Weight decay" (book/weight_decay.ipynb).
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, ClassVar, Sequence

import numpy as np

from ..config import Experiment
from ..curves import time_to_generalize, total_weight_norm
from ..record import RunRecord
from ..sweeps import locked_store, partial_path, result_path, sweep
from .grokking import (
    PAPER_WEIGHT_DECAYS,
    QUICK_SETTING,
    GrokkingConfig,
    ModularSetup,
    checkpoint_path,
    train,
)

__all__ = [
    "WeightDecaySweep",
    "train_record",
    "sweep_label",
    "sweep_path",
    "sweep_outputs",
    "run_weight_decay_sweep",
    "load_or_run_sweep",
    "sweep_summary",
    "EXPERIMENT",
]


@dataclass(frozen=True)
class WeightDecaySweep(ModularSetup):
    """The same run at each of ``weight_decays``: :meth:`configs` gives one :class:`GrokkingConfig`
    each."""

    experiment: ClassVar[str] = "weight_decay"
    weight_decays: tuple[float, ...] = PAPER_WEIGHT_DECAYS

    non_negative: ClassVar = ("weight_decays",)

    def validate(self) -> None:
        super().validate()
        if len(set(self.weight_decays)) != len(self.weight_decays):
            raise ValueError(f"weight decays must be distinct, got {self.weight_decays}")

    def configs(self) -> list[GrokkingConfig]:
        """One grokking config per weight decay, in the sweep's order, named
        ``"<preset>/wd=<wd>"``."""
        shared = {f.name: getattr(self, f.name) for f in fields(ModularSetup)}
        return [
            GrokkingConfig(**dict(shared, preset=f"{self.preset}/wd={wd:g}", weight_decay=wd))
            for wd in self.weight_decays
        ]

    @classmethod
    def quick(cls) -> WeightDecaySweep:
        """Six weight decays from 0 to 3 on the quick grokking setting (1,200 steps): about 3
        minutes one after the other on one core, 90 s with ``engine="processes"`` on 2 cores."""
        return cls(preset="quick", **_QUICK_SWEEP)

    @classmethod
    def full(cls) -> WeightDecaySweep:
        """The paper's weight decays {0, 1e-4, 1e-3, 1e-2, 0.1, 1, 10} on the paper's grokking
        setting."""
        return cls(preset="full")

    @classmethod
    def presets(cls) -> dict[str, Callable[[], WeightDecaySweep]]:
        return {"quick": cls.quick, "full": cls.full}


#: The quick sweep: the quick grokking setting for 1,200 steps, snapshots every 100 (a sweep reads
#: final values; time to generalize comes from the evaluations every 25). Measured on 2 cores
#: (2026-11, load 1.5): six runs in 175 s serial, 87 s with engine="processes" (one run per core).
_QUICK_SWEEP = dict(
    {k: v for k, v in QUICK_SETTING.items() if k != "weight_decay"},
    steps=1200,
    track_every=100,
    weight_decays=(0.0, 1e-3, 1e-2, 0.1, 1.0, 3.0),
)


def train_record(config: GrokkingConfig, out: str | os.PathLike | None = None) -> RunRecord:
    """``train(config).record``, without a progress bar: the ``run`` of the sweep.

    With ``out`` the run keeps its record and a checkpoint there as it goes,
    and continues from them when they are there (an interrupted sweep).
    """
    resume = out is not None and Path(out).exists() and checkpoint_path(out).exists()
    return train(config, progress=False, out=out, resume=resume).record


def sweep_label(config) -> str:
    """The readable part of a run's file name: ``wd_<weight decay>``."""
    return f"wd_{config.weight_decay:g}"


def sweep_path(out: str | os.PathLike, config) -> Path:
    """The record of the run ``config`` (one of ``sweep.configs()``) in the folder ``out``."""
    return result_path(out, config, label=sweep_label)


def sweep_outputs(weight_decay_sweep, out: str | os.PathLike) -> list[Path]:
    """Every file a sweep may write under ``out``: each run's record, and its work in progress."""
    paths = []
    for config in weight_decay_sweep.configs():
        partial = partial_path(out, config, label=sweep_label)
        paths += [sweep_path(out, config), partial, checkpoint_path(partial)]
    return paths


def run_weight_decay_sweep(
    weight_decay_sweep,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool | None = None,
    engine: str = "serial",
    **engine_options,
) -> list[RunRecord]:
    """Train every run of the sweep; returns their records in the order of ``weight_decays``.

    With ``out`` (a folder) each run saves to :func:`sweep_path`. With
    ``resume=True`` finished runs are read back and interrupted ones continue
    from their checkpoints; without it, a sweep's earlier files in ``out``
    are replaced. ``engine`` and ``engine_options`` (``address``,
    ``workers``, ``gpus``, ``retries``) go to :func:`spectral_lab.sweep`.
    """
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise ValueError(
            f"a sweep writes one record per weight decay into a folder; {out} is a file"
        )
    # the store's lock is held from the first deletion to the last result (the sweep re-enters it)
    with nullcontext() if out is None else locked_store(out):
        if out is not None and not resume:
            for path in sweep_outputs(weight_decay_sweep, out):
                path.unlink(missing_ok=True)
        return sweep(
            weight_decay_sweep.configs(),
            train_record,
            engine=engine,
            out_dir=out,
            progress=progress,
            label=sweep_label,
            **engine_options,
        )


def load_or_run_sweep(
    weight_decay_sweep,
    out: str | os.PathLike,
    fallback=None,
    progress: bool | None = None,
    engine: str = "serial",
    **engine_options,
) -> list[RunRecord]:
    """The records of the sweep from the folder ``out`` if every run is there and finished;
    otherwise ``fallback`` (default: the sweep itself) run here on ``engine`` (serial by
    default; ``"processes"`` puts every core of this machine to work), without writing anything.

    All or nothing, so that one figure never mixes paper-scale and quick runs.
    A record belongs to a run when its file name carries the run's config key
    (every setting but the device), so a record of other settings is never read.
    """
    paths = [sweep_path(out, config) for config in weight_decay_sweep.configs()]
    there = sum(path.exists() for path in paths)
    if there == len(paths):
        return [RunRecord.load(path) for path in paths]
    if there:
        print(
            f"{there} of {len(paths)} runs of the {weight_decay_sweep.preset!r} sweep are in "
            f"{out}; "
            "running the sweep here instead"
        )
    return run_weight_decay_sweep(
        weight_decay_sweep if fallback is None else fallback,
        progress=progress,
        engine=engine,
        **engine_options,
    )


def _final_scalar(record: RunRecord, name: str) -> float:
    values = record.scalars.get(name)
    return float(values[-1]) if values is not None and values.size else float("nan")


def sweep_summary(records: Sequence[RunRecord], threshold: float = 0.95) -> dict[str, np.ndarray]:
    """One entry per run of a sweep, as plain arrays in the order of ``records``.

    Returns ``weight_decay (n,)``, ``layers (L,)``, ``norm_eff_rank (n, L)``
    (final, per matrix), ``mean_norm_eff_rank (n,)``, ``weight_norm (n,)``
    (final, all matrices), ``time_to_generalize (n,)`` (NaN: never reached
    ``threshold``), and the final ``val_loss``, ``val_acc``,
    ``val_loss_svd_top`` and ``val_loss_svd_bottom`` ``(n,)``.
    """
    if not records:
        raise ValueError("sweep_summary needs at least one record")
    layers = records[0].layers
    if any(r.layers != layers for r in records):
        raise ValueError("the records of a sweep must track the same matrices")
    ranks = np.stack([r.norm_eff_rank()[-1] for r in records])  # (n, L)
    summary = {
        "weight_decay": np.array(
            [r.config.get("weight_decay", np.nan) for r in records], dtype=np.float64
        ),
        "layers": np.array(layers),
        "norm_eff_rank": ranks,
        "mean_norm_eff_rank": ranks.mean(axis=1),
        "weight_norm": np.array([total_weight_norm(r)[-1] for r in records]),
        "time_to_generalize": np.array([time_to_generalize(r, threshold) for r in records]),
    }
    for name in ("val_loss", "val_acc", "val_loss_svd_top", "val_loss_svd_bottom"):
        summary[name] = np.array([_final_scalar(r, name) for r in records])
    return summary


# ---- the command line: python -m spectral_lab run|sweep weight_decay --out runs/wd ---------------
def _run_for_cli(config, out, resume=False, progress=None):
    return run_weight_decay_sweep(config, out=out, resume=resume, progress=progress)


def _sweep_for_cli(config, out, progress=None, **engine):
    return run_weight_decay_sweep(config, out=out, resume=True, progress=progress, **engine)


EXPERIMENT = Experiment(
    WeightDecaySweep,
    _run_for_cli,
    sweep_outputs,
    "",
    "a folder with one record per weight decay (checkpoints in partial/ while running)",
    _sweep_for_cli,
)
