"""The two models of the grokking and weight-decay chapters, for ``(a, b) -> (a + b) mod p``.

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

__all__ = ["Embed", "ModularTransformer", "ModularMLP"]


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
