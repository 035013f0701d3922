"""Which parameters of a model are weight matrices, and how each becomes 2-D (SPEC section 1).

* every parameter with two or more dimensions counts; biases and the
  parameters of normalisation layers do not;
* a convolution kernel ``(c_out, c_in, *kernel)`` becomes ``(c_out, c_in * prod(kernel))``;
  a transposed convolution stores ``(c_in, c_out, *kernel)``, so its first two
  dimensions are swapped before flattening;
* embeddings ``(vocab, d)`` are kept as they are;
* on request, attention ``in_proj_weight`` splits into Q, K, V per head and
  RNN weights into their gate blocks.

Layers are named after ``named_modules()``: a module's ``weight`` is called by
the module's dotted name (``"encoder.0"``), any other matrix by
``module.parameter`` (``"lstm.weight_hh_l0"``, ``"attn.in_proj_weight"``).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Union

import torch
from torch import nn

__all__ = [
    "matrix_view",
    "split_heads",
    "split_gates",
    "centre_tap",
    "find_matrices",
    "select_layers",
    "MatrixRef",
    "LayerSelector",
]

_NORM_TYPES: tuple[type, ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())

_GATES = {nn.LSTM: "ifgo", nn.GRU: "rzn", nn.LSTMCell: "ifgo", nn.GRUCell: "rzn"}

LayerSelector = Union[None, str, Iterable[str], Callable[[str, torch.Tensor], bool]]


def split_heads(W: torch.Tensor, num_heads: int) -> dict[str, torch.Tensor]:
    """Split a packed attention projection ``(3 d, d)`` into per-head Q, K and V.

    Returns ``{"q": (H, d/H, d), "k": (H, d/H, d), "v": (H, d/H, d)}`` in the
    layout of ``nn.MultiheadAttention``: rows ``[0, d)`` are Q, ``[d, 2d)`` K,
    ``[2d, 3d)`` V, and head ``h`` owns rows ``[h d/H, (h+1) d/H)`` of each.
    Concatenating the heads and then q, k, v along dim 0 gives back ``W``.
    """
    if W.ndim != 2 or W.shape[0] % 3 != 0:
        raise ValueError(f"a packed in_proj weight has shape (3 d, d_in), got {tuple(W.shape)}")
    d = W.shape[0] // 3
    if num_heads < 1 or d % num_heads != 0:
        raise ValueError(f"num_heads={num_heads} must divide the model width {d}")
    q, k, v = W.split(d, dim=0)
    return {
        role: block.reshape(num_heads, d // num_heads, W.shape[1])
        for role, block in zip("qkv", (q, k, v))
    }


def split_gates(W: torch.Tensor, gates: str = "ifgo") -> dict[str, torch.Tensor]:
    """Split an RNN weight ``(G h, d)`` into its gate blocks, each ``(h, d)``.

    PyTorch stacks LSTM gates as input, forget, cell, output (``"ifgo"``) and
    GRU gates as reset, update, new (``"rzn"``). Concatenating the blocks in
    that order along dim 0 gives back ``W``.
    """
    if W.ndim != 2 or W.shape[0] % len(gates) != 0:
        raise ValueError(
            f"a weight with {len(gates)} gates has shape ({len(gates)} h, d), got {tuple(W.shape)}"
        )
    return dict(zip(gates, W.split(W.shape[0] // len(gates), dim=0)))


def centre_tap(W: torch.Tensor) -> torch.Tensor:
    """A convolution kernel ``(c_out, c_in, *kernel)`` at its centre tap: ``(c_out, c_in)``.

    The map from the input channels at a pixel to the output channels at the
    same pixel. Consecutive convolutions share this channel space, so the
    alignment of conv layers is measured here (the flattened kernels of
    :func:`matrix_view` do not share a space). A transposed convolution stores
    ``(c_in, c_out, *kernel)``: pass ``W.transpose(0, 1)``. Even kernel sizes
    have no centre; index ``k // 2`` is used.
    """
    if W.ndim < 3:
        raise ValueError(
            f"expected a convolution kernel (c_out, c_in, *kernel), got shape {tuple(W.shape)}"
        )
    return W[(slice(None), slice(None), *(k // 2 for k in W.shape[2:]))]


def matrix_view(
    name: str, param: torch.Tensor, module: nn.Module | None = None, *, split: bool = False
):
    """The 2-D matrix whose spectrum the book studies, or ``None`` if ``param`` has none.

    ``name`` is the parameter's name within ``module`` (``"weight"``,
    ``"in_proj_weight"``, ``"weight_ih_l0"``; a dotted path is fine).
    With ``split=True`` returns a dict of blocks instead: per-head ``q/k/v``
    batches ``(H, d/H, d)`` for ``nn.MultiheadAttention.in_proj_weight`` and gate
    blocks for LSTM / GRU weights; other matrices have no split and raise.
    """
    leaf = name.rsplit(".", 1)[-1]
    if param.ndim < 2 or "bias" in leaf or isinstance(module, _NORM_TYPES):
        if split:
            raise ValueError(
                f"{name!r} is not a weight matrix (shape {tuple(param.shape)}), so it has no blocks"
            )
        return None
    if isinstance(module, nn.modules.conv._ConvTransposeNd) and leaf == "weight":
        W = param.transpose(0, 1).flatten(1)  # (c_out, c_in * prod(kernel))
    elif param.ndim > 2:
        W = param.flatten(1)
    else:
        W = param
    if not split:
        return W
    if isinstance(module, nn.MultiheadAttention) and leaf == "in_proj_weight":
        return split_heads(W, module.num_heads)
    for rnn_type, gates in _GATES.items():
        if isinstance(module, rnn_type) and leaf.startswith(("weight_ih", "weight_hh")):
            return split_gates(W, gates)
    raise ValueError(
        f"{name!r} has no block structure to split: splits exist for "
        "nn.MultiheadAttention.in_proj_weight "
        "(per head Q, K, V) and LSTM / GRU weights (per gate). For separate q/k/v Linear layers "
        "use split_heads "
        "on their concatenation, or reshape each to (heads, d_head, d)."
    )


@dataclass(frozen=True)
class MatrixRef:
    """Where a tracked matrix lives: ``model.get_submodule(module).<param>``, and its 2-D shape."""

    name: str
    module: str
    param: str
    shape: tuple[int, int]

    def view(self, model: nn.Module) -> torch.Tensor:
        module = model.get_submodule(self.module) if self.module else model
        return matrix_view(self.param, getattr(module, self.param), module)


def _layer_name(module_name: str, param_name: str) -> str:
    if param_name == "weight" and module_name:
        return module_name
    return f"{module_name}.{param_name}" if module_name else param_name


def find_matrices(model: nn.Module, layers: LayerSelector = None) -> list[MatrixRef]:
    """Every weight matrix of ``model`` in registration order, filtered by ``layers``.

    ``layers`` is ``None`` (all), a glob pattern such as ``"blocks.*.mlp*"``, a
    list of layer or module names (a module name selects all of its matrices),
    or a predicate ``f(name, param) -> bool``. Shared (tied) parameters are
    listed once, under their first name.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    found: list[MatrixRef] = []
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            W = matrix_view(param_name, param, module)
            if W is not None:
                found.append(
                    MatrixRef(
                        _layer_name(module_name, param_name),
                        module_name,
                        param_name,
                        tuple(W.shape),
                    )
                )
    if not found:
        raise ValueError(
            f"{type(model).__name__} has no weight matrices (no parameter with 2 or more "
            "dimensions outside "
            "biases and norm layers): there is nothing to track"
        )
    return _select(found, layers, model)


