"""Modular addition: the task on which grokking was discovered (SPEC section 2, "Grokking").

Every pair ``(a, b)`` with ``0 <= a, b < p`` is one example, labelled
``(a + b) mod p``. A seeded random fraction of the ``p**2`` pairs is the
training set and the rest the validation set, so a model that generalizes has
worked out addition mod ``p`` from pairs it never saw.

Chapter: "Grokking" trains on it; "Weight decay" sweeps over it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["ModularData", "modular_addition"]


@dataclass(frozen=True)
class ModularData:
    """A train / validation split of ``(a, b) -> (a + b) mod p``.

    ``train_x`` and ``test_x`` are ``(N, 2)`` int64 pairs ``(a, b)``;
    ``train_y`` and ``test_y`` are ``(N,)`` int64 answers in ``[0, p)``.
    """

    p: int
    train_x: torch.Tensor  # (N_train, 2)
    train_y: torch.Tensor  # (N_train,)
    test_x: torch.Tensor  # (N_test, 2)
    test_y: torch.Tensor  # (N_test,)

    def __repr__(self) -> str:
        total = self.p**2
        return (f"ModularData(p={self.p}, train={len(self.train_y)} pairs ({len(self.train_y) / total:.0%}), "
                f"test={len(self.test_y)} pairs, device={self.train_x.device})")

    def to(self, device: str | torch.device) -> "ModularData":
        """The same split with every tensor on ``device`` (full-batch training keeps all of it there)."""
        return ModularData(self.p, *(t.to(device) for t in (self.train_x, self.train_y, self.test_x, self.test_y)))


def _check_p(p) -> int:
    if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 2:
        raise ValueError(f"p must be an integer >= 2 (the paper uses the prime 113), got {p!r}")
    return int(p)


def modular_addition(p: int, train_fraction: float, seed: int = 0) -> ModularData:
    """All ``p**2`` pairs ``(a, b)`` labelled ``(a + b) mod p``, split at random into train and test.

    The first ``int(train_fraction * p**2)`` pairs of a permutation drawn from a
    ``torch.Generator`` seeded with ``seed`` are the training set (the paper's
    rule: p=113 at 30 % gives 3,830 training pairs); the same arguments give
    the same split on every machine. Returns a :class:`ModularData` on the CPU.
    """
    p = _check_p(p)
    if isinstance(train_fraction, bool) or not isinstance(train_fraction, (int, float, np.floating)):
        raise ValueError(f"train_fraction must be a number in (0, 1), got {train_fraction!r}")
    if not 0.0 < float(train_fraction) < 1.0:
        raise ValueError(f"train_fraction must lie strictly between 0 and 1, got {train_fraction}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    total = p * p
    n_train = int(float(train_fraction) * total)
    if n_train < 1 or n_train >= total:
        raise ValueError(
            f"train_fraction={train_fraction} leaves {n_train} of the {total} pairs for training; "
            "both the training and the validation set need at least one pair"
        )
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    x = torch.stack([a.flatten(), b.flatten()], dim=1)  # (p^2, 2), row a*p + b is the pair (a, b)
    y = (x[:, 0] + x[:, 1]) % p  # (p^2,)
    order = torch.randperm(total, generator=torch.Generator().manual_seed(int(seed)))
    train, test = order[:n_train], order[n_train:]
    return ModularData(p, x[train], y[train], x[test], y[test])
