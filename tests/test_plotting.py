"""Plots take records and return Figures with labelled axes and real data."""

import numpy as np
import pytest
from matplotlib.figure import Figure
from models import mlp, train

from spectral_lab import SpectralTracker, plotting


@pytest.fixture(scope="module")
def record():
    model = mlp()
    tracker = SpectralTracker(model, every=2, top_k=4)
    train(model, tracker, steps=11)
    return tracker.record


def test_singular_value_trajectories(record):
    fig = plotting.plot_singular_values(record, top=5)
    assert isinstance(fig, Figure)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 3 and all(len(ax.lines) == 5 for ax in axes)
    assert axes[0].get_xlabel() == "step" and axes[0].get_ylabel() == "singular value"
    np.testing.assert_allclose(axes[1].lines[0].get_ydata(), record.singular_values("2")[:, 0])


def test_rank_heatmap_and_curves(record):
    fig = plotting.plot_rank_heatmap(record)
    mesh = fig.axes[0].collections[0]
    np.testing.assert_allclose(
        np.asarray(mesh.get_array()).reshape(3, -1), record.norm_eff_rank().T
    )
    assert fig.axes[1].get_ylabel() == "NormEffRank"  # the colour bar
    fig = plotting.plot_rank_curves(record)
    assert [line.get_label() for line in fig.axes[0].lines] == record.layers


def test_alignment_and_agreement_diagonals(record):
    fig = plotting.plot_alignment(record, k=3)
    assert len(fig.axes[0].lines) == 3
    fig = plotting.plot_agreement(record, "2", k=4)
    # a vector's agreement with itself, at the record's storage precision (int16 vectors, each
    # entry within max|v| / 32767: agreement within about 3e-5 of the exact value)
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata()[-1], 1.0, atol=1e-4)


def test_layer_colours_are_stable_and_distinct():
    colors = plotting.layer_colors(["a", "b", "c"])
    assert len(set(colors.values())) == 3
    assert plotting.layer_colors(["a", "b"])["a"] == colors["a"]


def test_bad_plot_input(record):
    with pytest.raises(ValueError, match=r"\(T, k, k\)"):
        plotting.plot_diagonal(record.steps, np.zeros((2, 3)))


def test_spectra_and_heatmaps_from_arrays():
    s = np.array([3.0, 2.0, 1.0, 0.0])
    fig = plotting.plot_spectra({"a": s, "b": s / 2}, title="t")
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == ["a", "b"]
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), [1, 2, 3, 4])
    assert np.isnan(ax.lines[0].get_ydata()[-1])  # a zero is left out on the log axis
    assert ax.get_xlabel() == "index i (largest first)" and ax.get_yscale() == "log"
    fig = plotting.plot_spectra({"a": s}, log=False, ylim=(0, 4))
    assert fig.axes[0].get_ylim() == (0, 4) and fig.axes[0].get_legend() is None
    fig = plotting.plot_heatmaps(
        {"x": np.eye(3), "y": np.full((3, 3), 0.5)}, xlabel="i", ylabel="j", label="|.|"
    )
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), np.eye(3))
    assert fig.axes[-1].get_ylabel() == "|.|"  # one shared colour bar
    with pytest.raises(ValueError, match="1-D"):
        plotting.plot_spectra({"a": np.eye(2)})
    with pytest.raises(ValueError, match="2-D"):
        plotting.plot_heatmaps({"a": np.ones(3)})


def test_figures_render_as_png_without_pyplot(record):
    png = plotting.plot_rank_curves(record)._repr_png_()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


# ---- drawn for the column (issue 15 §2) -----------------------------------------------------
COLUMN_PX = 757  # the content column at a 1366 px window


def _shown_px(png: bytes) -> float:
    """The smallest text in CSS pixels when the browser shows this PNG (natural size, at most the
    column): the same computation as the browser check."""
    natural = int.from_bytes(png[16:20], "big")
    return plotting.rendered_text_px(png, min(natural, COLUMN_PX))


def test_new_figure_fills_the_column_and_refuses_four_in_a_row():
    for nrows, ncols in [(1, 1), (1, 2), (2, 2), (1, 3)]:
        fig, axes = plotting.new_figure(nrows, ncols)
        assert fig.get_figwidth() == pytest.approx(plotting.COLUMN_INCHES)
        assert axes.shape == (nrows, ncols)
    fig, axes = plotting.new_figure(1, 3)
    fig.draw_without_rendering()
    assert {t.get_fontsize() for t in axes[0, 0].get_xticklabels()} == {12.0}  # three in a row
    with pytest.raises(ValueError, match=r"two rows.*panel_grid\(4, 3\)"):
        plotting.new_figure(1, 4)
    fig, _ = plotting.new_figure(1, 4, width=2.0, height=2.0)  # by hand: inches per panel
    assert fig.get_size_inches() == pytest.approx([8.0, 2.0])
    assert plotting.panel_grid(3) == (2, 2) and plotting.panel_grid(3, 3) == (1, 3)
    assert plotting.panel_grid(7, 2) == (4, 2) and plotting.panel_grid(1) == (1, 1)
    with pytest.raises(ValueError, match="max_per_row"):
        plotting.panel_grid(4, 4)


