"""The Hessian of the loss: explicit for softmax regression on a Gaussian mixture, generic for small
networks.

The model of SPEC section 3b (Ben Arous, Gheissari, Huang and Jagannath, ICLR 2024 and arXiv
2502.15655):

* data: a ``k``-class Gaussian mixture in ``R^d``. Class ``a`` has probability
  ``p_a`` and mean ``mu_a`` (orthonormal means, ``|mu_a| = 1``); a sample is
  ``Y = mu_a + Z`` with ``Z ~ N(0, I_d / lam)``. ``lam`` is the signal-to-noise
  ratio and ``sigma^2 = 1 / lam`` the noise variance (:func:`gaussian_mixture`).
* model: softmax regression with weights ``X`` of shape ``(k, d)`` (an
  ``nn.Linear(d, k, bias=False)``, whose ``weight`` is ``X``), logits ``X Y``,
  ``pi = softmax(X Y)`` and loss
  ``L(X) = (1/n) sum_l -log pi_l[a_l] + (beta / 2) |X|_F^2``.
* parameters are flattened row by row, ``vec(X)[c * d + i] = X[c, i]``, so a
  Kronecker product ``A (x) B`` has the class index outside and the input index inside.

With ``D_l = diag(pi_l) - pi_l pi_l^T`` and ``g_l = pi_l - e_{a_l}``:

* Hessian ``H = (1/n) sum_l D_l (x) Y_l Y_l^T + beta I`` (:func:`explicit_hessian`); for this
  model it equals the Gauss-Newton matrix.
* G-matrix ``G = (1/n) sum_l g_l g_l^T (x) Y_l Y_l^T`` (:func:`explicit_g_matrix`), the
  second moment of the per-sample gradients ``g_l (x) Y_l``.
* At ``X = 0``: ``H = (I/k - 11^T/k^2) (x) Sigma_hat + beta I`` with ``Sigma_hat = (1/n) sum_l Y_l
  Y_l^T``.
  Its bulk is Marchenko-Pastur divided by ``k``, and every class above the detection threshold adds
  an
  outlier of multiplicity ``k - 1`` (:func:`init_prediction`).

For any small network, :mod:`spectral_lab.curvature` builds the whole Hessian with
``torch.func`` and finds its top eigenpairs from Hessian-vector products only.

Chapter: "Hessian outliers along training" (``book/hessian.ipynb``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, ClassVar, NamedTuple

import numpy as np
import torch
from torch import nn

from ..config import ExperimentConfig
from ..curvature import eigh_descending, subspace_overlap

__all__ = [
    "MixtureData",
    "gaussian_mixture",
    "explicit_hessian",
    "explicit_g_matrix",
    "mixture_loss",
    "InitPrediction",
    "init_prediction",
    "bulk_edge_at",
    "init_outliers",
    "init_group_errors",
    "count_outliers",
    "input_subspace",
    "weight_alignment",
    "HessianConfig",
    "HessianRun",
    "measure",
    "train_mixture",
]


# ----------------------------------------------------------------------------- the data


@dataclass(frozen=True, repr=False)
class MixtureData:
    """Samples of a Gaussian mixture: ``Y (n, d)`` float64, ``labels (n,)`` int64, ``means (k, d)``,
    the noise parts ``Z = Y - means[labels]`` and the signal-to-noise ratio ``snr`` (``lam``)."""

    Y: torch.Tensor
    labels: torch.Tensor
    means: torch.Tensor
    Z: torch.Tensor
    snr: float

    @property
    def n(self) -> int:
        return self.Y.shape[0]

    @property
    def d(self) -> int:
        return self.Y.shape[1]

    @property
    def k(self) -> int:
        return self.means.shape[0]

    @property
    def proportions(self) -> np.ndarray:
        """The sample proportions ``p_a`` of the classes, ``(k,)``."""
        return np.bincount(self.labels.numpy(), minlength=self.k) / self.n

    def __repr__(self) -> str:
        return f"MixtureData(n={self.n}, d={self.d}, k={self.k}, snr={self.snr:g})"


def gaussian_mixture(
    n: int, d: int, k: int, snr: float, seed: int = 0, proportions=None
) -> MixtureData:
    """``n`` samples ``Y_l = mu_{a_l} + Z_l`` with ``Z_l ~ N(0, I_d / snr)``; deterministic given
    ``seed``.

    The means are ``k`` orthonormal vectors (a random rotation of the first ``k``
    basis vectors, drawn from ``seed``), the labels are drawn with probabilities
    ``proportions`` (default uniform). The same ``seed`` gives the same means and
    labels at every ``snr``: only the noise is rescaled.
    """
    for name, value in (("n", n), ("d", d), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if k < 2 or k > d:
        raise ValueError(f"need 2 <= k <= d for k orthonormal class means, got k={k}, d={d}")
    if not (isinstance(snr, (int, float)) and math.isfinite(snr) and snr > 0):
        raise ValueError(f"snr must be a positive number, got {snr!r}")
    if proportions is None:
        proportions = np.full(k, 1.0 / k)
    proportions = np.asarray(proportions, dtype=float)
    if (
        proportions.shape != (k,)
        or np.any(proportions < 0)
        or not np.isclose(proportions.sum(), 1.0)
    ):
        raise ValueError(
            f"proportions must be {k} non-negative numbers summing to 1, got {proportions}"
        )
    rng = np.random.default_rng(seed)
    means = np.linalg.qr(rng.standard_normal((d, k)))[0].T  # (k, d) orthonormal rows
    labels = rng.choice(k, size=n, p=proportions)
    Z = rng.standard_normal((n, d)) / math.sqrt(snr)
    Y = means[labels] + Z
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    return MixtureData(Y=t(Y), labels=t(labels).long(), means=t(means), Z=t(Z), snr=float(snr))


# ----------------------------------------------------------------------------- the explicit
# matrices


def _weights(X, k: int | None = None, d: int | None = None) -> torch.Tensor:
    if isinstance(X, nn.Module):
        X = X.weight
    X = torch.as_tensor(X).detach().to(torch.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be a (k, d) weight matrix, got shape {tuple(X.shape)}")
    if d is not None and X.shape[1] != d:
        raise ValueError(f"X has {X.shape[1]} input columns but the data have d={d}")
    return X


def _probs(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    return torch.softmax(Y @ X.T, dim=1)  # (n, k)


def _kron_sum(C: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """``(1/n) sum_l C_l (x) Y_l Y_l^T`` for ``C (n, k, k)``, ``Y (n, d)``: a ``(k d, k d)``
    matrix."""
    n, k, _ = C.shape
    d = Y.shape[1]
    blocks = torch.einsum("lab,li,lj->aibj", C, Y, Y) / n  # (k, d, k, d)
    return blocks.reshape(k * d, k * d)


def explicit_hessian(X, data: MixtureData, beta: float = 0.0) -> torch.Tensor:
    """``H = (1/n) sum_l D_l (x) Y_l Y_l^T + beta I``, ``D_l = diag(pi_l) - pi_l pi_l^T``; ``(k d, k
    d)`` float64.

    The Hessian of :func:`mixture_loss` at ``X`` (a ``(k, d)`` matrix or an
    ``nn.Linear``), with parameters flattened row by row. It does not depend on
    the labels: for softmax regression the Hessian is the Gauss-Newton matrix.
    """
    X = _weights(X, d=data.d)
    pi = _probs(X, data.Y)
    D = torch.diag_embed(pi) - pi[:, :, None] * pi[:, None, :]  # (n, k, k)
    return _kron_sum(D, data.Y) + beta * torch.eye(X.numel(), dtype=torch.float64)


def explicit_g_matrix(X, data: MixtureData) -> torch.Tensor:
    """``G = (1/n) sum_l g_l g_l^T (x) Y_l Y_l^T`` with ``g_l = pi_l - e_{a_l}``; ``(k d, k d)``
    float64.

    The second moment of the per-sample gradients of the cross-entropy
    (``grad_l = g_l (x) Y_l``), the matrix that shapes SGD's noise.
    """
    X = _weights(X, d=data.d)
    g = _probs(X, data.Y) - nn.functional.one_hot(data.labels, X.shape[0]).to(
        torch.float64
    )  # (n, k)
    return _kron_sum(g[:, :, None] * g[:, None, :], data.Y)


def mixture_loss(X: torch.Tensor, data: MixtureData, beta: float = 0.0) -> torch.Tensor:
    """``L(X) = (1/n) sum_l -log softmax(X Y_l)[a_l] + (beta / 2) |X|_F^2`` (differentiable in
    ``X``)."""
    logits = data.Y.to(X.dtype) @ X.T
    return nn.functional.cross_entropy(logits, data.labels) + 0.5 * beta * (X**2).sum()


# ----------------------------------------------------------------------------- predictions at X = 0


class InitPrediction(NamedTuple):
    """Random-matrix predictions for the spectrum of ``H`` at ``X = 0``
    (:func:`init_prediction`)."""

    bulk_edge: float  # sigma^2 (1 + sqrt(gamma))^2 / k + beta
    outliers: np.ndarray  # (k,) one per class, nan below the threshold; each has multiplicity k - 1
    theta: np.ndarray  # (k,) p_a * snr
    threshold: float  # sqrt(gamma): a class gives an outlier when theta > threshold
    overlap: (
        np.ndarray
    )  # (k,) squared overlap of its outlier eigenvectors with the means, nan below
    multiplicity: int  # k - 1

    @property
    def detected(self) -> np.ndarray:
        return self.theta > self.threshold


def init_prediction(snr: float, d: int, n: int, proportions, beta: float = 0.0) -> InitPrediction:
    """Where the spectrum of ``H`` at ``X = 0`` lies, for large ``d`` and ``n`` at fixed ``gamma = d
    / n``.

    With ``sigma^2 = 1 / snr`` and ``theta_a = p_a * snr``:

    * bulk edge ``sigma^2 (1 + sqrt(gamma))^2 / k + beta`` (Marchenko-Pastur divided by ``k``);
    * for each class with ``theta_a > sqrt(gamma)``, an outlier of multiplicity ``k - 1`` at
      ``sigma^2 (1 + theta_a)(1 + gamma / theta_a) / k + beta``;
    * whose eigenvectors have squared overlap ``(1 - gamma / theta_a^2) / (1 + gamma / theta_a)``
      with the span of the means (the BBP transition of spiked covariance).
    """
    proportions = np.asarray(proportions, dtype=float)
    if proportions.ndim != 1 or proportions.size < 2 or np.any(proportions < 0):
        raise ValueError(f"proportions must be k >= 2 non-negative numbers, got {proportions}")
    if not snr > 0 or d < 1 or n < 1:
        raise ValueError(f"need snr > 0 and positive d, n; got snr={snr}, d={d}, n={n}")
    k, gamma, sigma2 = proportions.size, d / n, 1.0 / snr
    theta = proportions * snr
    threshold = math.sqrt(gamma)
    above = theta > threshold
    safe = np.where(above, theta, 1.0)
    outliers = np.where(above, sigma2 * (1 + safe) * (1 + gamma / safe) / k + beta, np.nan)
    overlap = np.where(above, (1 - gamma / safe**2) / (1 + gamma / safe), np.nan)
    edge = sigma2 * (1 + threshold) ** 2 / k + beta
    return InitPrediction(edge, outliers, theta, threshold, overlap, k - 1)


def bulk_edge_at(X, data: MixtureData, beta: float = 0.0) -> float:
    """The measured bulk edge of ``H`` at ``X``: the top eigenvalue of the Hessian built from the
    noise parts.

    ``(1/n) sum_l D_l (x) Z_l Z_l^T + beta I`` with ``D_l`` at ``X`` is ``H`` with the means
    taken out of the samples: same bulk, no spikes. At ``X = 0`` its top eigenvalue
    is close to the Marchenko-Pastur edge of :func:`init_prediction`.
    """
    X = _weights(X, d=data.d)
    pi = _probs(X, data.Y)
    D = torch.diag_embed(pi) - pi[:, :, None] * pi[:, None, :]
    return float(torch.linalg.eigvalsh(_kron_sum(D, data.Z))[-1]) + beta


def init_outliers(data: MixtureData, beta: float = 0.0) -> np.ndarray:
    """The ``k`` largest distinct eigenvalues of ``H(0)``, largest first, from the ``d x d`` sample
    second moment alone.

    At ``X = 0`` every ``pi_l`` is uniform, so ``H(0) = (I/k - 11^T/k^2) (x) Sigma_hat + beta I``
    with ``Sigma_hat = Y^T Y / n``; the first factor has eigenvalue ``1/k`` (``k - 1`` times) and
    ``0``, so the eigenvalues of ``H(0)`` are those of ``Sigma_hat`` over ``k`` (each ``k - 1``
    times) plus ``beta``. One ``d x d`` eigendecomposition instead of a ``k d x k d`` one: the
    same outliers as :func:`explicit_hessian` at ``X = 0`` (to rounding), at a fraction of the cost.
    """
    second_moment = data.Y.T @ data.Y / data.n  # (d, d)
    top = torch.linalg.eigvalsh(second_moment).flip(0)[: data.k].numpy()
    return top / data.k + beta


def init_group_errors(snr: float, d: int, n: int, k: int, beta: float, seeds) -> np.ndarray:
    """Relative error of each outlier group of ``H(0)`` against :func:`init_prediction`, per seed.

    For each seed, the mixture ``gaussian_mixture(n, d, k, snr, seed)`` (equal class
    probabilities), its outliers by :func:`init_outliers` and the prediction at its sample
    proportions, both sorted largest first: ``measured / predicted - 1``, ``(len(seeds), k)``.
    """
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    rows = []
    for seed in seeds:
        data = gaussian_mixture(n, d, k, snr, seed)
        predicted = init_prediction(snr, d, n, data.proportions, beta).outliers
        if np.isnan(predicted).any():
            raise ValueError(
                f"snr={snr} is below the detection threshold at d={d}, n={n} for some class: "
                "there is no outlier to compare; raise snr or n"
            )
        rows.append(init_outliers(data, beta) / np.sort(predicted)[::-1] - 1)
    return np.array(rows)


def count_outliers(eigenvalues, bulk_edge: float, margin: float = 0.03) -> int:
    """How many eigenvalues lie above ``(1 + margin) * bulk_edge``: the outliers."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    return int((np.asarray(eigenvalues) > (1 + margin) * bulk_edge).sum())


