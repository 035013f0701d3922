"""Interactive figures: live controls redraw; static mode draws the defaults and shows small
multiples at 2-4 settings with one line on what the live version controls."""

import base64

import ipywidgets as widgets
import pytest
from matplotlib.figure import Figure

import spectral_lab.widgets as widgets_module
from spectral_lab import plotting
from spectral_lab.plotting import new_figure
from spectral_lab.widgets import default_value, interactive_figure, make_control, static_mode


class Recorder:
    """A plot function that remembers the values it was called with."""

    def __init__(self):
        self.calls = []

    def __call__(self, exponent, mode="a", log=False):
        self.calls.append({"exponent": exponent, "mode": mode, "log": log})
        fig, axes = new_figure()
        axes[0, 0].plot([1, 2, 3], [1, 2**-exponent, 3**-exponent])
        axes[0, 0].set_title(f"{mode} {exponent:.2f}")
        return fig


def _png(output: widgets.Output) -> bytes:
    (item,) = output.outputs
    assert item["output_type"] == "display_data"
    return base64.b64decode(item["data"]["image/png"])


def test_live_mode_redraws_when_a_control_changes():
    plot = Recorder()
    view = interactive_figure(plot, static=False, exponent=(0.0, 3.0, 0.5, 1.0), mode=["a", "b"])
    assert isinstance(view.widget, widgets.VBox) and isinstance(view.output, widgets.Output)
    slider = view.controls["exponent"]
    assert isinstance(slider, widgets.FloatSlider) and slider.continuous_update is False
    assert isinstance(view.controls["mode"], widgets.Dropdown)
    assert plot.calls == [{"exponent": 1.0, "mode": "a", "log": False}]
    first_png, first_fig = _png(view.output), view.figure
    assert first_png.startswith(b"\x89PNG")

    slider.value = 2.5
    assert plot.calls[-1] == {"exponent": 2.5, "mode": "a", "log": False}
    assert view.figure is not first_fig and view.figure.axes[0].get_title() == "a 2.50"
    assert _png(view.output) != first_png  # the output now holds the new figure, and only it

    view.controls["mode"].value = "b"
    assert plot.calls[-1]["mode"] == "b" and len(plot.calls) == 3


def test_live_mode_shows_plot_errors_in_the_output():
    def plot(n):
        if n > 2:
            raise RuntimeError("n too large")
        fig, _ = new_figure()
        return fig

    view = interactive_figure(plot, static=False, n=(1, 5, 1, 1))
    view.controls["n"].value = 4
    (item,) = view.output.outputs
    assert item["output_type"] == "stream" and "n too large" in item["text"]


def test_static_mode_draws_once_at_the_defaults(monkeypatch):
    def no_widgets(self):
        raise AssertionError(
            "static mode must not create widgets (their state would be saved in the notebook)"
        )

    monkeypatch.setattr(widgets.Widget, "open", no_widgets)
    plot = Recorder()
    view = interactive_figure(
        plot, static=True, exponent=(0, 4, 1), mode=[("B", "b"), ("C", "c")], log=True
    )
    assert plot.calls == [
        {"exponent": 2, "mode": "b", "log": True}
    ]  # int slider: middle of the range
    assert isinstance(view.figure, Figure) and view.figure.axes[0].get_title() == "b 2.00"
    assert view.widget is None and view.output is None and view.controls == {}
    assert view.values == {"exponent": 2, "mode": "b", "log": True}
    assert "static" in repr(view) and "exponent=2" in repr(view)


def test_static_mode_follows_the_environment(monkeypatch):
    monkeypatch.setenv("SPECTRAL_LAB_STATIC", "1")
    assert static_mode()
    view = interactive_figure(Recorder(), exponent=(0.0, 1.0, 0.1))
    assert view.static and view.widget is None
    monkeypatch.setenv("SPECTRAL_LAB_STATIC", "0")
    assert static_mode()  # no Jupyter kernel runs the tests, so still static
    monkeypatch.setenv("SPECTRAL_LAB_STATIC", "maybe")
    with pytest.raises(ValueError, match="SPECTRAL_LAB_STATIC"):
        static_mode()


def test_control_specs():
    assert isinstance(make_control("n", (1, 9, 2)), widgets.IntSlider)
    assert make_control("n", (1, 9, 2)).value == default_value("n", (1, 9, 2)) == 5
    assert (
        make_control("x", (0.0, 1.0, 0.1, 0.3)).value
        == default_value("x", (0.0, 1.0, 0.1, 0.3))
        == 0.3
    )
    assert isinstance(make_control("x", (0, 1, 0.1)), widgets.FloatSlider)
    assert make_control("k", [("one", 1), ("two", 2)]).value == 1
    assert isinstance(make_control("log", False), widgets.Checkbox)
    own = widgets.IntText(value=3)
    assert make_control("n", own) is own


