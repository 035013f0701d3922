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
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata()[-1], 1.0, atol=1e-5)


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
