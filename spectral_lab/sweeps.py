"""Running a weight-decay sweep: one grokking run per weight decay, on any engine of
:func:`~spectral_lab.sweep`.

:func:`run_weight_decay_sweep` trains the runs of a
:class:`~spectral_lab.experiments.WeightDecaySweep` through
:func:`spectral_lab.distributed.sweep` (serial by default; ``engine="local"``,
``"dask"`` or ``"ray"`` spread the runs over processes or machines). With an
``out`` folder every run lands as ``out/wd_<wd>-<config key>.npz`` when it
finishes and keeps a checkpoint under ``out/partial/`` while it runs, so a
sweep interrupted on a GPU resumes where it stopped, run by run and step by
step. :func:`load_or_run_sweep` is the chapters' entry: the paper-scale sweep
from disk when all of it is there, else the quick one. Read the records with
:func:`spectral_lab.analysis.sweep_summary`.
"""

from __future__ import annotations

import os
from pathlib import Path

from .distributed import partial_path, result_path, sweep, train_record
from .record import RunRecord
from .training import checkpoint_path

__all__ = [
    "sweep_label",
    "sweep_path",
    "sweep_outputs",
    "run_weight_decay_sweep",
    "load_or_run_sweep",
]


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
    weight_decay_sweep, out: str | os.PathLike, fallback=None, progress: bool | None = None
) -> list[RunRecord]:
    """The records of the sweep from the folder ``out`` if every run is there and finished;
    otherwise ``fallback`` (default: the sweep itself) run in place, serially, without writing
    anything.

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
        weight_decay_sweep if fallback is None else fallback, progress=progress
    )
