"""All singular values and only the top-k singular vectors, from one bidiagonal reduction.

A record keeps every singular value of a matrix but only its top-k singular vectors. The full
SVD computes all ``R`` pairs of vectors and the tracker throws most of them away; LAPACK's
``gesvdx`` computes a chosen few from the same reduction that gives the values, but neither torch
nor SciPy's Python API offers it. This module assembles the same method from the routines SciPy
exports to Cython (``scipy.linalg.cython_lapack``: their C function pointers, read from its
capsules and called through ctypes, which releases the GIL while LAPACK runs):

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

import ctypes
import functools

import numpy as np
import scipy.linalg.cython_lapack as _cython_lapack
import torch
from threadpoolctl import ThreadpoolController

from .spectra import _svd_checked

__all__ = ["values_and_top_vectors", "top_k_svd_bidiagonal"]

_P = ctypes.c_void_p
_capsule_name = ctypes.pythonapi.PyCapsule_GetName
_capsule_name.restype, _capsule_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype, _capsule_pointer.argtypes = _P, [ctypes.py_object, ctypes.c_char_p]
# how far the columns of U_k and V_k may be from orthonormal before the full SVD is used instead
# (measured: below 1e-6 in float32 wherever the top k values are nonzero)
ORTHONORMALITY_TOLERANCE = 1e-4


@functools.cache
def _routine(name: str, arguments: int):
    """The LAPACK routine ``name`` (every argument a pointer, Fortran style)."""
    capsule = _cython_lapack.__pyx_capi__[name]
    address = _capsule_pointer(capsule, _capsule_name(capsule))
    return ctypes.CFUNCTYPE(None, *([_P] * arguments))(address)


@functools.cache
def _blas_threads():
    return ThreadpoolController().select(user_api="blas")


def _int(value: int):
    return ctypes.byref(ctypes.c_int(value))


def _ptr(array: np.ndarray):
    return array.ctypes.data_as(_P)


def _call(name: str, arguments: int, *args) -> None:
    info = ctypes.c_int(0)
    _routine(name, arguments)(*args, ctypes.byref(info))
    if info.value != 0:
        raise np.linalg.LinAlgError(f"LAPACK {name} failed (info={info.value})")


def _workspace(name: str, arguments: int, dtype, *args) -> int:
    """The optimal workspace of ``name`` (a query with ``lwork = -1``), ``args`` without
    ``work, lwork, info``."""
    size = np.empty(1, dtype=dtype)
    _call(name, arguments, *args, _ptr(size), _int(-1))
    return int(size[0])


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
    args = (_int(M), _int(N), _ptr(A), _int(M), _ptr(d), _ptr(e), _ptr(tauq), _ptr(taup))
    work = np.empty(max(_workspace(p + "gebrd", 11, dtype, *args), 1), dtype)
    _call(p + "gebrd", 11, *args, _ptr(work), _int(work.size))

    # every singular value of B by dqds, in float64 (no vectors: VT, U and C are not referenced)
    d64, e64 = d.astype(np.float64), e.astype(np.float64)
    S = d64.copy()
    unreferenced = (_ptr(np.empty(1)), _int(1))
    vectors = (_int(0), _int(0), _int(0), _ptr(S), _ptr(e64.copy()), *unreferenced * 3)
    _call("dbdsqr", 15, b"U", _int(N), *vectors, _ptr(np.empty(4 * N)))

    # the top k vectors of B: inverse iteration on its Golub-Kahan tridiagonal at those values
    # (as one block, the values ascending, as dstein wants them)
    size = 2 * N
    off = np.empty(size - 1)
    off[0::2], off[1::2] = d64, e64[: N - 1]
    shifts = np.ascontiguousarray(S[:k][::-1])
    blocks, splits = np.ones(size, np.int32), np.full(size, size, np.int32)
    Z = np.empty((size, k), order="F")
    work, iwork, failed = np.empty(5 * size), np.empty(size, np.int32), np.empty(k, np.int32)
    tridiagonal = (_ptr(np.zeros(size)), _ptr(off))
    vectors = (_ptr(Z), _int(size), _ptr(work), _ptr(iwork), _ptr(failed))
    _call("dstein", 13, _int(size), *tridiagonal, _int(k), _ptr(shifts), _ptr(blocks),
          _ptr(splits), *vectors)  # fmt: skip
    Z = Z[:, ::-1] * np.sqrt(2.0)  # descending, halves of unit norm
    S = S.astype(dtype)

    U = np.zeros((M, k), dtype, order="F")
    U[:N] = Z[1::2]
    V = np.asfortranarray(Z[0::2], dtype=dtype)
    for vect, rows, K, C, tau in ((b"Q", M, N, U, tauq), (b"P", N, M, V, taup)):
        shape = (_int(rows), _int(k), _int(K))
        args = (vect, b"L", b"N", *shape, _ptr(A), _int(M), _ptr(tau), _ptr(C), _int(rows))
        work = np.empty(max(_workspace(p + "ormbr", 14, dtype, *args), 1), dtype)
        _call(p + "ormbr", 14, *args, _ptr(work), _int(work.size))
    return (S, V, U) if transposed else (S, U, V)


def _orthonormal(Q: np.ndarray) -> bool:
    gram = Q.T.astype(np.float64) @ Q
    return bool(np.abs(gram - np.eye(Q.shape[1])).max() <= ORTHONORMALITY_TOLERANCE)


def top_k_svd_bidiagonal(A: torch.Tensor, k: int, threads: int | None = None):
    """:func:`values_and_top_vectors` for a CPU tensor ``A (..., m, n)``, with the return
    convention of :func:`spectral_lab.spectra.top_k_svd`: ``(U_k (..., m, k), S (..., R),
    Vh_k (..., k, n), exact (...) bool)``, ``exact`` True where the vectors failed their check
    and the full SVD gave them. ``threads``: LAPACK's threads (default: torch's count).

    Raises ``torch.linalg.LinAlgError`` for a matrix with NaN or infinite entries (as the full
    SVD may), so that callers handle both routes alike.
    """
    if A.device.type != "cpu":
        raise ValueError(
            f"the bidiagonal route runs on the CPU (LAPACK), got a tensor on {A.device}: move it "
            "with .cpu(), or use route 'values+topk' or 'full', which run on any device"
        )
    batch, (m, n) = A.shape[:-2], A.shape[-2:]
    k = int(min(k, m, n))
    flat = A.detach().reshape(-1, m, n).numpy()
    if not np.isfinite(flat).all():
        raise torch.linalg.LinAlgError("the matrix has NaN or infinite entries")
    S = np.empty((len(flat), min(m, n)), flat.dtype)
    U = np.empty((len(flat), m, k), flat.dtype)
    V = np.empty((len(flat), n, k), flat.dtype)
    exact = np.zeros(len(flat), dtype=bool)
    with _blas_threads().limit(limits=threads or torch.get_num_threads()):
        for i, W in enumerate(flat):
            try:
                S[i], U[i], V[i] = values_and_top_vectors(W, k)
            except np.linalg.LinAlgError:
                exact[i] = True
            else:
                exact[i] = not (_orthonormal(U[i]) and _orthonormal(V[i]))
    Vh = np.swapaxes(V, -1, -2)
    U, S, Vh = torch.from_numpy(U), torch.from_numpy(S), torch.from_numpy(np.ascontiguousarray(Vh))
    if exact.any():
        mask = torch.from_numpy(exact)
        U_full, S_full, Vh_full = _svd_checked(A.detach().reshape(-1, m, n)[mask])
        U[mask], S[mask], Vh[mask] = U_full[..., :k], S_full, Vh_full[..., :k, :]
    shape = tuple(batch)
    return (
        U.reshape(*shape, m, k),
        S.reshape(*shape, -1),
        Vh.reshape(*shape, k, n),
        torch.from_numpy(exact).reshape(shape),
    )
