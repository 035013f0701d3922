"""spectral_lab.heavy_tail: power-law alpha, KS distance, MP spikes and log spectral norm.

References: WeightWatcher (in the test extra), a loop written from
the Clauset-Shalizi-Newman formulas, and matrices whose answer is known (Pareto samples, planted
spikes above the Marchenko-Pastur edge).
"""

import logging

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from models import mlp, train
from torch import nn

from spectral_lab import SpectralTracker
from spectral_lab.heavy_tail import (
    marchenko_pastur_edge,
    plot_alpha,
    plot_esd,
    power_law_fit,
    record_metrics,
    spectrum_metrics,
)

# WeightWatcher's own deprecation under pandas 3
pytestmark = [
    pytest.mark.filterwarnings("ignore:Passing a dict to DataFrame.from_records"),
]
NEEDS = 'needs the [test] extra: pip install "spectral-lab[test]"'


def _loop_fit(eigenvalues: np.ndarray) -> tuple[float, float, float]:
    """Clauset-Shalizi-Newman by the book, one candidate at a time: (alpha, xmin, D)."""
    x = np.sort(eigenvalues)
    best = (np.inf, np.nan, np.nan)
    for i in range(len(x) - 1):
        tail = x[i:]
        n = len(tail)
        alpha = 1 + n / np.log(tail / x[i]).sum()
        D = np.abs(1 - (tail / x[i]) ** (1 - alpha) - np.arange(n) / n).max()
        if D < best[0]:
            best = (D, alpha, x[i])
    return best[1], best[2], best[0]


def _heavy_tailed(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], (500, 120))
    return {
        "student-t 3, 400x200": rng.standard_t(3, (400, 200)),
        "student-t 2, 256x256": rng.standard_t(2, (256, 256)),
        "pareto 2.5, 500x120": rng.pareto(2.5, (500, 120)) * signs,
        "cauchy, 200x150": rng.standard_cauchy((200, 150)),
        "gaussian, 300x100": rng.standard_normal((300, 100)),
    }


def _trained() -> dict[str, np.ndarray]:
    model = mlp(seed=1, widths=(32, 96, 96, 64))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(256, 32, generator=g), torch.randint(0, 64, (256,), generator=g)
    for _ in range(300):  # memorise random labels: the weights move far from initialisation
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {f"trained mlp.{i}": model[i].weight.detach().numpy().copy() for i in (0, 2, 4)}


def _weightwatcher(matrices: dict[str, np.ndarray]):
    """WeightWatcher's per-layer table for Linear layers holding ``matrices`` (out, in)."""
    ww = pytest.importorskip("weightwatcher", reason=NEEDS)
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    layers = [nn.Linear(W.shape[1], W.shape[0], bias=False) for W in matrices.values()]
    with torch.no_grad():
        for layer, W in zip(layers, matrices.values()):
            layer.weight.copy_(torch.as_tensor(W))
    return ww.WeightWatcher(model=nn.Sequential(*layers)).analyze()


def _ours(matrices: dict[str, np.ndarray], **options):
    spectra = {
        name: torch.linalg.svdvals(torch.as_tensor(W, dtype=torch.float32)).numpy()[None]
        for name, W in matrices.items()
    }
    shapes = {name: W.shape for name, W in matrices.items()}
    return spectrum_metrics(spectra, shapes, **options)


# ---- the fit
# -------------------------------------------------------------------------------------------


def test_fit_matches_the_loop_and_the_batch_matches_one_at_a_time():
    rng = np.random.default_rng(0)
    batch = np.stack(
        [np.linalg.svd(rng.standard_t(3, (150, 80)), compute_uv=False) ** 2 for _ in range(4)]
    )
    fit = power_law_fit(batch)
    for row, values in enumerate(batch):
        alpha, xmin, D = _loop_fit(values)
        assert fit.alpha[row] == pytest.approx(alpha, rel=1e-10)
        assert fit.xmin[row] == xmin
        assert fit.ks_distance[row] == pytest.approx(D, rel=1e-10)
        assert fit.n_tail[row] == (values >= xmin).sum()
        one = power_law_fit(values)
        assert one.alpha == fit.alpha[row] and one.alpha.shape == ()