def input_subspace(vectors, k: int, rank: int) -> torch.Tensor:
    """The input side of eigenvectors of ``H``: ``(d, rank)`` orthonormal columns.

    Each column of ``vectors (k d, m)`` is reshaped to a ``(k, d)`` matrix; the top
    ``rank`` right singular vectors of all of them stacked are the input
    directions (in ``R^d``) that these eigenvectors use.
    """
    vectors = torch.as_tensor(vectors, dtype=torch.float64)
    if vectors.ndim != 2 or vectors.shape[0] % k:
        raise ValueError(f"vectors must be (k d, m) with k={k}, got shape {tuple(vectors.shape)}")
    d = vectors.shape[0] // k
    stacked = vectors.T.reshape(-1, k, d).reshape(-1, d)  # (m k, d)
    return torch.linalg.svd(stacked, full_matrices=False)[2][:rank].T


def weight_alignment(W, vectors, k: int) -> float:
    """How much of the weights' input side lies in the input side of the Hessian's top eigenvectors.

    ``subspace_overlap(V_W, input_subspace(vectors, k, k))``: ``V_W (d, k - 1)`` are the
    top ``k - 1`` right singular vectors of ``W (k, d)`` (softmax regression from
    ``X = 0`` keeps exactly ``k - 1`` nonzero singular values), ``vectors (k d, m)``
    eigenvectors of ``H`` (the ``k - 1`` top ones in the chapter). 1: inside; about ``k / d``:
    unrelated.
    """
    W = torch.as_tensor(W, dtype=torch.float64)
    if W.ndim != 2 or W.shape[0] != k:
        raise ValueError(f"W must be a ({k}, d) weight matrix, got shape {tuple(W.shape)}")
    if not torch.any(W != 0):
        raise ValueError("W is zero: it has no singular vectors to align")
    V_W = torch.linalg.svd(W, full_matrices=False)[2][: k - 1].T
    return subspace_overlap(V_W, input_subspace(vectors, k, k))


