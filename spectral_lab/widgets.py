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
script) it shows only the figure at the controls' default values, so the web
page has a picture instead of a widget that cannot run. Static mode is on when
``SPECTRAL_LAB_STATIC=1`` is set or when no Jupyter kernel is running.

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
from IPython.display import display
from matplotlib.figure import Figure

__all__ = [
    "STATIC_ENV",
    "InteractiveFigure",
    "default_value",
    "interactive_figure",
    "make_control",
    "static_mode",
]

STATIC_ENV = "SPECTRAL_LAB_STATIC"
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
    (sharp on any screen)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=2 * fig.dpi, bbox_inches="tight")
    png = buffer.getvalue()
    width, height = (
        int.from_bytes(png[16:20], "big"),
        int.from_bytes(png[20:24], "big"),
    )  # PNG header
    data = {"image/png": base64.b64encode(png).decode("ascii"), "text/plain": repr(fig)}
    return data, {"image/png": {"width": width // 2, "height": height // 2}}


class InteractiveFigure:
    """A figure driven by controls; the cell that returns it shows it (see
    :func:`interactive_figure`).

    Attributes: ``values`` (name -> current value), ``figure`` (the Figure
    drawn last) and ``static``. In live mode also ``controls`` (name ->
    widget), ``output`` (the ipywidgets Output that holds the figure) and
    ``widget`` (controls and output in a VBox); in static mode no widget is
    created at all, so an executed notebook stores no widget state.
    """

    def __init__(self, plot_fn: Callable[..., Figure], specs: dict, static: bool):
        self.plot_fn, self.static = plot_fn, static
        self.controls: dict[str, widgets.ValueWidget] = {}
        self.output = self.widget = None
        if static:
            self.values = {name: default_value(name, spec) for name, spec in specs.items()}
            self.figure = self._draw()
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

    def _draw(self) -> Figure:
        fig = self.plot_fn(**self.values)
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

    def _ipython_display_(self) -> None:
        if self.static:
            data, metadata = _png(self.figure)
            display(data, metadata=metadata, raw=True)
        else:
            display(self.widget)

    def __repr__(self) -> str:
        values = ", ".join(f"{name}={value!r}" for name, value in self.values.items())
        return f"InteractiveFigure({'static' if self.static else 'live'}, {values})"


def interactive_figure(
    plot_fn: Callable[..., Figure], /, *, static: bool | None = None, **controls
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
    return InteractiveFigure(plot_fn, controls, static_mode() if static is None else bool(static))
