"""Running a weight-decay sweep: one grokking run per weight decay, one after the other.

:func:`run_weight_decay_sweep` trains the runs of a
:class:`~spectral_lab.experiments.WeightDecaySweep`; with an ``out`` folder each
run writes its own record (and checkpoint), so a sweep interrupted on a GPU
resumes where it stopped. :func:`load_or_run_sweep` is the chapters' entry:
the paper-scale sweep from disk when all of it is there, else the quick one.
Read the records with :func:`spectral_lab.analysis.sweep_summary`.
"""

from __future__ import annotations

import os
from pathlib import Path

from .record import RunRecord
from .training import checkpoint_path, train

__all__ = ["sweep_path", "sweep_outputs", "run_weight_decay_sweep", "load_or_run_sweep"]


def sweep_path(out: str | os.PathLike, weight_decay: float) -> Path:
    """The record of one run of a sweep written to the folder ``out``: ``out/wd_<wd>.npz``."""
    return Path(out) / f"wd_{weight_decay:g}.npz"


def sweep_outputs(sweep, out: str | os.PathLike) -> list[Path]:
    """Every file a sweep writes under ``out``: each run's record and checkpoint."""
    paths = [sweep_path(out, wd) for wd in sweep.weight_decays]
    return paths + [checkpoint_path(p) for p in paths]


def run_weight_decay_sweep(sweep, out: str | os.PathLike | None = None, resume: bool = False,
                           progress: bool | None = None) -> list[RunRecord]:
    """Train every run of ``sweep`` in turn; returns their records in the order of ``sweep.weight_decays``.

    With ``out`` (a folder) each run saves to :func:`sweep_path`; with
    ``resume=True`` finished runs are read back, an interrupted one continues
    from its checkpoint and the rest start fresh.
    """
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise ValueError(f"a sweep writes one record per weight decay into a folder; {out} is a file")
    records = []
    for config in sweep.configs():
        path = None if out is None else sweep_path(out, config.weight_decay)
        started = path is not None and path.exists() and checkpoint_path(path).exists()
        result = train(config, progress=progress, out=path, resume=resume and started)
        records.append(result.record)
    return records


def load_or_run_sweep(sweep, out: str | os.PathLike, fallback=None, progress: bool | None = None) -> list[RunRecord]:
    """The records of ``sweep`` from the folder ``out`` if every run is there, finished and matching;
    otherwise ``fallback`` (default: ``sweep``) run in place, without writing anything.

    All or nothing, so that one figure never mixes paper-scale and quick runs.
    """
    records = []
    for config in sweep.configs():
        path = sweep_path(out, config.weight_decay)
        if not path.exists():
            break
        record = RunRecord.load(path)
        if config.differences(record.config) or not len(record) or int(record.steps[-1]) != config.steps:
            print(f"{path} is not a finished run of the {sweep.preset!r} sweep; running the sweep here instead")
            break
        records.append(record)
    else:
        return records
    return run_weight_decay_sweep(sweep if fallback is None else fallback, progress=progress)
