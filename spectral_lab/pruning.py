"""Pruning a model's weight matrices, to ask which part of each matrix the function lives in.

Two kinds of pruning live here.

SVD pruning (SPEC section 1): replace every matrix ``W = U diag(S) Vh`` but the
last layer's by its top ``ceil(f R)`` singular triplets (``keep="top"``) or by the
remaining bottom ones (``keep="bottom"``), ``f = 0.5`` by default, and measure the
loss. The paper finds the top half stays close to the full model and the bottom
half is much worse: what a network computes lives in its top singular directions.

Models with batch or group norm need their statistics re-estimated on training
data after pruning (the paper does); the modular-arithmetic models have none.

Masks (lottery tickets, SPEC section 2): a mask is a dict ``{param_name: 0/1
tensor}`` keyed like ``model.named_parameters()`` (``"fc1.weight"``), each of
the parameter's shape; ``mask * W`` is the pruned matrix, and
:func:`spectral_lab.experiments.classifier.fit` with ``mask=`` keeps it pruned while it
trains. :func:`magnitude_mask` keeps the largest entries (globally over the
chosen matrices, or per matrix), :func:`random_mask_like` the same number of
entries per matrix at random places, :func:`apply_mask` makes a pruned copy.
Called again with ``within=`` the previous mask, :func:`magnitude_mask` is one
round of iterative magnitude pruning (Frankle & Carbin 2019).

Chapters: "Grokking" and "Weight decay" compare full and SVD-pruned losses;
"Lottery tickets" trains masked networks.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from .spectra import svd
from .views import LayerSelector, MatrixRef, find_matrices, select_layers

__all__ = [
    "svd_prune",
    "svd_pruning_losses",
    "svd_truncate",
    "magnitude_mask",
    "random_mask_like",
    "apply_mask",
    "mask_density",
    "layer_densities",
    "check_mask",
    "bind_mask",
]


def svd_truncate(W: torch.Tensor, keep: str = "top", fraction: float = 0.5) -> torch.Tensor:
    """``W`` rebuilt from part of its SVD, same shape and dtype.

    With ``W = U diag(S) Vh``, ``R = min(m, n)`` and ``r = ceil(fraction * R)``:
    ``keep="top"`` returns ``U[:, :r] diag(S[:r]) Vh[:r]``, ``keep="bottom"``
    returns ``U[:, r:] diag(S[r:]) Vh[r:]``; the two add up to ``W``.
    """
    if keep not in ("top", "bottom"):
        raise ValueError(f"keep must be 'top' or 'bottom', got {keep!r}")
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float))
        or not 0.0 < fraction < 1.0
    ):
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
        raise ValueError(
            f"{type(model).__name__} has a single weight matrix, the last layer, which is never "
            "pruned"
        )
    return refs[:-1]


@torch.no_grad()
def svd_prune(
    model: nn.Module, keep: str = "top", fraction: float = 0.5, layers: LayerSelector = None
) -> nn.Module:
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


PRUNING_PARTS = ("full", "top", "bottom")


def svd_pruning_losses(
    model: nn.Module,
    evaluate: Callable[[nn.Module], Any],
    fraction: float = 0.5,
    layers: LayerSelector = None,
    refresh: Callable[[nn.Module], None] | None = None,
    parts: Sequence[str] = PRUNING_PARTS,
) -> dict[str, Any]:
    """The SVD pruning test: ``{"full": evaluate(model), "top": ..., "bottom": ...}``.

    ``"top"`` evaluates :func:`svd_prune` ``(model, "top", fraction, layers)``, the
    model with every selected matrix cut to its top ``ceil(fraction R)`` singular
    triplets, and ``"bottom"`` the same with the rest. ``evaluate`` returns
    whatever the caller measures (a loss, or a dict of losses and accuracies).
    ``refresh(pruned)`` runs on each pruned copy before it is evaluated: models
    with BatchNorm re-estimate their running statistics there, as the paper does.
    ``parts`` chooses which of the three to measure. ``model`` is not changed.
    """
    unknown = [part for part in parts if part not in PRUNING_PARTS]
    if unknown or not parts:
        raise ValueError(f"parts must be some of {PRUNING_PARTS}, got {tuple(parts)}")
    out = {}
    for part in parts:
        if part == "full":
            out[part] = evaluate(model)
            continue
        pruned = svd_prune(model, part, fraction, layers)
        if refresh is not None:
            refresh(pruned)
        out[part] = evaluate(pruned)
    return out


# ---- masks
# ------------------------------------------------------------------------------------------
Mask = dict[str, torch.Tensor]


def _matrix_params(model_or_state) -> list[tuple[str, str, torch.Tensor]]:
    """``(layer name, parameter name, tensor)`` of every weight matrix, in registration order."""
    if isinstance(model_or_state, nn.Module):
        found = []
        for ref in find_matrices(model_or_state):
            module = model_or_state.get_submodule(ref.module) if ref.module else model_or_state
            key = f"{ref.module}.{ref.param}" if ref.module else ref.param
            found.append((ref.name, key, getattr(module, ref.param).detach()))
        return found
    if isinstance(model_or_state, Mapping):
        found = []
        for key, value in model_or_state.items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"state entry {key!r} is a {type(value).__name__}, not a tensor")
            if value.ndim >= 2 and "bias" not in key.rsplit(".", 1)[-1]:
                name = key[: -len(".weight")] if key.endswith(".weight") else key
                found.append((name, key, value.detach()))
        if not found:
            raise ValueError("the state has no weight matrices (tensors with 2 or more dimensions)")
        return found
    raise TypeError(
        f"expected a torch.nn.Module or a state dict {{name: tensor}}, got "
        f"{type(model_or_state).__name__}"
    )


def _select_params(found, layers) -> list[tuple[str, str, torch.Tensor]]:
    """Default: every matrix but the last (the output layer). Else a glob, a list of names or a
    predicate."""
    if layers is None:
        if len(found) < 2:
            raise ValueError(
                "there is a single weight matrix, the last layer, which is never masked by "
                "default; "
                "name it in layers= to mask it"
            )
        return found[:-1]
    return select_layers(found, layers, names=lambda f: (f[0], f[1]), tensor=lambda f: f[2])


def _check_keep(keep) -> float:
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0.0 < keep <= 1.0:
        raise ValueError(
            f"keep is the fraction of weights kept and must lie in (0, 1], got {keep!r}"
        )
    return float(keep)


def check_mask(mask: Mapping[str, torch.Tensor]) -> Mask:
    """``mask`` as a plain dict, after checking that it is non-empty and holds only 0s and 1s."""
    if not isinstance(mask, Mapping) or not mask:
        raise ValueError("a mask is a non-empty dict {param_name: 0/1 tensor}")
    for name, m in mask.items():
        if not isinstance(m, torch.Tensor):
            raise TypeError(f"mask entry {name!r} is a {type(m).__name__}, not a tensor")
        if not bool(((m == 0) | (m == 1)).all()):
            raise ValueError(f"mask entry {name!r} holds values other than 0 and 1")
    return dict(mask)


@torch.no_grad()
def magnitude_mask(
    model_or_state,
    keep: float = 0.05,
    layers: LayerSelector = None,
    scope: str = "global",
    within: Mapping[str, torch.Tensor] | None = None,
) -> Mask:
    """Keep the largest-magnitude entries of the selected weight matrices: ``{param_name: 0/1
    tensor}``.

    ``model_or_state`` is a model or a state dict (its tensors with two or
    more dimensions and no ``bias`` in their name are the matrices). ``layers``
    selects matrices by layer name (``"fc1"``), parameter name
    (``"fc1.weight"``), glob or predicate ``f(name, tensor)``; by default every
    matrix but the last, the output layer, as in the paper.

    With ``n`` entries in all and ``n_l`` in matrix ``l``:

    * ``scope="global"``: exactly ``max(1, round(keep * n))`` ones, the entries
      with the largest ``|W|`` across all selected matrices (one threshold, so
      matrices end with different densities);
    * ``scope="layer"``: exactly ``max(1, round(keep * n_l))`` ones in each matrix.

    ``within``: a previous mask over the same parameters; only its surviving
    entries compete, and ``keep`` still counts against all ``n`` entries, so
    ``keep`` must not exceed the previous density. This is one round of
    iterative magnitude pruning. Ties are broken by ``torch.topk``. Masks have
    the parameters' dtype and device.
    """
    keep = _check_keep(keep)
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    chosen = _select_params(_matrix_params(model_or_state), layers)
    scores = [W.abs().to(torch.float64) for _, _, W in chosen]
    if within is not None:
        within = check_mask(within)
        keys = [key for _, key, _ in chosen]
        if sorted(within) != sorted(keys):
            raise ValueError(
                f"within= must mask the same parameters as this call ({', '.join(keys)}), "
                f"got {', '.join(within)}"
            )
        for i, (_, key, W) in enumerate(chosen):
            if tuple(within[key].shape) != tuple(W.shape):
                raise ValueError(
                    f"within[{key!r}] has shape {tuple(within[key].shape)}, the parameter "
                    f"{tuple(W.shape)}"
                )
            scores[i] = torch.where(
                within[key].to(W.device) > 0, scores[i], torch.full_like(scores[i], -1.0)
            )

    def top(values: torch.Tensor) -> torch.Tensor:
        n_keep = max(1, round(keep * values.numel()))
        alive = int((values >= 0).sum())
        if n_keep > alive:
            raise ValueError(
                f"keep={keep} asks for {n_keep} weights, but only {alive} survive the previous "
                "mask "
                f"(density {alive / values.numel():.4g}): keep must not grow between rounds"
            )
        ones = torch.zeros(values.numel(), dtype=torch.bool, device=values.device)
        ones[torch.topk(values.flatten(), n_keep, sorted=False).indices] = True
        return ones

    if scope == "global":
        flat = top(torch.cat([s.flatten() for s in scores]))
        parts = flat.split([s.numel() for s in scores])
    else:
        parts = [top(s) for s in scores]
    return {key: part.reshape(W.shape).to(W.dtype) for (_, key, W), part in zip(chosen, parts)}


def random_mask_like(mask: Mapping[str, torch.Tensor], seed: int = 0) -> Mask:
    """A random mask with exactly as many ones as ``mask`` in every entry, at uniformly random
    places.

    The per-matrix densities of the result equal those of ``mask``; the
    places are drawn from a generator seeded with ``seed`` (one draw per
    entry, in the order of ``mask``), the same on every device.
    """
    mask = check_mask(mask)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, m in mask.items():
        ones = int(m.sum())
        flat = torch.zeros(m.numel(), dtype=m.dtype)
        flat[torch.randperm(m.numel(), generator=generator)[:ones]] = 1
        out[name] = flat.reshape(m.shape).to(m.device)
    return out


def layer_densities(mask: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """The fraction of ones in each entry of ``mask``: ``{param_name: kept / numel}``."""
    return {name: float(m.sum()) / m.numel() for name, m in check_mask(mask).items()}


def mask_density(mask: Mapping[str, torch.Tensor]) -> float:
    """The fraction of ones over all entries of ``mask`` together: ``sum kept / sum numel``."""
    mask = check_mask(mask)
    return sum(float(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())


def bind_mask(
    model: nn.Module, mask: Mapping[str, torch.Tensor]
) -> dict[str, tuple[nn.Parameter, torch.Tensor]]:
    """``{name: (parameter, mask entry on its device and dtype)}`` for every entry of ``mask``.

    Unknown parameter names and mismatched shapes raise ``ValueError`` naming them.
    """
    mask = check_mask(mask)
    params = dict(model.named_parameters())
    bound = {}
    for name, m in mask.items():
        if name not in params:
            raise ValueError(
                f"mask names {name!r}, which is not a parameter of {type(model).__name__}; "
                f"parameters: {', '.join(params)}"
            )
        if tuple(m.shape) != tuple(params[name].shape):
            raise ValueError(
                f"mask for {name!r} has shape {tuple(m.shape)}, the parameter "
                f"{tuple(params[name].shape)}"
            )
        param = params[name]
        bound[name] = (param, m.to(device=param.device, dtype=param.dtype))
    return bound


@torch.no_grad()
def apply_mask(model: nn.Module, mask: Mapping[str, torch.Tensor]) -> nn.Module:
    """A deep copy of ``model`` with every masked parameter multiplied by its mask; ``model`` is
    untouched.

    Parameters the mask does not name are copied as they are. Unknown names
    and mismatched shapes raise ``ValueError``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    pruned = copy.deepcopy(model)
    for param, m in bind_mask(pruned, mask).values():
        param.mul_(m)
    return pruned
