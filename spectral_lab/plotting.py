"""Figures from run records: every function takes a :class:`RunRecord` (or arrays) and returns a
Figure.

Figures are built with ``matplotlib.figure.Figure`` rather than pyplot, so they
hold no global state and a notebook shows each exactly once (the cell's value).
One colour per layer across the book (:func:`layer_colors`); singular-value
rank is coded with a sequential map (dark = top).

Drawn for the book's column. At a laptop width (1366 px) the content column is
about 757 px wide, and an image wider than that is shrunk to fit, text and all.
:func:`new_figure` therefore sizes a figure to the column (:data:`COLUMN_INCHES`
at 100 dpi) unless told otherwise, so that its text is shown at about its
nominal size: 11 pt labels become about 15 px on the page. Three panels in a row
get 12 pt text; more than three in a row are refused (use :func:`panel_grid` for
two rows). Every PNG the package renders carries its dpi and its smallest text
size (:func:`png_bytes`), from which the browser check computes the rendered
size of the smallest text on the page (at least :data:`MIN_TEXT_PX`).
"""

from __future__ import annotations

import contextlib
import contextvars
import io
from typing import Iterable, Iterator, Sequence

import matplotlib as mpl
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .record import RunRecord

__all__ = [
    "COLUMN_INCHES",
    "column_fraction",
    "MIN_TEXT_PX",
    "STYLE",
    "layer_colors",
    "legend_below",
    "log_axis",
    "min_text_points",
    "new_figure",
    "panel_grid",
    "png_bytes",
    "png_text",
    "rendered_text_px",
    "plot_singular_values",
    "plot_rank_heatmap",
    "plot_rank_curves",
    "plot_diagonal",
    "plot_alignment",
    "plot_agreement",
    "plot_spectra",
    "plot_heatmaps",
]

COLUMN_INCHES = 7.5  # the content column at 1366 px (about 757 px) at 100 dpi
MIN_TEXT_PX = 9.0  # the smallest text a figure may show on the page, in CSS pixels
MAX_PANELS_PER_ROW = 3
PANEL_ASPECT = 0.72  # panel height / width when new_figure chooses the size
# PNG text chunks that tell the browser check how large the figure's text is drawn
DPI_KEY, MIN_TEXT_KEY = "spectral_lab:dpi", "spectral_lab:min_text_pt"

STYLE = {
    "font.size": 11,
    "axes.titlesize": 11,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "legend.frameon": False,
    "legend.fontsize": 10,
    "figure.titlesize": 12,
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
}
# Three panels in a row are narrow: their text is set larger so it still reads at the column.
THREE_PANEL_STYLE = {
    **STYLE,
    "font.size": 12,
    "axes.titlesize": 12,
    "axes.labelsize": 12,
    "xtick.labelsize": 12,
    "ytick.labelsize": 12,
    "legend.fontsize": 12,
    "figure.titlesize": 12,
}

_COLUMN_SHARE = contextvars.ContextVar("column_share", default=1.0)