def test_fit_recovers_the_exponent_of_pareto_samples():
    # density ~ x^-alpha on [1, inf): numpy's pareto(a) + 1 has alpha = a + 1
    for alpha_true in (2.0, 3.0, 4.5):
        x = np.random.default_rng(1).pareto(alpha_true - 1, 5000) + 1
        fit = power_law_fit(x)
        assert fit.alpha == pytest.approx(alpha_true, rel=0.05)
        assert fit.ks_distance < 0.02


def test_alpha_is_scale_free_and_short_spectra_give_nan():
    x = np.random.default_rng(3).pareto(2.0, 300) + 1
    assert power_law_fit(1e-8 * x).alpha == pytest.approx(power_law_fit(x).alpha, rel=1e-9)
    assert np.isnan(power_law_fit(x[:19]).alpha)
    assert np.isfinite(power_law_fit(x[:20]).alpha)
    padded = np.concatenate([np.zeros(50), x])  # zero eigenvalues (rank deficiency) are dropped
    assert power_law_fit(padded).alpha == power_law_fit(x).alpha


def test_bad_eigenvalues_are_refused():
    with pytest.raises(ValueError, match="non-negative"):
        power_law_fit(np.array([1.0, -2.0, 3.0]))
    with pytest.raises(ValueError, match="finite"):
        power_law_fit(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="R >= 1"):
        power_law_fit(np.zeros((3, 0)))


# ---- agreement with WeightWatcher
# ---------------------------------------------------------------------


def test_alpha_within_5_percent_of_weightwatcher_on_heavy_tailed_and_trained_matrices():
    matrices = {**_heavy_tailed(0), **_trained()}
    details = _weightwatcher(matrices)
    ours = _ours(matrices)
    assert len(details) == len(matrices)
    for column, name in enumerate(matrices):
        row = details.iloc[column]
        assert ours.alpha[0, column] == pytest.approx(row["alpha"], rel=0.05), name
        # the same estimator: in fact the same numbers up to float32 vs float64 singular values
        assert ours.alpha[0, column] == pytest.approx(row["alpha"], rel=1e-3), name
        assert ours.xmin[0, column] == pytest.approx(row["xmin"], rel=1e-4), name
        assert ours.ks_distance[0, column] == pytest.approx(row["D"], rel=1e-3), name
        assert ours.n_tail[0, column] == row["num_pl_spikes"], name
        assert ours.log_spectral_norm[0, column] == pytest.approx(
            row["log_spectral_norm"], abs=1e-5
        ), name


def test_weightwatchers_absolute_floor_is_the_mapping_on_small_weights():
    # WeightWatcher drops eigenvalues below 1e-5 (absolute), this module below 1e-9 lambda_max
    # (relative), so WeightWatcher's alpha changes when W is scaled down and ours does not.
    # Scaled so that the floor cuts above the tail's start: min_eigenvalue=1e-5 is the mapping.
    W = np.random.default_rng(5).standard_t(3, (600, 400))
    eigenvalues = np.linalg.svd(W, compute_uv=False) ** 2
    descending = np.sort(eigenvalues)[::-1]  # its tail holds 24: keep 22 above 1e-5
    scale = np.sqrt(1e-5 / np.sqrt(descending[21] * descending[22]))
    small = {"small": scale * W}
    row = _weightwatcher(small).iloc[0]
    ours = _ours(small).alpha[0, 0]
    assert ours == pytest.approx(_ours({"W": W}).alpha[0, 0], rel=1e-4)  # scale-free
    assert abs(ours - row["alpha"]) > 5e-4 * row["alpha"]  # the floors differ here by design
    mapped = _ours(small, min_eigenvalue=1e-5).alpha[0, 0]
    assert mapped == pytest.approx(row["alpha"], rel=1e-5)


# ---- Marchenko-Pastur spikes
# ------------------------------------------------------------------------------


