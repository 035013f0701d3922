"""Reading run records: when a run generalizes, when its rank falls, and a weight-decay sweep in
columns.

Plain functions from :class:`~spectral_lab.record.RunRecord` to numbers and
arrays; no models, no torch. The grokking chapter asks whether the fall of the
effective rank coincides with the jump in validation accuracy
(:func:`time_to_generalize`, :func:`rank_drop_step`); the weight-decay chapter
puts one row per run in a table (:func:`sweep_summary`).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from .record import RunRecord

__all__ = [
    "curve",
    "time_to_generalize",
    "halfway_step",
    "rank_drop_step",
    "mean_norm_eff_rank",
    "final_norm_eff_rank",
    "total_weight_norm",
]


def curve(record: RunRecord, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` of a scalar such as ``"val_acc"``: the evaluation history if the record
    has
    one (every ``eval_every`` steps), else the values at the snapshots."""
    history = record.meta.get("history") or {}
    if name in history and len(history.get("step", [])):
        return np.asarray(history["step"], dtype=np.int64), np.asarray(
            history[name], dtype=np.float64
        )
    if name not in record.scalars:
        raise KeyError(
            f"the record has no scalar {name!r}; it has "
            f"{', '.join(sorted(record.scalars)) or 'none'}"
        )
    return record.steps, record.scalars[name]


def time_to_generalize(
    record: RunRecord, threshold: float = 0.95, metric: str = "val_acc"
) -> float:
    """The first step at which ``metric`` reaches ``threshold``; NaN if it never does."""
    steps, values = curve(record, metric)
    reached = np.flatnonzero(values >= threshold)
    return float(steps[reached[0]]) if reached.size else float("nan")


def halfway_step(steps: Sequence[int], values: Sequence[float]) -> float:
    """The first step at which ``values`` has covered half the way from its first to its last value.

    A scale-free "when did it change": for a rising curve the first step with
    ``v >= (v_0 + v_end) / 2``, for a falling one the first with ``v <=`` it.
    NaN if the curve is flat.
    """
    steps, values = np.asarray(steps), np.asarray(values, dtype=np.float64)
    if steps.shape != values.shape or steps.ndim != 1 or steps.size == 0:
        raise ValueError(
            f"steps and values must be 1-D of the same length, got {steps.shape} and {values.shape}"
        )
    start, end = values[0], values[-1]
    if start == end:
        return float("nan")
    middle = (start + end) / 2
    crossed = values >= middle if end > start else values <= middle
    return float(steps[np.flatnonzero(crossed)[0]])


def mean_norm_eff_rank(record: RunRecord, layers: Iterable[str] | None = None) -> np.ndarray:
    """NormEffRank averaged over the matrices at each snapshot, ``(T,)``."""
    return record.norm_eff_rank(layers).mean(axis=1)


def rank_drop_step(record: RunRecord, layers: Iterable[str] | None = None) -> float:
    """The step at which the mean NormEffRank is half way from its start to its end
    (:func:`halfway_step`)."""
    return halfway_step(record.steps, mean_norm_eff_rank(record, layers))


def final_norm_eff_rank(record: RunRecord) -> dict[str, float]:
    """NormEffRank of every matrix at the last snapshot, ``{layer: value}``."""
    last = record.norm_eff_rank()[-1]
    return dict(zip(record.layers, map(float, last)))


def total_weight_norm(record: RunRecord) -> np.ndarray:
    """``sqrt(sum_l ||W_l||_F^2)`` over all tracked matrices at each snapshot, ``(T,)``."""
    return np.sqrt((record.fro_norm() ** 2).sum(axis=1))
