import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spectral_lab.models import Embed, ModularMLP, ModularTransformer
from spectral_lab.tracker import SpectralTracker
from spectral_lab.views import find_matrices, matrix_view

P = 7


def pairs(n: int = 10) -> torch.Tensor:
    return torch.randint(0, P, (n, 2), generator=torch.Generator().manual_seed(0))


def test_transformer_matrices_are_named_after_the_architecture():
    torch.manual_seed(0)
    model = ModularTransformer(P, d_model=16, n_heads=4, d_mlp=32)
    shapes = {ref.name: ref.shape for ref in find_matrices(model)}
    assert shapes == {
        "embed": (16, P + 1),  # (d_model, vocab): '=' is token P
        "pos_embed": (16, 3),
        "attn.in_proj_weight": (48, 16),
        "attn.out_proj": (16, 16),
        "mlp.in": (32, 16),
        "mlp.out": (16, 32),
        "unembed": (P, 16),
    }
    assert not any(isinstance(m, nn.LayerNorm) for m in model.modules())


def test_transformer_in_proj_splits_per_head():
    model = ModularTransformer(P, d_model=16, n_heads=4, d_mlp=32)
    blocks = matrix_view("in_proj_weight", model.attn.in_proj_weight, model.attn, split=True)
    assert set(blocks) == {"q", "k", "v"} and blocks["q"].shape == (4, 4, 16)


def reference_forward(model: ModularTransformer, x: torch.Tensor) -> torch.Tensor:
    """The textbook computation: causal self-attention over all three positions, then read out at
    '='."""
    tokens = torch.cat([x, torch.full_like(x[:, :1], model.p)], dim=1)
    h = F.embedding(tokens, model.embed.weight.T) + model.pos_embed.weight.T  # (N, 3, d)
    causal = torch.triu(torch.ones(3, 3, dtype=torch.bool), diagonal=1)
    attended, _ = model.attn(h, h, h, attn_mask=causal, need_weights=False)
    r = (h + attended)[:, -1]
    r = r + model.mlp["out"](torch.relu(model.mlp["in"](r)))
    return model.unembed(r)


def test_transformer_last_position_shortcut_equals_full_attention():
    torch.manual_seed(1)
    model = ModularTransformer(P, d_model=16, n_heads=2, d_mlp=32)
    x = pairs(20)
    logits = model(x)
    assert logits.shape == (20, P)
    torch.testing.assert_close(logits, reference_forward(model, x), rtol=1e-5, atol=1e-6)


def test_mlp_matrices_and_output():
    torch.manual_seed(0)
    model = ModularMLP(P, d_embed=8, d_hidden=24)
    shapes = {ref.name: ref.shape for ref in find_matrices(model)}
    assert shapes == {"embed": (8, P), "mlp.in": (24, 16), "mlp.out": (24, 24), "unembed": (P, 24)}
    assert model(pairs(5)).shape == (5, P)


def test_mlp_tells_a_from_b():
    # concatenated embeddings: swapping a and b changes the hidden input, so the MLP is not forced
    # symmetric
    torch.manual_seed(0)
    model = ModularMLP(P, d_embed=8, d_hidden=24)
    x = torch.tensor([[1, 2]])
    assert not torch.allclose(model(x), model(x.flip(1)))


@pytest.mark.parametrize(
    "make", [lambda: ModularTransformer(P, 16, 4, 32), lambda: ModularMLP(P, 8, 24)]
)
def test_every_parameter_gets_a_gradient(make):
    torch.manual_seed(0)
    model = make()
    loss = F.cross_entropy(model(pairs(30)), torch.arange(30) % P)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "make", [lambda: ModularTransformer(P, 16, 4, 32), lambda: ModularMLP(P, 8, 24)]
)
def test_declared_pairs_are_valid_for_the_tracker(make):
    model = make()
    tracker = SpectralTracker(model, every=1, top_k=3, pairs=model.layer_pairs())
    tracker.step(0, model)
    assert tracker.record.pairs == model.layer_pairs()
    assert tracker.record.alignment(model.layer_pairs()[0]).shape == (1, 3, 3)


def test_embedding_spectrum_matches_the_lookup_table():
    torch.manual_seed(0)
    embed = Embed(vocab=9, d_model=5)
    table = embed(torch.arange(9))  # (vocab, d_model), the usual layout
    torch.testing.assert_close(torch.linalg.svdvals(table), torch.linalg.svdvals(embed.weight))
    # N(0, 1/d) entries: vectors start with a norm near 1
    assert 0.5 < table.norm(dim=1).mean() < 1.5


def test_bad_shapes_and_sizes():
    with pytest.raises(ValueError, match="must divide"):
        ModularTransformer(P, d_model=10, n_heads=4)
    with pytest.raises(ValueError, match="positive integer"):
        ModularMLP(P, d_embed=0)
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        ModularTransformer(P, 16, 4, 32)(torch.zeros(3, 3, dtype=torch.long))


# ---- classification models ---------------------------------------------------------------------
from spectral_lab.models import MLP, CNN1d  # noqa: E402


def test_mlp_layers_pairs_and_shapes():
    model = MLP((40, 32, 16, 10))
    shapes = {ref.name: ref.shape for ref in find_matrices(model)}
    assert shapes == {"fc1": (32, 40), "fc2": (16, 32), "fc3": (10, 16)}
    assert model.layer_pairs() == [("fc1", "fc2"), ("fc2", "fc3")]
    assert model(torch.randn(5, 40)).shape == (5, 10)
    assert model(torch.randn(5, 1, 5, 8)).shape == (5, 10)  # images are flattened


def test_mlp_is_relu_between_layers_and_linear_at_the_end():
    model = MLP((3, 4, 2))
    x = torch.randn(6, 3)
    expected = model.fc2(F.relu(model.fc1(x)))
    assert torch.allclose(model(x), expected)


def test_cnn_matrices_are_flattened_kernels():
    model = CNN1d(length=40, n_classes=10, channels=8)
    shapes = {ref.name: ref.shape for ref in find_matrices(model)}
    assert shapes == {"conv1": (8, 5), "conv2": (8, 40), "conv3": (8, 40), "fc": (10, 80)}
    assert model(torch.randn(4, 40)).shape == (4, 10)
    assert model(torch.randn(4, 1, 40)).shape == (4, 10)
    assert model.layer_pairs() == []


@pytest.mark.parametrize(
    "make, x, message",
    [
        (lambda: MLP((40, 10)), torch.randn(2, 41), "expected inputs with 40 features"),
        (lambda: CNN1d(40), torch.randn(2, 2, 40), r"expected signals of shape \(N, 40\)"),
        (lambda: MLP((40,)), None, "at least the input and output"),
        (lambda: MLP((40, 0, 10)), None, r"sizes\[1\] must be a positive integer"),
    ],
)
def test_classification_models_reject_bad_input(make, x, message):
    with pytest.raises(ValueError, match=message):
        make()(x)
