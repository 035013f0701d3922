"""Memorization: one network trained on true and on randomized labels (SPEC section 2,
"Memorization").

Zhang et al. (2017) showed that a network fits random labels as completely
as true ones. Yunis et al. (section 6 of the paper) ask what the weights do
differently: with true labels the middle layers end at a *lower* effective
rank and consecutive layers stay aligned; with random labels the rank stays
higher and the alignment appears, then fades. Section 7.1 adds that the top
singular vectors settle before the others.

* :class:`MemorizationConfig` - the run, and the label fractions to compare
  (``quick()`` for a 2-core CPU, ``full()`` for the paper's 4-layer MLP).
* :func:`run_memorization` - one :func:`~spectral_lab.experiments.classifier.fit` per label
  fraction, everything else equal; returns ``{fraction: RunRecord}``.
* :func:`middle_layers`, :func:`fitted_step`, :func:`rank_at_fit` - the
  middle-layer NormEffRank once the training set is fitted.
* :func:`settling_steps` - when each diagonal entry of ``S(t)`` (agreement
  with the final step) settles.

Chapter: "Memorization" (book/memorization.ipynb).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np

from ..config import Experiment
from ..record import RunRecord
from ..sweeps import locked_store, result_path, sweep
from .classifier import ClassifierConfig, fit

__all__ = [
    "MemorizationConfig",
    "run_memorization",
    "record_path",
    "fraction_label",
    "train_memorization_run",
    "EXPERIMENT",
    "memorization_outputs",
    "middle_layers",
    "fitted_step",
    "rank_at_fit",
    "settling_steps",
]


@dataclass(frozen=True)
class MemorizationConfig(ClassifierConfig):
    """The same classifier trained once per fraction of randomized training labels.

    Every field of :class:`~spectral_lab.experiments.classifier.ClassifierConfig` describes
    each run; ``label_fractions`` lists the fractions of training labels that
    are randomized, one run per fraction (0: the true labels, 1: every label
    permuted; ``label_seed`` fixes which labels and how). ``label_noise`` is
    set per run by :meth:`configs` and must stay 0 here.

    ``MemorizationConfig()`` is the quick setting (see :meth:`quick`): the
    paper's recipe (SGD with momentum 0.9, a constant learning rate, no weight
    decay, batch 128) on MNIST-1D with the MLP 40-256-256-10.
    """

    experiment: ClassVar[str] = "memorization"
    dataset: str = "mnist1d"
    hidden: tuple[int, ...] = (256, 256)
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    batch_size: int = 128
    epochs: int = 100
    eval_every: int = 62  # two epochs of 31 minibatches
    track_every: int = 62
    label_fractions: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)

    def validate(self) -> None:
        super().validate()
        if self.label_noise != 0.0:
            raise ValueError(
                "label_noise is set per run from label_fractions; leave it at 0 and list the "
                f"fractions instead, e.g. label_fractions=(0.0, {self.label_noise:g})"
            )
        fractions = self.label_fractions
        if not fractions:
            raise ValueError("label_fractions must list at least one fraction of randomized labels")
        for fraction in fractions:
            if not 0.0 <= fraction <= 1.0:
                raise ValueError(
                    f"label_fractions must lie in [0, 1] (0: true labels, 1: all random), "
                    f"got {fraction:g}"
                )
        if len(set(fractions)) != len(fractions):
            raise ValueError(f"label_fractions must not repeat a fraction, got {fractions}")

    def configs(self, fractions=None) -> list[ClassifierConfig]:
        """One :class:`~spectral_lab.experiments.classifier.ClassifierConfig` per label fraction,
        everything
        else equal.

        ``fractions`` (default: ``label_fractions``) must be a subset of
        ``label_fractions``. Each config's preset reads ``"<preset>/labels=<fraction>"``.
        """
        chosen = self._check_fractions(fractions)
        shared = {
            f.name: getattr(self, f.name)
            for f in fields(ClassifierConfig)
            if f.name not in ("preset", "label_noise")
        }
        return [
            ClassifierConfig(**shared, preset=f"{self.preset}/labels={f:g}", label_noise=f)
            for f in chosen
        ]

    def _check_fractions(self, fractions) -> tuple[float, ...]:
        if fractions is None:
            return self.label_fractions
        chosen = tuple(float(f) for f in fractions)
        unknown = [f for f in chosen if f not in self.label_fractions]
        if not chosen or unknown:
            raise ValueError(
                f"fractions must be a non-empty subset of label_fractions {self.label_fractions}, "
                f"got {tuple(fractions)}"
            )
        return chosen

    # ---- presets ---------------------------------------------------------------------------------
    @classmethod
    def quick(cls) -> "MemorizationConfig":
        """MNIST-1D, MLP 40-256-256-10, SGD lr 0.03 momentum 0.9 constant, batch 128, 100 epochs
        (3,100 steps).

        Five label fractions (0, 0.25, 0.5, 0.75, 1); every run fits its training
        set, the fully random one by about epoch 60. About 5 s a run on one CPU core.
        """
        return cls(preset="quick")

    @classmethod
    def full(cls) -> "MemorizationConfig":
        """The paper's recipe where an offline stand-in exists: its 4-layer MLP (three hidden layers
        of 256)
        on MNIST-1D, SGD lr 0.01 momentum 0.9 constant, batch 128, 300 epochs, true and random
        labels.

        The paper trains on CIFAR-10 and sweeps the learning rate over 0.1 ... 1e-4.
        Measured once here (seed 0, true and random labels, 80 s for both on a
        busy 2-core CPU): both fit their labels (epochs 80 and 115); the
        alignment fc2 -> fc3 peaks at 0.51 and ends at 0.45 with true labels,
        peaks at 0.39 and fades to 0.22 with random ones; the final NormEffRank
        is higher with random labels in fc2 (0.742 against 0.728) but *lower*
        in fc3 (0.663 against 0.695), so at this scale the rank claim holds for
        one of the two middle layers only.
        """
        return cls(
            preset="full",
            hidden=(256, 256, 256),
            lr=0.01,
            epochs=300,
            eval_every=155,
            track_every=155,
            label_fractions=(0.0, 0.25, 0.5, 0.75, 1.0),
        )

    @classmethod
    def presets(cls) -> dict[str, Callable[[], "MemorizationConfig"]]:
        return {"quick": cls.quick, "full": cls.full}


def fraction_label(config: ClassifierConfig) -> str:
    """The readable part of a run's file name in an output folder: ``labels_<fraction>``."""
    return f"labels_{config.label_noise:g}"