@contextlib.contextmanager
def column_fraction(fraction: float) -> Iterator[float]:
    """Within this block, :func:`new_figure` sizes figures for ``fraction`` of the column.

    Used for small multiples (``widgets.interactive_figure`` in static mode): a figure
    that will be shown at a third of the column is drawn a third as wide, with its text
    at full size, instead of being drawn full width and shrunk.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"a column fraction is in (0, 1], got {fraction}")
    token = _COLUMN_SHARE.set(fraction)
    try:
        yield fraction
    finally:
        _COLUMN_SHARE.reset(token)


_LAYER_CYCLE = [mpl.colormaps["tab10"](i) for i in range(10)] + [
    mpl.colormaps["tab20"](2 * i + 1) for i in range(10)
]


def min_text_points(fig: Figure) -> float:
    """The size in points of the smallest visible, non-empty text of ``fig`` (inf if none).

    Walks every ``Text`` artist (titles, labels, tick labels, legends, colour bars,
    annotations). Needs no renderer, so a canvas may call it while printing.
    """
    for ax in fig.axes:
        if ax.get_visible():
            ax.xaxis.get_majorticklabels()  # creates the tick labels the figure will show
            ax.yaxis.get_majorticklabels()
    sizes = [
        text.get_fontsize()
        for text in fig.findobj(mpl.text.Text)
        if text.get_visible()
        and text.get_text().strip()
        and (text.axes is None or text.axes.get_visible())
    ]
    return min(sizes, default=float("inf"))


def png_bytes(fig: Figure, dpi: float | None = None) -> bytes:
    """``fig`` as PNG bytes (tight box) that record their dpi and smallest text size.

    The text chunks ``spectral_lab:dpi`` and ``spectral_lab:min_text_pt`` let a
    reader of the image compute the smallest text on screen:
    ``min_text_pt / 72 * dpi * rendered_width / natural_width`` CSS pixels.
    """
    dpi = float(dpi or STYLE["savefig.dpi"])
    smallest = min_text_points(fig)
    buffer = io.BytesIO()
    metadata = {DPI_KEY: f"{dpi:g}", MIN_TEXT_KEY: f"{smallest:g}"}
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", metadata=metadata)
    return buffer.getvalue()


def png_text(png: bytes) -> dict[str, str]:
    """The ``tEXt`` chunks of a PNG as a dict (``png_bytes`` writes the dpi and smallest text)."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file (its first bytes are not the PNG signature)")
    chunks, position = {}, 8
    while position + 8 <= len(png):
        length = int.from_bytes(png[position : position + 4], "big")
        kind = png[position + 4 : position + 8]
        body = png[position + 8 : position + 8 + length]
        if kind == b"tEXt" and b"\0" in body:
            key, value = body.split(b"\0", 1)
            chunks[key.decode("latin-1")] = value.decode("latin-1")
        if kind == b"IEND":
            break
        position += 12 + length
    return chunks


def rendered_text_px(png: bytes, rendered_width: float) -> float:
    """The smallest text of a ``png_bytes`` image in CSS pixels when it is shown
    ``rendered_width`` pixels wide: ``min_text_pt / 72 * dpi * rendered_width / natural_width``.
    Raises ``ValueError`` for a PNG without the two text chunks (not drawn by this module)."""
    text = png_text(png)
    if DPI_KEY not in text or MIN_TEXT_KEY not in text:
        raise ValueError(
            "the PNG does not record its dpi and text size: draw it with "
            "spectral_lab.plotting.new_figure (or save it with plotting.png_bytes)"
        )
    natural_width = int.from_bytes(png[16:20], "big")
    return float(text[MIN_TEXT_KEY]) / 72 * float(text[DPI_KEY]) * rendered_width / natural_width


class BookCanvas(FigureCanvasAgg):
    """The Agg canvas of a :class:`BookFigure`: every PNG it writes records its dpi and smallest
    text (``savefig``, ``_repr_png_`` and IPython's inline backend, retina or not, alike)."""

    def print_png(self, filename_or_obj, *, metadata=None, pil_kwargs=None, **_savefig_options):
        # matplotlib hands a canvas outside its own modules every savefig option (orientation,
        # facecolor, ...); like its own canvases, this one uses only those of print_png
        # while printing, figure.dpi is the dpi the PNG is written at
        recorded = {
            DPI_KEY: f"{self.figure.dpi:g}",
            MIN_TEXT_KEY: f"{min_text_points(self.figure):g}",
        }
        metadata = {**(metadata or {}), **recorded}
        return super().print_png(filename_or_obj, metadata=metadata, pil_kwargs=pil_kwargs)