@pytest.mark.parametrize(
    "spec, message",
    [
        ((0, 1), r"\(min, max, step\)"),
        ((0, "1", 0.1), r"\(min, max, step\)"),
        ((1, 0, 0.1), "min < max"),
        ((0, 1, 0), "step > 0"),
        ((0, 1, 0.1, 2), "outside"),
        ([], "cannot make a control"),
        ("fast", "cannot make a control"),
        (widgets.Button(), "cannot make a control"),
    ],
)
def test_bad_control_spec(spec, message):
    with pytest.raises(ValueError, match=message):
        interactive_figure(Recorder(), static=True, exponent=spec)


def test_needs_controls_and_a_figure():
    with pytest.raises(ValueError, match="at least one control"):
        interactive_figure(Recorder())
    with pytest.raises(TypeError, match="must return a matplotlib Figure"):
        interactive_figure(lambda n: None, static=True, n=(0, 2, 1))


def _static_outputs(view) -> list[tuple[dict, dict]]:
    """What the cell shows in static mode: (data, metadata) of every display call."""
    shown = []
    original = widgets_module.display
    widgets_module.display = lambda obj, metadata=None, raw=False: shown.append((obj, metadata))
    try:
        view._ipython_display_()
    finally:
        widgets_module.display = original
    return shown


def test_static_mode_shows_small_multiples_and_says_what_is_live():
    plot = Recorder()
    view = interactive_figure(plot, static=True, exponent=(0.0, 3.0, 0.5, 1.0), log=True)
    assert [s["exponent"] for s in view.settings] == [0.0, 1.0, 3.0]  # min, default, max
    assert all(s["log"] is True for s in view.settings)  # the other controls at their defaults
    ((image, metadata),) = _static_outputs(view)  # one output: one figure when captioned
    assert [c["exponent"] for c in plot.calls] == [1.0, 0.0, 1.0, 3.0]  # defaults, then each
    png = base64.b64decode(image["image/png"])
    assert png.startswith(b"\x89PNG")
    natural = int.from_bytes(png[16:20], "big")
    assert metadata["image/png"]["width"] == natural // 2  # shown at its nominal size
    # one row at the column's width, each setting drawn for a third of it: text stays readable
    assert natural // 2 == pytest.approx(100 * plotting.COLUMN_INCHES, rel=0.2)
    shown = plotting.rendered_text_px(png, min(natural // 2, 757))
    assert shown >= plotting.MIN_TEXT_PX
    assert "`exponent` (0 to 3)" in image["text/plain"] and "`log`" in image["text/plain"]
    assert view.labels == ["exponent = 0", "exponent = 1", "exponent = 3"]


def test_static_settings_by_name_and_their_checks():
    plot = Recorder()
    view = interactive_figure(
        plot,
        static=True,
        static_settings=[{"mode": "a"}, {"mode": "b", "exponent": 2.0}],
        exponent=(0.0, 3.0, 0.5, 1.0),
        mode=["a", "b"],
    )
    assert view.settings == [
        {"exponent": 1.0, "mode": "a"},
        {"exponent": 2.0, "mode": "b"},
    ]
    assert interactive_figure(Recorder(), static=True, log=False, exponent=(0, 2, 1)).settings == [
        {"log": False, "exponent": 1},
        {"log": True, "exponent": 1},
    ]
    with pytest.raises(ValueError, match="2 to 4 settings"):
        interactive_figure(plot, static=True, static_settings=[{"mode": "a"}], mode=["a", "b"])
    with pytest.raises(ValueError, match=r"names \['colour'\]"):
        interactive_figure(
            plot, static=True, static_settings=[{"colour": 1}, {"mode": "a"}], mode=["a", "b"]
        )


def test_small_multiples_never_shrink_a_figure_drawn_wider_than_its_share():
    """A plot function that sizes its figure by hand (not for the column) gets one setting per
    row: the picture is taller, and its text stays as large as the figure's own."""
    figures = []
    for _ in range(3):
        fig, axes = new_figure(1, 2, width=4.2, height=3.0)  # 8.4 in: wider than the column
        axes[0, 0].plot([0, 1])
        figures.append(fig)
    png = widgets_module.small_multiples_png(figures, ["a", "b", "c"])
    natural_width = int.from_bytes(png[16:20], "big")
    natural_height = int.from_bytes(png[20:24], "big")
    assert natural_height > natural_width  # three rows of one (each 8.4 x 3 in)
    assert plotting.rendered_text_px(png, 757) >= plotting.MIN_TEXT_PX
    one_row = []
    for _ in range(3):
        with plotting.column_fraction(1 / 3):
            fig, axes = new_figure()
        axes[0, 0].plot([0, 1])
        one_row.append(fig)
    png = widgets_module.small_multiples_png(one_row, ["a", "b", "c"])
    assert int.from_bytes(png[16:20], "big") > 2 * int.from_bytes(png[20:24], "big")  # one row
