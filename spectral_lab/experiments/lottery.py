"""Lottery tickets: masked networks rewound to an early step, seen through their singular vectors.

The experiment of SPEC section 2 (the paper's section 7.2), on the MNIST-1D
setting of :class:`~spectral_lab.experiments.classifier.ClassifierConfig`:

1. **Dense run** (:func:`dense_run`): train to the end; keep the model and the
   optimizer state at the rewind step ``k`` (early in training).
2. **One-shot masks** (:func:`one_shot`): a global magnitude mask keeping
   ``keep`` of the entries of every matrix but the last, from the dense run's
   *final* weights (:func:`~spectral_lab.pruning.magnitude_mask`), and a random
   mask with the same density in every matrix
   (:func:`~spectral_lab.pruning.random_mask_like`). Each is applied to the
   weights at step ``k`` and training continues from there with the dense
   run's data order and momentum, weights and gradients masked after every
   step (``fit(mask=...)``).
3. **Iterative magnitude pruning** (:func:`iterative_pruning`, Frankle &
   Carbin 2019): train, prune the smallest surviving weights, rewind to step
   ``k``, and again, ``imp_rounds`` times, ending at density ``keep``.

Everything trains with :func:`~spectral_lab.experiments.classifier.fit`; this module only
decides which masks and which starting points. Results are plain: fit
results (model, record, history), masks, accuracies, agreements.

Chapter: "Lottery tickets".
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Callable, ClassVar

import numpy as np
import torch
from torch import nn

from ..data import ClassificationData
from ..pruning import (
    Mask,
    apply_mask,
    layer_densities,
    magnitude_mask,
    mask_density,
    random_mask_like,
)
from ..record import RunRecord
from ..spectra import agreement, diagonal_mean
from ..tracker import SpectralTracker
from ..views import LayerSelector, find_matrices
from .classifier import ClassifierConfig, FitResult, fit

__all__ = [
    "LotteryConfig",
    "DenseRun",
    "OneShot",
    "PruningRound",
    "dense_run",
    "masked_run",
    "one_shot",
    "iterative_pruning",
    "mask_agreement",
    "pruned_record",
    "recorded_mask_agreement",
    "run_agreement",
    "seed_records",
]


@dataclass(frozen=True)
class LotteryConfig(ClassifierConfig):
    """A lottery-ticket experiment: the classification run, plus what is kept, from when, in how
    many rounds.

    ``keep`` is the fraction of the entries of the masked matrices (every
    matrix but the last) that survive; ``rewind_epoch`` the epoch whose first
    step the masked runs restart from (the paper: epoch 4 of 164);
    ``imp_rounds`` how many rounds iterative magnitude pruning takes to reach
    ``keep``, pruning the same fraction of the survivors each round
    (:attr:`imp_keeps`); ``mask_seed`` seeds the random control masks.
    """

    experiment: ClassVar[str] = "lottery"
    keep: float = 0.05
    rewind_epoch: int = 4
    imp_rounds: int = 5
    mask_seed: int = 0

    def validate(self) -> None:
        super().validate()
        if not 0.0 < self.keep < 1.0:
            raise ValueError(
                f"keep is the fraction of weights kept and must lie in (0, 1), got {self.keep}"
            )
        if not 0 <= self.rewind_epoch < self.epochs:
            raise ValueError(
                f"rewind_epoch must lie in [0, epochs={self.epochs}), got {self.rewind_epoch}"
            )
        if self.imp_rounds < 1:
            raise ValueError(f"imp_rounds must be a positive integer, got {self.imp_rounds}")
        if self.mask_seed < 0:
            raise ValueError(f"mask_seed must be a non-negative integer, got {self.mask_seed}")

    def rewind_step(self, n_train: int) -> int:
        """The step the masked runs restart from: ``rewind_epoch * steps_per_epoch``."""
        return self.rewind_epoch * self.steps_per_epoch(n_train)

    def with_seed(self, seed: int) -> "LotteryConfig":
        """The same experiment drawn again: ``seed``, ``data_seed`` and ``mask_seed`` all set to
        ``seed``.

        A replicate differs from the run of seed 0 in every random choice the
        experiment makes: the initialisation, the order of the minibatches (which
        also moves the rewind state) and the random control masks. The data set
        (MNIST-1D's published draw, with its train/test split) and every setting
        stay, and so does the preset's name. ``with_seed(0)`` of a preset is the
        preset.
        """
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        seed = int(seed)
        # mask_seed is not one of the config's SEED_FIELDS; replace() keeps the preset's name
        return replace(self.with_overrides(seed=seed, data_seed=seed), mask_seed=seed)

    @property
    def imp_keeps(self) -> tuple[float, ...]:
        """The density after each IMP round: ``keep ** (r / imp_rounds)`` for ``r = 1 ..
        imp_rounds``.

        Every round removes the same fraction ``1 - keep ** (1 / imp_rounds)`` of
        the surviving weights; the last round ends exactly at ``keep``.
        """
        return tuple(self.keep ** (r / self.imp_rounds) for r in range(1, self.imp_rounds + 1))

    # ---- presets ---------------------------------------------------------------------------------
    @classmethod
    def quick(cls) -> "LotteryConfig":
        """SPEC's MNIST-1D setting (40 epochs, rewind to epoch 4, keep 5 %), IMP in 4 rounds of 53
        %; seconds a run."""
        return cls(preset="quick", imp_rounds=4, track_every=250)

    @classmethod
    def full(cls) -> "LotteryConfig":
        """The paper's schedule on the offline stand-in: 164 epochs, rewind to epoch 4, IMP in 13
        rounds of ~21 %.

        Frankle & Carbin prune 20 % of the survivors per round; 13 rounds of
        ``1 - 0.05 ** (1/13) = 20.6 %`` end at the same 5 % as the one-shot mask.
        """
        return cls(preset="full", epochs=164, imp_rounds=13, track_every=500)

    @classmethod
    def presets(cls) -> dict[str, Callable[[], "LotteryConfig"]]:
        return {"quick": cls.quick, "full": cls.full}


# ---- the runs
# ----------------------------------------------------------------------------------------
@dataclass
class DenseRun:
    """The dense run (``final``, tracked) and the state it is rewound to (``rewind``: model and
    momentum at step k)."""

    final: FitResult
    rewind: FitResult
    data: ClassificationData

    @property
    def rewind_step(self) -> int:
        return self.rewind.step

    def __repr__(self) -> str:
        test_acc = self.final.history["test_acc"][-1]
        return f"DenseRun(test acc {test_acc:.3f}, rewind step {self.rewind_step})"


def dense_run(
    config: LotteryConfig,
    data: ClassificationData | None = None,
    *,
    track: bool = True,
    progress: bool | None = False,
) -> DenseRun:
    """Train the dense network to the end, and again to the rewind step (untracked) for its state
    there.

    The run is deterministic (seed, data order), so the second call reproduces
    the first ``rewind_step`` updates of the first: its model and optimizer
    state are the dense run's at step ``k``.
    """
    data = config.make_data() if data is None else data
    final = fit(config, data=data, track=track, progress=progress)
    rewind = fit(
        config,
        data=data,
        stop_step=config.rewind_step(len(data.train_y)),
        track=False,
        progress=False,
    )
    return DenseRun(final, rewind, data)


def masked_run(
    config: LotteryConfig,
    dense: DenseRun,
    mask: Mask,
    *,
    track: bool = True,
    progress: bool | None = False,
) -> FitResult:
    """Train ``mask * W(k)`` from the rewind step to the end, with the dense run's momentum and data
    order.

    The model starts as a copy of the dense model at step ``k``; ``fit`` zeroes
    the masked weights and their gradients at every step.
    """
    model = copy.deepcopy(dense.rewind.model)
    return fit(
        config,
        model=model,
        data=dense.data,
        start_step=dense.rewind_step,
        optimizer_state=dense.rewind.optimizer_state,
        mask=mask,
        track=track,
        progress=progress,
    )


@dataclass
class OneShot:
    """One-shot masks from the dense run's final weights and the runs they give: ``masks[kind]``,
    ``runs[kind]``."""

    masks: dict[str, Mask]
    runs: dict[str, FitResult]

    @property
    def test_acc(self) -> dict[str, float]:
        return {kind: float(run.history["test_acc"][-1]) for kind, run in self.runs.items()}

    def __repr__(self) -> str:
        accs = ", ".join(f"{kind} {acc:.3f}" for kind, acc in self.test_acc.items())
        return f"OneShot(test acc: {accs})"


def one_shot(
    config: LotteryConfig,
    dense: DenseRun,
    *,
    layers: LayerSelector = None,
    track: bool = True,
    progress: bool | None = False,
) -> OneShot:
    """The global magnitude mask (``keep`` of every matrix but the last) and its per-layer random
    control, trained."""
    magnitude = magnitude_mask(dense.final.model, config.keep, layers=layers)
    masks = {"magnitude": magnitude, "random": random_mask_like(magnitude, seed=config.mask_seed)}
    runs = {
        kind: masked_run(config, dense, mask, track=track, progress=progress)
        for kind, mask in masks.items()
    }
    return OneShot(masks, runs)


@dataclass
class PruningRound:
    """One round of iterative magnitude pruning: the mask, its densities and the test accuracy after
    training.

    ``random_test_acc`` is the accuracy of a random mask with the same
    per-layer densities, trained the same way (``None`` without the control).
    """

    round: int
    mask: Mask
    densities: dict[str, float]
    density: float
    test_acc: float
    random_test_acc: float | None = None
    model: nn.Module | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        control = (
            "" if self.random_test_acc is None else f", random mask {self.random_test_acc:.3f}"
        )
        return (
            f"PruningRound({self.round}: density {self.density:.4f}, "
            f"test acc {self.test_acc:.3f}{control})"
        )


def iterative_pruning(
    config: LotteryConfig,
    dense: DenseRun,
    *,
    layers: LayerSelector = None,
    random_control: bool = True,
    progress: bool | None = False,
) -> list[PruningRound]:
    """Iterative magnitude pruning with rewinding: ``config.imp_rounds`` rounds down to
    ``config.keep``.

    Round ``r`` prunes the smallest surviving weights of the previous round's
    trained network (round 0 is the dense run) down to density
    ``config.imp_keeps[r - 1]``, globally over every matrix but the last, then
    trains ``mask * W(k)`` from the rewind step. Returns one
    :class:`PruningRound` per round (untracked runs, the models kept).
    """
    mask, trained = None, dense.final.model
    rounds = []
    for r, keep in enumerate(config.imp_keeps, start=1):
        mask = magnitude_mask(trained, keep, layers=layers, within=mask)
        run = masked_run(config, dense, mask, track=False, progress=progress)
        control = None
        if random_control:
            random_mask = random_mask_like(mask, seed=config.mask_seed + r)
            control = float(
                masked_run(config, dense, random_mask, track=False).history["test_acc"][-1]
            )
        rounds.append(
            PruningRound(
                r,
                mask,
                layer_densities(mask),
                mask_density(mask),
                float(run.history["test_acc"][-1]),
                control,
                run.model,
            )
        )
        trained = run.model
    return rounds


# ---- what the chapter measures
# -------------------------------------------------------------------------
def _matrices(model: nn.Module, mask: Mask) -> dict[str, tuple[str, torch.Tensor]]:
    """Layer name -> (parameter name, 2-D view) for the masked matrices of ``model``."""
    out = {}
    for ref in find_matrices(model):
        key = f"{ref.module}.{ref.param}" if ref.module else ref.param
        if key in mask:
            out[ref.name] = (key, ref.view(model).detach())
    return out


@torch.no_grad()
def mask_agreement(model: nn.Module, mask: Mask, k: int = 10) -> dict[str, np.ndarray]:
    """Singular-vector agreement between each masked matrix and the same matrix with the mask
    applied.

    ``{layer: S}`` with ``S[j, i] = |u_j . u'_i| |v_j . v'_i|``
    (:func:`spectral_lab.spectra.agreement`),
    ``u, v`` the singular vectors of ``mask * W`` and ``u', v'`` those of ``W``,
    shape ``(k, k)``. Its diagonal says whether pruning kept the top
    directions of ``W``; its :func:`~spectral_lab.spectra.diagonal_mean` is the paper's scalar.
    """
    originals, pruned = _matrices(model, mask), _matrices(apply_mask(model, mask), mask)
    return {
        name: agreement(pruned[name][1].double(), W.double(), k).numpy()
        for name, (_, W) in originals.items()
    }


def run_agreement(
    record: RunRecord, reference: RunRecord, k: int = 10, layers=None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Top-``k`` agreement between two runs at the steps both recorded: ``(steps, {layer: (T,)
    diagonal mean})``.

    For a masked run and the dense run it came from: at every common step
    ``t``, ``S(t)[j, i] = |u_j . u'_i| |v_j . v'_i|`` between the two runs'
    matrices at ``t`` (the record's top vectors, as
    :meth:`RunRecord.agreement_with` does), summarised by the mean of its
    first ``k`` diagonal entries.
    """
    steps = np.intersect1d(record.steps, reference.steps)
    if steps.size == 0:
        raise ValueError("the two records share no snapshot step")
    S = record.agreement_with(reference, layers=layers, steps=steps)
    return steps, {name: diagonal_mean(matrices, k) for name, matrices in S.items()}


def seed_records(
    config: LotteryConfig, data: ClassificationData | None = None
) -> dict[str, RunRecord]:
    """What the chapter reads of one seed, as run records: the dense run (``"dense"``), the two
    one-shot tickets trained from the rewind step (``"magnitude"``, ``"random"``; each record's
    ``meta["history"]`` holds its accuracies), and a snapshot of each mask applied to the dense
    run's final weights (``"pruned_magnitude"``, ``"pruned_random"``: the masks' agreement with
    the trained matrices, :func:`recorded_mask_agreement`, without keeping the model). The book
    ships these for seeds 1-4 (``spectral_lab.experiments.shipped``)."""
    dense = dense_run(config, data)
    tickets = one_shot(config, dense)
    return {
        "dense": dense.final.record,
        **{kind: run.record for kind, run in tickets.runs.items()},
        **{
            f"pruned_{kind}": pruned_record(dense.final, mask, config.top_k)
            for kind, mask in tickets.masks.items()
        },
    }


@torch.no_grad()
def pruned_record(run: FitResult, mask: Mask, top_k: int = 10) -> RunRecord:
    """One snapshot, at the run's last step, of ``mask * W`` for the run's final weights: the top
    singular vectors of the pruned matrices, kept for where the model itself is not at hand (a
    shipped seed). With the run's own record, :func:`recorded_mask_agreement` gives what
    :func:`mask_agreement` gives from the model."""
    pruned = apply_mask(run.model, mask)
    tracker = SpectralTracker(pruned, every=1, top_k=top_k, pairs=None)
    tracker.step(run.step, pruned, force=True)
    return tracker.record


def recorded_mask_agreement(
    pruned: RunRecord, trained: RunRecord, k: int = 10
) -> dict[str, np.ndarray]:
    """:func:`mask_agreement` from records: ``{layer: S}``, ``S[j, i] = |u_j . u'_i| |v_j .
    v'_i|`` with ``u, v`` from ``pruned`` (:func:`pruned_record`) and ``u', v'`` from the trained
    run's last snapshot, shape ``(k, k)``; equal to :func:`mask_agreement` up to the records'
    storage precision of the vectors."""
    S = pruned.agreement_with(trained, reference_step=int(trained.steps[-1]), steps=pruned.steps)
    return {name: matrices[0][:k, :k] for name, matrices in S.items()}
