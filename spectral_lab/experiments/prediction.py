"""A spectral theory of neural prediction (SPEC section 3a): how well a model's activations predict
responses.

Regress "neural responses" ``Y`` (P stimuli x N neurons) on a model's
activations ``X`` (P x M) by ridge regression from ``p`` of the P stimuli.
{cite:t}`canatar2023spectral`, building on Bordelon, Canatar and Pehlevan
(2020) and Canatar et al. (2021), predict the error from two things only: the
eigenvalues of the model's Gram matrix and how the responses spread over its
eigenvectors. With ``X`` and ``Y`` centred and ``X`` scaled so that
``tr(X X^T / P) = 1``:

* ``K = X X^T / P = sum_i lam_i u_i u_i^T``, ``v_i = sqrt(P) u_i``, target weights
  ``w_in = v_i^T y_n / P`` and alignment coefficients
  ``W_i = sum_n w_in^2 / sum_{i,n} w_in^2`` (they sum to 1)  - :func:`spectral_modes`;
* ridge ``min_w (1/p) ||X_tr w - y||^2 + alpha ||w||^2``; the self-consistent
  ``kappa = p alpha + kappa sum_i lam_i / (p lam_i + kappa)``  - :func:`solve_kappa`;
* learnabilities ``L_i = p lam_i / (p lam_i + kappa)`` with ``sum_i L_i = p (1 - p alpha / kappa)``,
  ``gamma = sum_i L_i^2 / p``  - :func:`learnabilities`;
* mode errors ``E_i = (1 - L_i)^2 / (1 - gamma)`` (decreasing in ``lam_i``: the spectral bias),
  error modes ``W~_i = W_i E_i``, generalization error ``E_g = sum_i W~_i`` and training error
  ``E_tr = (p alpha / kappa)^2 E_g``  - :func:`predict`, :func:`learning_curve`;
* the geometry of the error ``R_em = ||W~||_2``, ``D_em = (sum W~)^2 / sum W~^2``, so that
  ``E_g = R_em sqrt(D_em)``; the effective dimensionality ``ED = (sum lam)^2 / sum lam^2`` and the
  cumulative power ``C(k) = sum_{i<=k} W_i``.

The errors are relative (``E_g = 1`` for the zero predictor) and, as in the
theory, measured over all P stimuli, the training ones included.
:func:`empirical_learning_curve` measures them by ridge regression over random
splits, to hold the theory against. :class:`PredictionConfig` and
:func:`build_models` make the chapter's setting: digits as stimuli, a hidden
"brain" that is a noisy readout of a trained network, and candidate models
from pixels to trained layers.

Chapter: "A spectral theory of neural prediction" (book/prediction.ipynb).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import brentq

from ..config import ExperimentConfig
from ..runtime import seed_everything
from .classifier import ClassifierConfig, fit

__all__ = [
    "Modes",
    "Prediction",
    "PredictionConfig",
    "center_and_scale",
    "spectral_modes",
    "solve_kappa",
    "learnabilities",
    "mode_errors",
    "predict",
    "learning_curve",
    "error_geometry",
    "effective_dimensionality",
    "task_dimension",
    "cumulative_power",
    "ridge_errors",
    "empirical_learning_curve",
    "EmpiricalCurve",
    "layer_activations",
    "random_relu_features",
    "brain_responses",
    "build_models",
]


# ---- input checks --------------------------------------------------------------------------------
def _matrix(name: str, a) -> np.ndarray:
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] < 2 or a.shape[1] < 1:
        raise ValueError(
            f"{name} must be a (stimuli, features) matrix with at least 2 rows, got shape {a.shape}"
        )
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} has non-finite entries")
    return a


def _spectrum(lam) -> np.ndarray:
    lam = np.asarray(lam, dtype=np.float64)
    if lam.ndim != 1 or lam.size == 0:
        raise ValueError(f"eigenvalues must be a non-empty 1-D array, got shape {lam.shape}")
    if np.any(~np.isfinite(lam)) or np.any(lam < 0):
        raise ValueError("eigenvalues must be finite and non-negative")
    if lam.sum() <= 0:
        raise ValueError("eigenvalues must not all be zero")
    return lam


def _weights(W, lam: np.ndarray) -> np.ndarray:
    W = np.asarray(W, dtype=np.float64)
    if W.shape != lam.shape:
        raise ValueError(
            f"alignment coefficients W {W.shape} and eigenvalues {lam.shape} must match"
        )
    if np.any(W < 0) or not np.isclose(W.sum(), 1.0, atol=1e-6):
        raise ValueError(
            f"alignment coefficients must be non-negative and sum to 1, got sum {W.sum():.6g}"
        )
    return W


def _check_p_alpha(p, alpha, n_stimuli: int | None = None) -> tuple[int, float]:
    if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 1:
        raise ValueError(f"p (training stimuli) must be a positive integer, got {p!r}")
    if n_stimuli is not None and p > n_stimuli:
        raise ValueError(f"p={p} is larger than the P={n_stimuli} stimuli")
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, (int, float, np.floating))
        or not np.isfinite(alpha)
    ):
        raise ValueError(f"ridge alpha must be a finite number, got {alpha!r}")
    if alpha < 0:
        raise ValueError(f"ridge alpha must be >= 0, got {alpha}")
    return int(p), float(alpha)


# ---- the spectrum and the alignment --------------------------------------------------------------
def center_and_scale(X) -> np.ndarray:
    """``X`` (P, M) with every column centred and scaled as a whole so that ``tr(X X^T / P) =
    1``."""
    X = _matrix("X", X)
    X = X - X.mean(axis=0)
    power = (X**2).sum() / len(X)
    if power <= 0:
        raise ValueError("X is constant over the stimuli: it has no variance to predict with")
    return X / np.sqrt(power)


@dataclass(frozen=True)
class Modes:
    """The eigenvalues ``lam`` (P,) of ``K = X X^T / P`` in decreasing order and the alignment ``W``
    (P,).

    ``sum(lam) = 1`` and ``sum(W) = 1``. ``rank`` modes have ``lam > 0``; the
    other ``P - rank`` are the directions the model cannot express (the constant
    direction, removed by centring, carries no target power).
    """

    lam: np.ndarray
    W: np.ndarray
    rank: int

    def __repr__(self) -> str:
        return (
            f"Modes(P={len(self.lam)}, rank={self.rank}, "
            f"ED={effective_dimensionality(self.lam):.1f}, "
            f"power outside the model's span={self.W[self.rank :].sum():.3f})"
        )


def spectral_modes(X, Y, rtol: float = 1e-10) -> Modes:
    """Eigenvalues of ``K = X X^T / P`` and alignment coefficients ``W_i`` of the responses ``Y``.

    ``X`` (P, M) and ``Y`` (P, N) are centred and ``X`` scaled to ``tr(K) = 1``
    first (:func:`center_and_scale`). With ``K = sum_i lam_i u_i u_i^T`` and
    ``v_i = sqrt(P) u_i``, ``w_in = v_i^T y_n / P`` and
    ``W_i = sum_n w_in^2 / sum_{i,n} w_in^2``. Eigenvalues below ``rtol * lam_1``
    count as 0. The zero-eigenvalue modes are degenerate, so only their total
    power is defined; it is spread evenly over the ``P - rank - 1`` of them that
    are orthogonal to the constant vector (the limit of a random basis of that
    space). ``E_g`` depends on the total alone; ``R_em`` and ``D_em`` use the spread.
    """
    X, Y = center_and_scale(X), _matrix("Y", Y)
    if len(X) != len(Y):
        raise ValueError(f"X and Y must have one row per stimulus: {len(X)} != {len(Y)}")
    Y = Y - Y.mean(axis=0)
    P, M = X.shape
    total = (Y**2).sum()
    if total <= 0:
        raise ValueError("Y is constant over the stimuli: there is nothing to predict")
    if M < P:  # the small side: K's nonzero eigenpairs from X^T X
        lam, V = np.linalg.eigh(X.T @ X / P)
        lam, V = lam[::-1], V[:, ::-1]
        keep = lam > rtol * lam[0]
        lam, U = lam[keep], X @ V[:, keep] / np.sqrt(P * lam[keep])
    else:
        lam, U = np.linalg.eigh(X @ X.T / P)
        lam, U = lam[::-1], U[:, ::-1]
        keep = lam > rtol * lam[0]
        lam, U = lam[keep], U[:, keep]
    rank = len(lam)
    projections = U.T @ Y  # (rank, N): u_i^T y_n
    W_span = (projections**2).sum(axis=1) / total
    outside = max(1.0 - W_span.sum(), 0.0)
    n_null = P - rank - 1  # centring: the constant vector is a null mode with no target power
    W = np.zeros(P)
    W[:rank] = W_span
    if n_null > 0:
        W[rank : rank + n_null] = outside / n_null
    lam_all = np.zeros(P)
    lam_all[:rank] = lam
    return Modes(lam_all, W / W.sum(), rank)


# ---- the theory
# ------------------------------------------------------------------------------------
def solve_kappa(lam, p: int, alpha: float) -> float:
    """The root of ``kappa = p alpha + kappa sum_i lam_i / (p lam_i + kappa)``.

    For ``alpha > 0`` the root lies in ``[p alpha, p alpha + sum lam]`` and is
    found by Brent's method to machine precision. For ``alpha = 0`` it is the
    positive root of ``sum_i lam_i / (p lam_i + kappa) = 1`` when more than
    ``p`` eigenvalues are nonzero, and 0 otherwise (ridgeless regression then
    interpolates the training set).
    """
    lam = _spectrum(lam)
    p, alpha = _check_p_alpha(p, alpha)
    lam = lam[lam > 0]
    total = lam.sum()

    if alpha > 0:

        def h(kappa):
            return kappa - p * alpha - kappa * np.sum(lam / (p * lam + kappa))

        lo, hi = p * alpha, p * alpha + total
        if h(lo) >= 0:  # only when every lam is 0, excluded above
            return lo
        return float(brentq(h, lo, hi, xtol=1e-15 * hi, rtol=4 * np.finfo(float).eps, maxiter=500))
    if len(lam) <= p:
        return 0.0

    def g(kappa):
        return 1.0 - np.sum(lam / (p * lam + kappa))

    lo = 1e-300
    return float(brentq(g, lo, total, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=500))


def learnabilities(lam, p: int, kappa: float) -> np.ndarray:
    """``L_i = p lam_i / (p lam_i + kappa)``: how much of mode ``i`` ridge learns from ``p``
    stimuli.

    At the self-consistent ``kappa``, ``sum_i L_i = p (1 - p alpha / kappa)``
    (the conservation law; ``= p`` without ridge).
    """
    lam = _spectrum(lam)
    if not kappa >= 0:
        raise ValueError(f"kappa must be >= 0, got {kappa}")
    if kappa == 0:
        return (lam > 0).astype(float)
    return p * lam / (p * lam + kappa)


def mode_errors(lam, p: int, alpha: float) -> np.ndarray:
    """``E_i = (1 - L_i)^2 / (1 - gamma)`` with ``gamma = sum_i L_i^2 / p``: the error left in each
    mode."""
    lam = _spectrum(lam)
    kappa = solve_kappa(lam, p, alpha)
    L = learnabilities(lam, p, kappa)
    gamma = np.sum(L**2) / p
    if gamma >= 1:
        raise ValueError(
            f"gamma = {gamma:.6g} >= 1 at p={p}, alpha={alpha}: the error diverges "
            "(exact interpolation threshold without ridge); use alpha > 0"
        )
    return (1 - L) ** 2 / (1 - gamma)


@dataclass(frozen=True)
class Prediction:
    """The theory at one ``p``: ``kappa``, ``gamma``, errors ``E_g`` and ``E_tr``, the error
    geometry."""

    p: int
    alpha: float
    kappa: float
    gamma: float
    E_g: float
    E_tr: float
    R_em: float
    D_em: float

    def __repr__(self) -> str:
        return (
            f"Prediction(p={self.p}, alpha={self.alpha:g}, E_g={self.E_g:.4f}, "
            f"E_tr={self.E_tr:.4f}, "
            f"R_em={self.R_em:.4g}, D_em={self.D_em:.1f})"
        )


def error_modes(lam, W, p: int, alpha: float) -> np.ndarray:
    """``W~_i = W_i E_i``: the error of mode ``i``; ``sum_i W~_i = E_g``."""
    lam = _spectrum(lam)
    return _weights(W, lam) * mode_errors(lam, p, alpha)


def error_geometry(lam, W, p: int, alpha: float) -> tuple[float, float]:
    """``(R_em, D_em)`` with ``R_em = ||W~||_2`` and ``D_em = (sum W~)^2 / sum W~^2``: ``E_g = R_em
    sqrt(D_em)``."""
    Wt = error_modes(lam, W, p, alpha)
    return float(np.sqrt(np.sum(Wt**2))), float(Wt.sum() ** 2 / np.sum(Wt**2))


def predict(lam, W, p: int, alpha: float) -> Prediction:
    """The theory's :class:`Prediction` for ridge ``alpha`` from ``p`` stimuli.

    ``E_g = sum_i W_i E_i`` (1 for ``p`` -> 0) and ``E_tr = (p alpha / kappa)^2 E_g``.
    """
    lam = _spectrum(lam)
    W = _weights(W, lam)
    p, alpha = _check_p_alpha(p, alpha)
    kappa = solve_kappa(lam, p, alpha)
    L = learnabilities(lam, p, kappa)
    gamma = float(np.sum(L**2) / p)
    E = mode_errors(lam, p, alpha)
    Wt = W * E
    E_g = float(Wt.sum())
    E_tr = (p * alpha / kappa) ** 2 * E_g if kappa > 0 else 0.0
    R_em = float(np.sqrt(np.sum(Wt**2)))
    return Prediction(p, alpha, kappa, gamma, E_g, float(E_tr), R_em, float(E_g**2 / R_em**2))


def learning_curve(lam, W, ps, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """The theoretical ``(E_g(p), E_tr(p))`` for every ``p`` in ``ps``, two arrays of
    ``len(ps)``."""
    out = np.array([[(pr := predict(lam, W, int(p), alpha)).E_g, pr.E_tr] for p in _ps(ps)])
    return out[:, 0], out[:, 1]


def effective_dimensionality(lam) -> float:
    """``ED = (sum lam)^2 / sum lam^2``: how many eigenvalues carry the variance (1 to rank)."""
    lam = _spectrum(lam)
    return float(lam.sum() ** 2 / np.sum(lam**2))


def task_dimension(W) -> float:
    """``1 / sum_i W_i^2``: over how many modes the responses spread (``W`` normalized to sum 1)."""
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 1 or np.any(W < 0) or W.sum() <= 0:
        raise ValueError("W must be a non-negative 1-D array with a positive sum")
    W = W / W.sum()
    return float(1.0 / np.sum(W**2))


def cumulative_power(W) -> np.ndarray:
    """``C(k) = sum_{i<=k} W_i`` for k = 1..len(W), modes in order of decreasing eigenvalue."""
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 1 or np.any(W < 0):
        raise ValueError("W must be a non-negative 1-D array")
    return np.cumsum(W)


# ---- the experiment: ridge regression over random splits
# ------------------------------------------
def _ps(ps) -> np.ndarray:
    ps = np.atleast_1d(np.asarray(ps))
    if ps.ndim != 1 or ps.size == 0 or not np.issubdtype(ps.dtype, np.integer):
        raise ValueError(f"ps must be a non-empty list of integers, got {ps!r}")
    return ps


def ridge_errors(X, Y, train, alpha: float) -> tuple[float, float]:
    """Fit ridge on the stimuli ``train`` and return ``(E_g, E_tr)``, relative errors.

    ``X`` must already be centred and scaled (:func:`center_and_scale`), ``Y``
    centred. ``w = argmin (1/p) ||X_tr w - Y_tr||^2 + alpha ||w||^2``, solved in
    its kernel form ``X w = X X_tr^T (X_tr X_tr^T + p alpha I)^{-1} Y_tr``.
    ``E_g = ||X w - Y||^2 / ||Y||^2`` over all P stimuli, and
    ``E_tr = (P / p) ||X_tr w - Y_tr||^2 / ||Y||^2``.
    """
    X, Y = _matrix("X", X), _matrix("Y", Y)
    if len(X) != len(Y):
        raise ValueError(f"X and Y must have one row per stimulus: {len(X)} != {len(Y)}")
    train = np.asarray(train)
    if train.ndim != 1 or train.size == 0 or not np.issubdtype(train.dtype, np.integer):
        raise ValueError("train must be a non-empty 1-D array of stimulus indices")
    if len(np.unique(train)) != len(train) or train.min() < 0 or train.max() >= len(X):
        raise ValueError(f"train must hold distinct indices in [0, {len(X)})")
    _check_p_alpha(len(train), alpha, len(X))
    return _ridge_from_gram(X @ X[train].T, Y, train, alpha)


def _ridge_from_gram(G, Y, train, alpha: float) -> tuple[float, float]:
    """:func:`ridge_errors` given the columns ``G = X X_tr^T`` (P, p) of the Gram matrix."""
    p = len(train)
    A = G[train] + p * alpha * np.eye(p)
    coef = (
        np.linalg.lstsq(A, Y[train], rcond=None)[0] if alpha == 0 else np.linalg.solve(A, Y[train])
    )
    residual = G @ coef - Y
    total = np.sum(Y**2)
    return float(np.sum(residual**2) / total), float(
        len(Y) / p * np.sum(residual[train] ** 2) / total
    )


class EmpiricalCurve(NamedTuple):
    """Measured errors over splits: ``E_g`` and ``E_tr``, each ``(n_splits, len(ps))``.

    It unpacks as ``E_g, E_tr = curve``; :attr:`mean` and :attr:`sem` give, per
    ``p``, the mean over splits and its standard error (``std(ddof=1) / sqrt(n_splits)``,
    NaN with one split), for ``E_g`` and ``E_tr`` as ``(2, len(ps))`` arrays.
    """

    E_g: np.ndarray
    E_tr: np.ndarray

    @property
    def mean(self) -> np.ndarray:
        return np.stack([self.E_g.mean(axis=0), self.E_tr.mean(axis=0)])

    @property
    def sem(self) -> np.ndarray:
        n = self.E_g.shape[0]
        if n < 2:
            return np.full((2, self.E_g.shape[1]), np.nan)
        spread = np.stack([self.E_g.std(axis=0, ddof=1), self.E_tr.std(axis=0, ddof=1)])
        return spread / np.sqrt(n)


def empirical_learning_curve(
    X, Y, ps, alpha: float, n_splits: int = 5, seed: int = 0
) -> EmpiricalCurve:
    """Measured errors of ridge from ``p`` random stimuli (no repeats), per split and ``p``.

    Returns an :class:`EmpiricalCurve`: ``E_g`` and ``E_tr`` ``(n_splits, len(ps))``,
    with their mean and standard error over splits. ``X`` is centred and scaled
    and ``Y`` centred here, as in :func:`spectral_modes`. Split ``s`` at every
    ``p`` draws from ``numpy.random.default_rng([seed, s])``.
    """
    X, Y = center_and_scale(X), _matrix("Y", Y)
    if len(X) != len(Y):
        raise ValueError(f"X and Y must have one row per stimulus: {len(X)} != {len(Y)}")
    Y = Y - Y.mean(axis=0)
    ps = _ps(ps)
    for p in ps:
        _check_p_alpha(int(p), alpha, len(X))
    if isinstance(n_splits, bool) or not isinstance(n_splits, (int, np.integer)) or n_splits < 1:
        raise ValueError(f"n_splits must be a positive integer, got {n_splits!r}")
    gram = X @ X.T  # (P, P), once for every split
    E_g, E_tr = np.zeros((n_splits, len(ps))), np.zeros((n_splits, len(ps)))
    for s in range(n_splits):
        rng = np.random.default_rng([seed, s])
        for j, p in enumerate(ps):
            train = rng.choice(len(X), int(p), replace=False)
            E_g[s, j], E_tr[s, j] = _ridge_from_gram(gram[:, train], Y, train, alpha)
    return EmpiricalCurve(E_g, E_tr)


# ---- the chapter's setting: stimuli, a "brain", candidate models ---------------------------------
@torch.no_grad()
def layer_activations(model: torch.nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """The post-ReLU activations of every hidden layer of an :class:`~spectral_lab.models.MLP`.

    Returns ``{"fc1": (P, width1), "fc2": (P, width2), ...}`` (the output layer is left out).
    """
    names = getattr(model, "layer_names", None)
    if not names:
        raise ValueError("model must be a spectral_lab MLP (with layer_names fc1 ... fcL)")
    h, out = x.flatten(1).float(), {}
    for name in names[:-1]:
        h = F.relu(getattr(model, name)(h))
        out[name] = h.double().numpy()
    return out


def random_relu_features(x, n_features: int, seed: int = 0) -> np.ndarray:
    """``relu(x G / sqrt(d) + b)``: ``n_features`` random ReLU features of inputs ``x`` (P, d), G, b
    ~ N(0, 1)."""
    x = _matrix("x", x)
    if (
        isinstance(n_features, bool)
        or not isinstance(n_features, (int, np.integer))
        or n_features < 1
    ):
        raise ValueError(f"n_features must be a positive integer, got {n_features!r}")
    rng = np.random.default_rng(seed)
    x = x - x.mean(axis=0)
    G = rng.standard_normal((x.shape[1], n_features))
    b = rng.standard_normal(n_features)
    scale = np.sqrt(np.mean(np.sum(x**2, axis=1)))
    return np.maximum(x @ G / scale + b, 0.0)


def brain_responses(H, n_neurons: int, noise: float, seed: int = 0) -> np.ndarray:
    """A hidden "brain": ``softplus(z H R / sqrt(M)) + noise * eps`` for ``n_neurons`` neurons.

    ``H`` (P, M) are the activations being read out, standardized per column
    (``z``); ``R`` (M, N) and ``eps`` (P, N) are standard normal. ``noise`` is
    the standard deviation of the noise relative to the mean standard
    deviation of the noiseless responses.
    """
    H = _matrix("H", H)
    if isinstance(n_neurons, bool) or not isinstance(n_neurons, (int, np.integer)) or n_neurons < 1:
        raise ValueError(f"n_neurons must be a positive integer, got {n_neurons!r}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    z = (H - H.mean(axis=0)) / (H.std(axis=0) + 1e-12)
    R = rng.standard_normal((H.shape[1], n_neurons))
    clean = np.logaddexp(0.0, z @ R / np.sqrt(H.shape[1]))  # softplus
    return clean + noise * clean.std(axis=0).mean() * rng.standard_normal(clean.shape)


@dataclass(frozen=True)
class PredictionConfig(ExperimentConfig):
    """The chapter's setting: every digit image is a stimulus, a hidden "brain" and candidate
    models.

    The brain is ``n_neurons`` softplus readouts (with ``noise``) of layer
    ``brain_layer`` of an MLP trained from seed ``brain_seed``. The candidates
    are the pixels, ``n_random`` random ReLU features of them, and the hidden
    layers of an MLP of the same shape before and after training from seed
    ``seed``. Ridge ``alpha`` (relative to ``tr K = 1``), training-set sizes
    ``ps``, ``n_splits`` random splits each, and ``p_geometry`` where the error
    geometry is compared.
    """

    experiment: ClassVar[str] = "prediction"
    positive: ClassVar = (
        *("hidden", "epochs", "lr", "n_neurons", "n_random", "ps", "n_splits", "p_geometry"),
    )
    non_negative: ClassVar = ("brain_seed", "noise", "alpha")
    choices: ClassVar = {"dataset": ("digits", "mnist1d")}
    preset: str = "custom"
    dataset: str = "digits"
    hidden: tuple[int, ...] = (256, 256)
    epochs: int = 20
    lr: float = 0.05
    seed: int = 0
    brain_seed: int = 1
    brain_layer: str = "fc2"
    n_neurons: int = 100
    noise: float = 0.5
    n_random: int = 2000
    alpha: float = 1e-2
    ps: tuple[int, ...] = (10, 20, 50, 100, 200, 300, 500, 1000)
    n_splits: int = 5
    p_geometry: int = 300
    device: str = "auto"  # where the networks train; the regressions run in numpy

    def validate(self) -> None:
        if self.brain_layer not in [f"fc{l}" for l in range(1, len(self.hidden) + 1)]:
            raise ValueError(
                f"brain_layer must name a hidden layer fc1..fc{len(self.hidden)}, "
                f"got {self.brain_layer!r}"
            )

    @classmethod
    def quick(cls) -> "PredictionConfig":
        """Digits (P = 1,797), MLPs 64-256-256-10 trained 20 epochs (~3 s each), 5 splits: ~20 s in
        all."""
        return cls(preset="quick")

    @classmethod
    def full(cls) -> "PredictionConfig":
        """MNIST-1D (P = 5,000) with wider networks, 40 epochs, 10 splits, p up to 3,000."""
        return cls(
            preset="full",
            dataset="mnist1d",
            hidden=(512, 512),
            epochs=40,
            n_random=4000,
            ps=(10, 20, 50, 100, 200, 500, 1000, 2000, 3000),
            n_splits=10,
            p_geometry=500,
        )

    @classmethod
    def presets(cls) -> dict[str, Callable[[], "PredictionConfig"]]:
        return {"quick": cls.quick, "full": cls.full}

    def classifier(self, seed: int):
        """The :class:`~spectral_lab.experiments.classifier.ClassifierConfig` that trains a
        network of this setting, on this config's device."""
        return ClassifierConfig(
            preset=f"{self.preset}/prediction",
            dataset=self.dataset,
            hidden=self.hidden,
            epochs=self.epochs,
            lr=self.lr,
            seed=seed,
            track_every=125,
            device=self.device,
        )


