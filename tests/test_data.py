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


@pytest.mark.parametrize("p, fraction, seed, message", [
    (1, 0.5, 0, "p must be an integer >= 2"),
    (7.0, 0.5, 0, "p must be an integer"),
    (7, 0.0, 0, "strictly between 0 and 1"),
    (7, 1.0, 0, "strictly between 0 and 1"),
    (7, "half", 0, "must be a number"),
    (7, 0.01, 0, "at least one pair"),
    (7, 0.5, -1, "seed must be a non-negative integer"),
])
def test_bad_arguments(p, fraction, seed, message):
    with pytest.raises(ValueError, match=message):
        modular_addition(p, fraction, seed)
