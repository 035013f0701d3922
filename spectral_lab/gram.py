"""All singular values and the top-k singular vectors of a float32 matrix from its Gram matrix.

For ``W (m, n)`` with ``m >= n`` (else ``W^T``), the singular values are the square roots of the
eigenvalues of ``G = W^T W (n, n)``, its eigenvectors the right singular vectors, and the left
ones ``u_i = W v_i / s_i``. Done in float64 for float32 weights:

1. ``G`` by matrix products (``m n^2``, BLAS 3: fast), over blocks of rows copied to float64
   (:data:`BLOCK_BYTES` at a time, so a tall matrix is never copied whole);
2. ``dsytrd``: ``G = Q T Q^T`` with ``T`` tridiagonal (about ``4/3 n^3``: half the bidiagonal
   reduction's ``8/3 n^3``, on the smaller side of ``W``);
3. ``dsterf``: every eigenvalue of ``T`` (no vectors);
4. ``dstein``: the top ``k`` eigenvectors of ``T`` by inverse iteration at those eigenvalues,
   and ``dormtr``: ``V_k = Q Z`` (``O(n^2 k)``);
5. ``U_k = W V_k / S_k`` (``O(m n k)``).

Why float64 makes this accurate: squaring ``W`` squares its condition, and the eigenvalues of
``G`` carry an absolute error of about ``n eps ||G||``; in float64 (``eps = 1.1e-16``) a singular
value is then within ``sqrt(n eps) s_1`` (``1.7e-7 s_1`` at ``n = 256``) of the exact one even
where it is near zero, and within ``n eps s_1^2 / s_i`` elsewhere: closer than the float32 SVD
itself (about ``n * 6e-8 * s_1``). The vectors' error is ``eps`` times ``(s_1 / s_i)^2`` over the
relative gap, again far below float32's; no spectral gap is needed (inverse iteration, as in
:mod:`spectral_lab.bidiagonal`, keeps the vectors of a cluster orthonormal). Where a top-``k``
singular value is zero or tiny (``u_i`` undefined) the orthonormality check of
:func:`spectral_lab.lapack.top_k_batched` sends the matrix to the full SVD, and says so.

float64 weights keep the other routes (``choose_route``): for them this route would be less
accurate than their own SVD.

Speed (``benchmarks/tracking.py`` section e, one CPU thread): the grokking transformer's seven
small matrices, and the MLP's 256 x 40, take about 0.6 of the full SVD's time; square matrices
from 256^2 on 0.3-0.5 of it, and 0.8-0.9 of the bidiagonal route's.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .lapack import call, int_arg, orthonormal, ptr, top_k_batched, workspace

__all__ = ["values_and_top_vectors_gram", "top_k_svd_gram", "lapack_threads"]

# Below this rank the route runs on one thread: OpenBLAS's threads slowed it down there (two
# threads against one, this project's 2-core CPU: 128^2 8.1 / 0.9 ms, 256^2 8.0 / 4.1, 512^2
# 44.7 / 26.3, 1024^2 161 / 133; from 2048^2 they help, 710 / 1052 ms).
PARALLEL_MIN_RANK = 2048


def lapack_threads(shape: tuple[int, ...], available: int) -> int:
    """The threads this route should use for matrices of ``shape (..., m, n)`` with
    ``available`` threads: one below :data:`PARALLEL_MIN_RANK`, else all."""
    return available if min(shape[-2:]) >= PARALLEL_MIN_RANK else 1


# The float64 copy of the matrix is made a block of rows at a time, at most this many bytes: a
# tall matrix (a 50,000 x 768 embedding: 307 MB in float64) then costs its Gram matrix, not a
# second copy of itself.
BLOCK_BYTES = 32 * 2**20


def _row_blocks(A: np.ndarray):
    rows = max(1, BLOCK_BYTES // (8 * A.shape[1]))
    for start in range(0, A.shape[0], rows):
        yield start, np.asarray(A[start : start + rows], dtype=np.float64)


def _gram(A: np.ndarray) -> np.ndarray:
    """``A^T A`` in float64, from float64 blocks of rows (exact products of float32 entries)."""
    G = None
    for _, block in _row_blocks(A):
        G = block.T @ block if G is None else G + block.T @ block
    return G


def _times(A: np.ndarray, V: np.ndarray) -> np.ndarray:
    """``A V`` in float64, a block of rows at a time."""
    out = np.empty((A.shape[0], V.shape[1]))
    for start, block in _row_blocks(A):
        out[start : start + len(block)] = block @ V
    return out


class _Plan:
    """What a size ``(N, k)`` needs that no call writes: the integer arguments, ``dstein``'s one
    block, and the workspace size LAPACK asks for (a small matrix's route is mostly such calls:
    made once per shape, about 25 us a matrix saved). Read-only, so threads can share it."""

    def __init__(self, N: int, k: int):
        self.N, self.k = int_arg(N), int_arg(k)
        self.blocks, self.splits = ptr(np.ones(N, np.int32)), ptr(np.full(N, N, np.int32))
        G, d, Z = np.zeros((N, N), order="F"), np.empty(N), np.empty((N, k))
        e, tau = np.empty(max(N - 1, 1)), np.empty(max(N - 1, 1))
        sizes = (
            workspace("dsytrd", 10, np.float64, b"L", self.N, ptr(G), self.N, ptr(d), ptr(e),
                      ptr(tau)),
            workspace("dormtr", 13, np.float64, b"L", b"L", b"N", self.N, self.k, ptr(G), self.N,
                      ptr(tau), ptr(Z), self.N),
        )  # fmt: skip
        self.lwork = max(1, *sizes)  # for dsytrd and dormtr alike
        self.lwork_arg = int_arg(self.lwork)


_plan = functools.lru_cache(maxsize=256)(_Plan)


def values_and_top_vectors_gram(W: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(S, U_k, V_k)`` of a finite ``(m, n)`` array (module docstring), in ``W``'s dtype:
    every singular value ``S (R,)`` descending and the top ``k`` left and right singular vectors
    as columns, ``U_k (m, k)`` and ``V_k (n, k)``. ``W`` is not modified. ``U_k`` is NaN or
    infinite where a top-``k`` singular value is zero (the caller's check catches it)."""
    m, n = W.shape
    k = int(min(k, m, n))
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    dtype = np.float64 if W.dtype == np.float64 else np.float32
    transposed = m < n
    A = W.T if transposed else W  # (M, N), M >= N
    N = A.shape[1]
    G = np.asfortranarray(_gram(A))  # symmetric: its lower triangle is what dsytrd reads
    plan = _plan(N, k)
    d, e, tau = np.empty(N), np.zeros(max(N - 1, 1)), np.zeros(max(N - 1, 1))
    work = np.empty(plan.lwork)
    call("dsytrd", 10, b"L", plan.N, ptr(G), plan.N, ptr(d), ptr(e), ptr(tau), ptr(work),
         plan.lwork_arg)  # fmt: skip

    eigenvalues, scratch = d.copy(), e.copy()  # dsterf overwrites both
    call("dsterf", 4, plan.N, ptr(eigenvalues), ptr(scratch))  # ascending

    # the top k eigenvectors of T (ascending, as dstein wants them, in one block), then Q Z
    shifts = np.ascontiguousarray(eigenvalues[N - k :])
    Z = np.empty((N, k), order="F")
    scratch, iwork, failed = np.empty(5 * N), np.empty(N, np.int32), np.empty(k, np.int32)
    call("dstein", 13, plan.N, ptr(d), ptr(e), plan.k, ptr(shifts), plan.blocks, plan.splits,
         ptr(Z), plan.N, ptr(scratch), ptr(iwork), ptr(failed))  # fmt: skip
    call("dormtr", 13, b"L", b"L", b"N", plan.N, plan.k, ptr(G), plan.N, ptr(tau), ptr(Z),
         plan.N, ptr(work), plan.lwork_arg)  # fmt: skip

    S = np.sqrt(np.clip(eigenvalues[::-1], 0, None))  # descending, >= 0
    V = Z[:, ::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        U = _times(A, V) / S[:k]
    S, U, V = S.astype(dtype), U.astype(dtype), V.astype(dtype)
    return (S, V, U) if transposed else (S, U, V)


def _left_orthonormal(U: np.ndarray, V: np.ndarray) -> bool:
    """The check of this route: ``V`` is an eigensolver's (orthonormal in float64 by
    construction, or ``dstein`` fails); ``U = W V / S`` is not where a top value is zero."""
    return orthonormal(U)


def top_k_svd_gram(A: torch.Tensor, k: int, threads=None, as_numpy: bool = False):
    """:func:`values_and_top_vectors_gram` for a CPU tensor ``A (..., m, n)``, with the return
    convention of :func:`spectral_lab.spectra.top_k_svd` (:func:`spectral_lab.lapack.top_k_batched`:
    ``exact`` marks the matrices whose vectors failed their check and came from the full SVD).
    ``threads``: LAPACK's threads (default: :func:`lapack_threads` of torch's count);
    ``as_numpy``: numpy arrays instead of tensors."""
    if threads is None:
        threads = lapack_threads(A.shape, torch.get_num_threads())
    return top_k_batched(
        A, k, values_and_top_vectors_gram, "gram", threads, _left_orthonormal, as_numpy
    )