def build_models(
    config: PredictionConfig, progress: bool = False
) -> tuple[dict[str, np.ndarray], np.ndarray, dict]:
    """``(models, Y, info)``: the candidate activations ``{name: (P, M)}``, the responses ``(P,
    N)``, extras.

    Stimuli are all the images of ``config.dataset`` (training and test parts).
    Names: ``"pixels"``, ``"random ReLU"``, ``"untrained fc1"`` ..., ``"trained fc1"`` ....
    ``info`` holds the stimuli, the trained networks and their test accuracies.
    """

    runs = {}
    for role, seed in (("model", config.seed), ("brain", config.brain_seed)):
        clf = config.classifier(seed)
        data = clf.make_data()
        seed_everything(seed)
        untrained = clf.make_model(data)
        initial = {k: v.clone() for k, v in untrained.state_dict().items()}
        result = fit(clf, untrained, data, track=False, progress=progress)
        runs[role] = (initial, result)
    x = torch.cat([data.train_x, data.test_x]).flatten(1)  # (P, d): every stimulus
    trained, brain = runs["model"][1].model.cpu().eval(), runs["brain"][1].model.cpu().eval()
    untrained = config.classifier(config.seed).make_model(data)
    untrained.load_state_dict(runs["model"][0])
    Y = brain_responses(
        layer_activations(brain, x)[config.brain_layer],
        config.n_neurons,
        config.noise,
        seed=config.brain_seed,
    )
    models = {
        "pixels": x.double().numpy(),
        "random ReLU": random_relu_features(x.numpy(), config.n_random, seed=config.seed),
    }
    models.update({f"untrained {k}": v for k, v in layer_activations(untrained.eval(), x).items()})
    models.update({f"trained {k}": v for k, v in layer_activations(trained, x).items()})
    info = {
        "stimuli": x,
        "trained": trained,
        "untrained": untrained,
        "brain": brain,
        "test_acc": {role: float(runs[role][1].history["test_acc"][-1]) for role in runs},
    }
    return models, Y, info
