"""The tracker's two LAPACK routes (issue 17.2), every singular value and only the top-k vectors:
``bidiagonal`` (one bidiagonal reduction) and ``gram`` (the float64 Gram matrix on the smaller
side), each checked against a float64 SVD with and without a spectral gap, through the batch
driver they share (:func:`spectral_lab.lapack.top_k_batched`)."""

import numpy as np
import pytest
import torch

from spectral_lab import lapack
from spectral_lab.bidiagonal import top_k_svd_bidiagonal, values_and_top_vectors
from spectral_lab.gram import lapack_threads, top_k_svd_gram, values_and_top_vectors_gram

ONE_MATRIX = {"bidiagonal": values_and_top_vectors, "gram": values_and_top_vectors_gram}
BATCHED = {"bidiagonal": top_k_svd_bidiagonal, "gram": top_k_svd_gram}
# how close to a float64 SVD, relative to s_1, by input dtype: float32 inputs to their own
# precision; float64 inputs to 1e-12 by the bidiagonal reduction, 1e-9 through the Gram matrix
# (squaring: about n eps s_1^2 / s_i, see spectral_lab.gram)
TOLERANCE = {
    ("bidiagonal", np.float32): 1e-5,
    ("gram", np.float32): 1e-5,
    ("bidiagonal", np.float64): 1e-12,
    ("gram", np.float64): 1e-9,
}


def _matrix(shape, gap: bool, dtype=np.float32, seed=0) -> np.ndarray:
    """Gaussian (initialisation: the top values nearly degenerate), or with five directions
    standing above the bulk (as after training)."""
    rng = np.random.default_rng(seed)
    m, n = shape
    W = rng.standard_normal((m, n)) / np.sqrt(n)
    if gap:
        W += (rng.standard_normal((m, 5)) * [8, 6, 5, 4, 3]) @ rng.standard_normal((5, n)) / 60
    return W.astype(dtype)


