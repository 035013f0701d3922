"""Figures from run records: every function takes a :class:`RunRecord` (or arrays) and returns a
Figure.

Figures are built with ``matplotlib.figure.Figure`` rather than pyplot, so they
hold no global state and a notebook shows each exactly once (the cell's value).
One colour per layer across the book (:func:`layer_colors`); singular-value
rank is coded with a sequential map (dark = top). Sizes and fonts are chosen to
stay readable when a figure is put on a slide.
"""

from __future__ import annotations

import io
from typing import Iterable, Sequence

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure

from .record import RunRecord

__all__ = [
    "STYLE",
    "layer_colors",
    "new_figure",
    "plot_singular_values",
    "plot_rank_heatmap",
    "plot_rank_curves",
    "plot_diagonal",
    "plot_alignment",
    "plot_agreement",
    "plot_spectra",
    "plot_heatmaps",
]

STYLE = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "legend.frameon": False,
    "legend.fontsize": 9,
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
}

_LAYER_CYCLE = [mpl.colormaps["tab10"](i) for i in range(10)] + [
    mpl.colormaps["tab20"](2 * i + 1) for i in range(10)
]


class BookFigure(Figure):
    """A Figure that renders itself as a PNG in a notebook even when no pyplot backend is active.

    Without pyplot, IPython only knows how to show a Figure after ``%matplotlib
    inline``; this ``_repr_png_`` makes the cell's value a picture everywhere
    (Jupyter, Colab, the book build). When the inline backend is active, its
    own formatter takes precedence, so nothing is shown twice.
    """

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=STYLE["savefig.dpi"], bbox_inches="tight")
        return buffer.getvalue()


def layer_colors(names: Sequence[str]) -> dict[str, tuple]:
    """A fixed colour per layer, by position: the same layer keeps its colour in every figure of a
    chapter."""
    return {name: _LAYER_CYCLE[i % len(_LAYER_CYCLE)] for i, name in enumerate(names)}


