"""spectral_lab.experiments.interpolation: the straight path between two networks, the two
barriers in closed form, and the SVA of their matrices."""

import numpy as np
import pytest
import torch
from torch import nn

from spectral_lab.data import ClassificationData
from spectral_lab.experiments.classifier import evaluate_classifier
from spectral_lab.experiments.interpolation import (
    as_alphas,
    error_barrier,
    interpolate_states,
    interpolation_curve,
    loss_barrier,
    singular_vector_agreement,
    sva_score,
)
from spectral_lab.models import MLP


def toy_data(
    n_train: int = 96, n_test: int = 48, features: int = 6, classes: int = 3
) -> ClassificationData:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + n_test, features, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()  # 3 classes from two thresholds
    return ClassificationData(
        "toy",
        classes,
        x[:n_train],
        y[:n_train],
        x[n_train:],
        y[n_train:],
        torch.zeros(n_train, dtype=torch.bool),
    )


def two_mlps(sizes=(6, 16, 16, 3)):
    torch.manual_seed(1)
    a = MLP(sizes)
    torch.manual_seed(2)
    b = MLP(sizes)
    return a, b


# ---- interpolation -------------------------------------------------------------------------------
def test_endpoints_are_the_states_and_the_midpoint_is_the_mean():
    a, b = two_mlps()
    sa, sb = a.state_dict(), b.state_dict()
    for name in sa:
        assert torch.equal(interpolate_states(sa, sb, 0.0)[name], sa[name])
        assert torch.equal(interpolate_states(sa, sb, 1)[name], sb[name])
        torch.testing.assert_close(
            interpolate_states(sa, sb, 0.5)[name], (sa[name] + sb[name]) / 2, rtol=0, atol=1e-7
        )
        torch.testing.assert_close(
            interpolate_states(sa, sb, 0.3)[name],
            0.7 * sa[name] + 0.3 * sb[name],
            rtol=1e-6,
            atol=1e-7,
        )


def test_integer_buffers_come_from_the_first_state():
    net_a, net_b = nn.BatchNorm1d(4), nn.BatchNorm1d(4)
    net_a.num_batches_tracked.fill_(3)
    net_b.num_batches_tracked.fill_(8)
    net_b.running_mean.fill_(2.0)
    mixed = interpolate_states(net_a.state_dict(), net_b.state_dict(), 0.5)
    assert (
        mixed["num_batches_tracked"].dtype == torch.int64 and int(mixed["num_batches_tracked"]) == 3
    )
    torch.testing.assert_close(mixed["running_mean"], torch.ones(4))


def test_interpolation_rejects_bad_input():
    a, b = two_mlps()
    with pytest.raises(ValueError, match="alpha"):
        interpolate_states(a.state_dict(), b.state_dict(), 1.5)
    with pytest.raises(ValueError, match="alpha"):
        interpolate_states(a.state_dict(), b.state_dict(), -0.1)
    wider = MLP((6, 17, 16, 3))
    with pytest.raises(ValueError, match="shape"):
        interpolate_states(a.state_dict(), wider.state_dict(), 0.5)
    deeper = MLP((6, 16, 16, 16, 3))
    with pytest.raises(ValueError, match="different entries"):
        interpolate_states(a.state_dict(), deeper.state_dict(), 0.5)


def test_alphas():
    np.testing.assert_allclose(as_alphas(11), np.arange(11) / 10)
    np.testing.assert_array_equal(as_alphas([0, 0.25, 1]), [0, 0.25, 1])
    for bad in (
        2,
        [0, 1],
        [0, 0.5, 1.2],
        [0, 0.6, 0.5, 1],
        [0.1, 0.5, 1],
        [0, 0.5, 0.9],
        [0, np.nan, 1],
    ):
        with pytest.raises(ValueError):
            as_alphas(bad)


