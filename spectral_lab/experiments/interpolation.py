"""Two networks and the straight path between them: losses along it, barriers, shared spectra.

Two networks ``W1`` and ``W2`` (every parameter) are *linearly connected*
when every point ``W(alpha) = (1 - alpha) W1 + alpha W2`` of the segment
between them is as good as its ends.

* :func:`interpolate_states`, :func:`interpolation_curve` - the path and the
  losses and errors along it;
* :func:`loss_barrier` (the paper's), :func:`error_barrier` (Frankle et al.'s);
* :func:`singular_vector_agreement`, :func:`sva_score` - the top-k SVA
  between the matrices of two networks (SPEC section 1).

The experiment that grows such pairs is :mod:`spectral_lab.experiments.connectivity`.
Chapter: "Linear mode connectivity".
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..data import ClassificationData
from ..spectra import agreement, diagonal_mean
from ..sweeps import storable
from ..views import LayerSelector, find_matrices
from .classifier import evaluate_classifier

__all__ = [
    "State",
    "interpolate_states",
    "as_alphas",
    "InterpolationCurve",
    "interpolation_curve",
    "loss_barrier",
    "error_barrier",
    "singular_vector_agreement",
    "sva_score",
]

State = dict[str, torch.Tensor]


# ---- the path ------------------------------------------------------------------------------------
def _check_alpha(alpha) -> float:
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, (int, float, np.floating, np.integer))
        or not 0.0 <= float(alpha) <= 1.0
    ):
        raise ValueError(
            f"alpha must be a number in [0, 1] (0: state_a, 1: state_b), got {alpha!r}"
        )
    return float(alpha)


def _check_states(state_a: State, state_b: State) -> None:
    if set(state_a) != set(state_b):
        only_a, only_b = sorted(set(state_a) - set(state_b)), sorted(set(state_b) - set(state_a))
        raise ValueError(
            f"the two state dicts hold different entries: only in state_a {only_a}, "
            f"only in state_b {only_b}; interpolate two copies of one architecture"
        )
    for name, a in state_a.items():
        b = state_b[name]
        if tuple(a.shape) != tuple(b.shape):
            raise ValueError(
                f"{name!r} has shape {tuple(a.shape)} in state_a and {tuple(b.shape)} in state_b"
            )
        if a.is_floating_point() != b.is_floating_point():
            raise ValueError(f"{name!r} is {a.dtype} in state_a and {b.dtype} in state_b")


@torch.no_grad()
def interpolate_states(state_a: State, state_b: State, alpha: float) -> State:
    """The state dict ``(1 - alpha) * state_a + alpha * state_b``: the point ``alpha`` of the
    straight path.

    Only floating-point entries are interpolated (weights, biases, and the
    running statistics of normalisation layers). Integer and boolean entries,
    such as BatchNorm's ``num_batches_tracked``, count things rather than
    parametrise the function: they are copied from ``state_a``. ``alpha = 0``
    returns (copies of) ``state_a`` exactly and ``alpha = 1`` returns
    ``state_b``'s floating entries exactly. Raises ``ValueError`` if the two
    dicts do not describe the same architecture or ``alpha`` is outside [0, 1].
    """
    alpha = _check_alpha(alpha)
    _check_states(state_a, state_b)
    mixed = {}
    for name, a in state_a.items():
        b = state_b[name].to(a.device)
        if not a.is_floating_point() or alpha == 0.0:
            mixed[name] = a.clone()
        elif alpha == 1.0:
            mixed[name] = b.to(a.dtype).clone()
        else:
            mixed[name] = torch.lerp(a, b.to(a.dtype), alpha)  # a + alpha (b - a)
    return mixed


def as_alphas(alphas: int | Sequence[float] = 11) -> np.ndarray:
    """The interpolation points: ``n`` evenly spaced in [0, 1] for an int ``n >= 3``, or a sequence
    as given.

    A sequence must be strictly increasing, lie in [0, 1], start at 0 and end
    at 1 (the endpoints define both barriers) and hold at least one interior
    point. The paper uses 11 points, ``0, 0.1, ..., 1``.
    """
    if isinstance(alphas, (int, np.integer)) and not isinstance(alphas, bool):
        if alphas < 3:
            raise ValueError(
                f"need at least 3 alphas (both endpoints and one point between), got {alphas}"
            )
        return np.linspace(0.0, 1.0, int(alphas))
    values = np.asarray(alphas, dtype=np.float64)
    if values.ndim != 1 or values.size < 3:
        raise ValueError(
            f"alphas must be an int >= 3 or a 1-D sequence of at least 3 numbers, got {alphas!r}"
        )
    if not np.all(np.isfinite(values)) or values.min() < 0.0 or values.max() > 1.0:
        raise ValueError(
            "alphas must lie in [0, 1] (0: the first network, 1: the second), got "
            f"{values.tolist()}"
        )
    if np.any(np.diff(values) <= 0):
        raise ValueError(f"alphas must be strictly increasing, got {values.tolist()}")
    if values[0] != 0.0 or values[-1] != 1.0:
        raise ValueError(
            f"alphas must start at 0 and end at 1 (the two endpoints), got {values.tolist()}"
        )
    return values


@storable
@dataclass
class InterpolationCurve:
    """Losses and errors (1 - accuracy) along the straight path between two networks, one entry per
    alpha."""

    alphas: np.ndarray  # (n,)
    train_loss: np.ndarray  # (n,)
    train_error: np.ndarray  # (n,)
    test_loss: np.ndarray  # (n,)
    test_error: np.ndarray  # (n,)

    def loss_barrier(self, split: str = "train") -> float:
        """:func:`loss_barrier` of the ``split`` loss (the paper uses the training loss)."""
        return loss_barrier(self._values(split, "loss"), self.alphas)

    def error_barrier(self, split: str = "test") -> float:
        """:func:`error_barrier` of the ``split`` error (Frankle et al. use the test error)."""
        return error_barrier(self._values(split, "error"), self.alphas)

    def _values(self, split: str, metric: str) -> np.ndarray:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return getattr(self, f"{split}_{metric}")

    def __repr__(self) -> str:
        return (
            f"InterpolationCurve({len(self.alphas)} alphas, train loss {self.train_loss[0]:.3g} -> "
            f"max {self.train_loss.max():.3g} -> {self.train_loss[-1]:.3g}; "
            f"loss barrier {self.loss_barrier():.3g}, error barrier {self.error_barrier():.3g})"
        )


def _refresh_norm_statistics(model: nn.Module, data: ClassificationData, chunk: int = 512) -> None:
    """Re-estimate BatchNorm running statistics on the training inputs (a no-op without
    BatchNorm)."""
    batches = [data.train_x[i : i + chunk] for i in range(0, len(data.train_x), chunk)]
    torch.optim.swa_utils.update_bn(batches, model)


@torch.no_grad()
def interpolation_curve(
    model: nn.Module,
    state_a: State,
    state_b: State,
    data: ClassificationData,
    alphas: int | Sequence[float] = 11,
    transform: Callable[[nn.Module], nn.Module] | None = None,
) -> InterpolationCurve:
    """Evaluate ``(1 - alpha) state_a + alpha state_b`` (:func:`interpolate_states`) at every alpha.

    ``model`` supplies the architecture (a deep copy is loaded, ``model``
    itself is untouched). ``alphas``: see :func:`as_alphas`. ``transform``, if
    given, maps each interpolated model to the one evaluated (for instance
    ``lambda m: svd_prune(m, "top")``). Models with BatchNorm get their running
    statistics re-estimated on the training inputs at every point, as in the
    paper's code (an interpolated network has no statistics of its own); the
    book's MLP and 1-D CNN have none. Losses are mean cross-entropies and
    errors ``1 - accuracy``, on the training and the test set.
    """
    alphas = as_alphas(alphas)
    _check_states(state_a, state_b)
    work = copy.deepcopy(model)
    device = next(work.parameters()).device
    data = data.to(device)
    has_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in work.modules())
    rows = []
    for alpha in alphas:
        work.load_state_dict(interpolate_states(state_a, state_b, float(alpha)))
        if has_norm:
            _refresh_norm_statistics(work, data)
        evaluated = work if transform is None else transform(work)
        rows.append(evaluate_classifier(evaluated, data))
    column = lambda key: np.array([row[key] for row in rows], dtype=np.float64)  # noqa: E731
    return InterpolationCurve(
        alphas,
        column("train_loss"),
        1.0 - column("train_acc"),
        column("test_loss"),
        1.0 - column("test_acc"),
    )


# ---- the two barriers ----------------------------------------------------------------------------
def _path_values(values, alphas) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values, dtype=np.float64)
    alphas = as_alphas(len(values) if alphas is None else alphas)
    if values.shape != alphas.shape:
        raise ValueError(
            f"got {values.size} values for {alphas.size} alphas; give one value per alpha"
        )
    if not np.all(np.isfinite(values)):
        raise ValueError("the values along the path contain NaN or infinity")
    return values, alphas


def loss_barrier(losses, alphas=None) -> float:
    """The paper's loss barrier: ``max_{0 < alpha < 1} L(alpha) - ((1 - alpha) L(0) + alpha L(1))``.

    ``losses[i]`` is the loss of the network at ``alphas[i]`` (default: evenly
    spaced from 0 to 1). The maximum is over the interior points only, as in
    the authors' code: the height of the path above the straight line between
    its endpoint losses. It is 0 for a path that is linear in alpha and
    negative when the whole path runs below that line.
    """
    losses, alphas = _path_values(losses, alphas)
    line = (1.0 - alphas) * losses[0] + alphas * losses[-1]
    return float(np.max((losses - line)[1:-1]))


def error_barrier(errors, alphas=None) -> float:
    """Frankle et al.'s (2020) instability: ``max_alpha E(alpha) - (E(0) + E(1)) / 2``.

    ``errors[i]`` is the error (1 - accuracy) at ``alphas[i]``. The maximum runs
    over the whole path, endpoints included, so the barrier is never below
    ``|E(0) - E(1)| / 2 >= 0``. Frankle et al. call two networks linearly
    connected when it is within the noise of the endpoint errors (they use 2 %).
    """
    errors, alphas = _path_values(errors, alphas)
    return float(errors.max() - 0.5 * (errors[0] + errors[-1]))


# ---- spectra of the two endpoints ----------------------------------------------------------------
@torch.no_grad()
def singular_vector_agreement(
    model_a: nn.Module, model_b: nn.Module, k: int = 10, layers: LayerSelector = None
) -> dict[str, np.ndarray]:
    """Top-k SVA between the same matrix of two networks: layer name -> ``S`` of shape ``(k, k)``.

    ``S[j, l] = |u_j . u'_l| * |v_j . v'_l|`` with ``u, v`` the singular vectors
    of ``model_a``'s matrix and ``u', v'`` those of ``model_b``'s
    (:func:`spectral_lab.spectra.agreement`; SPEC section 1). ``layers`` selects
    matrices as :func:`~spectral_lab.views.find_matrices` does (default: all,
    the last layer included). ``k`` is capped at the matrix's rank.
    """
    refs_a = find_matrices(model_a, layers)
    names_b = {ref.name: ref for ref in find_matrices(model_b, layers)}
    result = {}
    for ref in refs_a:
        if ref.name not in names_b:
            raise ValueError(f"{ref.name!r} is a matrix of model_a but not of model_b")
        W_a, W_b = ref.view(model_a).detach(), names_b[ref.name].view(model_b).detach()
        if W_a.shape != W_b.shape:
            raise ValueError(
                f"{ref.name!r} has shape {tuple(W_a.shape)} in model_a and {tuple(W_b.shape)} in "
                "model_b"
            )
        result[ref.name] = agreement(W_a, W_b.to(W_a.device), k=k).cpu().numpy()
    return result


def sva_score(S, k: int = 10) -> float:
    """The paper's scalar summary of an SVA matrix: the mean of its first ``k`` diagonal entries."""
    return float(diagonal_mean(np.asarray(S), k))