class BookFigure(Figure):
    """A Figure that renders itself as a PNG in a notebook even when no pyplot backend is active.

    Without pyplot, IPython only knows how to show a Figure after ``%matplotlib
    inline``; this ``_repr_png_`` makes the cell's value a picture everywhere
    (Jupyter, Colab, the book build). When the inline backend is active, its
    own formatter takes precedence, so nothing is shown twice. Either way the PNG
    carries its dpi and smallest text size (:class:`BookCanvas`).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        BookCanvas(self)  # becomes self.canvas

    def _repr_png_(self) -> bytes:
        return png_bytes(self)


def layer_colors(names: Sequence[str]) -> dict[str, tuple]:
    """A fixed colour per layer, by position: the same layer keeps its colour in every figure of a
    chapter."""
    return {name: _LAYER_CYCLE[i % len(_LAYER_CYCLE)] for i, name in enumerate(names)}


def panel_grid(panels: int, max_per_row: int = 2) -> tuple[int, int]:
    """``(nrows, ncols)`` for ``panels`` panels with at most ``max_per_row`` (at most 3) per row.

    ``panel_grid(3)`` is ``(2, 2)``: three panels go on two rows unless the caller
    asks for a row of three (``max_per_row=3``, drawn with 12 pt text).
    """
    if panels < 1:
        raise ValueError(f"a figure needs at least one panel, got {panels}")
    if not 1 <= max_per_row <= MAX_PANELS_PER_ROW:
        raise ValueError(f"max_per_row must be 1 to {MAX_PANELS_PER_ROW}, got {max_per_row}")
    ncols = min(panels, max_per_row)
    return -(-panels // ncols), ncols


def new_figure(
    nrows: int = 1,
    ncols: int = 1,
    width: float | None = None,
    height: float | None = None,
    **kwargs,
):
    """A pyplot-free Figure in the book's style with a ``nrows`` x ``ncols`` grid of axes.

    By default it is drawn for the column: ``COLUMN_INCHES`` wide in all (or its share,
    inside :func:`column_fraction`), each panel
    ``PANEL_ASPECT`` times as high as it is wide, 11 pt text, or 12 pt for three
    panels in a row. More than three panels in a row are refused in that mode: use
    two rows (:func:`panel_grid`). ``width`` and ``height`` (inches per panel) set
    the size by hand instead, as chapters not yet drawn for the column do; a
    figure wider than the column is shrunk on the page, its text with it.
    Returns ``(fig, axes)`` with ``axes`` a 2-D array; keyword arguments go to
    ``Figure.subplots`` (``sharex``, ``sharey``, ...).
    """
    if nrows < 1 or ncols < 1:
        raise ValueError(f"a figure needs at least one row and column, got {nrows} x {ncols}")
    if width is None and ncols > MAX_PANELS_PER_ROW:
        raise ValueError(
            f"{ncols} panels in a row do not fit the column: use two rows, e.g. "
            f"new_figure(*panel_grid({ncols}, 3)), or pass width= to size the figure by hand"
        )
    style = THREE_PANEL_STYLE if ncols == 3 and width is None else STYLE
    column = COLUMN_INCHES * _COLUMN_SHARE.get()
    panel_width = column / ncols if width is None else width
    panel_height = panel_width * PANEL_ASPECT if height is None else height
    if width is None and height is None:  # a single panel need not fill a page
        panel_height = min(max(panel_height, 2.2), 3.6)
    with mpl.rc_context(style):
        fig = BookFigure(figsize=(panel_width * ncols, panel_height * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    for ax in axes.flat:  # tick labels are made when drawn, outside this style: fix their size now
        ax.tick_params(labelsize=style["xtick.labelsize"])
    return fig, axes


def legend_below(fig: Figure, ncols: int | None = None, **kwargs):
    """One legend for the whole figure, centred below the panels (handles of every axis, each
    label once)."""
    handles, labels = {}, []
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in handles and not label.startswith("_"):
                handles[label] = handle
                labels.append(label)
    if not labels:
        raise ValueError("no labelled lines to put in a legend: pass label= when plotting")
    ncols = ncols or min(len(labels), 4)
    return fig.legend(
        [handles[label] for label in labels],
        labels,
        loc="outside lower center",
        ncols=ncols,
        **kwargs,
    )


def _styled(ax_fn):
    """Run a drawing function inside the book's rc context so fonts and grids apply."""

    def wrapper(*args, **kwargs):
        with mpl.rc_context(STYLE):
            return ax_fn(*args, **kwargs)

    wrapper.__doc__, wrapper.__name__ = ax_fn.__doc__, ax_fn.__name__
    return wrapper


