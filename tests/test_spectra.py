"""spectral_lab.spectra against closed forms and numpy.linalg."""

import math

import numpy as np
import pytest
import torch

from spectral_lab import spectra as sp

RTOL = 1e-5  # float32 SVD on matrices of size <= 64: agreement with float64 numpy to ~1e-6


def orthonormal(n: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return Q[:, :k]


def build(U: torch.Tensor, S, V: torch.Tensor) -> torch.Tensor:
    return U @ torch.diag(torch.as_tensor(S, dtype=U.dtype)) @ V.T


def test_svd_reconstructs_and_is_descending():
    W = torch.randn(30, 17)
    U, S, Vh = sp.svd(W)
    assert U.shape == (30, 17) and S.shape == (17,) and Vh.shape == (17, 17)
    torch.testing.assert_close(U @ torch.diag(S) @ Vh, W, rtol=1e-5, atol=1e-5)
    assert torch.all(S[:-1] >= S[1:])


@pytest.mark.parametrize("shape", [(3, 16), (2, 40, 100), (20, 39)])
def test_a_wide_matrix_is_decomposed_through_its_transpose_with_the_same_result(shape, monkeypatch):
    """n >= 2m goes through LAPACK's tall path (faster); the caller sees an ordinary thin SVD."""
    W = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    seen = []
    real = torch.linalg.svd
    monkeypatch.setattr(torch.linalg, "svd", lambda A, **kw: seen.append(A.shape) or real(A, **kw))
    U, S, Vh = sp.svd(W)
    m, n = shape[-2:]
    assert seen[0][-2:] == ((n, m) if n >= 2 * m else (m, n))
    assert U.shape == (*shape[:-1], m) and Vh.shape == (*shape[:-2], m, n)
    torch.testing.assert_close(U @ torch.diag_embed(S) @ Vh, W, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(S, real(W, full_matrices=False).S, atol=0, rtol=1e-5)


def test_identity_has_full_normalized_rank():
    assert sp.normalized_effective_rank(torch.eye(12)).item() == pytest.approx(1.0, abs=1e-6)
    assert sp.effective_rank(torch.eye(12)).item() == pytest.approx(12.0, rel=1e-6)
    assert sp.stable_rank(torch.eye(12)).item() == pytest.approx(12.0, rel=1e-6)


def test_rank_one_has_rank_one_over_R():
    W = torch.outer(torch.randn(20, dtype=torch.float64), torch.randn(8, dtype=torch.float64))
    assert sp.effective_rank(W.double()).item() == pytest.approx(1.0, abs=1e-9)
    assert sp.normalized_effective_rank(W.double()).item() == pytest.approx(1 / 8, abs=1e-9)
    assert sp.stable_rank(W.double()).item() == pytest.approx(1.0, abs=1e-9)


def test_effective_rank_uses_exp_of_entropy_of_s_not_s_squared():
    s = np.array([4.0, 2.0, 1.0, 1.0])
    W = build(orthonormal(6, 4, 1), s, orthonormal(4, 4, 2))
    p = s / s.sum()
    expected = math.exp(-(p * np.log(p)).sum())
    assert sp.effective_rank(W).item() == pytest.approx(expected, rel=1e-10)
    assert sp.normalized_effective_rank(W).item() == pytest.approx(expected / 4, rel=1e-10)
    assert sp.stable_rank(W).item() == pytest.approx((s**2).sum() / 16, rel=1e-10)


@pytest.mark.parametrize("shape", [(7, 7), (40, 13), (9, 33)])
def test_random_matrices_match_numpy(shape):
    W = torch.randn(*shape)
    s = np.linalg.svd(W.double().numpy(), compute_uv=False)
    p = s / s.sum()
    np.testing.assert_allclose(sp.singular_values(W).numpy(), s, rtol=RTOL, atol=1e-6)
    np.testing.assert_allclose(
        sp.effective_rank(W).item(), np.exp(-(p * np.log(p)).sum()), rtol=RTOL
    )
    np.testing.assert_allclose(sp.stable_rank(W).item(), (s**2).sum() / s[0] ** 2, rtol=RTOL)


def test_batches_give_the_same_as_one_by_one():
    W = torch.randn(3, 4, 10, 6)
    batched = sp.normalized_effective_rank(W)
    assert batched.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            assert batched[i, j].item() == pytest.approx(
                sp.normalized_effective_rank(W[i, j]).item(), rel=1e-5
            )


def test_dtype_and_device_are_kept():
    W = torch.randn(5, 5, dtype=torch.float64)
    out = sp.effective_rank(W)
    assert out.dtype == torch.float64 and out.device == W.device
    half = sp.effective_rank(torch.randn(6, 4).to(torch.bfloat16))
    assert half.dtype == torch.float32  # decomposed in float32, never in bf16


def test_alignment_of_chained_layers_built_from_chosen_vectors():
    # W1 maps R^5 -> R^8 with left vectors U1; W2 maps R^8 -> R^3 with right vectors V2.
    U1, V1 = orthonormal(8, 5, 3), orthonormal(5, 5, 4)
    W1 = build(U1, [5, 4, 3, 2, 1], V1)
    # Perfect alignment: W2's right singular vectors are W1's left ones, same order.
    W2 = build(orthonormal(3, 3, 5), [3, 2, 1], U1[:, :3])
    A = sp.alignment(W1, W2, k=3)
    torch.testing.assert_close(A, torch.eye(3, dtype=A.dtype), atol=1e-9, rtol=0)
    # A reversal of the order gives the anti-diagonal.
    W2_rev = build(orthonormal(3, 3, 5), [3, 2, 1], U1[:, [2, 1, 0]])
    torch.testing.assert_close(
        sp.alignment(W1, W2_rev, k=3), torch.eye(3, dtype=A.dtype).flip(1), atol=1e-9, rtol=0
    )
    # Orthogonal input space: no alignment at all.
    W2_orth = build(orthonormal(3, 3, 5), [3, 2, 1], orthonormal(8, 8, 3)[:, 5:8])
    assert sp.alignment(W1, W2_orth, k=3).max().item() < 1e-9


def test_alignment_matches_the_definition_and_caps_k():
    W1, W2 = torch.randn(16, 9, dtype=torch.float64), torch.randn(4, 16, dtype=torch.float64)
    U1 = np.linalg.svd(W1.numpy())[0]
    Vh2 = np.linalg.svd(W2.numpy())[2]
    A = sp.alignment(W1, W2, k=10)
    assert A.shape == (4, 4)  # capped at the smaller rank
    np.testing.assert_allclose(A.numpy(), np.abs(Vh2[:4] @ U1[:, :4]), atol=1e-10)


def test_agreement_with_itself_is_identity_and_sign_flips_do_not_matter():
    W = torch.randn(20, 12, dtype=torch.float64)
    torch.testing.assert_close(
        sp.agreement(W, W, k=5), torch.eye(5, dtype=W.dtype), atol=1e-9, rtol=0
    )
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    flips = torch.tensor([1.0, -1.0] * 6, dtype=W.dtype)
    W_flipped = (U * flips) @ torch.diag(S) @ (Vh * flips[:, None])  # the same matrix, other signs
    torch.testing.assert_close(
        sp.agreement(W, W_flipped, k=5), torch.eye(5, dtype=W.dtype), atol=1e-9, rtol=0
    )


def test_agreement_from_chosen_vectors():
    U, V = orthonormal(10, 3, 6), orthonormal(7, 3, 7)
    W = build(U, [3, 2, 1], V)
    # Reference shares the top direction pair, rotates the 2nd/3rd by 45 degrees in both spaces.
    c = 1 / math.sqrt(2)
    R = torch.tensor([[1, 0, 0], [0, c, -c], [0, c, c]], dtype=U.dtype)
    W_ref = build(U @ R, [3, 2, 1], V @ R)
    S = sp.agreement(W, W_ref, k=3)
    expected = torch.tensor([[1, 0, 0], [0, 0.5, 0.5], [0, 0.5, 0.5]], dtype=U.dtype)
    torch.testing.assert_close(S, expected, atol=1e-9, rtol=0)
    assert sp.diagonal_mean(S, k=3).item() == pytest.approx(2 / 3, abs=1e-9)


def test_diagonal_mean_on_numpy_and_torch():
    M = np.arange(27, dtype=float).reshape(3, 3, 3)
    np.testing.assert_allclose(sp.diagonal_mean(M, k=2), [(0 + 4) / 2, (9 + 13) / 2, (18 + 22) / 2])
    torch.testing.assert_close(sp.diagonal_mean(torch.eye(4), k=10), torch.tensor(1.0))


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.randn(5), "spectral metrics need a matrix"),
        (torch.empty(0, 4), "is empty"),
        (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), "NaN or infinite"),
        (torch.tensor([[1.0, float("inf")], [0.0, 1.0]]), "NaN or infinite"),
        (torch.zeros(3, 3), "all zeros"),
    ],
)
def test_bad_matrices_raise_clear_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        sp.effective_rank(bad, name="layer7")
    if message != "all zeros":
        with pytest.raises(ValueError, match="layer7"):
            sp.svd(bad, name="layer7")