def select_layers(
    items: list,
    layers,
    names: Callable[[Any], tuple[str, ...]],
    tensor: Callable[[Any], torch.Tensor],
) -> list:
    """The ``items`` that ``layers`` selects: a glob, a non-empty list of names, or a predicate.

    ``names(item)`` gives the names an item answers to (its layer name and its
    module or parameter name), ``tensor(item)`` the tensor a predicate
    ``layers(name, tensor)`` is shown. Order is that of ``items``; a selector
    that matches nothing raises ``ValueError`` listing what is available.
    (:func:`find_matrices` selects with it; so do the masks of
    :mod:`spectral_lab.pruning`, which work on state dicts as well as models.)
    """
    available = ", ".join(names(item)[0] for item in items)
    if isinstance(layers, str):
        chosen = [i for i in items if any(fnmatch.fnmatchcase(n, layers) for n in names(i))]
        if not chosen:
            raise ValueError(f"no weight matrix matches {layers!r}; available: {available}")
        return chosen
    if callable(layers):
        chosen = [i for i in items if layers(names(i)[0], tensor(i))]
        if not chosen:
            raise ValueError(
                f"the layer predicate selected no weight matrix; available: {available}"
            )
        return chosen
    wanted = list(layers)
    if not wanted or not all(isinstance(w, str) for w in wanted):
        raise ValueError(
            "layers must be None, a pattern, a non-empty list of names or a predicate, got "
            f"{layers!r}"
        )
    for w in wanted:
        if not any(w in names(i) for i in items):
            raise ValueError(f"unknown layer {w!r}; available: {available}")
    return [i for i in items if any(n in wanted for n in names(i))]


def _select(found: list[MatrixRef], layers: LayerSelector, model: nn.Module) -> list[MatrixRef]:
    if layers is None:
        return found
    params = dict(model.named_parameters())
    return select_layers(
        found,
        layers,
        names=lambda r: (r.name, r.module),
        tensor=lambda r: params[f"{r.module}.{r.param}".lstrip(".")],
    )