def log_axis(ax, values: np.ndarray, axis: str = "y") -> None:
    """Log scale with plain-number labels and never a single labelled tick.

    Within one decade: evenly spaced ticks (linear values on a log axis); up to
    about two decades: ticks at 1, 2 and 5 times each power of ten; wider: powers
    of ten. Either way at least two ticks fall inside the data.
    """
    values = np.asarray(values, dtype=float)
    getattr(ax, f"set_{axis}scale")("log")
    positive = values[np.isfinite(values) & (values > 0)]
    decades = np.log10(positive.max() / positive.min()) if positive.size else 0.0
    if decades < 1:
        locator = mpl.ticker.MaxNLocator(5)
    elif decades < 2.5:
        locator = mpl.ticker.LogLocator(subs=(1.0, 2.0, 5.0))
    else:
        locator = mpl.ticker.LogLocator(numticks=6)
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_locator(locator)
    target.set_major_formatter(mpl.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(mpl.ticker.NullFormatter())


_log_axis = log_axis  # the name the chapters' helpers used before it was public


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
    ncols: int = 2,
) -> Figure:
    """Singular-value trajectories: one panel per layer (``ncols`` per row, at most 3), one line
    per rank (dark = largest)."""
    names = _layers(record, layers)
    nrows, ncols = panel_grid(len(names), ncols)
    fig, axes = new_figure(nrows, ncols)
    steps = record.steps
    for ax, name in zip(axes.flat, names):
        S = record.singular_values(name)
        shown = S.shape[1] if top is None else min(top, S.shape[1])
        colors = mpl.colormaps["viridis"](np.linspace(0, 0.9, shown))
        for i in range(shown):
            ax.plot(steps, S[:, i], color=colors[i], lw=1.2)
        if log:
            log_axis(ax, S[:, :shown])
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
        else new_figure(1, 1, width=COLUMN_INCHES, height=0.45 * len(names) + 1.6)
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
    fig, axes = (ax.figure, None) if ax is not None else new_figure(1, 1)
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
    fig, axes = (ax.figure, None) if ax is not None else new_figure(1, 1)  # sized for the column
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
    fig, axes = (ax.figure, None) if ax is not None else new_figure(1, 1)  # sized for the column
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
        log_axis(
            ax,
            np.concatenate(
                list(arrays.values()) + ([np.asarray(ylim, dtype=float)] if ylim else [])
            ),
        )
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator("auto", integer=True))
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
    nrows, ncols = panel_grid(len(arrays), MAX_PANELS_PER_ROW)
    # square-ish panels: a panel's width (at most half the column, so that one matrix is not a
    # page tall), less room for the colour bar; within column_fraction, its share of the column
    panel_width = min(COLUMN_INCHES * _COLUMN_SHARE.get() / ncols, COLUMN_INCHES / 2)
    fig, axes = new_figure(nrows, ncols, height=panel_width * 0.85)
    for ax in list(axes.flat)[len(arrays) :]:
        ax.set_visible(False)
    for ax, (name, M) in zip(axes.flat, arrays.items()):
        rows, cols = M.shape
        image = ax.imshow(
            M, cmap="magma", vmin=vmin, vmax=vmax, extent=(0.5, cols + 0.5, rows + 0.5, 0.5)
        )
        ax.grid(False)
        ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator("auto", integer=True))
        ax.yaxis.set_major_locator(mpl.ticker.MaxNLocator("auto", integer=True))
        ax.set_title(name)
        ax.set_xlabel(xlabel)
    for row in axes:
        row[0].set_ylabel(ylabel)
    shown = [ax for ax in axes.flat if ax.get_visible()]
    fig.colorbar(image, ax=shown, label=label, shrink=0.9)
    return fig