def test_mp_edge_bounds_a_gaussian_matrix_and_planted_spikes_are_counted():
    rng = np.random.default_rng(0)
    m, n = 600, 300
    G = rng.standard_normal((m, n))
    eigenvalues = np.linalg.svd(G, compute_uv=False) ** 2
    edge = marchenko_pastur_edge(eigenvalues, (m, n))
    assert edge == pytest.approx((np.sqrt(m) + np.sqrt(n)) ** 2, rel=0.01)  # sigma^2 ~ 1
    assert eigenvalues.max() == pytest.approx(edge, rel=0.03)
    # strengths far above the BBP threshold (m n)^(1/4): each plants one eigenvalue above the edge
    U, _ = np.linalg.qr(rng.standard_normal((m, 3)))
    V, _ = np.linalg.qr(rng.standard_normal((n, 3)))
    W = G + U @ np.diag([60.0, 80.0, 100.0]) @ V.T
    S = np.linalg.svd(W, compute_uv=False)
    assert spectrum_metrics({"W": S[None]}, {"W": (m, n)}).spikes[0, 0] == 3
    assert spectrum_metrics({"G": np.sqrt(eigenvalues)[None]}, {"G": (m, n)}).spikes[0, 0] <= 1


# ---- records
# -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def record():
    model = mlp(widths=(12, 64, 48, 5))
    tracker = SpectralTracker(model, every=5, top_k=3)
    train(model, tracker, steps=21)
    return tracker.record


def test_record_metrics_are_the_fit_of_each_snapshot(record):
    metrics = record_metrics(record)
    assert metrics.alpha.shape == (len(record), 3) and metrics.layers == ["0", "2", "4"]
    assert list(metrics.steps) == [0, 5, 10, 15, 20]
    for column, name in enumerate(metrics.layers):
        S = record.series(name, "singular_values").astype(np.float64)
        fit = power_law_fit(S**2)
        np.testing.assert_array_equal(metrics.alpha[:, column], fit.alpha)
        np.testing.assert_array_equal(metrics.ks_distance[:, column], fit.ks_distance)
        np.testing.assert_allclose(metrics.log_spectral_norm[:, column], np.log10(S[:, 0] ** 2))
    assert np.isnan(metrics.alpha[:, 2]).all()  # 5 singular values: too few to fit
    last = record_metrics(record, layers=["2"], steps=[20])
    assert last.alpha[0, 0] == metrics.alpha[-1, 1]
    assert set(metrics.layer("0")) == {
        "alpha",
        "xmin",
        "ks_distance",
        "n_tail",
        "spikes",
        "log_spectral_norm",
    }
    with pytest.raises(KeyError, match="no layer"):
        metrics.layer("nope")


def test_padding_groups_give_the_same_numbers_as_separate_fits():
    rng = np.random.default_rng(4)
    # small scales: eigenvalues below 1 (negative logs) beside the zero padding
    matrices = {
        f"W{k}": scale * rng.standard_t(3, (90, R))
        for k, (R, scale) in enumerate([(64, 1.0), (44, 0.01), (30, 0.1), (12, 1.0)])
    }
    together = _ours(matrices)
    for column, (name, W) in enumerate(matrices.items()):
        alone = _ours({name: W})
        np.testing.assert_array_equal(together.alpha[:, column], alone.alpha[:, 0])
        np.testing.assert_array_equal(together.spikes[:, column], alone.spikes[:, 0])


def test_spectra_of_the_wrong_length_are_refused(record):
    with pytest.raises(ValueError, match="has 3 singular values"):
        spectrum_metrics({"W": np.ones((1, 4))}, {"W": (3, 8)})
    with pytest.raises(TypeError, match="RunRecord"):
        record_metrics("run.npz")


def test_plots_are_figures_7_5_inches_wide(record):
    for fig in (plot_esd(record, "0"), plot_alpha(record), plot_esd(record, "2", steps=[10])):
        assert isinstance(fig, Figure)
        assert fig.get_size_inches()[0] == pytest.approx(7.5)