# ---- barriers: closed forms ----------------------------------------------------------------------
def test_loss_barrier_closed_forms():
    alphas = as_alphas(11)
    line = 2.0 * (1 - alphas) + 0.5 * alphas
    assert loss_barrier(line, alphas) == pytest.approx(
        0.0, abs=1e-12
    )  # a straight path has no barrier
    bump = line + 0.8 * 4 * alphas * (1 - alphas)  # height 0.8 above the line, at alpha 0.5
    assert loss_barrier(bump, alphas) == pytest.approx(0.8, abs=1e-12)
    assert loss_barrier(bump) == pytest.approx(0.8, abs=1e-12)  # default: evenly spaced alphas
    dip = line - 0.3 * 4 * alphas * (1 - alphas)  # below the line everywhere inside: negative
    assert loss_barrier(dip, alphas) == pytest.approx(-0.3 * 4 * 0.1 * 0.9, abs=1e-12)
    # uneven alphas: the line is drawn at the given alphas
    assert loss_barrier([1.0, 5.0, 3.0], [0.0, 0.25, 1.0]) == pytest.approx(5.0 - 1.5, abs=1e-12)


def test_error_barrier_closed_forms():
    assert error_barrier([0.1, 0.3, 0.2]) == pytest.approx(0.15)  # max 0.3 minus mean 0.15
    assert error_barrier([0.1, 0.15, 0.2]) == pytest.approx(0.05)  # monotone: |E0 - E1| / 2
    assert error_barrier([0.2] * 5) == 0.0
    with pytest.raises(ValueError, match="one value per alpha"):
        error_barrier([0.1, 0.2, 0.3], [0, 0.2, 0.5, 1])
    with pytest.raises(ValueError, match="NaN"):
        loss_barrier([0.1, np.nan, 0.3])


def test_interpolation_curve_endpoints_match_the_models():
    a, b = two_mlps()
    data = toy_data()
    curve = interpolation_curve(a, a.state_dict(), b.state_dict(), data, alphas=5)
    np.testing.assert_allclose(curve.alphas, [0, 0.25, 0.5, 0.75, 1])
    for i, model in ((0, a), (-1, b)):
        scalars = evaluate_classifier(model, data)
        assert curve.train_loss[i] == pytest.approx(scalars["train_loss"], rel=1e-6)
        assert curve.test_error[i] == pytest.approx(1 - scalars["test_acc"])
    assert curve.loss_barrier() == pytest.approx(loss_barrier(curve.train_loss, curve.alphas))
    assert curve.error_barrier() == pytest.approx(error_barrier(curve.test_error, curve.alphas))
    flat = interpolation_curve(a, a.state_dict(), a.state_dict(), data)
    assert flat.loss_barrier() == pytest.approx(0.0, abs=1e-6) and flat.error_barrier() == 0.0


def test_interpolation_curve_reestimates_batchnorm_statistics():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    junk = {k: v.clone() for k, v in state.items()}
    junk["1.running_mean"].fill_(50.0)
    junk["1.running_var"].fill_(1e-3)
    data = toy_data()
    clean = interpolation_curve(net, state, state, data, alphas=3)
    dirty = interpolation_curve(net, junk, junk, data, alphas=3)
    np.testing.assert_allclose(
        dirty.train_loss, clean.train_loss, rtol=1e-5
    )  # the statistics do not matter


# ---- SVA and perturbation ------------------------------------------------------------------------
def test_sva_of_a_model_with_itself_and_with_sign_flips():
    a, _ = two_mlps((6, 16, 16, 3))
    flipped = MLP((6, 16, 16, 3))
    flipped.load_state_dict({k: -v for k, v in a.state_dict().items()})
    for other in (a, flipped):
        S = singular_vector_agreement(a, other, k=3)
        assert list(S) == ["fc1", "fc2", "fc3"] and all(m.shape == (3, 3) for m in S.values())
        for m in S.values():
            np.testing.assert_allclose(np.diag(m), 1.0, atol=1e-4)
            assert sva_score(m) == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ValueError, match="shape"):
        singular_vector_agreement(a, MLP((6, 17, 16, 3)))
