"""spectral_lab.curvature: the Hessian of any small network against autograd, Lanczos against a
dense eigendecomposition, and the linear algebra the Hessian chapter reads them with."""

from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spectral_lab.curvature import (
    eigh_descending,
    flat_params,
    full_hessian,
    hessian_vector_product,
    lanczos_top_eigs,
    subspace_overlap,
)


def test_full_hessian_and_hvp_on_a_network_match_autograd():
    torch.manual_seed(0)
    data = SimpleNamespace(
        Y=torch.randn(50, 6, dtype=torch.float64), labels=torch.randint(2, (50,))
    )
    mlp = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    loss_fn = lambda f: F.cross_entropy(f(data.Y), data.labels)  # noqa: E731
    H = full_hessian(mlp, loss_fn)
    P = sum(p.numel() for p in mlp.parameters())
    assert H.shape == (P, P) and torch.allclose(H, H.T)
    theta = torch.cat([p.detach().reshape(-1) for p in mlp.parameters()]).requires_grad_()
    shapes = [p.shape for p in mlp.parameters()]

    def loss_of(theta):
        params = torch.split(theta, [int(np.prod(s)) for s in shapes])
        W1, b1, W2, b2 = (t.reshape(s) for t, s in zip(params, shapes))
        return F.cross_entropy(torch.tanh(data.Y @ W1.T + b1) @ W2.T + b2, data.labels)

    H_ref = torch.autograd.functional.hessian(loss_of, theta.detach())
    assert torch.allclose(H, H_ref, rtol=1e-8, atol=1e-12)
    v = torch.randn(P, dtype=torch.float64)
    assert torch.allclose(hessian_vector_product(mlp, loss_fn)(v), H_ref @ v, atol=1e-10)
    E, V = lanczos_top_eigs(mlp, loss_fn, m=3)
    E_ref = eigh_descending(H_ref, vectors=False)[:3]
    assert torch.allclose(E, E_ref, rtol=1e-6, atol=1e-10)
    assert torch.allclose(H_ref @ V, V * E, atol=1e-6)


def test_subspace_overlap_of_nested_and_orthogonal_spans():
    A = torch.eye(6, dtype=torch.float64)[:, :2]
    assert np.isclose(subspace_overlap(A, torch.eye(6, dtype=torch.float64)[:, :3]), 1.0)
    assert np.isclose(subspace_overlap(A, torch.eye(6, dtype=torch.float64)[:, 2:4]), 0.0)


def test_eigh_descending_orders_and_reconstructs():
    M = torch.randn(5, 5, dtype=torch.float64)
    M = M + M.T
    E, V = eigh_descending(M)
    assert torch.all(E[:-1] >= E[1:])
    assert torch.allclose(M @ V, V * E, atol=1e-10)
    assert torch.allclose(eigh_descending(M, vectors=False), E)


def test_flat_params_follow_named_parameters():
    mlp = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    expected = torch.cat([p.detach().reshape(-1) for _, p in mlp.named_parameters()])
    assert torch.equal(flat_params(mlp), expected)
