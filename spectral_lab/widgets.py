"""Interactive figures: the one widget pattern every chapter uses.

A chapter writes a function that takes named values and returns a matplotlib
Figure, and hands it to :func:`interactive_figure` with one control per value::

    def plot(exponent=1.0, log=True):
        fig, axes = plotting.new_figure()
        ...
        return fig

    interactive_figure(plot, exponent=(0.0, 3.0, 0.1, 1.0), log=True)

In Jupyter the cell shows the controls above the figure, which is redrawn
whenever a control changes. In static mode (the built book, nbval, a plain
script) there is no kernel to redraw anything, so the cell shows small
multiples instead: one picture with the figure at 2-4 settings side by side,
each labelled with its values, as one output (a captioned cell is one figure) whose
text form is a line saying what the live version controls; the chapter's prose says
that on the page. The settings vary the first control (a slider at its minimum, default
and maximum; the first three options of a menu; a checkbox both ways) unless
``static_settings=[{...}, ...]`` names them. Each setting is drawn at its share
of the column (:func:`spectral_lab.plotting.column_fraction`), so its text stays
readable. Static mode is on when ``SPECTRAL_LAB_STATIC=1`` is set or when no
Jupyter kernel is running.

Control specs (an ipywidgets widget with a ``value`` is also accepted as it is):

* ``(min, max, step)`` or ``(min, max, step, default)``: a slider, ``IntSlider``
  if all entries are ints and ``FloatSlider`` otherwise; the default is the
  middle of the range. Sliders redraw when released, not while dragged.
* a list of options, or of ``(label, value)`` pairs: a ``Dropdown`` whose
  default is the first option;
* ``True`` / ``False``: a ``Checkbox``.

Chapter: "The spectral toolkit" introduces the pattern; every chapter uses it.
"""

from __future__ import annotations

import base64
import io
import os
import traceback
from numbers import Real
from typing import Callable

import ipywidgets as widgets
import numpy as np
from IPython.display import display
from matplotlib.figure import Figure

from . import plotting

__all__ = [
    "MAX_SETTINGS",
    "STATIC_ENV",
    "InteractiveFigure",
    "default_value",
    "interactive_figure",
    "make_control",
    "auto_settings",
    "small_multiples_png",
    "static_mode",
]

