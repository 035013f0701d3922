"""Masks for lottery tickets (spectral_lab.pruning): magnitude, random, density, application."""

import pytest
import torch
from torch import nn

from spectral_lab.models import MLP
from spectral_lab.pruning import (
    apply_mask,
    check_mask,
    layer_densities,
    magnitude_mask,
    mask_density,
    random_mask_like,
)
from spectral_lab.spectra import agreement, diagonal_mean


def small_mlp(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP((6, 8, 5, 3))  # fc1 (8, 6), fc2 (5, 8), fc3 (3, 5)


def test_global_mask_keeps_exactly_the_largest_entries_of_all_but_the_last_layer():
    model = small_mlp()
    mask = magnitude_mask(model, keep=0.25)
    assert list(mask) == ["fc1.weight", "fc2.weight"]  # keyed like named_parameters, fc3 spared
    W = torch.cat([model.fc1.weight.detach().flatten(), model.fc2.weight.detach().flatten()]).abs()
    n_keep = round(0.25 * W.numel())
    kept = torch.cat([mask["fc1.weight"].flatten(), mask["fc2.weight"].flatten()])
    assert int(kept.sum()) == n_keep
    threshold = W.sort(descending=True).values[n_keep - 1]
    assert torch.equal(kept.bool(), W >= threshold)  # no ties in random floats
    assert mask["fc1.weight"].dtype == model.fc1.weight.dtype
    assert mask["fc1.weight"].shape == model.fc1.weight.shape


def test_layer_scope_keeps_the_same_fraction_in_every_matrix():
    model = small_mlp()
    mask = magnitude_mask(model, keep=0.25, scope="layer")
    assert layer_densities(mask) == {"fc1.weight": 12 / 48, "fc2.weight": 10 / 40}
    W = model.fc2.weight.detach().abs().flatten()
    assert torch.equal(mask["fc2.weight"].flatten().bool(), W >= W.sort(descending=True).values[9])


def test_closed_form_on_a_state_dict():
    W = torch.tensor([[4.0, -1.0], [0.5, -3.0]])
    state = {"a.weight": W, "a.bias": torch.ones(2), "b.weight": torch.ones(1, 2)}
    mask = magnitude_mask(state, keep=0.5)  # default: every matrix but the last (b)
    assert torch.equal(mask["a.weight"], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert list(mask) == ["a.weight"]
    assert (
        magnitude_mask(state, keep=0.25, layers=["a"])["a.weight"].sum() == 1
    )  # only the 4 survives


def test_layer_selection_by_name_glob_and_predicate():
    model = small_mlp()
    assert list(magnitude_mask(model, 0.5, layers=["fc3"])) == ["fc3.weight"]
    assert list(magnitude_mask(model, 0.5, layers=["fc2.weight"])) == ["fc2.weight"]
    assert list(magnitude_mask(model, 0.5, layers="fc*")) == [
        "fc1.weight",
        "fc2.weight",
        "fc3.weight",
    ]
    assert list(magnitude_mask(model, 0.5, layers=lambda name, W: W.shape[0] == 5)) == [
        "fc2.weight"
    ]


def test_within_is_one_round_of_iterative_pruning():
    model = small_mlp()
    first = magnitude_mask(model, keep=0.5)
    with torch.no_grad():  # after "training", the survivors' magnitudes change
        model.fc1.weight.mul_(torch.linspace(0.1, 2.0, 48).reshape(8, 6))
    second = magnitude_mask(model, keep=0.2, within=first)
    assert mask_density(second) == pytest.approx(round(0.2 * 88) / 88)
    for name in first:  # nothing pruned comes back
        assert torch.all(second[name] <= first[name])
    with pytest.raises(ValueError, match="keep must not grow"):
        magnitude_mask(model, keep=0.6, within=first)


def test_random_mask_has_the_same_count_per_layer_at_other_places():
    model = small_mlp()
    mask = magnitude_mask(model, keep=0.3)
    control = random_mask_like(mask, seed=1)
    assert layer_densities(control) == layer_densities(mask)
    assert any(not torch.equal(control[k], mask[k]) for k in mask)
    assert all(torch.equal(control[k], random_mask_like(mask, seed=1)[k]) for k in mask)  # seeded
    assert any(not torch.equal(control[k], random_mask_like(mask, seed=2)[k]) for k in mask)


def test_density_and_apply_mask():
    model = small_mlp()
    mask = {"fc1.weight": torch.zeros(8, 6), "fc2.weight": torch.ones(5, 8)}
    assert mask_density(mask) == pytest.approx(40 / 88)
    assert layer_densities(mask) == {"fc1.weight": 0.0, "fc2.weight": 1.0}
    before = model.fc1.weight.detach().clone()
    pruned = apply_mask(model, mask)
    assert torch.equal(model.fc1.weight.detach(), before)  # the original is untouched
    assert float(pruned.fc1.weight.detach().abs().max()) == 0.0
    assert torch.equal(pruned.fc2.weight, model.fc2.weight)
    assert torch.equal(pruned.fc1.bias, model.fc1.bias)


@pytest.mark.parametrize("keep", [0.0, -0.1, 1.5, True, "0.5"])
def test_bad_keep(keep):
    with pytest.raises(ValueError, match="keep"):
        magnitude_mask(small_mlp(), keep=keep)


def test_bad_input():
    model = small_mlp()
    with pytest.raises(ValueError, match="unknown layer 'fc9'"):
        magnitude_mask(model, 0.5, layers=["fc9"])
    with pytest.raises(ValueError, match="scope"):
        magnitude_mask(model, 0.5, scope="row")
    with pytest.raises(ValueError, match="single weight matrix"):
        magnitude_mask(nn.Linear(3, 2), 0.5)
    with pytest.raises(ValueError, match="other than 0 and 1"):
        check_mask({"fc1.weight": torch.full((8, 6), 0.5)})
    with pytest.raises(ValueError, match="not a parameter"):
        apply_mask(model, {"fc9.weight": torch.ones(2, 2)})
    with pytest.raises(ValueError, match="shape"):
        apply_mask(model, {"fc1.weight": torch.ones(6, 8)})
    with pytest.raises(ValueError, match="same parameters"):
        magnitude_mask(model, 0.1, within={"fc1.weight": torch.ones(8, 6)})


def test_magnitude_keeps_the_top_singular_vectors_of_a_low_rank_matrix_and_random_does_not():
    # a rank-3 signal with distinct singular values plus small noise: its large entries carry the
    # signal
    g = torch.Generator().manual_seed(0)
    U = torch.linalg.qr(torch.randn(200, 3, generator=g, dtype=torch.float64))[0]
    V = torch.linalg.qr(torch.randn(100, 3, generator=g, dtype=torch.float64))[0]
    W = (U * torch.tensor([30.0, 20.0, 10.0], dtype=torch.float64)) @ V.T
    W = W + 0.05 * torch.randn(200, 100, generator=g, dtype=torch.float64)
    state = {"layer.weight": W, "out.weight": torch.ones(1, 200, dtype=torch.float64)}
    magnitude = magnitude_mask(state, keep=0.05)
    random = random_mask_like(magnitude, seed=0)
    S_mag = diagonal_mean(agreement(W * magnitude["layer.weight"], W, k=3))
    S_rand = diagonal_mean(agreement(W * random["layer.weight"], W, k=3))
    assert S_mag > 0.5 and S_rand < 0.2  # measured: 0.60 and 0.05
