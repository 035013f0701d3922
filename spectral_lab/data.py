"""The datasets of the book, all generated or bundled: nothing is downloaded at run time.

* :func:`modular_addition` - the task on which grokking was discovered (SPEC section 2).
* :func:`mnist1d` and :func:`digits` - small classification sets for the memorization,
  lottery-ticket and linear-mode-connectivity chapters, as :class:`ClassificationData`,
  whose training labels can be randomized with a fixed seed.
* :func:`grammar_corpus` - sentences from a small probabilistic grammar (:data:`GRAMMAR`),
  the text of the language model in "Across architectures", as a :class:`Corpus`.

Modular addition:

Every pair ``(a, b)`` with ``0 <= a, b < p`` is one example, labelled
``(a + b) mod p``. A seeded random fraction of the ``p**2`` pairs is the
training set and the rest the validation set, so a model that generalizes has
worked out addition mod ``p`` from pairs it never saw.

Chapters: "Grokking" trains on it; "Weight decay" sweeps over it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "ModularData",
    "modular_addition",
    "ClassificationData",
    "mnist1d",
    "digits",
    "Corpus",
    "GRAMMAR",
    "grammar_corpus",
]


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
        return (
            f"ModularData(p={self.p}, train={len(self.train_y)} pairs "
            f"({len(self.train_y) / total:.0%}), "
            f"test={len(self.test_y)} pairs, device={self.train_x.device})"
        )

    def to(self, device: str | torch.device) -> "ModularData":
        """The same split with every tensor on ``device`` (full-batch training keeps all of it
        there)."""
        return ModularData(
            self.p, *(t.to(device) for t in (self.train_x, self.train_y, self.test_x, self.test_y))
        )


def _check_p(p) -> int:
    if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 2:
        raise ValueError(f"p must be an integer >= 2 (the paper uses the prime 113), got {p!r}")
    return int(p)


def modular_addition(p: int, train_fraction: float, seed: int = 0) -> ModularData:
    """All ``p**2`` pairs ``(a, b)`` labelled ``(a + b) mod p``, split at random into train and
    test.

    The first ``int(train_fraction * p**2)`` pairs of a permutation drawn from a
    ``torch.Generator`` seeded with ``seed`` are the training set (the paper's
    rule: p=113 at 30 % gives 3,830 training pairs); the same arguments give
    the same split on every machine. Returns a :class:`ModularData` on the CPU.
    """
    p = _check_p(p)
    if isinstance(train_fraction, bool) or not isinstance(
        train_fraction, (int, float, np.floating)
    ):
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


# ---- classification: MNIST-1D and scikit-learn's digits (memorization, lottery tickets, LMC)
# ---------
@dataclass(frozen=True)
class ClassificationData:
    """A train / test split of a classification task, every tensor on one device.

    ``train_x`` and ``test_x`` are float32 ``(N, *shape)`` inputs, ``train_y``
    and ``test_y`` int64 labels in ``[0, n_classes)``. ``randomized`` marks the
    training examples whose label :meth:`randomize_labels` replaced (all False
    for clean data).
    """

    name: str
    n_classes: int
    train_x: torch.Tensor  # (N_train, *shape)
    train_y: torch.Tensor  # (N_train,)
    test_x: torch.Tensor  # (N_test, *shape)
    test_y: torch.Tensor  # (N_test,)
    randomized: torch.Tensor  # (N_train,) bool

    def __repr__(self) -> str:
        noisy = int(self.randomized.sum())
        labels = f", {noisy} training labels randomized" if noisy else ""
        return (
            f"ClassificationData({self.name!r}, train={len(self.train_y)}, "
            f"test={len(self.test_y)}, "
            f"input shape {tuple(self.train_x.shape[1:])}, {self.n_classes} classes{labels}, "
            f"device={self.train_x.device})"
        )

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    def to(self, device: str | torch.device) -> "ClassificationData":
        """The same split with every tensor on ``device`` (small datasets live there whole)."""
        return ClassificationData(
            self.name,
            self.n_classes,
            self.train_x.to(device),
            self.train_y.to(device),
            self.test_x.to(device),
            self.test_y.to(device),
            self.randomized.to(device),
        )

    def randomize_labels(self, fraction: float, seed: int = 0) -> "ClassificationData":
        """A copy in which a ``fraction`` of the training labels are replaced by random ones.

        A seeded random subset of ``round(fraction * N)`` training examples is
        chosen and its labels are permuted among themselves (the paper
        permutes labels, which keeps every class's share of the data): at
        ``fraction=1`` every label is shuffled, and about ``1/n_classes`` of
        the chosen examples keep their label by chance. The test set keeps its
        true labels, so test accuracy measures what was learned about the task.
        """
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, (int, float, np.floating))
            or not 0.0 <= float(fraction) <= 1.0
        ):
            raise ValueError(
                "fraction must be a number in [0, 1] (0: true labels, 1: all random), got "
                f"{fraction!r}"
            )
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        n = len(self.train_y)
        generator = torch.Generator().manual_seed(int(seed))
        chosen = torch.randperm(n, generator=generator)[: round(float(fraction) * n)]
        shuffled = chosen[torch.randperm(len(chosen), generator=generator)]
        y = self.train_y.cpu().clone()
        y[chosen] = self.train_y.cpu()[shuffled]
        randomized = self.randomized.cpu().clone()
        randomized[chosen] = True
        device = self.train_y.device
        return ClassificationData(
            self.name,
            self.n_classes,
            self.train_x,
            y.to(device),
            self.test_x,
            self.test_y,
            randomized.to(device),
        )


def _as_data(name, n_classes, train_x, train_y, test_x, test_y) -> ClassificationData:
    train_x = torch.as_tensor(np.asarray(train_x), dtype=torch.float32)
    train_y = torch.as_tensor(np.asarray(train_y), dtype=torch.int64)
    return ClassificationData(
        name,
        n_classes,
        train_x,
        train_y,
        torch.as_tensor(np.asarray(test_x), dtype=torch.float32),
        torch.as_tensor(np.asarray(test_y), dtype=torch.int64),
        torch.zeros(len(train_y), dtype=torch.bool),
    )


@functools.lru_cache(maxsize=4)
def _mnist1d_arrays(seed: int) -> tuple[np.ndarray, ...]:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as error:  # pragma: no cover - a dependency of the package
        raise ImportError("MNIST-1D needs the mnist1d package: pip install mnist1d") from error
    args = get_dataset_args()
    args.seed = seed
    state = (
        np.random.get_state()
    )  # make_dataset seeds numpy's global generator; give the caller theirs back
    try:
        raw = make_dataset(args)
    finally:
        np.random.set_state(state)
    return raw["x"], raw["y"], raw["x_test"], raw["y_test"]


def mnist1d(seed: int = 42) -> ClassificationData:
    """MNIST-1D (Greydanus 2020): 4,000 training and 1,000 test signals of length 40, 10 classes.

    Generated procedurally from ten 1-D digit templates (padding, shear,
    translation, correlated and i.i.d. noise), offline, in about a second;
    ``seed=42`` is the dataset the authors publish. Inputs ``(N, 40)``, roughly
    zero mean and unit variance. Small enough for a CPU, hard enough that an
    MLP reaches only ~75 % test accuracy and that instability early in
    training, lottery tickets and linear mode connectivity show.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return _as_data("mnist1d", 10, *_mnist1d_arrays(int(seed)))


def digits(test_fraction: float = 0.25, seed: int = 0, flatten: bool = True) -> ClassificationData:
    """scikit-learn's bundled handwritten digits: 1,797 images of 8x8 pixels, 10 classes.

    Pixels are scaled from 0..16 to [0, 1]. A seeded random ``test_fraction``
    is held out (1,348 / 449 at the default). ``flatten=True`` gives inputs
    ``(N, 64)`` for an MLP, ``False`` gives images ``(N, 1, 8, 8)``. Easy: an
    MLP fits it completely, and networks trained from one initialisation are
    linearly connected from the first step (too easy for the LMC chapter).
    """
    from sklearn.datasets import load_digits

    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, (int, float))
        or not 0 < test_fraction < 1
    ):
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    bunch = load_digits()
    x = bunch.images.astype(np.float32) / 16.0  # (1797, 8, 8)
    x = x.reshape(len(x), -1) if flatten else x[:, None]
    y = bunch.target
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(int(seed))).numpy()
    n_test = round(test_fraction * len(y))
    test, train = order[:n_test], order[n_test:]
    return _as_data("digits", 10, x[train], y[train], x[test], y[test])