def record_path(out: str | Path, config: MemorizationConfig, fraction: float) -> Path:
    """Where :func:`run_memorization` keeps the record of ``fraction`` in the folder ``out``:
    ``out/labels_<fraction>-<config key>.npz``, the key of that run's whole config
    (:func:`spectral_lab.sweeps.result_path`), so a record of other settings is never read."""
    (run_config,) = config.configs([fraction])
    return result_path(out, run_config, label=fraction_label)


def memorization_outputs(config: MemorizationConfig, out: str | Path) -> list[Path]:
    """The files :func:`run_memorization` writes under ``out``, one record per label fraction."""
    return [record_path(out, config, fraction) for fraction in config.label_fractions]


def train_memorization_run(config: ClassifierConfig) -> RunRecord:
    """One run of the experiment, the ``run`` of its sweep: :func:`fit` without a progress bar."""
    record = fit(config, progress=False).record
    record.meta.update(experiment=MemorizationConfig.experiment)
    return record


def run_memorization(
    config: MemorizationConfig,
    fractions=None,
    out: str | Path | None = None,
    progress: bool | None = None,
) -> dict[float, RunRecord]:
    """Train one run per label fraction with :func:`~spectral_lab.experiments.classifier.fit`;
    returns ``{fraction: record}``.

    The runs share the initialisation (``seed``), the minibatch order
    (``data_seed``) and every hyperparameter; only the training labels differ.
    ``fractions`` picks a subset of ``config.label_fractions``. With ``out`` (a
    folder), the runs go through :func:`spectral_lab.sweep`'s store: a finished
    record of the same configuration already there is loaded instead of trained,
    and every new one is saved there as it finishes (:func:`record_path`).
    """
    if not isinstance(config, MemorizationConfig):
        raise TypeError(f"config must be a MemorizationConfig, got {type(config).__name__}")
    chosen = config._check_fractions(fractions)
    records = sweep(
        config.configs(chosen),
        train_memorization_run,
        out_dir=out,
        progress=progress,
        label=fraction_label,
    )
    for record in records:
        record.meta.update(label_fractions=list(config.label_fractions))
    return dict(zip(chosen, records))


