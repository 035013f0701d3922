"""Heavy-tailed self-regularisation metrics, read from the singular values a record already holds.

WeightWatcher (Martin & Mahoney) reads a finished network through the empirical spectral density
(ESD) of each layer: the eigenvalues ``lambda_i = s_i^2`` of ``W^T W``. This module computes its
main quantities from the spectrum a :class:`~spectral_lab.RunRecord` keeps at every snapshot, so
they come over training at no extra SVD:

* ``alpha``: the exponent of a power law ``p(lambda) ~ lambda^-alpha`` fitted to the tail of the
  ESD by the method of Clauset, Shalizi & Newman (2009): for every candidate ``xmin`` (each
  eigenvalue but the largest) the maximum-likelihood exponent of the eigenvalues ``>= xmin``,
  ``alpha = 1 + n / sum_i log(lambda_i / xmin)``, and the Kolmogorov-Smirnov distance ``D`` between
  their empirical CDF and the fitted one; the ``xmin`` with the smallest ``D`` wins;
* ``ks_distance``: that smallest ``D``, the fit's quality (smaller is better); ``xmin`` and
  ``n_tail``, where the tail starts and how many eigenvalues it holds;
* ``spikes``: how many eigenvalues lie above the Marchenko-Pastur bulk edge of a random matrix of
  the same shape ``(m, n)`` and scale, ``lambda_+ = sigma^2 (sqrt(m) + sqrt(n))^2`` with
  ``sigma^2 = ||W||_F^2 / (m n)`` (the mean squared entry);
* ``log_spectral_norm``: ``log10(lambda_max) = 2 log10(s_1)``, as WeightWatcher defines it.

Agreement with WeightWatcher 0.7 (``tests/test_heavy_tail.py`` checks it against the package):
its eigenvalues are also ``s^2`` of the unnormalised ``W``, its fit the same estimator and the same
KS distance (as the ``powerlaw`` package computes it: at the data points, against the empirical CDF
``j / n`` just below each point). The definitions differ by design in three places:

1. WeightWatcher drops eigenvalues below the absolute ``1e-5`` before fitting; here the cut is
   relative (``rtol * lambda_max``), so that alpha does not change when ``W`` is rescaled. Pass
   ``min_eigenvalue=1e-5`` to get WeightWatcher's rule.
2. Below 20 eigenvalues WeightWatcher switches to a bias-corrected small-sample fit; here alpha is
   NaN there (``min_eigenvalues``): a tail of a dozen points says little.
3. WeightWatcher splits a convolution kernel ``(c_out, c_in, k, k)`` into ``k^2`` matrices
   ``(c_out, c_in)`` and pools their eigenvalues; this package (and the paper) flattens it to
   ``(c_out, c_in k^2)``. The spectra differ, so do the alphas. Its ``num_spikes`` comes from a
   Marchenko-Pastur density fitted to the bulk; ``spikes`` here uses the matrix's own scale.

Chapter: "Checkpoints and heavy tails" compares alpha with NormEffRank over training.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import matplotlib as mpl
import numpy as np
import torch

from .plotting import (
    COLUMN_INCHES,
    MAX_PANELS_PER_ROW,
    layer_colors,
    legend_below,
    log_axis,
    new_figure,
    panel_grid,
)
from .record import RunRecord

__all__ = [
    "PowerLawFit",
    "HeavyTailMetrics",
    "power_law_fit",
    "marchenko_pastur_edge",
    "spectrum_metrics",
    "record_metrics",
    "plot_esd",
    "plot_alpha",
]

#: Memory bound of the vectorised KS search, in float64 elements: (matrices, candidates, points).
_CHUNK_ELEMENTS = 1 << 22
#: Padding a spectrum from R to R' costs R'^2 - R^2 more elements; below this, less than a call.
_PADDING_WORTH_A_CALL = 1 << 14
_FIELDS = ("alpha", "xmin", "ks_distance", "n_tail", "spikes", "log_spectral_norm")


@dataclass(frozen=True)
class PowerLawFit:
    """Power-law fits of a batch of spectra, each array shaped like the batch ``(...)``.

    ``alpha`` is NaN where a spectrum has fewer than ``min_eigenvalues`` usable eigenvalues.
    """

    alpha: np.ndarray
    xmin: np.ndarray
    ks_distance: np.ndarray
    n_tail: np.ndarray


def _as_eigenvalues(eigenvalues) -> np.ndarray:
    values = np.asarray(eigenvalues, dtype=np.float64)
    if values.ndim < 1 or values.shape[-1] == 0:
        raise ValueError(f"expected eigenvalues shaped (..., R) with R >= 1, got {values.shape}")
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(
            "eigenvalues of W^T W must be finite and non-negative: pass s**2 of the singular "
            "values, not the singular values of a diverged run"
        )
    return values


@functools.lru_cache(maxsize=16)
def _empirical_cdf(R: int, start: int, stop: int) -> torch.Tensor:
    """``(j - i) / (R - i)`` for candidates ``i`` in ``[start, stop)`` and points ``j >= i``, else
    0: ``(C, R)``."""
    i = torch.arange(start, stop, dtype=torch.float64)[:, None]
    j = torch.arange(R, dtype=torch.float64)[None, :]
    return (j - i).clamp_min_(0.0) / (R - i)


def _ks_distances(log_x: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """``D[b, i] = max_{j >= i} |1 - (x_j / x_i)^(1 - alpha_i) - (j - i) / (R - i)|``, last
    column inf.

    In torch (its float64 ``exp`` is about 3x numpy's on one CPU thread), over blocks of
    candidates. Below the diagonal (``j < i``) the log-ratio is clamped to 0, where both CDFs are
    0, so no mask is needed.
    """
    B, R = log_x.shape
    lx, a = torch.from_numpy(log_x), torch.from_numpy(1.0 - alphas)
    D = torch.full((B, R), torch.inf, dtype=torch.float64)
    block = max(1, _CHUNK_ELEMENTS // max(1, B * R))
    for start in range(0, R - 1, block):
        stop = min(start + block, R - 1)
        exponent = (lx[:, None, :] - lx[:, start:stop, None]).clamp_min_(0.0)  # log(x_j / x_i)
        exponent.mul_(a[:, start:stop, None])  # (B, C, R)
        fitted = torch.exp_(exponent).neg_().add_(1.0)  # 1 - (x_j / x_i)^(1 - alpha_i)
        D[:, start:stop] = fitted.sub_(_empirical_cdf(R, start, stop)).abs_().amax(-1)
    return D.numpy()


def power_law_fit(
    eigenvalues,
    *,
    rtol: float = 1e-9,
    min_eigenvalue: float | None = None,
    min_eigenvalues: int = 20,
) -> PowerLawFit:
    """Clauset-Shalizi-Newman power-law fit of the tail of each spectrum in ``(..., R)``.

    For a candidate ``xmin = x_i`` (eigenvalues sorted ascending ``x_0 <= ... <= x_{R-1}``) with
    ``n = R - i`` tail points, the MLE is ``alpha_i = 1 + n / sum_{j >= i} log(x_j / x_i)`` and
    ``D_i = max_{j >= i} |1 - (x_j / x_i)^(1 - alpha_i) - (j - i) / n|``; the result is the
    candidate with the smallest ``D_i`` (the first on ties), as in ``powerlaw`` and WeightWatcher.
    Eigenvalues ``<= max(rtol * lambda_max, min_eigenvalue)`` are dropped first. Vectorised over
    the batch and the candidates, in float64.
    """
    values = _as_eigenvalues(eigenvalues)
    batch_shape, R = values.shape[:-1], values.shape[-1]
    x = np.sort(values.reshape(-1, R), axis=-1)  # (B, R) ascending
    cut = rtol * x[:, -1:]
    if min_eigenvalue is not None:
        cut = np.maximum(cut, min_eigenvalue)
    usable = x > cut  # a suffix of each row, since x is sorted
    first = R - usable.sum(-1)  # (B,) index of the smallest usable eigenvalue
    # dropped entries take the smallest kept value: the rows stay sorted, which the KS search needs
    smallest_kept = np.take_along_axis(x, np.minimum(first, R - 1)[:, None], axis=-1)
    log_x = np.log(np.where(usable, x, np.maximum(smallest_kept, np.finfo(np.float64).tiny)))
    tail_log_sum = np.cumsum(log_x[:, ::-1], axis=-1)[:, ::-1]  # sum_{j >= i} log x_j
    n = (R - np.arange(R)).astype(np.float64)  # tail sizes, (R,)
    with np.errstate(divide="ignore", invalid="ignore"):
        alphas = 1.0 + n / (tail_log_sum - n * log_x)  # (B, R); inf where the tail is flat
    D = _ks_distances(log_x, alphas)
    j = np.arange(R)
    candidate = (j[None, :] >= first[:, None]) & (j[None, :] < R - 1) & np.isfinite(alphas)
    D = np.where(candidate & np.isfinite(D), D, np.inf)
    best = D.argmin(-1)
    rows = np.arange(x.shape[0])
    enough = (R - first) >= max(2, min_eigenvalues)
    alpha = np.where(enough, alphas[rows, best], np.nan)
    xmin = np.where(enough, x[rows, best], np.nan)
    ks = np.where(enough, D[rows, best], np.nan)
    n_tail = np.where(enough, R - best, 0)
    return PowerLawFit(
        *(a.reshape(batch_shape) for a in (alpha, xmin, ks, n_tail.astype(np.int64)))
    )


def marchenko_pastur_edge(eigenvalues, shape: tuple[int, int]) -> np.ndarray:
    """The bulk edge ``lambda_+ = sigma^2 (sqrt(m) + sqrt(n))^2`` of a random ``(m, n)`` matrix.

    ``sigma^2 = sum(lambda) / (m n) = ||W||_F^2 / (m n)``: the random matrix has the same shape and
    the same mean squared entry as ``W``. Its eigenvalues of ``W^T W`` fill ``[lambda_-,
    lambda_+]`` as ``m, n`` grow (Marchenko & Pastur 1967); ``eigenvalues`` is ``(..., R)``.
    """
    m, n = (int(d) for d in shape)
    if m < 1 or n < 1:
        raise ValueError(f"shape must be two positive sizes (m, n), got {shape}")
    values = _as_eigenvalues(eigenvalues)
    sigma2 = values.sum(-1) / (m * n)
    return sigma2 * (np.sqrt(m) + np.sqrt(n)) ** 2


@dataclass(frozen=True)
class HeavyTailMetrics:
    """Heavy-tail metrics: each field ``(T, L)``, rows the snapshots ``steps``, columns
    ``layers``."""

    steps: np.ndarray
    layers: list[str]
    alpha: np.ndarray
    xmin: np.ndarray
    ks_distance: np.ndarray
    n_tail: np.ndarray
    spikes: np.ndarray
    log_spectral_norm: np.ndarray

    def __repr__(self) -> str:
        return (
            f"HeavyTailMetrics({len(self.steps)} snapshots, {len(self.layers)} layers, "
            f"fields: {', '.join(_FIELDS)})"
        )

    def layer(self, name: str) -> dict[str, np.ndarray]:
        """One layer's metrics over the snapshots, each ``(T,)``."""
        if name not in self.layers:
            raise KeyError(f"no layer {name!r}; layers: {', '.join(self.layers)}")
        column = self.layers.index(name)
        return {field: getattr(self, field)[:, column] for field in _FIELDS}


def _length_groups(lengths: list[int], min_eigenvalues: int) -> list[list[int]]:
    """Columns to fit together: spectra within 20 % of the longest in the group, or short enough
    that their zero padding (which the fit drops) costs less than a call of its own. Spectra too
    short to fit get no group."""
    order = sorted((R, c) for c, R in enumerate(lengths) if R >= min_eigenvalues)[::-1]
    groups: list[list[int]] = []
    for R, column in order:
        longest = lengths[groups[-1][0]] if groups else 0
        if groups and (R >= 0.8 * longest or longest**2 - R**2 < _PADDING_WORTH_A_CALL):
            groups[-1].append(column)
        else:
            groups.append([column])
    return groups


def spectrum_metrics(
    spectra: Mapping[str, np.ndarray],
    shapes: Mapping[str, tuple[int, int]],
    steps: Sequence[int] | None = None,
    **fit_options,
) -> HeavyTailMetrics:
    """Every metric of the module docstring for named spectra, each ``(T, R)`` singular values.

    ``shapes[name]`` is the matrix's ``(m, n)`` (``R = min(m, n)``); ``steps`` labels the ``T``
    rows (default ``0..T-1``). Spectra of similar length are fitted together in one vectorised
    :func:`power_law_fit` call (``fit_options`` go to it); the bulk edge is
    :func:`marchenko_pastur_edge`'s.
    """
    names = list(spectra)
    if not names:
        raise ValueError("no spectra given")
    S = [np.asarray(spectra[name], dtype=np.float64) for name in names]
    for name, values in zip(names, S):
        shape = tuple(shapes[name])
        if values.ndim != 2 or values.shape[-1] != min(shape) or len(values) != len(S[0]):
            raise ValueError(
                f"spectrum {name!r}: a {shape} matrix has {min(shape)} singular values, so "
                f"expected ({len(S[0])}, {min(shape)}) over the snapshots, got {values.shape}"
            )
    T, L = len(S[0]), len(names)
    lengths = [values.shape[-1] for values in S]
    eigenvalues = np.zeros((T, L, max(lengths)))  # zero-padded: the fit drops zeros
    for column, values in enumerate(S):
        eigenvalues[:, column, : lengths[column]] = values**2
    min_eigenvalues = fit_options.get("min_eigenvalues", 20)
    fields = {f: np.full((T, L), np.nan) for f in ("alpha", "xmin", "ks_distance")}
    n_tail = np.zeros((T, L), dtype=np.int64)
    for group in _length_groups(lengths, min_eigenvalues):
        fit = power_law_fit(eigenvalues[:, group, : lengths[group[0]]], **fit_options)
        for f in fields:
            fields[f][:, group] = getattr(fit, f)
        n_tail[:, group] = fit.n_tail
    m, n = np.array([shapes[name] for name in names], dtype=np.float64).T  # (L,)
    edge = eigenvalues.sum(-1) / (m * n) * (np.sqrt(m) + np.sqrt(n)) ** 2  # (T, L)
    with np.errstate(divide="ignore"):
        log_spectral_norm = np.log10(eigenvalues.max(-1))
    return HeavyTailMetrics(
        steps=np.arange(T) if steps is None else np.asarray(steps),
        layers=names,
        n_tail=n_tail,
        spikes=(eigenvalues > edge[..., None]).sum(-1),
        log_spectral_norm=log_spectral_norm,
        **fields,
    )


def record_metrics(
    record: RunRecord,
    layers: Iterable[str] | None = None,
    steps: Iterable[int] | None = None,
    **fit_options,
) -> HeavyTailMetrics:
    """Heavy-tail metrics of the snapshots of ``record`` from its singular values (no SVD).

    ``layers`` and ``steps`` default to all; :func:`spectrum_metrics` does the work.
    """
    if not isinstance(record, RunRecord):
        raise TypeError(f"expected a RunRecord, got {type(record).__name__}")
    if len(record) == 0:
        raise ValueError("the record has no snapshots yet: track or analyze a model first")
    names = record.layers if layers is None else list(layers)
    rows = np.arange(len(record)) if steps is None else [record.index_of(s) for s in steps]
    spectra = {name: record.series(name, "singular_values")[rows] for name in names}
    shapes = {name: tuple(record.meta["shapes"][name]) for name in names}
    return spectrum_metrics(spectra, shapes, record.steps[rows], **fit_options)


# ---- figures
# ----------------------------------------------------------------------------------------


def _snapshot_rows(record: RunRecord, steps: Sequence[int] | None) -> list[int]:
    if len(record) == 0:
        raise ValueError("the record has no snapshots to plot yet")
    if steps is None:
        return sorted({0, len(record) - 1})
    return [record.index_of(step) for step in steps]


def plot_esd(record: RunRecord, layer: str, steps: Sequence[int] | None = None, bins: int = 40):
    """The empirical spectral density of ``layer`` with its fitted tail and the MP bulk edge.

    One panel per snapshot in ``steps`` (default: the first and the last), on log-log axes: a
    histogram of the eigenvalues ``s^2`` (density over all of them), the fitted power law
    ``(n_tail / R) (alpha - 1) / xmin (lambda / xmin)^-alpha`` from ``xmin`` on, the bulk edge
    ``lambda_+`` of a random matrix of the same shape and scale; at most three panels a row, each
    titled with its alpha and its number of spikes. Returns a Figure as wide as the book's column.
    """
    rows = _snapshot_rows(record, steps)
    shape = tuple(record.meta["shapes"][layer])
    S = record.series(layer, "singular_values")[rows].astype(np.float64)
    metrics = spectrum_metrics({layer: S}, {layer: shape}).layer(layer)  # each (len(rows),)
    eigen = S**2
    positive = eigen[eigen > 0]
    edges = np.geomspace(positive.min(), positive.max() * 1.001, bins + 1)
    nrows, ncols = panel_grid(len(rows), MAX_PANELS_PER_ROW)
    # as wide as the column; taller than new_figure's default, for two title lines, the legend
    # below and log axes that span decades
    height = min(COLUMN_INCHES / ncols * 1.3, 3.6)
    fig, axes = new_figure(nrows, ncols, height=height, sharey=True)
    for ax, row, values, k in zip(axes.flat, rows, eigen, range(len(rows))):
        density_values, _, _ = ax.hist(values, bins=edges, density=True, color="0.6", label="ESD")
        alpha, xmin = metrics["alpha"][k], metrics["xmin"][k]
        if np.isfinite(alpha):
            tail = np.geomspace(xmin, values.max(), 50)
            share = metrics["n_tail"][k] / values.size
            density = share * (alpha - 1) / xmin * (tail / xmin) ** -alpha
            ax.plot(tail, density, color="C3", lw=2, label="power-law fit")
        edge = marchenko_pastur_edge(values, shape)
        ax.axvline(edge, color="C0", ls="--", label="Marchenko-Pastur edge")
        log_axis(ax, positive, axis="x")
        if np.log10(positive.max() / positive.min()) > 3:  # many decades: every other one labelled
            ax.xaxis.set_major_locator(mpl.ticker.LogLocator(numticks=4))
        log_axis(ax, density_values, axis="y")
        fit = f"alpha {alpha:.2f}" if np.isfinite(alpha) else "no fit"
        ax.set_title(f"step {int(record.steps[row])}: {fit}\n{metrics['spikes'][k]} above the edge")
        ax.set_xlabel(r"eigenvalue $\lambda = s^2$")
    for ax in list(axes.flat)[len(rows) :]:
        ax.set_visible(False)
    for row_axes in axes:
        row_axes[0].set_ylabel("density")
    fig.suptitle(layer)
    legend_below(fig)
    return fig


def plot_alpha(record: RunRecord, layers: Iterable[str] | None = None, **fit_options):
    """Alpha over training beside NormEffRank, one line per layer (the two lenses side by side).

    Layers whose spectra are too short for a fit (alpha NaN) are left out of the alpha panel.
    Returns a Figure as wide as the book's column, with one legend below both panels.
    """
    names = record.layers if layers is None else list(layers)
    metrics = record_metrics(record, names, **fit_options)
    colors = layer_colors(record.layers)
    fig, axes = new_figure(1, 2, sharex=True)  # sized for the book's column
    ax_alpha, ax_rank = axes[0]
    erank = record.norm_eff_rank(names)
    for column, name in enumerate(names):
        if np.isfinite(metrics.alpha[:, column]).any():
            ax_alpha.plot(metrics.steps, metrics.alpha[:, column], color=colors[name], label=name)
        ax_rank.plot(metrics.steps, erank[:, column], color=colors[name], label=name)
    ax_alpha.set_ylabel(r"power-law $\alpha$ of the ESD")
    ax_rank.set_ylabel("NormEffRank")
    for ax in (ax_alpha, ax_rank):
        ax.set_xlabel("step")
    legend_below(fig)  # one legend for both panels, below them
    return fig
