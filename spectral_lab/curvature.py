"""Curvature of any small network's loss: the Hessian, whole or as products, and its top eigenpairs.

* :func:`full_hessian` - the whole Hessian ``(P, P)`` by ``torch.func`` (a few thousand
  parameters at most);
* :func:`hessian_vector_product` - ``v -> H v`` without forming ``H``;
* :func:`lanczos_top_eigs` - the top eigenpairs from those products (Lanczos), for networks
  whose Hessian does not fit in memory;
* :func:`eigh_descending`, :func:`subspace_overlap` - the linear algebra the Hessian
  chapter reads them with.

Parameters are flattened in ``named_parameters`` order (:func:`flat_params`).
Chapter: "Hessian outliers along training", whose explicit softmax-regression
Hessians live in :mod:`spectral_lab.experiments.hessian`.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh
from torch import nn

__all__ = [
    "eigh_descending",
    "subspace_overlap",
    "flat_params",
    "full_hessian",
    "hessian_vector_product",
    "lanczos_top_eigs",
]


def eigh_descending(M: torch.Tensor, vectors: bool = True):
    """Eigenvalues of the symmetric ``M``, largest first, and (if ``vectors``) the eigenvectors as
    columns:
    ``M @ V == V @ diag(E)``."""
    M = torch.as_tensor(M, dtype=torch.float64)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"need a square matrix, got shape {tuple(M.shape)}")
    if not vectors:
        return torch.linalg.eigvalsh(M).flip(0)
    E, V = torch.linalg.eigh(M)
    return E.flip(0), V.flip(1)


def subspace_overlap(A, B) -> float:
    """Mean squared cosine of the principal angles between the column spans of ``A (m, p)`` and ``B
    (m, q)``.

    ``|Q_A^T Q_B|_F^2 / min(p, q)`` with orthonormal bases ``Q``: 1 when the smaller
    span lies inside the other, about ``max(p, q) / m`` for random subspaces.
    """
    A, B = (torch.as_tensor(M, dtype=torch.float64) for M in (A, B))
    if A.ndim != 2 or B.ndim != 2 or A.shape[0] != B.shape[0]:
        raise ValueError(
            f"need two matrices with the same number of rows, got {tuple(A.shape)}, "
            f"{tuple(B.shape)}"
        )
    QA, QB = torch.linalg.qr(A)[0], torch.linalg.qr(B)[0]
    return float((QA.T @ QB).pow(2).sum() / min(A.shape[1], B.shape[1]))


def flat_params(model: nn.Module) -> torch.Tensor:
    """All trainable parameters of ``model`` as one detached vector, in ``named_parameters``
    order."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad])


def _functional(model: nn.Module, loss_fn: Callable[[nn.Module], torch.Tensor]):
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    shapes = [p.shape for _, p in model.named_parameters() if p.requires_grad]
    sizes = [math.prod(s) for s in shapes]
    if not names:
        raise ValueError("the model has no trainable parameters")

    class _Call:  # what loss_fn receives: the model with its parameters taken from the given vector
        def __init__(self, params):
            self.params = params  # name -> tensor, for penalties such as beta/2 |W|^2

        def __call__(self, *args, **kwargs):
            return torch.func.functional_call(model, self.params, args, kwargs)

    def f(theta: torch.Tensor) -> torch.Tensor:
        params = {n: t.reshape(s) for n, t, s in zip(names, torch.split(theta, sizes), shapes)}
        return loss_fn(_Call(params))

    return f


def full_hessian(model: nn.Module, loss_fn: Callable[[nn.Module], torch.Tensor]) -> torch.Tensor:
    """The Hessian of ``loss_fn(model)`` in all trainable parameters, ``(P, P)``, by ``torch.func``
    (reverse over reverse).

    ``loss_fn`` receives a callable standing in for ``model`` (call it on the
    inputs; its ``.params`` maps parameter names to tensors) and returns a scalar; parameters are
    ordered as :func:`flat_params`.
    For a few thousand parameters at most: the matrix has ``P^2`` entries.
    """
    theta = flat_params(model)
    f = _functional(model, loss_fn)
    H = torch.func.jacrev(torch.func.jacrev(f))(
        theta
    )  # reverse over reverse: no forward-mode decompositions
    return 0.5 * (H + H.T)


def hessian_vector_product(model: nn.Module, loss_fn: Callable[[nn.Module], torch.Tensor]):
    """A function ``v -> H v`` for the Hessian of :func:`full_hessian`: the gradient of ``grad L .
    v``."""
    theta = flat_params(model)
    grad = torch.func.grad(_functional(model, loss_fn))

    def hvp(v: torch.Tensor) -> torch.Tensor:
        v = v.to(theta.dtype)
        return torch.func.grad(lambda t: torch.dot(grad(t), v))(theta)

    return hvp


def lanczos_top_eigs(
    model: nn.Module,
    loss_fn: Callable[[nn.Module], torch.Tensor],
    m: int = 10,
    tol: float = 1e-8,
    seed: int = 0,
):
    """The ``m`` largest (algebraic) eigenvalues of the Hessian and their eigenvectors ``(P, m)``,
    largest first.

    Lanczos (``scipy.sparse.linalg.eigsh``) on :func:`hessian_vector_product`: the
    Hessian is never formed, so this scales to networks whose Hessian does not fit in memory.
    """
    P = flat_params(model).numel()
    if not 1 <= m < P:
        raise ValueError(f"m must lie in [1, {P}) for {P} parameters, got {m}")
    hvp = hessian_vector_product(model, loss_fn)
    dtype = flat_params(model).dtype

    def matvec(v):
        return hvp(torch.from_numpy(np.ascontiguousarray(v).reshape(-1)).to(dtype)).double().numpy()

    v0 = np.random.default_rng(seed).standard_normal(P)
    E, V = eigsh(
        LinearOperator((P, P), matvec=matvec, dtype=np.float64), k=m, which="LA", tol=tol, v0=v0
    )
    order = np.argsort(E)[::-1]
    return torch.from_numpy(E[order].copy()), torch.from_numpy(V[:, order].copy())
