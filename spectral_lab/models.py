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

For chapter "Across architectures", one small network of each kind the paper
studies in its section 4: :class:`DigitsCNN` (BatchNorm), :class:`RowLSTM`,
:class:`TransformerLM` (LayerNorm, causal, :class:`Embed` embeddings) and
:class:`TinyUNet` (GroupNorm, a transposed convolution, a diffusion-step
embedding). Besides ``layer_pairs()`` each has ``alignment_pairs()``, the
pairs of (blocks of) matrices whose alignment the paper measures.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .views import centre_tap, split_gates, split_heads

__all__ = [
    "Embed",
    "ModularTransformer",
    "ModularMLP",
    "MLP",
    "CNN1d",
    "DigitsCNN",
    "RowLSTM",
    "TransformerLM",
    "TinyUNet",
]


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class Embed(nn.Module):
    """A learned embedding stored as ``weight (d_model, vocab)``; ``forward(tokens)`` -> ``(...,
    d_model)``.

    Entries start at ``N(0, 1 / d_model)``, so every embedding vector starts
    with a norm near 1 (the initialisation of Nanda et al.'s grokking model).
    """

    def __init__(self, vocab: int, d_model: int):
        super().__init__()
        self.weight = nn.Parameter(
            torch.randn(d_model, vocab) / math.sqrt(d_model)
        )  # (d_model, vocab)

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
        self.mlp = nn.ModuleDict(
            {"in": nn.Linear(d_model, d_mlp), "out": nn.Linear(d_mlp, d_model)}
        )
        self.unembed = nn.Linear(d_model, p, bias=False)

    def layer_pairs(self) -> list[tuple[str, str]]:
        """Consecutive matrices whose alignment is meaningful: the output of the first feeds the
        second.

        ``embed -> attn.in_proj_weight`` is the pair whose early alignment the
        paper reports; the residual stream also joins the attention output to
        the MLP and the MLP to the unembedding.
        """
        return [
            ("embed", "attn.in_proj_weight"),
            ("attn.out_proj", "mlp.in"),
            ("mlp.in", "mlp.out"),
            ("mlp.out", "unembed"),
        ]

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
        self.mlp = nn.ModuleDict(
            {"in": nn.Linear(2 * d_embed, d_hidden), "out": nn.Linear(d_hidden, d_hidden)}
        )
        self.unembed = nn.Linear(d_hidden, p)

    def layer_pairs(self) -> list[tuple[str, str]]:
        """``mlp.in -> mlp.out -> unembed``; the embedding feeds ``mlp.in`` twice (a and b), so it
        pairs with neither half alone."""
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
    """A ReLU MLP with layers ``fc1 ... fcL``: ``MLP((40, 256, 256, 10))`` maps ``(N, 40)`` to
    logits ``(N, 10)``.

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
            raise ValueError(
                f"expected inputs with {self.sizes[0]} features, got shape {tuple(x.shape)}"
            )
        *hidden, last = [getattr(self, name) for name in self.layer_names]
        for layer in hidden:
            h = F.relu(layer(h))
        return last(h)  # (N, sizes[-1])

    def extra_repr(self) -> str:
        return "-".join(map(str, self.sizes)) + ", ReLU"


class CNN1d(nn.Module):
    """A small 1-D ConvNet for signals ``(N, length)`` or ``(N, 1, length)``; returns logits ``(N,
    n_classes)``.

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
            raise ValueError(
                f"expected signals of shape (N, {self.length}) or (N, 1, {self.length}), "
                f"got {tuple(x.shape)}"
            )
        h = F.relu(self.conv1(x))  # (N, c, length)
        h = F.relu(self.conv2(h))  # (N, c, length / 2)
        h = F.relu(self.conv3(h))  # (N, c, length / 4)
        return self.fc(h.flatten(1))  # (N, n_classes)


# ---- chapter "Across architectures": one small network of each kind
# --------------------------------
# Each has ``layer_pairs()`` (whole matrices whose alignment the tracker can follow: the output
# space of the
# first is the input space of the second) and ``alignment_pairs()`` (the paper's pairs, some of them
# blocks
# of a matrix: conv kernels at their centre tap, Q with K per head, V with O, LSTM gate blocks).
# ``alignment_pairs()`` returns ``{name: (W_prev, W_next)}`` with ``W_prev (..., m, n)``, ``W_next
# (..., p, m)``,
# ready for :func:`spectral_lab.spectra.alignment`. Every model registers its output layer last, the
# layer SVD pruning leaves alone.


