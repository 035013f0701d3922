"""Pruning a model's weight matrices, to ask which part of each matrix the function lives in.

SVD pruning (SPEC section 1): replace every matrix ``W = U diag(S) Vh`` but the
last layer's by its top ``ceil(f R)`` singular triplets (``keep="top"``) or by the
remaining bottom ones (``keep="bottom"``), ``f = 0.5`` by default, and measure the
loss. The paper finds the top half stays close to the full model and the bottom
half is much worse: what a network computes lives in its top singular directions.

Models with batch or group norm need their statistics re-estimated on training
data after pruning (the paper does); the modular-arithmetic models have none.

Chapter: "Grokking" and "Weight decay" compare full and pruned losses.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .spectra import svd
from .views import LayerSelector, MatrixRef, find_matrices

__all__ = ["svd_prune", "svd_truncate"]


def svd_truncate(W: torch.Tensor, keep: str = "top", fraction: float = 0.5) -> torch.Tensor:
    """``W`` rebuilt from part of its SVD, same shape and dtype.

    With ``W = U diag(S) Vh``, ``R = min(m, n)`` and ``r = ceil(fraction * R)``:
    ``keep="top"`` returns ``U[:, :r] diag(S[:r]) Vh[:r]``, ``keep="bottom"``
    returns ``U[:, r:] diag(S[r:]) Vh[r:]``; the two add up to ``W``.
    """
    if keep not in ("top", "bottom"):
        raise ValueError(f"keep must be 'top' or 'bottom', got {keep!r}")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie strictly between 0 and 1, got {fraction!r}")
    U, S, Vh = svd(W)
    r = math.ceil(fraction * S.shape[-1])
    part = slice(None, r) if keep == "top" else slice(r, None)
    W_kept = (U[..., :, part] * S[..., None, part]) @ Vh[..., part, :]  # (m, n)
    return W_kept.to(W.dtype)


def _write_back(param: torch.Tensor, module: nn.Module, W: torch.Tensor) -> None:
    """Copy the 2-D matrix ``W`` into ``param``, undoing :func:`~spectral_lab.views.matrix_view`."""
    if isinstance(module, nn.modules.conv._ConvTransposeNd) and param.ndim > 2:
        shape = (param.shape[1], param.shape[0], *param.shape[2:])
        param.copy_(W.reshape(shape).transpose(0, 1))
    else:
        param.copy_(W.reshape(param.shape))


def _default_layers(model: nn.Module) -> list[MatrixRef]:
    refs = find_matrices(model)
    if len(refs) < 2:
        raise ValueError(f"{type(model).__name__} has a single weight matrix, the last layer, which is never pruned")
    return refs[:-1]


@torch.no_grad()
def svd_prune(model: nn.Module, keep: str = "top", fraction: float = 0.5, layers: LayerSelector = None) -> nn.Module:
    """A pruned deep copy of ``model``; ``model`` itself is left untouched.

    Each selected matrix is replaced by :func:`svd_truncate` of itself (the top
    ``ceil(fraction * R)`` singular triplets, or the rest). ``layers`` selects
    matrices as in :func:`~spectral_lab.views.find_matrices`; by default every
    matrix except the last one in registration order (the output layer, which
    the paper does not prune). Biases are kept as they are.
    """
    refs = _default_layers(model) if layers is None else find_matrices(model, layers)
    pruned = copy.deepcopy(model)
    for ref in refs:
        module = pruned.get_submodule(ref.module) if ref.module else pruned
        param = getattr(module, ref.param)
        _write_back(param, module, svd_truncate(ref.view(pruned), keep, fraction))
    return pruned