def new_figure(nrows: int = 1, ncols: int = 1, width: float = 4.2, height: float = 3.2, **kwargs):
    """A pyplot-free Figure in the book's style with a grid of axes (``width`` x ``height`` inches
    each)."""
    with mpl.rc_context(STYLE):
        fig = BookFigure(figsize=(width * ncols, height * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def _styled(ax_fn):
    """Run a drawing function inside the book's rc context so fonts and grids apply."""

    def wrapper(*args, **kwargs):
        with mpl.rc_context(STYLE):
            return ax_fn(*args, **kwargs)

    wrapper.__doc__, wrapper.__name__ = ax_fn.__doc__, ax_fn.__name__
    return wrapper


def _log_axis(ax, values: np.ndarray) -> None:
    """Log scale with plain-number labels; within one decade, evenly spaced ticks instead of minor
    clutter."""
    ax.set_yscale("log")
    positive = values[values > 0]
    narrow = positive.size == 0 or positive.max() / positive.min() < 10
    locator = mpl.ticker.MaxNLocator(5) if narrow else mpl.ticker.LogLocator(numticks=6)
    ax.yaxis.set_major_locator(locator)
    ax.yaxis.set_major_formatter(mpl.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(mpl.ticker.NullFormatter())


def _layers(record: RunRecord, layers: Iterable[str] | None) -> list[str]:
    names = record.layers if layers is None else list(layers)
    if not names:
        raise ValueError("no layers to plot")
    if len(record) == 0:
        raise ValueError("the record has no snapshots to plot yet")
    return names


@_styled
def plot_singular_values(
    record: RunRecord,
    layers: Iterable[str] | None = None,
    top: int | None = 20,
    log: bool = True,
    ncols: int = 3,
) -> Figure:
    """Singular-value trajectories: one panel per layer, one line per rank (dark = largest)."""
    names = _layers(record, layers)
    ncols = min(ncols, len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = new_figure(nrows, ncols, width=3.6, height=2.8)
    steps = record.steps
    for ax, name in zip(axes.flat, names):
        S = record.singular_values(name)
        shown = S.shape[1] if top is None else min(top, S.shape[1])
        colors = mpl.colormaps["viridis"](np.linspace(0, 0.9, shown))
        for i in range(shown):
            ax.plot(steps, S[:, i], color=colors[i], lw=1.2)
        if log:
            _log_axis(ax, S[:, :shown])
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("singular value")
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    fig.suptitle(
        f"Top {top} singular values per matrix (dark = largest)" if top else "Singular values"
    )
    return fig


@_styled
def plot_rank_heatmap(
    record: RunRecord, layers: Iterable[str] | None = None, metric: str = "norm_eff_rank", ax=None
) -> Figure:
    """A heat map of a per-layer metric over (step, layer); default NormEffRank in [0, 1]."""
    names = _layers(record, layers)
    values = np.stack([record.series(name, metric) for name in names])  # (L, T)
    steps = record.steps.astype(float)
    if len(steps) > 1:
        mids = (steps[1:] + steps[:-1]) / 2
        edges = np.concatenate(
            [[steps[0] - (mids[0] - steps[0])], mids, [steps[-1] + (steps[-1] - mids[-1])]]
        )
    else:
        edges = np.array([steps[0] - 0.5, steps[0] + 0.5])
    fig, axes = (
        (ax.figure, None)
        if ax is not None
        else new_figure(1, 1, width=7, height=0.45 * len(names) + 1.6)
    )
    ax = ax if ax is not None else axes[0, 0]
    vmin, vmax = (0.0, 1.0) if metric == "norm_eff_rank" else (None, None)
    mesh = ax.pcolormesh(
        edges, np.arange(len(names) + 1), values, cmap="magma", vmin=vmin, vmax=vmax
    )
    ax.set_yticks(np.arange(len(names)) + 0.5, names)
    ax.invert_yaxis()
    ax.grid(False)
    ax.set_xlabel("step")
    label = {
        "norm_eff_rank": "NormEffRank",
        "stable_rank": "stable rank",
        "fro_norm": "Frobenius norm",
    }
    fig.colorbar(mesh, ax=ax, label=label.get(metric, metric))
    return fig


@_styled
def plot_rank_curves(
    record: RunRecord,
    layers: Iterable[str] | None = None,
    metric: str = "norm_eff_rank",
    ax=None,
    linestyle: str = "-",
    label_suffix: str = "",
) -> Figure:
    """A per-layer metric against step, one colour per layer."""
    names = _layers(record, layers)
    colors = layer_colors(record.layers)
    fig, axes = (ax.figure, None) if ax is not None else new_figure(1, 1, width=6, height=3.6)
    ax = ax if ax is not None else axes[0, 0]
    for name in names:
        ax.plot(
            record.steps,
            record.series(name, metric),
            color=colors[name],
            ls=linestyle,
            label=name + label_suffix,
            lw=1.6,
        )
    ax.set_xlabel("step")
    ax.set_ylabel(
        {"norm_eff_rank": "NormEffRank", "stable_rank": "stable rank"}.get(metric, metric)
    )
    ax.legend(loc="best", ncol=1 + len(names) // 6)
    return fig


@_styled
def plot_diagonal(
    steps: np.ndarray, matrices: np.ndarray, title: str = "", ylabel: str = "", k: int = 10, ax=None
) -> Figure:
    """Diagonal entries ``M[t, i, i]`` of a ``(T, k, k)`` series over time, one line per rank (dark
    = top)."""
    matrices = np.asarray(matrices)
    if matrices.ndim != 3 or matrices.shape[0] != len(steps):
        raise ValueError(
            f"expected a (T, k, k) array with T = {len(steps)}, got shape {matrices.shape}"
        )
    diag = np.diagonal(matrices, axis1=1, axis2=2)[:, :k]
    fig, axes = (ax.figure, None) if ax is not None else new_figure(1, 1, width=5.5, height=3.4)
    ax = ax if ax is not None else axes[0, 0]
    colors = mpl.colormaps["viridis"](np.linspace(0, 0.9, diag.shape[1]))
    for i in range(diag.shape[1]):
        ax.plot(
            steps,
            diag[:, i],
            color=colors[i],
            lw=1.3,
            label=f"rank {i + 1}" if i in (0, diag.shape[1] - 1) else None,
        )
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="best")
    return fig


def plot_alignment(
    record: RunRecord, pair: tuple[str, str] | None = None, k: int = 10, ax=None
) -> Figure:
    """Diagonal of ``|Vh_next @ U_prev|`` over time for one tracked pair of consecutive layers."""
    pair = tuple(pair) if pair is not None else record.pairs[0] if record.pairs else None
    A = record.alignment(pair)
    return plot_diagonal(
        record.steps,
        A,
        title=f"alignment {pair[0]} -> {pair[1]}",
        ylabel="|v_i(next) . u_i(prev)|",
        k=k,
        ax=ax,
    )


def plot_agreement(
    record: RunRecord, layer: str, reference="final", k: int = 10, ax=None
) -> Figure:
    """Diagonal of the singular-vector agreement ``S(t)`` of one layer with a reference (default:
    final step)."""
    S = record.agreement_with(reference, layers=[layer])[layer]
    what = "final step" if isinstance(reference, str) else "reference run"
    return plot_diagonal(
        record.steps, S, title=f"{layer}: agreement with the {what}", ylabel="S_ii", k=k, ax=ax
    )


# ---- toy matrices: spectra and overlap matrices given as arrays (chapter "The spectral toolkit")
# ----------------


@_styled
def plot_spectra(
    spectra: "dict[str, np.ndarray]", log: bool = True, title: str = "", ylim=None, ax=None
) -> Figure:
    """Singular values ``s_i`` against their index ``i = 1..R``, one line per labelled spectrum.

    ``spectra`` maps a label to a 1-D array (descending, as ``svd`` returns it).
    On a log axis zeros are left out, so a rank-r spectrum stops at ``i = r``.
    ``ylim=(low, high)`` fixes the value axis, e.g. so that a slider moves the
    spectrum rather than the axis.
    """
    if not spectra:
        raise ValueError("no spectra to plot")
    arrays = {name: np.asarray(s, dtype=float) for name, s in spectra.items()}
    for name, s in arrays.items():
        if s.ndim != 1 or s.size == 0:
            raise ValueError(
                f"spectrum {name!r} must be a non-empty 1-D array, got shape {s.shape}"
            )
    fig, axes = (ax.figure, None) if ax is not None else new_figure(1, 1, width=5.5, height=3.6)
    ax = ax if ax is not None else axes[0, 0]
    colors = layer_colors(list(arrays))
    for name, s in arrays.items():
        shown = np.where(s > 0, s, np.nan) if log else s
        few = (
            np.count_nonzero(np.isfinite(shown)) <= 20
        )  # dots keep a short spectrum or a lone spike visible
        ax.plot(
            np.arange(1, s.size + 1),
            shown,
            color=colors[name],
            lw=1.8,
            label=name,
            marker="o" if few else None,
            ms=4,
        )
    if log:
        _log_axis(
            ax,
            np.concatenate(
                list(arrays.values()) + ([np.asarray(ylim, dtype=float)] if ylim else [])
            ),
        )
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("index i (largest first)")
    ax.set_ylabel("singular value $s_i$")
    ax.set_title(title)
    if len(arrays) > 1:
        ax.legend(loc="best")
    return fig


@_styled
def plot_heatmaps(
    matrices: "dict[str, np.ndarray]",
    xlabel: str = "",
    ylabel: str = "",
    label: str = "",
    vmin: float = 0.0,
    vmax: float = 1.0,
) -> Figure:
    """Small matrices side by side as heat maps with 1-based indices and one shared colour bar.

    Made for overlap matrices with entries in [0, 1]: alignment ``|Vh_next @ U_prev|``
    and singular-vector agreement ``S``; entry ``[j, i]`` is drawn at row ``j``, column ``i``.
    """
    if not matrices:
        raise ValueError("no matrices to plot")
    arrays = {name: np.asarray(M, dtype=float) for name, M in matrices.items()}
    for name, M in arrays.items():
        if M.ndim != 2:
            raise ValueError(f"matrix {name!r} must be 2-D, got shape {M.shape}")
    fig, axes = new_figure(1, len(arrays), width=3.4, height=3.2)
    for ax, (name, M) in zip(axes.flat, arrays.items()):
        rows, cols = M.shape
        image = ax.imshow(
            M, cmap="magma", vmin=vmin, vmax=vmax, extent=(0.5, cols + 0.5, rows + 0.5, 0.5)
        )
        ax.grid(False)
        ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
        ax.set_title(name)
        ax.set_xlabel(xlabel)
    axes[0, 0].set_ylabel(ylabel)
    fig.colorbar(image, ax=list(axes.flat), label=label, shrink=0.9)
    return fig