def middle_layers(record: RunRecord) -> list[str]:
    """The record's layers without the first and the last: for an MLP, the hidden-to-hidden
    matrices."""
    if len(record.layers) < 3:
        raise ValueError(f"a middle layer needs at least 3 layers; the record has {record.layers}")
    return record.layers[1:-1]


def fitted_step(record: RunRecord, threshold: float = 0.99) -> int:
    """The first snapshot step at which the training accuracy (on the labels trained on) reaches
    ``threshold``.

    Raises ``ValueError`` if it never does: then the run has not fitted its
    training set and an "equal training accuracy" comparison is meaningless.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must lie in (0, 1], got {threshold}")
    if "train_acc" not in record.scalars:
        raise ValueError(
            "the record has no train_acc scalar; record it with fit() or tracker.step(..., "
            "train_acc=)"
        )
    accuracy = record.scalars["train_acc"]
    reached = np.flatnonzero(accuracy >= threshold)
    if not reached.size:
        raise ValueError(
            f"the training accuracy never reaches {threshold:g} (at most {np.nanmax(accuracy):.3f} "
            f"by step {int(record.steps[-1])}): train longer"
        )
    return int(record.steps[reached[0]])


def rank_at_fit(record: RunRecord, layers=None, threshold: float = 0.99) -> float:
    """Mean NormEffRank of ``layers`` (default :func:`middle_layers`) at :func:`fitted_step`.

    Two runs compared with this are compared at equal training accuracy
    (both at least ``threshold``), whatever the step at which each got there.
    """
    layers = middle_layers(record) if layers is None else list(layers)
    i = record.index_of(fitted_step(record, threshold))
    return float(record.norm_eff_rank(layers)[i].mean())


def settling_steps(
    record: RunRecord, layer: str, threshold: float = 0.9, k: int | None = None
) -> np.ndarray:
    """For each rank ``i``, the step from which ``S_ii(t)`` (agreement with the final step) stays
    ``>= threshold``.

    ``S(t)`` is :meth:`RunRecord.agreement_with` ``("final")``:
    ``S_ii(t) = |u_i(t) . u_i(T)| * |v_i(t) . v_i(T)|``, 1 when the i-th pair of
    singular vectors at step ``t`` is the final one. Entry ``i`` of the result
    is the first snapshot step ``t_i`` with ``S_ii(t) >= threshold`` for every
    snapshot ``t >= t_i``; the final step itself always qualifies
    (``S_ii(T) = 1``). Returns ``(k,)`` steps, ``k`` default ``record.top_k``.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must lie strictly between 0 and 1, got {threshold}")
    S = record.agreement_with("final", layers=[layer])[layer]  # (T, k, k)
    diagonal = np.diagonal(S, axis1=1, axis2=2)  # (T, k)
    if k is not None:
        if (
            isinstance(k, bool)
            or not isinstance(k, (int, np.integer))
            or not 1 <= k <= diagonal.shape[1]
        ):
            raise ValueError(f"k must be an integer from 1 to {diagonal.shape[1]}, got {k!r}")
        diagonal = diagonal[:, :k]
    steps = record.steps
    out = np.empty(diagonal.shape[1], dtype=np.int64)
    for i in range(diagonal.shape[1]):
        below = np.flatnonzero(diagonal[:, i] < threshold)
        out[i] = steps[below[-1] + 1] if below.size else steps[0]
    return out


# ---- the command line: python -m spectral_lab run memorization --out runs/memorization ----------
def _run_for_cli(config: MemorizationConfig, out, resume: bool = False, progress=None):
    """With ``--resume`` finished records of the same configuration are kept (the runs resume one
    by one); without it the command line has already checked that ``--overwrite`` was given, so
    old records go."""
    with locked_store(out):  # held from the first deletion to the last record
        if not resume:
            for path in memorization_outputs(config, out):
                path.unlink(missing_ok=True)
        return list(run_memorization(config, out=out, progress=progress).values())


EXPERIMENT = Experiment(
    MemorizationConfig,
    _run_for_cli,
    memorization_outputs,
    "",
    "a folder with one record per fraction of randomized labels",
)