# ---- a generated corpus for the language model of chapter "Across architectures"
# ----------------------
# : A probabilistic grammar of tiny English sentences with number agreement between subject and verb
# (also
# : across a prepositional phrase) and optional recursion. ``symbol: [(probability, expansion),
# ...]``;
#: symbols in capitals expand, anything else is a word.
GRAMMAR: dict[str, list[tuple[float, tuple[str, ...]]]] = {
    "S": [(0.5, ("NP_SG", "VP_SG", ".")), (0.5, ("NP_PL", "VP_PL", "."))],
    "NP_SG": [
        (0.55, ("DET_SG", "N_SG")),
        (0.3, ("DET_SG", "ADJ", "N_SG")),
        (0.15, ("DET_SG", "N_SG", "PP")),
    ],
    "NP_PL": [
        (0.55, ("DET_PL", "N_PL")),
        (0.3, ("DET_PL", "ADJ", "N_PL")),
        (0.15, ("DET_PL", "N_PL", "PP")),
    ],
    "NP": [(0.5, ("NP_SG",)), (0.5, ("NP_PL",))],
    "PP": [(1.0, ("P", "NP"))],
    "VP_SG": [(0.45, ("VT_SG", "NP")), (0.3, ("VI_SG",)), (0.25, ("VI_SG", "ADV"))],
    "VP_PL": [(0.45, ("VT_PL", "NP")), (0.3, ("VI_PL",)), (0.25, ("VI_PL", "ADV"))],
    "DET_SG": [(0.5, ("the",)), (0.3, ("a",)), (0.2, ("this",))],
    "DET_PL": [(0.5, ("the",)), (0.3, ("some",)), (0.2, ("these",))],
    "ADJ": [
        (0.3, ("small",)),
        (0.25, ("old",)),
        (0.2, ("red",)),
        (0.15, ("happy",)),
        (0.1, ("quiet",)),
    ],
    "N_SG": [
        (0.3, ("cat",)),
        (0.25, ("dog",)),
        (0.2, ("bird",)),
        (0.15, ("child",)),
        (0.1, ("teacher",)),
    ],
    "N_PL": [
        (0.3, ("cats",)),
        (0.25, ("dogs",)),
        (0.2, ("birds",)),
        (0.15, ("children",)),
        (0.1, ("teachers",)),
    ],
    "VT_SG": [(0.35, ("sees",)), (0.25, ("likes",)), (0.25, ("chases",)), (0.15, ("finds",))],
    "VT_PL": [(0.35, ("see",)), (0.25, ("like",)), (0.25, ("chase",)), (0.15, ("find",))],
    "VI_SG": [(0.4, ("sleeps",)), (0.35, ("runs",)), (0.25, ("sings",))],
    "VI_PL": [(0.4, ("sleep",)), (0.35, ("run",)), (0.25, ("sing",))],
    "ADV": [(0.4, ("quickly",)), (0.35, ("today",)), (0.25, ("again",))],
    "P": [(0.4, ("near",)), (0.35, ("with",)), (0.25, ("behind",))],
}


