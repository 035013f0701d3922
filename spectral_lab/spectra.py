"""The spectral quantities of a weight matrix (SPEC section 1).

Every public function takes a torch tensor of shape ``(m, n)`` or a batch
``(..., m, n)`` on any device and returns tensors on that same device. Notation:
``W = U @ diag(S) @ Vh`` is the thin SVD with ``S`` sorted in descending order
and ``R = min(m, n)``.

Half-precision inputs are decomposed in float32 and float64 stays float64: a
GPU does not change the dtype. It does change the accuracy: on an H200 (torch 2.11,
cuSOLVER) the float32 SVD's values were within 2.5e-5 to 9.8e-5 of s_1 of a float64 SVD and
its top-10 singular vectors within 1e-4 rad (a trained-like spectrum) to 1.5e-3 rad (at
initialisation), against 4e-7 of s_1 and 1e-6 to 7e-5 rad for LAPACK's float32 SVD on a
CPU (``benchmarks/tracking.py`` section e). Where that matters, decompose in float64. The
``*_from_spectrum`` / ``*_from_vectors`` variants take an SVD that was already computed;
the tracker uses them so that each snapshot decomposes every matrix exactly once.

Chapter: "The spectral toolkit" explains each quantity with pictures.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "svd",
    "singular_values",
    "effective_rank",
    "normalized_effective_rank",
    "stable_rank",
    "alignment",
    "agreement",
    "effective_rank_from_spectrum",
    "stable_rank_from_spectrum",
    "alignment_from_vectors",
    "agreement_from_vectors",
    "diagonal_mean",
    "top_k_svd",
    "top_k_svd_likely_exact",
]


def _describe(name: str | None) -> str:
    return f"matrix {name!r}" if name else "the matrix"


def check_matrix(W, name: str | None = None, *, check_finite: bool = True) -> torch.Tensor:
    """Return ``W`` as a floating tensor of shape ``(..., m, n)`` or raise ``ValueError``.

    ``name`` (a layer name) goes into the message so that an error raised in
    the middle of training says which matrix broke.
    """
    if isinstance(W, np.ndarray):
        W = torch.from_numpy(W)
    if not isinstance(W, torch.Tensor):
        raise TypeError(
            f"{_describe(name)} must be a torch.Tensor or numpy array, got {type(W).__name__}"
        )
    if W.ndim < 2:
        raise ValueError(
            f"{_describe(name)} has shape {tuple(W.shape)}: spectral metrics need a matrix (..., "
            "m, n). "
            "Biases and norm parameters have no spectrum; use spectral_lab.matrix_view() to get "
            "the "
            "2-D view of conv, attention or LSTM weights."
        )
    if W.shape[-1] == 0 or W.shape[-2] == 0 or W.numel() == 0:
        raise ValueError(
            f"{_describe(name)} is empty (shape {tuple(W.shape)}): there is no spectrum to compute"
        )
    if W.is_complex():
        raise ValueError(
            f"{_describe(name)} is complex; spectral_lab handles real weight matrices only"
        )
    if not W.is_floating_point():
        W = W.to(torch.float32)
    if check_finite and not bool(torch.isfinite(W).all()):
        raise ValueError(
            f"{_describe(name)} contains NaN or infinite entries: training has diverged "
            "(lower the learning rate, or check the loss for NaN before this step)"
        )
    return W


def _compute_dtype(W: torch.Tensor) -> torch.dtype:
    return torch.float64 if W.dtype == torch.float64 else torch.float32


def svd(W, name: str | None = None):
    """Thin SVD: returns ``(U, S, Vh)`` with ``U @ diag(S) @ Vh == W``.

    Shapes: ``U (..., m, R)``, ``S (..., R)`` descending, ``Vh (..., R, n)``.
    If LAPACK / cuSOLVER fails to converge (it happens on badly conditioned
    matrices, more often on GPUs), the decomposition is retried once on
    ``W + eps * I`` with ``eps`` a 1e-7 fraction of the matrix scale, and then in
    float64, as the paper's code does. The perturbation moves singular values by
    at most ``eps``.
    """
    W = check_matrix(W, name)
    return _svd_checked(W.to(_compute_dtype(W)))


# A wide matrix (n >= 2m) is decomposed through its transpose: LAPACK's path for tall matrices
# runs on a view of the same memory and takes 0.5-0.75 of the time for wide ones (torch 2.13,
# CPU: 64 x 256 0.74, 128 x 384 0.73, 256 x 1024 0.52); between square and 2:1 neither wins.
_WIDE = 2


def _svd_checked(A: torch.Tensor):
    try:
        m, n = A.shape[-2:]
        if n >= _WIDE * m:
            U, S, Vh = torch.linalg.svd(A.mT, full_matrices=False)
            return Vh.mT, S, U.mT
        return torch.linalg.svd(A, full_matrices=False)
    except (torch.linalg.LinAlgError, RuntimeError):
        pass
    m, n = A.shape[-2:]
    scale = A.detach().abs().amax().clamp_min(1e-30)
    eye = torch.eye(m, n, dtype=A.dtype, device=A.device)
    try:
        return torch.linalg.svd(A + 1e-7 * scale * eye, full_matrices=False)
    except (torch.linalg.LinAlgError, RuntimeError):
        U, S, Vh = torch.linalg.svd((A + 1e-7 * scale * eye).double(), full_matrices=False)
        return U.to(A.dtype), S.to(A.dtype), Vh.to(A.dtype)


def top_k_svd(
    A: torch.Tensor,
    k: int,
    *,
    oversample: int | None = None,
    power_iterations: int = 6,
    tol: float = 1e-4,
):
    """All singular values and only the top-``k`` singular vectors of ``A (..., m, n)``.

    Returns ``(U_k (..., m, k), S (..., R), Vh_k (..., k, n), exact (...) bool)``: ``S`` comes
    from ``torch.linalg.svdvals`` (as accurate as the full SVD's values; never from a Gram
    matrix, whose squared condition number loses the small values). The vectors come from a
    randomized subspace iteration (Halko, Martinsson & Tropp 2011, algorithm 4.4) with
    ``k + oversample`` columns (default ``max(10, k)``) and ``power_iterations`` orthonormalised
    passes, then a Rayleigh-Ritz step. Each vector pair is checked afterwards: with residuals
    ``r_i = ||A v_i - s_i u_i||, r'_i = ||A^T u_i - s_i v_i||`` and ``gap_i`` the distance from
    ``s_i`` to the nearest other singular value (known exactly from ``S``), the angle to the
    exact pair is at most ``sqrt(r_i^2 + r'_i^2) / gap_i`` (Wedin 1972). A matrix where any
    bound exceeds ``tol`` (a near-degenerate gap at or above ``k``, as at initialisation) is
    decomposed again with the full SVD, and ``exact`` is True for it: this route never returns
    vectors less accurate than ``tol`` radians. The random start is seeded (0): the same
    matrix gives the same vectors.
    """
    batch, (m, n) = A.shape[:-2], A.shape[-2:]
    R = min(m, n)
    k = int(min(k, R))
    p = max(10, k) if oversample is None else int(oversample)
    width = min(R, k + p)
    S = torch.linalg.svdvals(A)  # (..., R)
    generator = torch.Generator(device=A.device).manual_seed(0)
    omega = torch.randn((*batch, n, width), generator=generator, device=A.device, dtype=A.dtype)
    Q = torch.linalg.qr(A @ omega).Q  # (..., m, width)
    At = A.mT
    for _ in range(power_iterations):
        Q = torch.linalg.qr(A @ torch.linalg.qr(At @ Q).Q).Q
    U_small, _, Vh = torch.linalg.svd(Q.mT @ A, full_matrices=False)  # Rayleigh-Ritz
    U = (Q @ U_small[..., :k]).contiguous()
    Vh = Vh[..., :k, :].contiguous()
    s = S[..., :k]
    residual = (A @ Vh.mT - U * s.unsqueeze(-2)).square().sum(-2)
    residual = residual + (At @ U - Vh.mT * s.unsqueeze(-2)).square().sum(-2)
    above = torch.cat([torch.full_like(S[..., :1], torch.inf), S[..., :-1]], -1)[..., :k]
    below = torch.cat([S[..., 1:], torch.full_like(S[..., :1], -torch.inf)], -1)[..., :k]
    gap = torch.minimum(above - s, s - below)  # (..., k)
    bound = residual.sqrt() / gap.clamp_min(torch.finfo(A.dtype).tiny)
    exact = ~(bound <= tol).all(-1)  # NaN bounds (a NaN matrix) count as inexact
    if bool(exact.any()):
        U_full, _, Vh_full = _svd_checked(A[exact])
        U[exact], Vh[exact] = U_full[..., :k], Vh_full[..., :k, :]
    return U, S, Vh, exact


def top_k_svd_likely_exact(
    S: np.ndarray, k: int, oversample: int | None = None, power_iterations: int = 6, tol=1e-4
) -> bool:
    """Whether :func:`top_k_svd` is likely to pass its check on a matrix with spectrum ``S``.

    A prediction from a spectrum (the previous snapshot's), used to skip the randomized pass
    where it would fall back anyway (initialisation): after ``q`` power iterations the Ritz
    residual of vector ``i`` is about ``s_1 (s_w / s_i)^(2q+1)`` with ``w = k + oversample``,
    plus float32 rounding ``~2e-7 s_1``; the angle bound divides it by the gap at ``i``, and
    the prediction asks for half of ``tol``.
    """
    S = np.asarray(S, dtype=np.float64)
    R = S.shape[-1]
    k = min(k, R)
    p = max(10, k) if oversample is None else oversample
    w = min(R - 1, k + p)
    if w <= k or S[0] <= 0:
        return False
    above = np.concatenate([[np.inf], S[:-1]])[:k]
    below = np.concatenate([S[1:], [-np.inf]])[:k]
    gap = np.minimum(above - S[:k], S[:k] - below)
    if np.any(gap <= 0):
        return False
    residual = S[0] * (S[w] / S[:k]) ** (2 * power_iterations + 1) + 2e-7 * S[0]
    return bool(np.all(residual / gap <= tol / 2))


def singular_values(W, name: str | None = None) -> torch.Tensor:
    """All singular values of ``W``, descending: shape ``(..., R)``."""
    W = check_matrix(W, name)
    A = W.to(_compute_dtype(W))
    try:
        return torch.linalg.svdvals(A)
    except (torch.linalg.LinAlgError, RuntimeError):
        return _svd_checked(A)[1]


def effective_rank_from_spectrum(S: torch.Tensor) -> torch.Tensor:
    """``exp(-sum_i p_i log p_i)`` with ``p_i = s_i / sum_j s_j`` (Roy & Vetterli 2007).

    Uses the singular values themselves, not their squares. Lies in ``[1, R]``;
    ``1`` for a rank-one matrix and ``R`` for a multiple of an orthogonal matrix.
    A zero matrix has no defined effective rank: the result is NaN.
    """
    total = S.sum(dim=-1, keepdim=True)
    p = S / total
    entropy = -torch.xlogy(p, p).sum(dim=-1)  # xlogy: 0 log 0 = 0
    return torch.exp(entropy)


def stable_rank_from_spectrum(S: torch.Tensor) -> torch.Tensor:
    """``sum_i s_i^2 / s_1^2 = ||W||_F^2 / ||W||_2^2``, in ``[1, R]``; NaN for a zero matrix."""
    return S.square().sum(dim=-1) / S[..., 0].square()


def _nonzero(W: torch.Tensor, name: str | None) -> None:
    if not bool((W != 0).any()):
        raise ValueError(
            f"{_describe(name)} is all zeros: its effective and stable ranks are undefined"
        )


def effective_rank(W, name: str | None = None) -> torch.Tensor:
    """Effective rank ``exp(H(s / sum s))`` of ``W``, shape ``(...)``.

    The paper's Eq. 1 prints the entropy without the exponential; its code and
    figures use the exponential, and so does this function.
    """
    W = check_matrix(W, name)
    _nonzero(W, name)
    return effective_rank_from_spectrum(singular_values(W, name))


def normalized_effective_rank(W, name: str | None = None) -> torch.Tensor:
    """``effective_rank(W) / min(m, n)``, in ``[1/R, 1]`` (NormEffRank in the paper)."""
    W = check_matrix(W, name)
    return effective_rank(W, name) / min(W.shape[-2:])


def stable_rank(W, name: str | None = None) -> torch.Tensor:
    """Stable rank ``sum s^2 / s_1^2`` of ``W``, shape ``(...)``."""
    W = check_matrix(W, name)
    _nonzero(W, name)
    return stable_rank_from_spectrum(singular_values(W, name))


def alignment_from_vectors(U_prev: torch.Tensor, Vh_next: torch.Tensor) -> torch.Tensor:
    """``|Vh_next @ U_prev|``: entry ``[j, i] = |v_j(next) . u_i(prev)|``.

    ``U_prev`` is ``(..., m, k)`` (left singular vectors of layer l, columns) and
    ``Vh_next`` is ``(..., k, m)`` (right singular vectors of layer l+1, rows).
    """
    return abs(Vh_next @ U_prev)


def agreement_from_vectors(U, Vh, U_ref, Vh_ref) -> torch.Tensor:
    """``S[j, k] = |u_j . u'_k| * |v_j . v'_k|`` = ``|<u_j v_j^T, u'_k v'_k^T>_F|``."""
    return abs(U.swapaxes(-2, -1) @ U_ref) * abs(Vh @ Vh_ref.swapaxes(-2, -1))


def _top_k(k: int, *sizes: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(min(k, *sizes))


def alignment(W_prev, W_next, k: int = 10) -> torch.Tensor:
    """Alignment between consecutive layers: ``|Vh_next[:k] @ U_prev[:, :k]|``, shape ``(..., k,
    k)``.

    ``W_prev`` is ``(..., m, n)`` and ``W_next`` is ``(..., p, m)``: the output
    space of layer l must be the input space of layer l+1. Entry ``[j, i]`` is
    ``|v_j(W_next) . u_i(W_prev)|``; the diagonal says whether the i-th output
    direction of one layer is the i-th input direction of the next. Invariant
    to the sign of every singular vector. ``k`` is capped at the smaller rank.
    """
    W_prev = check_matrix(W_prev, "W_prev")
    W_next = check_matrix(W_next, "W_next")
    if W_next.shape[-1] != W_prev.shape[-2]:
        raise ValueError(
            f"alignment needs W_next's input dimension to equal W_prev's output dimension: "
            f"W_prev is {tuple(W_prev.shape[-2:])} (out, in), W_next is "
            f"{tuple(W_next.shape[-2:])}; "
            "pass the layers in forward order"
        )
    k = _top_k(k, *W_prev.shape[-2:], *W_next.shape[-2:])
    U_prev = svd(W_prev)[0][..., :, :k]
    Vh_next = svd(W_next)[2][..., :k, :]
    return alignment_from_vectors(U_prev.to(Vh_next.dtype), Vh_next)


def agreement(W, W_ref, k: int = 10) -> torch.Tensor:
    """Singular-vector agreement (SVA) of ``W`` with ``W_ref``, shape ``(..., k, k)``.

    ``S[j, k] = |u_j . u'_k| * |v_j . v'_k|`` where primes are ``W_ref``'s
    vectors. Both matrices must have the same shape. Diagonal entries near 1
    mean the j-th singular direction pair is the same in both matrices; the
    value is invariant to the sign of every singular vector.
    """
    W = check_matrix(W, "W")
    W_ref = check_matrix(W_ref, "W_ref")
    if W.shape[-2:] != W_ref.shape[-2:]:
        raise ValueError(
            f"agreement compares matrices of the same shape, got {tuple(W.shape[-2:])} and "
            f"{tuple(W_ref.shape[-2:])}"
        )
    k = _top_k(k, *W.shape[-2:])
    U, _, Vh = svd(W)
    U_ref, _, Vh_ref = svd(W_ref)
    dtype = torch.promote_types(U.dtype, U_ref.dtype)
    return agreement_from_vectors(
        U[..., :, :k].to(dtype),
        Vh[..., :k, :].to(dtype),
        U_ref[..., :, :k].to(dtype),
        Vh_ref[..., :k, :].to(dtype),
    )


def diagonal_mean(M, k: int = 10):
    """Mean of the first ``k`` diagonal entries of ``(..., k', k')`` matrices: the paper's scalar
    summary."""
    if isinstance(M, np.ndarray):
        return np.diagonal(M, axis1=-2, axis2=-1)[..., :k].mean(axis=-1)
    return torch.diagonal(M, dim1=-2, dim2=-1)[..., :k].mean(dim=-1)