# ----------------------------------------------------------------------------- the experiment


@dataclass(frozen=True)
class HessianConfig(ExperimentConfig):
    """Softmax regression on a ``k``-class Gaussian mixture, trained by SGD (SPEC section 3b).

    ``n`` training and ``n_test`` test samples in ``R^d`` at signal-to-noise ratio
    ``snr``, classes drawn with ``proportions`` (``()``: equal); penalty ``beta``;
    SGD with learning rate ``lr`` and batches of
    ``batch_size`` for ``steps`` steps from ``X = 0``; the Hessian spectrum is
    measured at ``spectrum_steps``. Presets: ``quick()`` (SPEC's measured
    setting, seconds on a CPU) and ``full()`` (three times wider and longer).
    """

    experiment: ClassVar[str] = "hessian"
    positive: ClassVar = ("d", "n", "n_test", "batch_size", "steps", "snr", "lr")
    non_negative: ClassVar = ("beta",)
    preset: str = "custom"
    d: int = 300
    k: int = 4
    n: int = 1000
    n_test: int = 2000
    snr: float = 20.0
    proportions: tuple[float, ...] = ()  # p_a of each class, summing to 1; () for k equal ones
    beta: float = 1e-3
    lr: float = 0.5
    batch_size: int = 50
    steps: int = 3000
    spectrum_steps: tuple[int, ...] = (0, 10, 30, 100, 300, 1000, 3000)
    seed: int = 0

    def validate(self) -> None:
        if not 2 <= self.k <= self.d:
            raise ValueError(f"k must lie in [2, d={self.d}], got {self.k}")
        shares = self.proportions
        if shares and (len(shares) != self.k or min(shares) < 0 or abs(sum(shares) - 1) > 1e-9):
            raise ValueError(
                f"proportions must be k={self.k} non-negative numbers summing to 1 "
                f"(or empty for equal classes), got {shares}"
            )
        if self.batch_size > self.n:
            raise ValueError(f"batch_size {self.batch_size} exceeds n = {self.n}")
        if any(s < 0 or s > self.steps for s in self.spectrum_steps) or list(
            self.spectrum_steps
        ) != sorted(set(self.spectrum_steps)):
            raise ValueError(
                f"spectrum_steps must increase within [0, steps={self.steps}], got "
                f"{self.spectrum_steps}"
            )

    @property
    def class_proportions(self) -> np.ndarray:
        """``p_a`` of each class, ``(k,)``: :attr:`proportions`, or ``1 / k`` each."""
        shares = self.proportions or (1.0 / self.k,) * self.k
        return np.asarray(shares, dtype=float)

    @property
    def gamma(self) -> float:
        """The aspect ratio ``d / n``."""
        return self.d / self.n

    def make_data(self) -> tuple[MixtureData, MixtureData]:
        """Training and test mixtures (same means, independent samples), deterministic given
        ``seed``."""
        shares = self.class_proportions
        train = gaussian_mixture(self.n, self.d, self.k, self.snr, self.seed, shares)
        # the same means; new labels and noise
        test = gaussian_mixture(self.n_test, self.d, self.k, self.snr, self.seed, shares)
        rng = np.random.default_rng([self.seed, 1])
        # equal classes draw without p, as before proportions existed: the same test set
        labels = rng.choice(self.k, size=self.n_test, p=shares if self.proportions else None)
        labels = torch.from_numpy(labels).long()
        Z = torch.from_numpy(rng.standard_normal((self.n_test, self.d)) / math.sqrt(self.snr))
        test = MixtureData(
            Y=test.means[labels] + Z, labels=labels, means=test.means, Z=Z, snr=self.snr
        )
        return train, test

    def make_model(self) -> nn.Linear:
        """``nn.Linear(d, k, bias=False)`` in float64 with ``weight = X = 0`` (the paper's
        initialization)."""
        model = nn.Linear(self.d, self.k, bias=False, dtype=torch.float64)
        nn.init.zeros_(model.weight)
        return model

    @classmethod
    def quick(cls) -> "HessianConfig":
        """SPEC's setting: d 300, k 4, n 1,000, SGD lr 0.5, batches of 50, 3,000 steps (seconds on a
        CPU)."""
        return cls(preset="quick")

    @classmethod
    def full(cls) -> "HessianConfig":
        """d 900, n 3,000 (same gamma), 9,000 steps: the same predictions with smaller finite-size
        errors."""
        return cls(
            preset="full",
            d=900,
            n=3000,
            n_test=6000,
            steps=9000,
            spectrum_steps=(0, 10, 30, 100, 300, 1000, 3000, 9000),
        )

    @classmethod
    def presets(cls) -> dict[str, Callable[[], "HessianConfig"]]:
        return {"quick": cls.quick, "full": cls.full}