@dataclass(frozen=True)
class Corpus:
    """A tokenized text split into a training and a held-out stream of sentences.

    ``vocab[i]`` is the word of token ``i``; ``train`` and ``test`` are int64
    token streams ``(n_tokens,)``, sentences one after the other, each ending in ``"."``.
    """

    vocab: tuple[str, ...]
    train: torch.Tensor  # (n_train_tokens,)
    test: torch.Tensor  # (n_test_tokens,)

    def __repr__(self) -> str:
        return (
            f"Corpus(vocab={len(self.vocab)} words, train={len(self.train):,} tokens, "
            f"test={len(self.test):,} tokens, device={self.train.device})"
        )

    def to(self, device: str | torch.device) -> "Corpus":
        return Corpus(self.vocab, self.train.to(device), self.test.to(device))

    def decode(self, tokens) -> str:
        """The words of a sequence of token ids, joined by spaces."""
        return " ".join(self.vocab[int(t)] for t in tokens)

    def windows(self, split: str, length: int) -> torch.Tensor:
        """The ``split`` stream cut into consecutive non-overlapping windows: ``(n, length)``."""
        stream = {"train": self.train, "test": self.test}[split]
        n = len(stream) // length
        if n < 1:
            raise ValueError(
                f"the {split} stream has {len(stream)} tokens, fewer than one window of {length}"
            )
        return stream[: n * length].reshape(n, length)


def _sentence(
    rng: np.random.Generator, cumulative: dict[str, np.ndarray], symbol: str = "S"
) -> list[str]:
    if symbol not in GRAMMAR:
        return [symbol]
    rules = GRAMMAR[symbol]
    choice = min(
        int(np.searchsorted(cumulative[symbol], rng.random(), side="right")), len(rules) - 1
    )
    return [word for part in rules[choice][1] for word in _sentence(rng, cumulative, part)]


def grammar_corpus(n_sentences: int = 6000, test_fraction: float = 0.1, seed: int = 0) -> Corpus:
    """Sentences drawn from :data:`GRAMMAR`, tokenized: offline, seeded, the same on every machine.

    ``n_sentences`` are sampled with ``numpy.random.default_rng(seed)``; the last
    ``round(test_fraction * n_sentences)`` form the held-out stream. The
    vocabulary is every word of the grammar in sorted order (41 words, ``"."``
    included). A sentence has 7 words on average; predicting the verb's
    number needs the subject, a few tokens back.
    """
    if (
        isinstance(n_sentences, bool)
        or not isinstance(n_sentences, (int, np.integer))
        or n_sentences < 2
    ):
        raise ValueError(f"n_sentences must be an integer >= 2, got {n_sentences!r}")
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, (int, float))
        or not 0 < test_fraction < 1
    ):
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    vocab = tuple(
        sorted(
            {w for rules in GRAMMAR.values() for _, exp in rules for w in exp if w not in GRAMMAR}
        )
    )
    index = {word: i for i, word in enumerate(vocab)}
    cumulative = {symbol: np.cumsum([p for p, _ in rules]) for symbol, rules in GRAMMAR.items()}
    rng = np.random.default_rng(int(seed))
    sentences = [[index[w] for w in _sentence(rng, cumulative)] for _ in range(int(n_sentences))]
    n_test = max(1, round(test_fraction * n_sentences))

    def flat(group):
        return torch.tensor([t for s in group for t in s], dtype=torch.int64)

    return Corpus(vocab, flat(sentences[:-n_test]), flat(sentences[-n_test:]))