def test_mismatched_alignment_and_agreement_shapes_raise():
    with pytest.raises(ValueError, match="forward order"):
        sp.alignment(torch.randn(8, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="same shape"):
        sp.agreement(torch.randn(8, 4), torch.randn(4, 8))
    with pytest.raises(ValueError, match="positive integer"):
        sp.agreement(torch.randn(4, 4), torch.randn(4, 4), k=0)


def test_svd_retries_when_the_solver_fails(monkeypatch):
    calls = []
    real_svd = torch.linalg.svd

    def flaky(A, full_matrices=True):
        calls.append(A.dtype)
        if len(calls) == 1:
            raise torch.linalg.LinAlgError("did not converge")
        return real_svd(A, full_matrices=full_matrices)

    monkeypatch.setattr(torch.linalg, "svd", flaky)
    W = torch.randn(6, 4, dtype=torch.float64)
    U, S, Vh = sp.svd(W)
    assert len(calls) == 2
    np.testing.assert_allclose(S.numpy(), np.linalg.svd(W.numpy(), compute_uv=False), atol=1e-5)


@pytest.mark.gpu
def test_cuda_results_match_cpu(cuda):
    W = torch.randn(4, 64, 32)
    for fn in (sp.effective_rank, sp.stable_rank, sp.normalized_effective_rank):
        on_gpu = fn(W.to(cuda))
        assert on_gpu.device.type == "cuda"
        torch.testing.assert_close(on_gpu.cpu(), fn(W), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        sp.agreement(W.to(cuda), W.to(cuda) * 2).cpu(), sp.agreement(W, W * 2), atol=1e-4, rtol=0
    )


# ---- top_k_svd: all values, only the top-k vectors (issue 17.2)
# --------------------------------------------------------------------------------------------
def _with_spectrum(S: torch.Tensor, m: int, n: int, seed: int = 0) -> torch.Tensor:
    """A float64 ``(m, n)`` matrix with singular values ``S`` (descending) and random vectors."""
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(m, len(S), generator=g, dtype=torch.float64)).Q
    V = torch.linalg.qr(torch.randn(n, len(S), generator=g, dtype=torch.float64)).Q
    return (U * S) @ V.T


