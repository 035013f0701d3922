"""LAPACK called directly, for the tracker's CPU routes that torch and SciPy's Python API lack.

The routines are the ones SciPy exports to Cython (``scipy.linalg.cython_lapack``): their C
function pointers, read from its capsules, are called through ctypes, which releases the GIL
while LAPACK runs (SciPy's Python wrappers hold it, which slowed training beside a
``background=True`` tracker). Two routes use this: :mod:`spectral_lab.bidiagonal` and
:mod:`spectral_lab.gram`; :func:`top_k_batched` is their shared batch driver, with the same
return convention and the same fallback to the full SVD.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
from typing import Callable

import numpy as np
import scipy.linalg.cython_lapack as _cython_lapack
import torch
from threadpoolctl import ThreadpoolController

from .spectra import _svd_checked

__all__ = [
    "call",
    "workspace",
    "ptr",
    "int_arg",
    "top_k_batched",
    "blas_threads",
    "orthonormal",
    "KEEP_THREADS",
    "ORTHONORMALITY_TOLERANCE",
]

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


def int_arg(value: int):
    return ctypes.byref(ctypes.c_int(value))


def ptr(array: np.ndarray):
    """A pointer to ``array``'s data that keeps ``array`` alive (a temporary such as
    ``ptr(np.empty(n))`` must outlive the call). ``array.ctypes.data_as`` does the same in twice
    the time, and a small matrix's route makes some twenty of these calls."""
    pointer = _P(array.ctypes.data)
    pointer.array = array
    return pointer


def call(name: str, arguments: int, *args) -> None:
    """``name(*args, info)``; raises ``LinAlgError`` where ``info`` is not 0."""
    info = ctypes.c_int(0)
    _routine(name, arguments)(*args, ctypes.byref(info))
    if info.value != 0:
        raise np.linalg.LinAlgError(f"LAPACK {name} failed (info={info.value})")


def workspace(name: str, arguments: int, dtype, *args) -> int:
    """The optimal workspace of ``name`` (a query with ``lwork = -1``), ``args`` without
    ``work, lwork, info``."""
    size = np.empty(1, dtype=dtype)
    call(name, arguments, *args, ptr(size), int_arg(-1))
    return int(size[0])


def orthonormal(Q: np.ndarray) -> bool:
    """Whether the columns of ``Q`` are orthonormal within :data:`ORTHONORMALITY_TOLERANCE`
    (False for NaN or infinite entries). In ``Q``'s own precision: float32 rounding adds about
    ``sqrt(m) 6e-8``, far below the tolerance."""
    gram = Q.T @ Q
    gram.flat[:: gram.shape[0] + 1] -= 1
    return bool(np.abs(gram).max() <= ORTHONORMALITY_TOLERANCE)


def both_orthonormal(U: np.ndarray, V: np.ndarray) -> bool:
    return orthonormal(U) and orthonormal(V)


class _KeepThreads:
    """``threads=KEEP_THREADS``: leave LAPACK's thread count as the caller set it (one
    :func:`blas_threads` around many calls: setting and restoring it cost about 40 us a call)."""


KEEP_THREADS = _KeepThreads()


def blas_threads(threads: int):
    """A context in which LAPACK and BLAS (SciPy's and NumPy's) use ``threads`` threads."""
    return _blas_threads().limit(limits=threads)


def top_k_batched(
    A: torch.Tensor,
    k: int,
    decompose: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray, np.ndarray]],
    route: str,
    threads: int | None | _KeepThreads = None,
    check: Callable[[np.ndarray, np.ndarray], bool] = both_orthonormal,
    as_numpy: bool = False,
):
    """``decompose`` (a ``W (m, n) -> (S (R,), U_k (m, k), V_k (n, k))`` of one finite array) on
    every matrix of a CPU tensor ``A (..., m, n)``, with the return convention of
    :func:`spectral_lab.spectra.top_k_svd`: ``(U_k (..., m, k), S (..., R), Vh_k (..., k, n),
    exact (...) bool)``, ``exact`` True where the vectors failed ``check`` (by default both sets
    orthonormal) or LAPACK failed, and the full SVD gave them. ``threads``: LAPACK's threads
    (default: torch's count; :data:`KEEP_THREADS`: as the caller set them). ``as_numpy``: the
    same as numpy arrays (the tracker's host-side form: no tensor round trip).

    Raises ``torch.linalg.LinAlgError`` for a matrix with NaN or infinite entries (as the full
    SVD may), so that callers handle every route alike.
    """
    if A.device.type != "cpu":
        raise ValueError(
            f"the {route} route runs on the CPU (LAPACK), got a tensor on {A.device}: move it "
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
    keep = threads is KEEP_THREADS
    with contextlib.nullcontext() if keep else blas_threads(threads or torch.get_num_threads()):
        for i, W in enumerate(flat):
            try:
                S[i], U[i], V[i] = decompose(W, k)
            except np.linalg.LinAlgError:
                exact[i] = True
            else:
                exact[i] = not check(U[i], V[i])
    if exact.any():
        U_full, S_full, Vh_full = _svd_checked(torch.from_numpy(flat[exact]))
        U[exact], S[exact] = U_full[..., :k].numpy(), S_full.numpy()
        V[exact] = Vh_full[..., :k, :].mT.numpy()
    shape = tuple(batch)
    arrays = (
        U.reshape(*shape, m, k),
        S.reshape(*shape, -1),
        np.ascontiguousarray(np.swapaxes(V, -1, -2)).reshape(*shape, k, n),
        exact.reshape(shape),
    )
    return arrays if as_numpy else tuple(torch.from_numpy(x) for x in arrays)
