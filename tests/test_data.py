import pytest
import torch

from spectral_lab.data import ModularData, modular_addition


def test_labels_are_sums_mod_p():
    data = modular_addition(7, 0.5, seed=0)
    for x, y in ((data.train_x, data.train_y), (data.test_x, data.test_y)):
        assert x.dtype == torch.int64 and y.dtype == torch.int64
        assert x.ndim == 2 and x.shape[1] == 2 and y.shape == (x.shape[0],)
        assert torch.equal(y, (x[:, 0] + x[:, 1]) % 7)


def test_split_covers_every_pair_once():
    p = 11
    data = modular_addition(p, 0.3, seed=3)
    pairs = torch.cat([data.train_x, data.test_x])  # (p^2, 2)
    codes = pairs[:, 0] * p + pairs[:, 1]
    assert sorted(codes.tolist()) == list(range(p * p))
    assert ((pairs >= 0) & (pairs < p)).all()


def test_paper_split_size():
    # SPEC: p=113 at 30 % gives 3,830 training pairs
    data = modular_addition(113, 0.3, seed=0)
    assert len(data.train_y) == 3830
    assert len(data.test_y) == 113**2 - 3830


def test_same_seed_same_split_other_seed_other_split():
    a, b = modular_addition(13, 0.5, seed=1), modular_addition(13, 0.5, seed=1)
    c = modular_addition(13, 0.5, seed=2)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.train_x, c.train_x)


def test_split_does_not_depend_on_global_rng():
    torch.manual_seed(0)
    a = modular_addition(13, 0.5, seed=4)
    torch.manual_seed(123)
    torch.rand(10)
    b = modular_addition(13, 0.5, seed=4)
    assert torch.equal(a.train_x, b.train_x)


def test_to_and_repr():
    data = modular_addition(5, 0.6, seed=0)
    moved = data.to("cpu")
    assert isinstance(moved, ModularData) and torch.equal(moved.train_x, data.train_x)
    assert "p=5" in repr(data) and "train=15 pairs" in repr(data)


@pytest.mark.parametrize(
    "p, fraction, seed, message",
    [
        (1, 0.5, 0, "p must be an integer >= 2"),
        (7.0, 0.5, 0, "p must be an integer"),
        (7, 0.0, 0, "strictly between 0 and 1"),
        (7, 1.0, 0, "strictly between 0 and 1"),
        (7, "half", 0, "must be a number"),
        (7, 0.01, 0, "at least one pair"),
        (7, 0.5, -1, "seed must be a non-negative integer"),
    ],
)
def test_bad_arguments(p, fraction, seed, message):
    with pytest.raises(ValueError, match=message):
        modular_addition(p, fraction, seed)


# ---- classification data -------------------------------------------------------------------------
from spectral_lab.data import ClassificationData, digits, mnist1d  # noqa: E402


def test_mnist1d_is_the_published_split_and_deterministic():
    data = mnist1d()
    assert (len(data.train_y), len(data.test_y), data.input_shape, data.n_classes) == (
        4000,
        1000,
        (40,),
        10,
    )
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64
    assert sorted(data.train_y.unique().tolist()) == list(range(10))
    assert torch.equal(mnist1d().train_x, data.train_x)
    assert not torch.equal(mnist1d(seed=1).train_x, data.train_x)


def test_mnist1d_leaves_numpys_global_generator_alone():
    import numpy as np

    np.random.seed(123)
    expected = np.random.rand(3)
    np.random.seed(123)
    mnist1d(seed=7)  # generating a dataset calls np.random.seed inside mnist1d
    assert np.array_equal(np.random.rand(3), expected)


def test_digits_split_and_shapes():
    flat, images = digits(), digits(flatten=False)
    assert len(flat.train_y) + len(flat.test_y) == 1797
    assert flat.input_shape == (64,) and images.input_shape == (1, 8, 8)
    assert float(flat.train_x.min()) >= 0.0 and float(flat.train_x.max()) <= 1.0
    assert torch.equal(flat.test_y, images.test_y)
    assert not torch.equal(digits(seed=1).test_y, flat.test_y)


def test_randomize_labels_permutes_a_seeded_fraction():
    data = digits()
    noisy = data.randomize_labels(0.5, seed=3)
    assert int(noisy.randomized.sum()) == round(0.5 * len(data.train_y))
    untouched = ~noisy.randomized
    assert torch.equal(noisy.train_y[untouched], data.train_y[untouched])
    # a permutation among the chosen examples: every class keeps its count
    assert torch.equal(
        torch.bincount(noisy.train_y, minlength=10), torch.bincount(data.train_y, minlength=10)
    )
    changed = (noisy.train_y != data.train_y).float().mean()
    assert 0.35 < float(changed) <= 0.5  # about 1/10 of the chosen keep their label by chance
    assert torch.equal(noisy.test_y, data.test_y)  # the test set keeps its true labels
    assert torch.equal(data.randomize_labels(0.5, seed=3).train_y, noisy.train_y)
    assert torch.equal(data.randomize_labels(0.0).train_y, data.train_y)


@pytest.mark.parametrize("fraction", [-0.1, 1.5, "half", True])
def test_randomize_labels_rejects_bad_fractions(fraction):
    with pytest.raises(ValueError, match="fraction must be a number in"):
        digits().randomize_labels(fraction)


@pytest.mark.parametrize(
    "kwargs, message", [({"test_fraction": 1.0}, "test_fraction"), ({"seed": -1}, "seed")]
)
def test_digits_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        digits(**kwargs)


def test_classification_data_repr_and_to():
    data = digits().randomize_labels(0.1)
    assert "135 training labels randomized" in repr(data)
    assert isinstance(data.to("cpu"), ClassificationData)
