"""All singular values and only the top-k singular vectors, from one bidiagonal reduction.

A record keeps every singular value of a matrix but only its top-k singular vectors. The full
SVD computes all ``R`` pairs of vectors and the tracker throws most of them away; LAPACK's
``gesvdx`` computes a chosen few from the same reduction that gives the values, but neither torch
nor SciPy's Python API offers it. This module assembles the same method from LAPACK routines
called directly (:mod:`spectral_lab.lapack`):

1. ``?gebrd``: ``A = Q B P^T`` with ``B`` upper bidiagonal (Householder reflections, about
   ``8/3 n^3`` for an ``n x n`` matrix: the bulk of the cost, the reduction ``svdvals`` does too);
2. ``dbdsqr`` without vectors (dqds) on ``B`` in float64: every singular value, to high
   relative accuracy;
3. the top ``k`` vectors of ``B`` by inverse iteration (``dstein``, float64, ``O(n k)``) at those
   values on the Golub-Kahan tridiagonal ``TGK(B)`` (zero diagonal, off-diagonal ``d_1, e_1,
   d_2, ..., d_n``: its eigenvalues are ``+-s_i`` and the eigenvector of ``+s_i`` interleaves
   ``(v_1, u_1, v_2, u_2, ...) / sqrt 2``). Bisection (``dstebz``) is not needed for the
   eigenvalues, which step 2 gave; it took a third of the time at ``256^2``, and SciPy's Python
   wrappers of it hold the GIL, which slowed training beside a ``background=True`` tracker;
4. ``?ormbr`` twice: ``U_k = Q [U_B; 0]`` and ``V_k = P V_B``, ``O(m n k)``.

No spectral gap is needed (unlike a randomized method, which fails at initialisation where the
top singular values are nearly degenerate): the vectors are as accurate as the full SVD's
(``benchmarks/tracking.py`` section e measures both against a float64 SVD, at initialisation and
with a gap). Where the top ``k`` include a zero singular value, the two
halves of ``TGK``'s eigenvectors need not each have norm ``1/sqrt 2``: those matrices fail the
orthonormality check and are decomposed with the full SVD instead (``exact`` marks them).
"""

from __future__ import annotations

import numpy as np
import torch

from .lapack import call, int_arg, ptr, top_k_batched, workspace

__all__ = ["values_and_top_vectors", "top_k_svd_bidiagonal"]


def values_and_top_vectors(W: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(S, U_k, V_k)`` of a finite float32 or float64 ``(m, n)`` array: every singular value
    ``S (R,)`` descending, and the top ``k`` left and right singular vectors as columns,
    ``U_k (m, k)`` and ``V_k (n, k)`` (module docstring). ``W`` is not modified."""
    m, n = W.shape
    k = int(min(k, m, n))
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    dtype = np.float64 if W.dtype == np.float64 else np.float32
    p = "d" if dtype == np.float64 else "s"
    transposed = m < n  # gebrd reduces rows >= columns to an upper bidiagonal
    A = np.array(W.T if transposed else W, dtype=dtype, order="F")
    M, N = A.shape
    d, e = np.empty(N, dtype), np.zeros(max(N - 1, 1), dtype)
    tauq, taup = np.empty(N, dtype), np.empty(N, dtype)
    args = (int_arg(M), int_arg(N), ptr(A), int_arg(M), ptr(d), ptr(e), ptr(tauq), ptr(taup))
    work = np.empty(max(workspace(p + "gebrd", 11, dtype, *args), 1), dtype)
    call(p + "gebrd", 11, *args, ptr(work), int_arg(work.size))

    # every singular value of B by dqds, in float64 (no vectors: VT, U and C are not referenced)
    d64, e64 = d.astype(np.float64), e.astype(np.float64)
    S = d64.copy()
    unreferenced = (ptr(np.empty(1)), int_arg(1))
    vectors = (int_arg(0), int_arg(0), int_arg(0), ptr(S), ptr(e64.copy()), *unreferenced * 3)
    call("dbdsqr", 15, b"U", int_arg(N), *vectors, ptr(np.empty(4 * N)))

    # the top k vectors of B: inverse iteration on its Golub-Kahan tridiagonal at those values
    # (as one block, the values ascending, as dstein wants them)
    size = 2 * N
    off = np.empty(size - 1)
    off[0::2], off[1::2] = d64, e64[: N - 1]
    shifts = np.ascontiguousarray(S[:k][::-1])
    blocks, splits = np.ones(size, np.int32), np.full(size, size, np.int32)
    Z = np.empty((size, k), order="F")
    work, iwork, failed = np.empty(5 * size), np.empty(size, np.int32), np.empty(k, np.int32)
    tridiagonal = (ptr(np.zeros(size)), ptr(off))
    vectors = (ptr(Z), int_arg(size), ptr(work), ptr(iwork), ptr(failed))
    call("dstein", 13, int_arg(size), *tridiagonal, int_arg(k), ptr(shifts), ptr(blocks),
          ptr(splits), *vectors)  # fmt: skip
    Z = Z[:, ::-1] * np.sqrt(2.0)  # descending, halves of unit norm
    S = S.astype(dtype)

    U = np.zeros((M, k), dtype, order="F")
    U[:N] = Z[1::2]
    V = np.asfortranarray(Z[0::2], dtype=dtype)
    for vect, rows, K, C, tau in ((b"Q", M, N, U, tauq), (b"P", N, M, V, taup)):
        shape = (int_arg(rows), int_arg(k), int_arg(K))
        args = (vect, b"L", b"N", *shape, ptr(A), int_arg(M), ptr(tau), ptr(C), int_arg(rows))
        work = np.empty(max(workspace(p + "ormbr", 14, dtype, *args), 1), dtype)
        call(p + "ormbr", 14, *args, ptr(work), int_arg(work.size))
    return (S, V, U) if transposed else (S, U, V)


def top_k_svd_bidiagonal(A: torch.Tensor, k: int, threads=None, as_numpy: bool = False):
    """:func:`values_and_top_vectors` for a CPU tensor ``A (..., m, n)``, with the return
    convention of :func:`spectral_lab.spectra.top_k_svd` (:func:`spectral_lab.lapack.top_k_batched`:
    ``exact`` marks the matrices whose vectors failed their check and came from the full SVD).
    ``threads``: LAPACK's threads (default: torch's count); ``as_numpy``: numpy arrays
    instead of tensors."""
    return top_k_batched(A, k, values_and_top_vectors, "bidiagonal", threads, as_numpy=as_numpy)
