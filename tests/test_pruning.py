import math

import pytest
import torch
from torch import nn

from spectral_lab.models import ModularTransformer
from spectral_lab.pruning import svd_prune, svd_pruning_losses, svd_truncate
from spectral_lab.views import find_matrices, matrix_view


def random_matrix(m: int, n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(m, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_top_and_bottom_add_up_to_the_matrix():
    W = random_matrix(7, 5)
    torch.testing.assert_close(
        svd_truncate(W, "top") + svd_truncate(W, "bottom"), W, rtol=0, atol=1e-12
    )


@pytest.mark.parametrize("m, n", [(7, 5), (6, 6), (3, 9)])
def test_top_keeps_ceil_half_of_the_spectrum(m, n):
    W = random_matrix(m, n, seed=m * n)
    S = torch.linalg.svdvals(W)
    R, r = min(m, n), math.ceil(min(m, n) / 2)
    S_top = torch.linalg.svdvals(svd_truncate(W, "top"))
    S_bottom = torch.linalg.svdvals(svd_truncate(W, "bottom"))
    torch.testing.assert_close(S_top[:r], S[:r], rtol=0, atol=1e-12)
    assert S_top[r:].abs().max() < 1e-12
    torch.testing.assert_close(S_bottom[: R - r], S[r:], rtol=0, atol=1e-12)


def test_closed_form_on_a_diagonal_matrix():
    W = torch.diag(torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(
        svd_truncate(W, "top"), torch.diag(torch.tensor([5.0, 4.0, 3.0, 0, 0]).double())
    )
    torch.testing.assert_close(
        svd_truncate(W, "bottom"), torch.diag(torch.tensor([0, 0, 0, 2.0, 1.0]).double())
    )
    torch.testing.assert_close(
        svd_truncate(W, "top", fraction=0.2), torch.diag(torch.tensor([5.0, 0, 0, 0, 0]).double())
    )


def test_svd_prune_copies_and_spares_the_last_layer():
    torch.manual_seed(0)
    model = ModularTransformer(7, d_model=16, n_heads=4, d_mlp=32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = svd_prune(model, "top")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"the original model changed at {k}"
    torch.testing.assert_close(pruned.unembed.weight, model.unembed.weight, rtol=0, atol=0)
    torch.testing.assert_close(pruned.mlp["in"].bias, model.mlp["in"].bias, rtol=0, atol=0)
    for ref in find_matrices(model)[:-1]:
        W, W_pruned = ref.view(model), ref.view(pruned)
        torch.testing.assert_close(W_pruned, svd_truncate(W, "top"), rtol=1e-5, atol=1e-6)
        assert torch.linalg.matrix_rank(W_pruned) == math.ceil(min(W.shape) / 2), ref.name


def test_svd_prune_layer_selection():
    torch.manual_seed(0)
    model = ModularTransformer(7, d_model=16, n_heads=4, d_mlp=32)
    pruned = svd_prune(model, "bottom", layers=["mlp.in"])
    assert not torch.allclose(pruned.mlp["in"].weight, model.mlp["in"].weight)
    assert torch.equal(pruned.mlp["out"].weight, model.mlp["out"].weight)
    assert torch.equal(pruned.embed.weight, model.embed.weight)


def test_conv_and_transposed_conv_are_written_back_in_their_own_layout():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ConvTranspose2d(4, 6, 3), nn.Conv2d(6, 2, 1))
    pruned = svd_prune(model, "top")
    for i in (0, 1):
        W = matrix_view("weight", model[i].weight, model[i])
        W_pruned = matrix_view("weight", pruned[i].weight, pruned[i])
        torch.testing.assert_close(W_pruned, svd_truncate(W, "top"), rtol=1e-5, atol=1e-6)
    assert torch.equal(pruned[2].weight, model[2].weight)


def test_bad_arguments():
    W = random_matrix(3, 3)
    with pytest.raises(ValueError, match="keep must be 'top' or 'bottom'"):
        svd_truncate(W, "middle")
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        svd_truncate(W, "top", fraction=1.0)
    with pytest.raises(ValueError, match="single weight matrix"):
        svd_prune(nn.Linear(3, 3))


def test_one_pruning_loss_function_for_every_chapter():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    x = torch.randn(20, 6)
    refreshed = []

    @torch.no_grad()
    def evaluate(m):
        return float(m(x).square().mean())

    losses = svd_pruning_losses(model, evaluate, refresh=refreshed.append)
    assert set(losses) == {"full", "top", "bottom"} and len(refreshed) == 2
    assert losses["full"] == evaluate(model)  # the model itself is untouched
    assert losses["top"] == evaluate(svd_prune(model, "top"))
    only = svd_pruning_losses(model, evaluate, parts=("bottom",))
    assert list(only) == ["bottom"] and only["bottom"] == losses["bottom"]
    with pytest.raises(ValueError, match="parts must be some of"):
        svd_pruning_losses(model, evaluate, parts=("middle",))