def _largest_angle(U: torch.Tensor, U_ref: torch.Tensor) -> float:
    """Largest angle (radians) between matching columns, up to sign, computed in float64."""
    U, U_ref = U.double(), U_ref.double()
    sign = torch.sign((U * U_ref).sum(-2, keepdim=True))
    return float((2 * torch.arcsin((U * sign - U_ref).norm(dim=-2) / 2)).max())


@pytest.mark.parametrize("shape", [(120, 120), (160, 100), (100, 200)])
def test_top_k_svd_matches_the_full_svd_where_the_gap_allows(shape):
    m, n = shape
    R = min(m, n)
    decay = torch.cat([10 * 0.75 ** torch.arange(20.0), 0.05 * torch.linspace(1, 0.1, R - 20)])
    A = _with_spectrum(decay.double(), m, n).float()[None]
    U, S, Vh, exact = sp.top_k_svd(A, 10)
    U_ref, S_ref, Vh_ref = torch.linalg.svd(A.double(), full_matrices=False)
    assert not exact.any()  # the randomized vectors were accepted
    assert float((S.double() - S_ref).abs().max() / S_ref[..., 0].max()) < 1e-5
    assert _largest_angle(U, U_ref[..., :10]) < 1e-4
    assert _largest_angle(Vh.mT, Vh_ref[..., :10, :].mT) < 1e-4
    assert U.shape == (1, m, 10) and Vh.shape == (1, 10, n) and S.shape == (1, R)


def test_top_k_svd_falls_back_to_the_full_svd_at_near_degenerate_gaps():
    """At initialisation neighbouring singular values are close: randomized vectors would be
    wrong (0.15-0.65 agreement in issue 17), so those matrices get the full SVD's vectors."""
    torch.manual_seed(0)
    init = torch.randn(120, 120) / 120**0.5
    decay = torch.cat([10 * 0.75 ** torch.arange(20.0), 0.05 * torch.linspace(1, 0.1, 100)])
    trained = _with_spectrum(decay.double(), 120, 120).float()
    degenerate = _with_spectrum(torch.tensor([5.0, 5.0] + [1.0] * 118).double(), 120, 120)
    A = torch.stack([init, trained, degenerate.float()])
    U, S, Vh, exact = sp.top_k_svd(A, 10)
    assert exact.tolist() == [True, False, True]
    U_ref, _, Vh_ref = torch.linalg.svd(A[exact], full_matrices=False)
    torch.testing.assert_close(U[exact], U_ref[..., :10], rtol=0, atol=0)
    torch.testing.assert_close(Vh[exact], Vh_ref[..., :10, :], rtol=0, atol=0)
    assert not sp.top_k_svd_likely_exact(S[0].numpy(), 10)  # predicted from the spectrum too
    assert sp.top_k_svd_likely_exact(S[1].numpy(), 10)
    assert not sp.top_k_svd_likely_exact(S[2].numpy(), 10)


def test_top_k_svd_takes_values_from_svdvals_not_the_gram_matrix():
    """Small singular values keep their relative accuracy (a Gram matrix's eigenvalues would
    square the condition number: s = 1e-5 s_1 would come out as noise)."""
    S_true = torch.logspace(0, -5, 120, dtype=torch.float64)
    A = _with_spectrum(S_true, 120, 120)
    _, S, _, _ = sp.top_k_svd(A[None], 10)
    torch.testing.assert_close(S[0], S_true, rtol=1e-9, atol=0)
    gram = torch.linalg.eigvalsh(A.float() @ A.float().T).flip(0).clamp_min(0).sqrt()
    assert float((gram[-1] - S_true[-1]).abs() / S_true[-1]) > 0.5  # what it would have cost