@dataclass
class HessianRun:
    """What :func:`train_mixture` measured, as plain arrays indexed by ``steps`` (the spectrum
    steps).

    ``eigenvalues (T, k d)`` largest first; ``vectors (T, k d, m)`` the top ``m = k^2``
    eigenvectors;
    ``bulk_edge (T,)`` from :func:`bulk_edge_at`; ``weights (T, k, d)``; ``train_acc``,
    ``test_acc``,
    ``loss (T,)``; ``config`` is ``asdict`` of the :class:`HessianConfig`.
    """

    config: dict
    steps: np.ndarray
    eigenvalues: np.ndarray
    vectors: np.ndarray
    bulk_edge: np.ndarray
    weights: np.ndarray
    train_acc: np.ndarray
    test_acc: np.ndarray
    loss: np.ndarray

    def alignment(self) -> np.ndarray:
        """:func:`weight_alignment` of the weights with the top ``k - 1`` eigenvectors at each step
        (nan at ``X = 0``)."""
        k = self.config["k"]
        return np.array(
            [
                weight_alignment(W, V[:, : k - 1], k) if np.any(W) else np.nan
                for W, V in zip(self.weights, self.vectors)
            ]
        )

    def outlier_counts(self, margin: float = 0.03) -> np.ndarray:
        """Eigenvalues more than ``margin`` (3 %) above the bulk edge, at each spectrum step
        ``(T,)``."""
        return np.array(
            [count_outliers(E, edge, margin) for E, edge in zip(self.eigenvalues, self.bulk_edge)]
        )

    def __repr__(self) -> str:
        return (
            f"HessianRun(snr={self.config['snr']:g}, steps={self.steps.tolist()}, "
            f"outliers={self.outlier_counts().tolist()}, test_acc={self.test_acc[-1]:.3f})"
        )