class DigitsCNN(nn.Module):
    """A VGG-style ConvNet for 8x8 images ``(N, 1, 8, 8)``; returns logits ``(N, n_classes)``.

    ``conv1`` (c, 1, 3, 3) -> BN -> ReLU, ``conv2`` (c, c) -> BN -> ReLU -> max-pool to 4x4,
    ``conv3`` (2c, c) -> BN -> ReLU -> max-pool to 2x2, then ``fc`` on the flattened
    features. Matrices ``conv1 (c, 9)``, ``conv2 (c, 9c)``, ``conv3 (2c, 9c)``, ``fc (n_classes,
    8c)``.
    """

    def __init__(self, n_classes: int = 10, channels: int = 32):
        super().__init__()
        c = _positive("channels", channels)
        _positive("n_classes", n_classes)
        self.conv1, self.bn1 = nn.Conv2d(1, c, 3, padding=1), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.conv3, self.bn3 = nn.Conv2d(c, 2 * c, 3, padding=1), nn.BatchNorm2d(2 * c)
        self.fc = nn.Linear(2 * c * 4, n_classes)

    def layer_pairs(self) -> list[tuple[str, str]]:
        # a flattened kernel's input is channels x taps: no whole-matrix pair shares a space
        return []

    def alignment_pairs(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``conv1 -> conv2`` and ``conv2 -> conv3`` at the centre tap (channel space to channel
        space)."""
        taps = [centre_tap(conv.weight) for conv in (self.conv1, self.conv2, self.conv3)]
        return {"conv1 -> conv2": (taps[0], taps[1]), "conv2 -> conv3": (taps[1], taps[2])}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1:] != (1, 8, 8):
            raise ValueError(f"expected images of shape (N, 1, 8, 8), got {tuple(x.shape)}")
        h = F.relu(self.bn1(self.conv1(x)))  # (N, c, 8, 8)
        h = F.max_pool2d(F.relu(self.bn2(self.conv2(h))), 2)  # (N, c, 4, 4)
        h = F.max_pool2d(F.relu(self.bn3(self.conv3(h))), 2)  # (N, 2c, 2, 2)
        return self.fc(h.flatten(1))  # (N, n_classes)


class RowLSTM(nn.Module):
    """A two-layer LSTM that reads an 8x8 image row by row and classifies it from its last hidden
    state.

    Input ``(N, 1, 8, 8)`` or ``(N, 8, 8)``: a sequence of 8 rows of 8 pixels.
    Matrices: ``lstm.weight_ih_l0 (4h, 8)``, ``lstm.weight_hh_l0 (4h, h)``,
    ``lstm.weight_ih_l1 (4h, h)``, ``lstm.weight_hh_l1 (4h, h)`` (gates stacked
    input, forget, cell, output; split with :func:`~spectral_lab.views.split_gates`)
    and ``head (n_classes, h)``.
    """

    def __init__(self, n_classes: int = 10, hidden: int = 64, row: int = 8, layers: int = 2):
        super().__init__()
        for name, value in (
            ("n_classes", n_classes),
            ("hidden", hidden),
            ("row", row),
            ("layers", layers),
        ):
            _positive(name, value)
        self.row = row
        self.lstm = nn.LSTM(row, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, n_classes)

    def layer_pairs(self) -> list[tuple[str, str]]:
        return []  # the hidden state comes out of gate products, not out of one whole matrix

    def alignment_pairs(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The cell-gate block ``g`` of each layer (it writes the cell, hence the hidden state)
        against
        every gate block that reads that hidden state: the next layer's ``weight_ih`` (the head for
        the last layer) and the layer's own ``weight_hh``. Gate blocks are ``(h, .)`` matrices."""
        L = self.lstm.num_layers
        pairs = {}
        for l in range(L):
            g = split_gates(getattr(self.lstm, f"weight_ih_l{l}"))[
                "g"
            ]  # (h, d_in): writes the cell
            recurrent = split_gates(getattr(self.lstm, f"weight_hh_l{l}"))
            for gate, W in recurrent.items():
                pairs[f"ih_l{l}[g] -> hh_l{l}[{gate}]"] = (g, W)
            if l + 1 < L:
                for gate, W in split_gates(getattr(self.lstm, f"weight_ih_l{l + 1}")).items():
                    pairs[f"ih_l{l}[g] -> ih_l{l + 1}[{gate}]"] = (g, W)
            else:
                pairs[f"ih_l{l}[g] -> head"] = (g, self.head.weight)
        return pairs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4 and x.shape[1] == 1:
            x = x[:, 0]
        if x.ndim != 3 or x.shape[2] != self.row:
            raise ValueError(
                f"expected sequences (N, T, {self.row}) or images (N, 1, T, {self.row}), "
                f"got {tuple(x.shape)}"
            )
        out, _ = self.lstm(x)  # (N, T, h)
        return self.head(out[:, -1])  # (N, n_classes)


class TransformerLM(nn.Module):
    """A small decoder-only (GPT-style) language model; ``forward(tokens (N, T))`` -> logits ``(N,
    T, vocab)``.

    Pre-LayerNorm blocks ``blocks.{i}``: causal ``attn`` (``nn.MultiheadAttention``,
    ``in_proj_weight (3d, d)`` split per head for Q-K alignment) and a GELU MLP
    ``mlp.in (4d, d)``, ``mlp.out (d, 4d)``. Learned ``embed (d, vocab)`` and
    ``pos_embed (d, context)`` (the :class:`Embed` layout), ``unembed (vocab, d)`` last.
    """

    def __init__(
        self, vocab: int, context: int = 32, d_model: int = 64, n_heads: int = 4, n_layers: int = 2
    ):
        super().__init__()
        for name, value in (
            ("vocab", vocab),
            ("context", context),
            ("d_model", d_model),
            ("n_heads", n_heads),
            ("n_layers", n_layers),
        ):
            _positive(name, value)
        if d_model % n_heads:
            raise ValueError(f"n_heads={n_heads} must divide d_model={d_model}")
        self.context = context
        self.embed = Embed(vocab, d_model)
        self.pos_embed = Embed(context, d_model)
        self.blocks = nn.ModuleList()
        for _ in range(n_layers):
            block = nn.Module()
            block.ln1, block.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
            block.attn = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
            block.mlp = nn.ModuleDict(
                {"in": nn.Linear(d_model, 4 * d_model), "out": nn.Linear(4 * d_model, d_model)}
            )
            self.blocks.append(block)
        self.ln_f = nn.LayerNorm(d_model)
        self.unembed = nn.Linear(d_model, vocab, bias=False)

    def layer_pairs(self) -> list[tuple[str, str]]:
        """Within each block, the MLP's input layer and its output layer."""
        return [(f"blocks.{i}.mlp.in", f"blocks.{i}.mlp.out") for i in range(len(self.blocks))]

    def alignment_pairs(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per block: Q with K per head (``W_prev = W_q^h (d_head, d)``, ``W_next = W_k^h^T``, so
        the
        alignment is ``|U_k^T U_q|``, the two heads' output spaces), V with O, MLP in with out."""
        pairs = {}
        for i, block in enumerate(self.blocks):
            heads = split_heads(
                block.attn.in_proj_weight, block.attn.num_heads
            )  # each (H, d_head, d)
            d = block.attn.embed_dim
            pairs[f"blocks.{i} Q-K per head"] = (heads["q"], heads["k"].transpose(1, 2))
            pairs[f"blocks.{i} V -> O"] = (
                block.attn.in_proj_weight[2 * d :],
                block.attn.out_proj.weight,
            )
            pairs[f"blocks.{i} mlp.in -> mlp.out"] = (
                block.mlp["in"].weight,
                block.mlp["out"].weight,
            )
        return pairs

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 2 or tokens.shape[1] > self.context:
            raise ValueError(
                f"expected tokens (N, T) with T <= {self.context}, got {tuple(tokens.shape)}"
            )
        T = tokens.shape[1]
        h = self.embed(tokens) + self.pos_embed.weight[:, :T].T  # (N, T, d)
        causal = torch.triu(torch.ones(T, T, dtype=torch.bool, device=tokens.device), diagonal=1)
        for block in self.blocks:
            x = block.ln1(h)
            h = h + block.attn(x, x, x, attn_mask=causal, need_weights=False)[0]
            h = h + block.mlp["out"](F.gelu(block.mlp["in"](block.ln2(h))))
        return self.unembed(self.ln_f(h))  # (N, T, vocab)


class TinyUNet(nn.Module):
    """A two-level UNet for 8x8 images that predicts the noise of a diffusion step: ``forward(x,
    t)``.

    ``x (N, 1, 8, 8)``, ``t (N,)`` integer steps. A sinusoidal step embedding
    goes through ``time.in``/``time.out`` and is added to the channels of
    ``enc`` and ``mid``. Path: ``enc`` 3x3 (8x8, c) -> ``down`` 3x3 stride 2
    (4x4, 2c) -> ``mid`` 3x3 -> ``up`` transposed 3x3 stride 2 (8x8, c) ->
    concatenated with ``enc`` -> ``dec`` 3x3 -> ``out`` 3x3 (1 channel). GroupNorm
    and SiLU after every conv but ``out``. GroupNorm has no running statistics.
    """

    def __init__(self, channels: int = 32, time_dim: int = 64, groups: int = 8):
        super().__init__()
        c = _positive("channels", channels)
        for name, value in (("time_dim", time_dim), ("groups", groups)):
            _positive(name, value)
        if c % groups:
            raise ValueError(f"groups={groups} must divide channels={c}")
        self.time_dim = time_dim
        self.time = nn.ModuleDict(
            {"in": nn.Linear(time_dim, time_dim), "out": nn.Linear(time_dim, time_dim)}
        )
        self.time_enc, self.time_mid = nn.Linear(time_dim, c), nn.Linear(time_dim, 2 * c)
        self.enc, self.norm_enc = nn.Conv2d(1, c, 3, padding=1), nn.GroupNorm(groups, c)
        self.down, self.norm_down = (
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1),
            nn.GroupNorm(groups, 2 * c),
        )
        self.mid, self.norm_mid = nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.GroupNorm(groups, 2 * c)
        self.up = nn.ConvTranspose2d(
            2 * c, c, 3, stride=2, padding=1, output_padding=1
        )  # 4x4 -> 8x8
        self.norm_up = nn.GroupNorm(groups, c)
        self.dec, self.norm_dec = nn.Conv2d(2 * c, c, 3, padding=1), nn.GroupNorm(groups, c)
        self.out = nn.Conv2d(c, 1, 3, padding=1)

    def layer_pairs(self) -> list[tuple[str, str]]:
        return [("time.in", "time.out")]

    def alignment_pairs(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Consecutive convolutions at the centre tap (a transposed conv stored ``(c_in, c_out,
        ...)``
        is transposed first), and the two layers of the step-embedding MLP."""
        up = centre_tap(
            self.up.weight.transpose(0, 1)
        )  # stored (2c, c, 3, 3): (c_out, c_in) = (c, 2c)
        c = self.enc.out_channels
        return {
            "enc -> down": (centre_tap(self.enc.weight), centre_tap(self.down.weight)),
            "down -> mid": (centre_tap(self.down.weight), centre_tap(self.mid.weight)),
            "mid -> up": (centre_tap(self.mid.weight), up),
            "up -> dec": (
                up,
                centre_tap(self.dec.weight)[:, :c],
            ),  # dec reads [up, enc]: the up half
            "time.in -> time.out": (self.time["in"].weight, self.time["out"].weight),
        }

    def step_embedding(self, t: torch.Tensor) -> torch.Tensor:
        """Sinusoidal features of the step ``t (N,)``: ``(N, time_dim)``."""
        half = self.time_dim // 2
        freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device) / half)
        angles = t.float()[:, None] * freqs[None]  # (N, half)
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1:] != (1, 8, 8) or t.shape != (x.shape[0],):
            raise ValueError(
                f"expected x (N, 1, 8, 8) and t (N,), got {tuple(x.shape)} and {tuple(t.shape)}"
            )
        emb = self.time["out"](F.silu(self.time["in"](self.step_embedding(t))))  # (N, time_dim)
        e = F.silu(
            self.norm_enc(self.enc(x)) + self.time_enc(emb)[:, :, None, None]
        )  # (N, c, 8, 8)
        h = F.silu(self.norm_down(self.down(e)))  # (N, 2c, 4, 4)
        h = F.silu(
            self.norm_mid(self.mid(h)) + self.time_mid(emb)[:, :, None, None]
        )  # (N, 2c, 4, 4)
        h = F.silu(self.norm_up(self.up(h)))  # (N, c, 8, 8)
        h = F.silu(self.norm_dec(self.dec(torch.cat([h, e], dim=1))))  # (N, c, 8, 8)
        return self.out(h)  # (N, 1, 8, 8): the predicted noise