@pytest.mark.parametrize("gap", [False, True])
@pytest.mark.parametrize("shape", [(300, 300), (200, 350), (350, 200), (64, 9), (1, 7)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("route", ["bidiagonal", "gram"])
def test_values_and_top_vectors_match_a_float64_svd(route, shape, gap, dtype):
    W = _matrix(shape, gap, dtype)
    before = W.copy()
    S, U, V = ONE_MATRIX[route](W, 10)
    np.testing.assert_array_equal(W, before)  # the input is not overwritten
    k = min(10, *shape)
    assert S.dtype == U.dtype == V.dtype == dtype
    assert S.shape == (min(shape),) and U.shape == (shape[0], k) and V.shape == (shape[1], k)
    u, s, vh = np.linalg.svd(W.astype(np.float64), full_matrices=False)
    tol = TOLERANCE[route, dtype]
    np.testing.assert_allclose(S, s, rtol=0, atol=tol * s[0])  # issue: 1e-5 of s_1
    # each vector against the reference, up to sign: no gap is needed for this route
    np.testing.assert_allclose(np.abs((U * u[:, :k]).sum(0)), 1, atol=10 * tol)
    np.testing.assert_allclose(np.abs((V * vh[:k].T).sum(0)), 1, atol=10 * tol)
    np.testing.assert_allclose(
        U.T @ (W.astype(np.float64) @ V), np.diag(s[:k]), atol=tol * s[0] * 10
    )


@pytest.mark.parametrize("route", ["bidiagonal", "gram"])
def test_a_batch_of_tensors_keeps_the_convention_of_top_k_svd(route):
    A = torch.from_numpy(
        np.stack([_matrix((120, 80), gap, seed=i) for i, gap in enumerate([0, 1, 1])])
    )
    A = A.reshape(3, 1, 120, 80)
    U, S, Vh, exact = BATCHED[route](A, 4)
    assert U.shape == (3, 1, 120, 4) and S.shape == (3, 1, 80) and Vh.shape == (3, 1, 4, 80)
    assert exact.shape == (3, 1) and not exact.any()
    ref = torch.linalg.svd(A.double(), full_matrices=False)
    torch.testing.assert_close(S.double(), ref.S, rtol=0, atol=1e-5)
    cosines = (Vh.double() * ref.Vh[..., :4, :]).sum(-1).abs()
    torch.testing.assert_close(cosines, torch.ones_like(cosines), rtol=0, atol=1e-5)


@pytest.mark.parametrize("route", ["bidiagonal", "gram"])
def test_a_zero_or_rank_deficient_matrix_still_gives_orthonormal_vectors(route):
    """A zero singular value among the top k leaves the halves of the Golub-Kahan vectors
    unbalanced, and ``W v / s`` undefined: the check sends such a matrix to the full SVD, and
    says so in ``exact``."""
    g = torch.Generator().manual_seed(0)
    low_rank = torch.randn(200, 3, generator=g) @ torch.randn(3, 150, generator=g)
    A = torch.stack([torch.zeros(200, 150), low_rank, torch.randn(200, 150, generator=g)])
    U, S, Vh, exact = BATCHED[route](A, 10)
    assert exact[0]  # the zero matrix: the full SVD's answer
    assert not exact[2]
    eye = torch.eye(10)
    for i in range(3):
        torch.testing.assert_close(U[i].T @ U[i], eye, atol=1e-4, rtol=0)
        torch.testing.assert_close(Vh[i] @ Vh[i].T, eye, atol=1e-4, rtol=0)
    torch.testing.assert_close(S[1, 3:], torch.zeros(147), atol=1e-4, rtol=0)
    # the three nonzero directions of the low-rank matrix are its own
    torch.testing.assert_close(U[1, :, :3] * S[1, :3] @ Vh[1, :3], low_rank, atol=1e-3, rtol=0)


@pytest.mark.parametrize("route", ["bidiagonal", "gram"])
def test_bad_input_is_refused_with_the_fix(route):
    W = torch.randn(30, 20)
    W[3, 4] = float("nan")
    with pytest.raises(torch.linalg.LinAlgError, match="NaN or infinite"):
        BATCHED[route](W, 5)
    with pytest.raises(ValueError, match=f"the {route} route runs on the CPU.*\\.cpu\\(\\)"):
        BATCHED[route](torch.zeros(4, 4, device="meta"), 2)
    with pytest.raises(ValueError, match="k must be at least 1"):
        ONE_MATRIX[route](np.ones((3, 3), np.float32), 0)


@pytest.fixture
def thread_limits(monkeypatch) -> list[int]:
    """The thread counts LAPACK is limited to, in order (the limits still apply)."""
    seen = []
    real = lapack._blas_threads()

    class Spy:
        def limit(self, limits):
            seen.append(limits)
            return real.limit(limits=limits)

    monkeypatch.setattr(lapack, "_blas_threads", lambda: Spy())
    return seen


def test_lapack_runs_on_the_threads_it_is_given(thread_limits):
    seen = thread_limits
    top_k_svd_bidiagonal(torch.randn(40, 30), 3, threads=1)
    torch.set_num_threads(torch.get_num_threads())
    top_k_svd_bidiagonal(torch.randn(40, 30), 3)
    top_k_svd_gram(torch.randn(40, 30), 3, threads=2)
    top_k_svd_gram(torch.randn(40, 30), 3)  # small: one thread whatever torch has
    assert seen == [1, torch.get_num_threads(), 2, 1]
    # OpenBLAS's threads slowed the gram route down below rank 2048 (spectral_lab.gram)
    assert lapack_threads((3, 1024, 1024), 8) == 1 and lapack_threads((2048, 4096), 8) == 8


def test_the_tracker_runs_small_gram_matrices_on_one_lapack_thread(thread_limits):
    """With torch on two threads, a snapshot of small matrices sets LAPACK to one thread (two
    made the 256^2 Gram route twice as slow), once per snapshot, not once per matrix."""
    from spectral_lab import SpectralTracker

    seen = thread_limits
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Linear(256, 48))
        tracker = SpectralTracker(model, every=1)
        assert tracker.routes == {"0": "gram", "1": "gram"}
        tracker.snapshot(0, model)
    finally:
        torch.set_num_threads(threads)
    assert seen == [1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("route", ["bidiagonal", "gram"])
def test_equal_singular_values_give_an_orthonormal_basis_of_their_space(route, dtype):
    """Inverse iteration at a repeated value returns orthonormal vectors of its eigenspace: an
    orthogonal matrix (every value 1) and one with its top three values equal."""
    g = torch.Generator().manual_seed(1)
    Q = torch.linalg.qr(torch.randn(260, 260, generator=g, dtype=torch.float64)).Q
    R = torch.linalg.qr(torch.randn(260, 260, generator=g, dtype=torch.float64)).Q
    s = torch.linspace(2, 0.1, 260, dtype=torch.float64)
    s[:3] = 3.0
    eye = torch.eye(10, dtype=torch.float64)
    for W in (Q, (Q * s) @ R.T):
        W = W.to(dtype)
        U, S, Vh, exact = BATCHED[route](W, 10)
        assert not exact
        U, S, Vh = U.double(), S.double(), Vh.double()
        tol = 1e-5 if dtype == torch.float32 else 1e-10 if route == "bidiagonal" else 1e-9
        torch.testing.assert_close(U.T @ U, eye, atol=tol, rtol=0)
        torch.testing.assert_close(Vh @ Vh.T, eye, atol=tol, rtol=0)
        # each pair is a singular pair of W: W v = s u
        torch.testing.assert_close(W.double() @ Vh.T, U * S[:10], atol=10 * tol, rtol=0)


def test_the_gram_route_keeps_small_singular_values_accurate():
    """Squaring the matrix squares its condition: in float64 a value near zero still comes out
    within sqrt(n eps) s_1 of the exact one (module docstring of spectral_lab.gram), far inside
    the issue's 1e-5 of s_1, and the spectrum's tail (what the effective rank sums) is kept."""
    rng = np.random.default_rng(3)
    Q = np.linalg.qr(rng.standard_normal((300, 300)))[0]
    R = np.linalg.qr(rng.standard_normal((200, 200)))[0]
    s = np.geomspace(10, 1e-6, 200)  # eight decades, as after long weight decay
    W = ((Q[:, :200] * s) @ R.T).astype(np.float32)
    S, U, V = values_and_top_vectors_gram(W, 10)
    exact = np.linalg.svd(W.astype(np.float64), compute_uv=False)
    assert np.abs(S - exact).max() < np.sqrt(200 * np.finfo(np.float64).eps) * exact[0]
    np.testing.assert_allclose(U.T @ U, np.eye(10), atol=1e-6)


def test_the_gram_route_reads_a_tall_matrix_in_blocks_of_rows(monkeypatch):
    """A tall matrix is copied to float64 a block of rows at a time (its Gram matrix and
    ``W V`` summed over the blocks), and gives what one block gives, to float64 rounding."""
    from spectral_lab import gram

    W = _matrix((700, 60), gap=True)
    whole = values_and_top_vectors_gram(W, 10)
    monkeypatch.setattr(gram, "BLOCK_BYTES", 8 * 60 * 64)  # blocks of 64 rows: 11 of them
    blocks = values_and_top_vectors_gram(W, 10)
    for a, b in zip(whole, blocks):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * float(whole[0][0]))
