"""The models of the book.

For ``(a, b) -> (a + b) mod p`` (chapters "Grokking" and "Weight decay"):

* :class:`ModularTransformer` - the paper's one-layer transformer (SPEC section 2):
  tokens ``[a, b, =]``, learned token and position embeddings, one attention
  block and one ReLU MLP on a residual stream, no LayerNorm, the answer read
  at the last position.
* :class:`ModularMLP` - a small MLP on the embeddings of ``a`` and ``b``.

Both take ``x`` of shape ``(N, 2)`` (int64 pairs) and return logits ``(N, p)``,
and name their matrices so that a run record reads like the architecture:
``embed``, ``pos_embed``, ``attn.in_proj_weight``, ``attn.out_proj``,
``mlp.in``, ``mlp.out``, ``unembed``.

Embeddings are stored as ``(d_model, vocab)``, the ``(out, in)`` layout of
every ``nn.Linear``: an embedding is the linear map from one-hot tokens into
the residual stream. Its spectrum is that of the usual ``(vocab, d_model)``
table (the transpose has the same singular values), and alignment with the
next layer is ``|Vh_next @ U_embed|`` like any other pair (the paper's code
swaps U and Vh for the embedding by hand instead).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Embed", "ModularTransformer", "ModularMLP", "MLP", "CNN1d"]


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class Embed(nn.Module):
    """A learned embedding stored as ``weight (d_model, vocab)``; ``forward(tokens)`` -> ``(..., d_model)``.

    Entries start at ``N(0, 1 / d_model)``, so every embedding vector starts
    with a norm near 1 (the initialisation of Nanda et al.'s grokking model).
    """

    def __init__(self, vocab: int, d_model: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_model, vocab) / math.sqrt(d_model))  # (d_model, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.embedding(tokens, self.weight.T)  # (..., d_model)

    def extra_repr(self) -> str:
        d_model, vocab = self.weight.shape
        return f"vocab={vocab}, d_model={d_model}"


class ModularTransformer(nn.Module):
    """One-layer transformer for ``(a + b) mod p`` without LayerNorm; returns logits ``(N, p)``.

    The input pair becomes the sequence ``[a, b, =]`` (``=`` is token ``p``).
    With a single layer only the last position's output is read, and that
    position attends to all three tokens with or without a causal mask, so
    attention is computed for the query at ``=`` alone: the same function as
    the full sequence, a third of the work.

    Matrices (``(out, in)``): ``embed (d, p+1)``, ``pos_embed (d, 3)``,
    ``attn.in_proj_weight (3d, d)`` (Q, K, V packed, split per head with
    ``matrix_view(..., split=True)``), ``attn.out_proj (d, d)``,
    ``mlp.in (d_mlp, d)``, ``mlp.out (d, d_mlp)``, ``unembed (p, d)``.
    """

    def __init__(self, p: int, d_model: int = 128, n_heads: int = 4, d_mlp: int = 512):
        super().__init__()
        self.p = _positive("p", p)
        for name, value in (("d_model", d_model), ("n_heads", n_heads), ("d_mlp", d_mlp)):
            _positive(name, value)
        if d_model % n_heads:
            raise ValueError(f"n_heads={n_heads} must divide d_model={d_model}")
        self.embed = Embed(p + 1, d_model)
        self.pos_embed = Embed(3, d_model)
        self.attn = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
        self.mlp = nn.ModuleDict({"in": nn.Linear(d_model, d_mlp), "out": nn.Linear(d_mlp, d_model)})
        self.unembed = nn.Linear(d_model, p, bias=False)

    def layer_pairs(self) -> list[tuple[str, str]]:
        """Consecutive matrices whose alignment is meaningful: the output of the first feeds the second.

        ``embed -> attn.in_proj_weight`` is the pair whose early alignment the
        paper reports; the residual stream also joins the attention output to
        the MLP and the MLP to the unembedding.
        """
        return [("embed", "attn.in_proj_weight"), ("attn.out_proj", "mlp.in"),
                ("mlp.in", "mlp.out"), ("mlp.out", "unembed")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f"expected pairs (a, b) of shape (N, 2), got {tuple(x.shape)}")
        equals = torch.full_like(x[:, :1], self.p)
        tokens = torch.cat([x, equals], dim=1)  # (N, 3): [a, b, =]
        h = self.embed(tokens) + self.pos_embed.weight.T  # (N, 3, d_model)
        query = h[:, -1:]  # (N, 1, d_model): only '=' is read out
        attended, _ = self.attn(query, h, h, need_weights=False)  # (N, 1, d_model)
        r = (query + attended)[:, 0]  # (N, d_model) residual stream at '='
        r = r + self.mlp["out"](F.relu(self.mlp["in"](r)))
        return self.unembed(r)  # (N, p)

    def extra_repr(self) -> str:
        return f"p={self.p}, no LayerNorm, read out at '='"


class ModularMLP(nn.Module):
    """An MLP on the embeddings of ``a`` and ``b``; returns logits ``(N, p)``.

    ``a`` and ``b`` share one embedding; the two vectors are concatenated and
    go through two ReLU layers before the unembedding:
    ``embed (d_embed, p)``, ``mlp.in (d_hidden, 2 d_embed)``,
    ``mlp.out (d_hidden, d_hidden)``, ``unembed (p, d_hidden)``.
    """

    def __init__(self, p: int, d_embed: int = 64, d_hidden: int = 256):
        super().__init__()
        self.p = _positive("p", p)
        for name, value in (("d_embed", d_embed), ("d_hidden", d_hidden)):
            _positive(name, value)
        self.embed = Embed(p, d_embed)
        self.mlp = nn.ModuleDict({"in": nn.Linear(2 * d_embed, d_hidden), "out": nn.Linear(d_hidden, d_hidden)})
        self.unembed = nn.Linear(d_hidden, p)

    def layer_pairs(self) -> list[tuple[str, str]]:
        """``mlp.in -> mlp.out -> unembed``; the embedding feeds ``mlp.in`` twice (a and b), so it pairs with neither half alone."""
        return [("mlp.in", "mlp.out"), ("mlp.out", "unembed")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f"expected pairs (a, b) of shape (N, 2), got {tuple(x.shape)}")
        h = self.embed(x).flatten(1)  # (N, 2 d_embed): [e_a, e_b]
        h = F.relu(self.mlp["in"](h))  # (N, d_hidden)
        h = F.relu(self.mlp["out"](h))  # (N, d_hidden)
        return self.unembed(h)  # (N, p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MLP(nn.Module):
    """A ReLU MLP with layers ``fc1 ... fcL``: ``MLP((40, 256, 256, 10))`` maps ``(N, 40)`` to logits ``(N, 10)``.

    ``sizes`` are the widths from input to output. Inputs with more than one
    feature dimension (images) are flattened. ``fc{l}.weight`` has shape
    ``(sizes[l], sizes[l-1])``; the output space of ``fc{l}`` is the input
    space of ``fc{l+1}``, so every consecutive pair has a meaningful alignment.
    PyTorch's default initialisation (uniform, fan-in scaled).
    """

    def __init__(self, sizes=(40, 256, 256, 10)):
        super().__init__()
        sizes = tuple(sizes)
        if len(sizes) < 2:
            raise ValueError(f"sizes must list at least the input and output widths, got {sizes!r}")
        for i, width in enumerate(sizes):
            _positive(f"sizes[{i}]", width)
        self.sizes = sizes
        for l in range(1, len(sizes)):
            self.add_module(f"fc{l}", nn.Linear(sizes[l - 1], sizes[l]))

    @property
    def layer_names(self) -> list[str]:
        return [f"fc{l}" for l in range(1, len(self.sizes))]

    def layer_pairs(self) -> list[tuple[str, str]]:
        """Every consecutive pair ``(fc1, fc2), (fc2, fc3), ...``."""
        names = self.layer_names
        return list(zip(names[:-1], names[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)  # (N, sizes[0])
        if h.shape[1] != self.sizes[0]:
            raise ValueError(f"expected inputs with {self.sizes[0]} features, got shape {tuple(x.shape)}")
        *hidden, last = [getattr(self, name) for name in self.layer_names]
        for layer in hidden:
            h = F.relu(layer(h))
        return last(h)  # (N, sizes[-1])

    def extra_repr(self) -> str:
        return "-".join(map(str, self.sizes)) + ", ReLU"


class CNN1d(nn.Module):
    """A small 1-D ConvNet for signals ``(N, length)`` or ``(N, 1, length)``; returns logits ``(N, n_classes)``.

    Three convolutions (kernel 5, padding 2; the last two with stride 2) with
    ``channels`` filters and ReLU, then a linear layer on the flattened
    features. Matrices: ``conv1 (c, 5)``, ``conv2`` and ``conv3 (c, 5c)`` (a
    convolution kernel flattened over input channels and taps, SPEC section 1),
    ``fc (n_classes, c * length / 4)``. Consecutive convolutions do not share a
    space in the sense of alignment (the input of ``conv2`` is ``c`` channels
    times 5 taps), so :meth:`layer_pairs` is empty.
    """

    def __init__(self, length: int = 40, n_classes: int = 10, channels: int = 32):
        super().__init__()
        for name, value in (("length", length), ("n_classes", n_classes), ("channels", channels)):
            _positive(name, value)
        self.length = length
        self.conv1 = nn.Conv1d(1, channels, 5, padding=2)
        self.conv2 = nn.Conv1d(channels, channels, 5, stride=2, padding=2)
        self.conv3 = nn.Conv1d(channels, channels, 5, stride=2, padding=2)
        reduced = (length + 1) // 2
        reduced = (reduced + 1) // 2
        self.fc = nn.Linear(channels * reduced, n_classes)

    def layer_pairs(self) -> list[tuple[str, str]]:
        return []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            x = x[:, None]  # (N, 1, length)
        if x.ndim != 3 or x.shape[1:] != (1, self.length):
            raise ValueError(f"expected signals of shape (N, {self.length}) or (N, 1, {self.length}), "
                             f"got {tuple(x.shape)}")
        h = F.relu(self.conv1(x))  # (N, c, length)
        h = F.relu(self.conv2(h))  # (N, c, length / 2)
        h = F.relu(self.conv3(h))  # (N, c, length / 4)
        return self.fc(h.flatten(1))  # (N, n_classes)