def test_column_fraction_sizes_figures_for_their_share():
    with plotting.column_fraction(1 / 3):
        fig, _ = plotting.new_figure(1, 1)
        assert fig.get_figwidth() == pytest.approx(plotting.COLUMN_INCHES / 3)
    assert plotting.new_figure()[0].get_figwidth() == pytest.approx(plotting.COLUMN_INCHES)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        with plotting.column_fraction(0):
            pass


def test_png_records_its_dpi_and_smallest_text():
    fig, axes = plotting.new_figure()
    axes[0, 0].plot([0, 1], [0, 1], label="a line")
    axes[0, 0].legend(fontsize=6.5)
    assert plotting.min_text_points(fig) == 6.5
    png = fig._repr_png_()
    text = plotting.png_text(png)
    assert text[plotting.DPI_KEY] == "150" and text[plotting.MIN_TEXT_KEY] == "6.5"
    natural = int.from_bytes(png[16:20], "big")
    assert plotting.rendered_text_px(png, natural) == pytest.approx(6.5 / 72 * 150)
    assert plotting.rendered_text_px(png, natural / 2) == pytest.approx(6.5 / 72 * 75)
    plain = Figure()  # drawn without the package (pyplot, say): its text size is unknown
    plain.subplots().plot([0, 1])
    buffer = __import__("io").BytesIO()
    plain.savefig(buffer, format="png")
    with pytest.raises(ValueError, match="does not record"):
        plotting.rendered_text_px(buffer.getvalue(), 100)


def test_every_record_plot_reads_at_least_9_px_in_the_column(record):
    figures = {
        "singular values": plotting.plot_singular_values(record),
        "rank heat map": plotting.plot_rank_heatmap(record),
        "rank curves": plotting.plot_rank_curves(record),
        "alignment": plotting.plot_alignment(record),
        "spectra": plotting.plot_spectra({"a": np.array([3.0, 1.0]), "b": np.array([2.0, 1.0])}),
        "heat maps": plotting.plot_heatmaps({str(i): np.eye(3) for i in range(4)}),
    }
    sizes = {name: _shown_px(fig._repr_png_()) for name, fig in figures.items()}
    assert all(px >= plotting.MIN_TEXT_PX for px in sizes.values()), sizes
    # the test can fail: the same heat maps in one row of four, drawn by hand at 3.4 in each
    fig, axes = plotting.new_figure(1, 4, width=3.4, height=3.2)
    for ax in axes.flat:
        ax.imshow(np.eye(3))
        ax.set_title("a title")
    assert _shown_px(fig._repr_png_()) < plotting.MIN_TEXT_PX


@pytest.mark.parametrize("low, high", [(0.5, 8.0), (3.0, 40.0), (1.0, 1.5), (1e-3, 50.0)])
def test_a_log_axis_never_has_a_single_tick(low, high):
    fig, axes = plotting.new_figure()
    ax = axes[0, 0]
    values = np.geomspace(low, high, 20)
    ax.plot(np.arange(20), values)
    plotting.log_axis(ax, values)
    fig.draw_without_rendering()
    bottom, top = ax.get_ylim()
    inside = [t for t in ax.get_yticks() if bottom <= t <= top]
    assert len(inside) >= 2, (low, high, inside)
    assert all(label.get_text() for label in ax.get_yticklabels() if bottom <= label._y <= top)


def test_legend_below_collects_each_label_once():
    fig, axes = plotting.new_figure(1, 2)
    for ax in axes.flat:
        ax.plot([0, 1], label="train")
        ax.plot([1, 0], label="validation")
    legend = plotting.legend_below(fig)
    assert [t.get_text() for t in legend.get_texts()] == ["train", "validation"]
    fig, _ = plotting.new_figure()
    with pytest.raises(ValueError, match="label="):
        plotting.legend_below(fig)


def test_the_inline_backend_and_savefig_record_text_size_too():
    """Chapters show figures through IPython's inline backend (retina: twice the dpi), which
    bypasses _repr_png_; the canvas records the dpi and text size on every route."""
    from IPython.core.pylabtools import print_figure

    fig, axes = plotting.new_figure()
    axes[0, 0].plot([0, 1], [0, 1])
    axes[0, 0].set_title("t", fontsize=7)
    retina = print_figure(fig, "retina", bbox_inches="tight")
    text = plotting.png_text(retina)
    assert text[plotting.DPI_KEY] == "200" and text[plotting.MIN_TEXT_KEY] == "7"
    buffer = __import__("io").BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    assert plotting.png_text(buffer.getvalue())[plotting.DPI_KEY] == "80"


def test_plot_seeds_emphasises_one_run_and_thins_the_others():
    fig, axes = plotting.new_figure(1, 1)
    ax = np.ravel(axes)[0]
    runs = {seed: (np.arange(5), np.arange(5) * (seed + 1)) for seed in range(3)}
    plotting.plot_seeds(ax, runs, color="C1", label="wd 1")
    widths = sorted(line.get_linewidth() for line in ax.lines)
    assert widths == [0.9, 0.9, 2.2]
    thick = max(ax.lines, key=lambda line: line.get_linewidth())
    assert thick.get_label() == "wd 1" and list(thick.get_ydata()) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="no run of seed 7"):
        plotting.plot_seeds(ax, runs, emphasis=7)