STATIC_ENV = "SPECTRAL_LAB_STATIC"
MAX_SETTINGS = 4  # small multiples in static mode: 2 to 4 settings in one row
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def _kernel_running() -> bool:
    """Whether this code runs in a Jupyter kernel (which can show widgets), not a script or a
    terminal."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipywidgets
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def static_mode() -> bool:
    """True when interactive figures should be drawn once, without controls.

    ``SPECTRAL_LAB_STATIC=1`` (also ``true``, ``yes``, ``on``) forces it; ``0`` or
    unset leaves the choice to the environment: static unless a Jupyter kernel
    is running. Resolved at every call, never at import time.
    """
    value = os.environ.get(STATIC_ENV, "").strip().lower()
    if value not in _TRUE + _FALSE:
        raise ValueError(
            f"{STATIC_ENV}={value!r} is not understood; set it to 1 (static figures) or 0"
        )
    return value in _TRUE or not _kernel_running()


def _number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _parse(name: str, spec) -> tuple[type, dict]:
    """The widget class and keyword arguments for one control spec (see the module docstring)."""
    style = {"description_width": "initial"}
    if isinstance(spec, bool):
        return widgets.Checkbox, dict(value=spec, description=name, style=style, indent=False)
    if isinstance(spec, tuple):
        if len(spec) not in (3, 4) or not all(_number(v) for v in spec):
            raise ValueError(
                f"control {name!r}: a slider is (min, max, step) or (min, max, step, default) "
                f"with numbers, got {spec!r}"
            )
        low, high, step = spec[:3]
        if not (low < high and step > 0):
            raise ValueError(
                f"control {name!r}: a slider needs min < max and step > 0, got {spec!r}"
            )
        default = spec[3] if len(spec) == 4 else low + round((high - low) / 2 / step) * step
        if not low <= default <= high:
            raise ValueError(
                f"control {name!r}: the default {default!r} lies outside [{low}, {high}]"
            )
        slider = widgets.IntSlider if all(isinstance(v, int) for v in spec) else widgets.FloatSlider
        return slider, dict(
            value=default,
            min=low,
            max=high,
            step=step,
            description=name,
            style=style,
            continuous_update=False,
        )
    if isinstance(spec, list) and spec:
        first = spec[0]
        value = (
            first[1] if isinstance(first, tuple) and len(first) == 2 else first
        )  # (label, value) pairs
        return widgets.Dropdown, dict(options=spec, value=value, description=name, style=style)
    raise ValueError(
        f"control {name!r}: cannot make a control from {spec!r}; use (min, max, step[, default]) "
        "for a "
        "slider, a non-empty list of options for a dropdown, True/False for a checkbox, or an "
        "ipywidgets widget"
    )


def make_control(name: str, spec) -> widgets.ValueWidget:
    """Turn one control spec (see the module docstring) into an ipywidgets control labelled
    ``name``."""
    if isinstance(spec, widgets.ValueWidget):
        return spec
    widget_class, kwargs = _parse(name, spec)
    return widget_class(**kwargs)


def default_value(name: str, spec):
    """The value a control starts at, without creating a widget (static mode creates none)."""
    if isinstance(spec, widgets.ValueWidget):
        return spec.value
    return _parse(name, spec)[1]["value"]


def _png(fig: Figure) -> tuple[dict, dict]:
    """A display bundle for ``fig``: a PNG at twice the figure's dpi, shown at its nominal size
    (sharp on any screen). The PNG records its dpi and smallest text (``plotting.png_bytes``)."""
    png = plotting.png_bytes(fig, dpi=2 * fig.dpi)
    width, height = (
        int.from_bytes(png[16:20], "big"),
        int.from_bytes(png[20:24], "big"),
    )  # PNG header
    data = {"image/png": base64.b64encode(png).decode("ascii"), "text/plain": repr(fig)}
    return data, {"image/png": {"width": width // 2, "height": height // 2}}


def _describe(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def auto_settings(specs: dict) -> list[dict]:
    """The settings static mode shows when none are given: the first control varied, the others
    at their defaults (a slider at min, default and max; up to three menu options; a checkbox
    both ways)."""
    name, spec = next(iter(specs.items()))
    if isinstance(spec, widgets.ValueWidget):
        options = getattr(spec, "options", None)
        if options is not None:
            values = [o[1] if isinstance(o, tuple) else o for o in list(options)[:3]]
        elif hasattr(spec, "min") and hasattr(spec, "max"):
            values = [spec.min, spec.value, spec.max]
        elif isinstance(spec.value, bool):
            values = [spec.value, not spec.value]
        else:
            values = [spec.value]
    else:
        kind, kwargs = _parse(name, spec)
        if kind is widgets.Checkbox:
            values = [kwargs["value"], not kwargs["value"]]
        elif kind is widgets.Dropdown:
            values = [o[1] if isinstance(o, tuple) else o for o in kwargs["options"][:3]]
        else:
            values = [kwargs["min"], kwargs["value"], kwargs["max"]]
    unique = list(dict.fromkeys(values))
    return [{name: value} for value in unique]


def _check_settings(settings, specs: dict) -> list[dict]:
    settings = list(settings)
    if not 2 <= len(settings) <= MAX_SETTINGS:
        raise ValueError(
            f"static_settings needs 2 to {MAX_SETTINGS} settings (one row of small multiples), "
            f"got {len(settings)}"
        )
    for setting in settings:
        unknown = set(setting) - set(specs)
        if not isinstance(setting, dict) or unknown:
            raise ValueError(
                f"each static setting is a dict of control values; {setting!r} names "
                f"{sorted(unknown)}, not one of the controls {sorted(specs)}"
            )
    return settings


def _controls_line(specs: dict) -> str:
    """One line for a web reader: what the live figure lets them change."""
    parts = []
    for name, spec in specs.items():
        if isinstance(spec, tuple):
            parts.append(f"`{name}` ({_describe(spec[0])} to {_describe(spec[1])})")
        elif isinstance(spec, list):
            parts.append(f"`{name}` (a menu)")
        else:
            parts.append(f"`{name}`")
    return (
        "Shown at a few settings. Run this chapter in Jupyter (the launch button at the top) "
        "to change " + ", ".join(parts) + " and watch the figure redraw."
    )


def small_multiples_png(figures: list[Figure], labels: list[str], gap_px: int = 24) -> bytes:
    """One PNG with ``figures`` side by side, each headed by its label, at twice their dpi.

    As many share a row as fit the column: all of them for figures drawn for their share of
    it (:func:`plotting.column_fraction`), one per row for figures drawn wider by hand, so a
    figure is never shrunk to a fraction of its size. All parts share one dpi, so the PNG's text
    chunks (``plotting.png_bytes``) state the smallest text of all of them at that dpi.
    """
    import matplotlib.image as mpimg

    dpi = 2 * figures[0].dpi
    widest = max(fig.get_figwidth() for fig in figures)
    per_row = max(1, min(len(figures), int(1.1 * plotting.COLUMN_INCHES // widest)))
    arrays, smallest = [], float("inf")
    for fig, label in zip(figures, labels):
        existing = fig.get_suptitle() if hasattr(fig, "get_suptitle") else ""
        fig.suptitle(f"{label}\n{existing}" if existing else label, fontsize=11, fontweight="bold")
        smallest = min(smallest, plotting.min_text_points(fig))
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
        buffer.seek(0)
        arrays.append(mpimg.imread(buffer, format="png")[..., :3])
    rows = [arrays[i : i + per_row] for i in range(0, len(arrays), per_row)]
    width = max(sum(a.shape[1] for a in row) + gap_px * (len(row) - 1) for row in rows)
    blocks = []
    for row in rows:
        block = np.ones((max(a.shape[0] for a in row) + gap_px, width, 3), dtype=row[0].dtype)
        left = 0
        for a in row:
            block[gap_px : gap_px + a.shape[0], left : left + a.shape[1]] = a
            left += a.shape[1] + gap_px
        blocks.append(block)
    out = io.BytesIO()
    metadata = {plotting.DPI_KEY: f"{dpi:g}", plotting.MIN_TEXT_KEY: f"{smallest:g}"}
    mpimg.imsave(out, np.concatenate(blocks, axis=0), format="png", metadata=metadata)
    return out.getvalue()


class InteractiveFigure:
    """A figure driven by controls; the cell that returns it shows it (see
    :func:`interactive_figure`).

    Attributes: ``values`` (name -> current value), ``figure`` (the Figure
    drawn last) and ``static``. In live mode also ``controls`` (name ->
    widget), ``output`` (the ipywidgets Output that holds the figure) and
    ``widget`` (controls and output in a VBox); in static mode no widget is
    created at all, so an executed notebook stores no widget state.
    """

    def __init__(
        self,
        plot_fn: Callable[..., Figure],
        specs: dict,
        static: bool,
        static_settings: list[dict] | None = None,
    ):
        self.plot_fn, self.static = plot_fn, static
        self.controls: dict[str, widgets.ValueWidget] = {}
        self.output = self.widget = None
        self.settings: list[dict] = []
        if static:
            self.values = {name: default_value(name, spec) for name, spec in specs.items()}
            self.figure = self._draw()
            chosen = auto_settings(specs) if static_settings is None else static_settings
            self.settings = [{**self.values, **setting} for setting in chosen]
            self.labels = [
                ", ".join(f"{k} = {_describe(v)}" for k, v in setting.items()) for setting in chosen
            ]
            self.controls_line = _controls_line(specs)
            return
        self.controls = {name: make_control(name, spec) for name, spec in specs.items()}
        self.values = {name: control.value for name, control in self.controls.items()}
        self.figure = self._draw()
        self.output = widgets.Output()
        self._show_in_output()
        row = widgets.HBox(
            list(self.controls.values()), layout=widgets.Layout(flex_flow="row wrap")
        )
        self.widget = widgets.VBox([row, self.output])
        for control in self.controls.values():
            control.observe(self._redraw, names="value")

    def _draw(self, values: dict | None = None) -> Figure:
        fig = self.plot_fn(**(self.values if values is None else values))
        if not isinstance(fig, Figure):
            raise TypeError(
                f"{getattr(self.plot_fn, '__name__', 'plot_fn')} must return a matplotlib Figure, "
                f"got {type(fig).__name__}"
            )
        return fig

    def _show_in_output(self) -> None:
        data, metadata = _png(self.figure)
        self.output.outputs = ({"output_type": "display_data", "data": data, "metadata": metadata},)

    def _redraw(self, change=None) -> None:
        self.values = {name: control.value for name, control in self.controls.items()}
        try:
            self.figure = self._draw()
        except Exception:  # shown where the reader is looking, not in the kernel log
            self.output.outputs = (
                {"output_type": "stream", "name": "stderr", "text": traceback.format_exc()},
            )
            return
        self._show_in_output()

    def static_png(self) -> bytes:
        """The small multiples: the figure at every static setting, side by side in one PNG."""
        if len(self.settings) < 2:
            return plotting.png_bytes(self.figure, dpi=2 * self.figure.dpi)
        figures = []
        with plotting.column_fraction(1 / len(self.settings)):
            for setting in self.settings:
                figures.append(self._draw(setting))
        return small_multiples_png(figures, self.labels)

    def _ipython_display_(self) -> None:
        if not self.static:
            display(self.widget)
            return
        png = self.static_png()
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        # one output, so that a cell's figure caption (myst-nb wraps every output of a captioned
        # cell in a figure) names one figure; the page shows the image, a text-only reader the
        # line saying what is live, and the chapter's prose says it on the page
        data = {
            "image/png": base64.b64encode(png).decode("ascii"),
            "text/plain": self.controls_line,
        }
        display(
            data, metadata={"image/png": {"width": width // 2, "height": height // 2}}, raw=True
        )

    def __repr__(self) -> str:
        values = ", ".join(f"{name}={value!r}" for name, value in self.values.items())
        return f"InteractiveFigure({'static' if self.static else 'live'}, {values})"


def interactive_figure(
    plot_fn: Callable[..., Figure],
    /,
    *,
    static: bool | None = None,
    static_settings: list[dict] | None = None,
    **controls,
) -> InteractiveFigure:
    """A figure that follows its controls in Jupyter and is a plain picture everywhere else.

    ``plot_fn(**values)`` must return a matplotlib Figure (build it with
    :func:`spectral_lab.plotting.new_figure`, not pyplot). Each keyword is a
    control spec or a widget (module docstring); its value is passed to
    ``plot_fn`` under the same name. ``static=None`` asks :func:`static_mode`.

    The figure at the default values is drawn at once (``.figure``). Put the call
    last in a cell: the returned object displays as the controls and the figure
    (live) or as the figure alone (static). A bad spec raises ``ValueError``.
    """
    if not controls:
        raise ValueError(
            "interactive_figure needs at least one control, e.g. exponent=(0.0, 3.0, 0.1)"
        )
    for name, spec in controls.items():
        default_value(name, spec)  # validate every spec in both modes
    if static_settings is not None:
        static_settings = _check_settings(static_settings, controls)
    static = static_mode() if static is None else bool(static)
    return InteractiveFigure(plot_fn, controls, static, static_settings)