def _accuracy(model: nn.Module, data: MixtureData) -> float:
    with torch.no_grad():
        return float((model(data.Y).argmax(1) == data.labels).double().mean())


def measure(model: nn.Module, train: MixtureData, beta: float, top: int):
    """Spectrum, top ``top`` eigenvectors and bulk edge of ``H`` at the model's weights."""
    E, V = eigh_descending(explicit_hessian(model, train, beta))
    return E.numpy(), V[:, :top].numpy(), bulk_edge_at(model, train, beta)


def train_mixture(
    config: HessianConfig, data: tuple[MixtureData, MixtureData] | None = None
) -> HessianRun:
    """Train softmax regression by SGD from ``X = 0`` and measure ``H`` at
    ``config.spectrum_steps``.

    The chapter shows this loop: sample a batch (a seeded generator), cross-entropy
    plus ``beta/2 |X|^2``, one SGD step. Deterministic given the config.
    """
    train, test = config.make_data() if data is None else data
    model = config.make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    rows = {
        name: []
        for name in (
            "eigenvalues",
            "vectors",
            "bulk_edge",
            "weights",
            "train_acc",
            "test_acc",
            "loss",
        )
    }
    for step in range(config.steps + 1):
        if step in config.spectrum_steps:
            E, V, edge = measure(model, train, config.beta, top=config.k**2)
            with torch.no_grad():
                loss = float(mixture_loss(model.weight, train, config.beta))
            for name, value in zip(
                rows,
                (
                    E,
                    V,
                    edge,
                    model.weight.detach().numpy().copy(),
                    _accuracy(model, train),
                    _accuracy(model, test),
                    loss,
                ),
            ):
                rows[name].append(value)
        if step == config.steps:
            break
        batch = torch.randint(train.n, (config.batch_size,), generator=generator)
        loss = nn.functional.cross_entropy(model(train.Y[batch]), train.labels[batch])
        loss = loss + 0.5 * config.beta * model.weight.pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return HessianRun(
        config=asdict(config),
        steps=np.array(config.spectrum_steps),
        **{name: np.array(values) for name, values in rows.items()},
    )
