"""Reading run records: when a run generalizes, when its rank falls, and a weight-decay sweep in
columns.

Plain functions from :class:`~spectral_lab.record.RunRecord` to numbers and
arrays; no models, no torch. The grokking chapter asks whether the fall of the
effective rank coincides with the jump in validation accuracy
(:func:`time_to_generalize`, :func:`rank_drop_step`); the weight-decay chapter
puts one row per run in a table (:func:`sweep_summary`).
"""

from __future__ import annotations

import math
from typing import Iterable, NamedTuple, Sequence

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
    "RankFallPhases",
    "rank_fall_phases",
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


class RankFallPhases(NamedTuple):
    """How the mean NormEffRank falls around the validation jump (:func:`rank_fall_phases`).

    ``fit``: the step the training accuracy first reaches its threshold. ``jump``: the window
    (start, end steps) after ``fit`` over which the validation accuracy rises most. ``rest``: the
    window between ``fit`` and the jump over which the rank falls least, ``None`` when the jump
    follows the fit too closely to fit one between. ``rate``: the rank's fall per 1,000 steps,
    ``fitting`` the fastest window before the rest (or the jump), ``rest`` and ``jump`` over those
    windows (a rise counts negative).
    """

    fit: int
    jump: tuple[int, int]
    rest: tuple[int, int] | None
    rate: dict[str, float]

    @property
    def two_phase(self) -> bool:
        """The rank falls while the training set is fitted, rests, and falls again during the
        validation jump: the rest's rate is under a third of the rates before and during the
        jump."""
        if self.rest is None:
            return False
        slowest = min(self.rate["fitting"], self.rate["jump"])
        return slowest > 0 and self.rate["rest"] < slowest / 3

    @property
    def falls_during_jump(self) -> bool:
        """The rank falls while the validation accuracy rises most."""
        return self.rate["jump"] > 0


def rank_fall_phases(
    record: RunRecord,
    window: int = 6,
    fit_threshold: float = 0.99,
    layers: Iterable[str] | None = None,
) -> RankFallPhases:
    """Where the mean NormEffRank falls: while the training set is fitted, during the validation
    jump, and whether it rests between (see :class:`RankFallPhases`).

    When generalisation comes late, the rank can fall in two phases: while the training set is
    fitted, then, after a rest, again while the validation accuracy jumps; the step at which the
    rank is half way down (:func:`rank_drop_step`) then falls in the first phase, far from the
    jump. Windows span ``window`` snapshot intervals. Needs ``train_acc`` and ``val_acc`` in the
    record; raises ``ValueError`` if the run never fits its training set or is too short after
    the fit for one window.
    """
    steps = record.steps
    rank = mean_norm_eff_rank(record, layers)
    _, val = curve(record, "val_acc")
    fit = time_to_generalize(record, fit_threshold, metric="train_acc")
    if math.isnan(fit):
        raise ValueError(f"the run never reaches training accuracy {fit_threshold:g}")
    first = int(np.searchsorted(steps, fit))
    starts = np.arange(first, steps.size - window)
    if not starts.size:
        raise ValueError(
            f"the record has fewer than {window} snapshot intervals after the fit at step "
            f"{int(fit)}: pass a smaller window"
        )

    def rate(a: int, b: int) -> float:
        return 1000 * float(rank[a] - rank[b]) / float(steps[b] - steps[a])

    jump = int(starts[np.argmax(val[starts + window] - val[starts])])
    between = np.arange(first, jump - window + 1)
    rest = int(between[np.argmin([rate(a, a + window) for a in between])]) if between.size else None
    before = np.arange(0, (rest if rest is not None else jump) - window + 1)
    fitting = max((rate(a, a + window) for a in before), default=rate(0, first))
    rates = {
        "fitting": fitting,
        "rest": float("nan") if rest is None else rate(rest, rest + window),
        "jump": rate(jump, jump + window),
    }

    def span(a: int) -> tuple[int, int]:
        return int(steps[a]), int(steps[a + window])

    return RankFallPhases(int(fit), span(jump), None if rest is None else span(rest), rates)
