"""SpectralTracker on an MLP, a CNN, an LSTM and a transformer layer."""

import numpy as np
import pytest
import torch
from models import SmallCNN, SmallLSTM, SmallTransformer, mlp, train
from torch import nn

from spectral_lab import RunRecord, SpectralTracker
from spectral_lab import spectra as sp


def test_snapshots_follow_the_cadence_and_scalars_align():
    model = mlp()
    tracker = SpectralTracker(model, every=5, top_k=4)
    train(model, tracker, steps=21)
    record = tracker.record
    np.testing.assert_array_equal(record.steps, [0, 5, 10, 15, 20])
    assert record.scalars["loss"].shape == (5,)
    assert record.layers == ["0", "2", "4"]
    assert record.series("0", "singular_values").shape == (5, 12)
    assert record.series("2", "U").shape == (5, 32, 4) and record.series("2", "Vh").shape == (
        5,
        4,
        32,
    )
    assert record.norm_eff_rank().shape == (5, 3)


def test_explicit_step_list_and_force():
    model = mlp()
    tracker = SpectralTracker(model, every=[0, 3, 17], top_k=2)
    train(model, tracker, steps=20)
    assert tracker.step(19, model, force=True)
    assert not tracker.step(21, model)
    np.testing.assert_array_equal(tracker.record.steps, [0, 3, 17, 19])


def test_stored_metrics_equal_the_metric_functions_on_the_live_weights():
    model = mlp()
    tracker = SpectralTracker(model, every=10, top_k=5, keep_weights=True)
    train(model, tracker, steps=21)
    record = tracker.record
    for name in record.layers:
        W = torch.as_tensor(record.series(name, "weights")[-1])
        np.testing.assert_allclose(
            record.series(name, "norm_eff_rank")[-1], sp.normalized_effective_rank(W), rtol=1e-5
        )
        np.testing.assert_allclose(
            record.series(name, "stable_rank")[-1], sp.stable_rank(W), rtol=1e-5
        )
        np.testing.assert_allclose(
            record.series(name, "fro_norm")[-1], torch.linalg.norm(W), rtol=1e-5
        )
        np.testing.assert_allclose(
            record.singular_values(name)[-1], sp.singular_values(W), rtol=1e-5, atol=1e-6
        )
    W_live = model[4].weight.detach()
    np.testing.assert_array_equal(record.series("4", "weights")[-1], W_live.numpy())


def test_alignment_and_agreement_match_the_reference_functions():
    model = mlp()
    tracker = SpectralTracker(model, every=10, top_k=4, keep_weights=True)
    train(model, tracker, steps=21)
    record = tracker.record
    assert record.pairs == [("0", "2"), ("2", "4")]  # inferred: 12->32->32->5
    W0, W2 = (torch.as_tensor(record.series(n, "weights")[-1]) for n in ("0", "2"))
    # vectors are stored rounded (record module docstring): metrics within 1e-4 of exact ones
    np.testing.assert_allclose(
        record.alignment(("0", "2"))[-1], sp.alignment(W0, W2, k=4), atol=1e-4
    )
    first = torch.as_tensor(record.series("2", "weights")[0])
    np.testing.assert_allclose(
        record.series("2", "agreement_first")[-1], sp.agreement(W2, first, k=4), atol=1e-4
    )
    np.testing.assert_allclose(record.series("2", "agreement_first")[0], np.eye(4), atol=1e-4)
    final = record.agreement_with("final")["2"]
    np.testing.assert_allclose(final[-1], np.eye(4), atol=1e-4)
    np.testing.assert_allclose(final[0], sp.agreement(first, W2, k=4), atol=1e-4)


@pytest.mark.parametrize(
    "model_cls, expected",
    [
        (SmallCNN, {"conv1": (8, 9), "conv2": (8, 72), "fc": (10, 128)}),
        (SmallLSTM, {"lstm.weight_ih_l0": (64, 8), "lstm.weight_hh_l0": (64, 16), "out": (4, 16)}),
        (
            SmallTransformer,
            {
                "embed": (20, 16),
                "layer.self_attn.in_proj_weight": (48, 16),
                "layer.self_attn.out_proj": (16, 16),
                "layer.linear1": (32, 16),
                "layer.linear2": (16, 32),
                "unembed": (20, 16),
            },
        ),
    ],
)
def test_tracks_cnn_lstm_and_transformer_weights(model_cls, expected):
    torch.manual_seed(0)
    model = model_cls()
    tracker = SpectralTracker(model, every=4, top_k=3, pairs=None)
    train(model, tracker, steps=9, lr=0.01)
    record = tracker.record
    assert {n: tuple(s) for n, s in record.meta["shapes"].items()} == expected
    assert len(record) == 3
    for name, (m, n) in expected.items():
        assert record.singular_values(name).shape == (3, min(m, n))
        assert np.all(np.isfinite(record.series(name, "norm_eff_rank")))


def test_declared_pairs_in_a_transformer_layer():
    model = SmallTransformer()
    tracker = SpectralTracker(model, every=1, top_k=3, pairs=[("layer.linear1", "layer.linear2")])
    tracker.step(0, model)
    assert tracker.record.alignment().shape == (1, 3, 3)


def test_same_seed_gives_an_identical_record():
    records = []
    for _ in range(2):
        model = mlp(seed=3)
        tracker = SpectralTracker(model, every=4, top_k=3)
        train(model, tracker, steps=13, seed=3)
        records.append(tracker.record.to_arrays())
    a, b = records
    assert a.keys() == b.keys()
    for key in a:
        if key != "__meta__":
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_equal_shapes_are_decomposed_in_one_batched_call(monkeypatch):
    model = nn.Sequential(*[nn.Linear(16, 16) for _ in range(4)], nn.Linear(16, 3))
    calls = []
    real_svd = torch.linalg.svd
    monkeypatch.setattr(
        torch.linalg, "svd", lambda A, **kw: calls.append(tuple(A.shape)) or real_svd(A, **kw)
    )
    SpectralTracker(model, every=1).step(0, model)
    assert sorted(calls) == [(1, 3, 16), (4, 16, 16)]


def test_tracking_leaves_the_model_untouched():
    model = mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tracker = SpectralTracker(model, every=1)
    tracker.step(0, model)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert all(p.grad is None for p in model.parameters())
    for module in model.modules():
        assert (
            not module._forward_hooks
            and not module._forward_pre_hooks
            and not module._backward_hooks
        )
    assert "weights" not in tracker.record._layers["0"]  # no weight copies unless asked
    with pytest.raises(KeyError, match="keep_weights=True"):
        tracker.record.series("0", "weights")


def test_resume_appends_and_matches_an_uninterrupted_run(tmp_path):
    full_model = mlp(seed=1)
    full = SpectralTracker(full_model, every=3, top_k=3)
    train(full_model, full, steps=16, seed=1)

    model = mlp(seed=1)
    first = SpectralTracker(model, every=3, top_k=3)
    opt = train(model, first, steps=8, seed=1)
    first.save(tmp_path / "run.npz")
    resumed = SpectralTracker(model, every=3, top_k=3, record=RunRecord.load(tmp_path / "run.npz"))
    train(model, resumed, start=8, steps=16, seed=1, opt=opt)

    a, b = full.record.to_arrays(), resumed.record.to_arrays()
    for key in a:
        if key != "__meta__":
            np.testing.assert_allclose(a[key], b[key], rtol=0, atol=0, err_msg=key)


# ---- bad input: each raises a clear error and leaves any existing record intact
# ----------------------


def test_model_without_matrices():
    with pytest.raises(ValueError, match="no weight matrices"):
        SpectralTracker(nn.Sequential(nn.ReLU(), nn.LayerNorm(3)))


@pytest.mark.parametrize("every", [0, -5, 2.5, "10", [], [3, -1], True])
def test_bad_every(every):
    with pytest.raises(ValueError, match="every must be"):
        SpectralTracker(mlp(), every=every)


@pytest.mark.parametrize("top_k", [0, -1, 2.5, None])
def test_bad_top_k(top_k):
    with pytest.raises(ValueError, match="top_k must be"):
        SpectralTracker(mlp(), top_k=top_k)


def test_unknown_layer_name():
    with pytest.raises(ValueError, match="unknown layer 'fc9'"):
        SpectralTracker(mlp(), layers=["fc9"])


def test_mismatched_pair_shapes_and_unknown_pair_member():
    with pytest.raises(ValueError, match="mismatched pair shapes"):
        SpectralTracker(mlp(), pairs=[("2", "0")])  # "0" takes 12 inputs, "2" gives 32 outputs
    with pytest.raises(ValueError, match="not a tracked matrix"):
        SpectralTracker(mlp(), pairs=[("0", "nope")])
    with pytest.raises(ValueError, match="pairs must be"):
        SpectralTracker(mlp(), pairs="all")


def test_nan_weights_name_the_layer_and_keep_the_record(tmp_path):
    model = mlp()
    tracker = SpectralTracker(model, every=1)
    tracker.step(0, model, loss=1.0)
    path = tracker.record.save(tmp_path / "run.npz")
    saved = path.read_bytes()
    with torch.no_grad():
        model[2].weight[3, 1] = float("nan")
    with pytest.raises(ValueError, match="at step 1, matrix '2' contains NaN"):
        tracker.step(1, model, loss=2.0)
    assert len(tracker.record) == 1 and tracker.record.scalars["loss"].tolist() == [1.0]
    assert path.read_bytes() == saved


def test_steps_must_increase_and_be_valid():
    model = mlp()
    tracker = SpectralTracker(model, every=1)
    tracker.step(5, model)
    tracker.step(6, model)
    with pytest.raises(ValueError, match=r"not after the last recorded step 6.*truncate\(5\)"):
        tracker.step(6, model)
    # issue 14.12: repeating the first step must not suggest truncate(4), which empties the record
    with pytest.raises(ValueError, match="new run.*truncating would empty") as error:
        tracker.step(5, model)
    assert "truncate(" not in str(error.value)
    with pytest.raises(ValueError, match="non-negative integer"):
        tracker.step(-1, model)
    with pytest.raises(ValueError, match="scalar 'loss' must be a number"):
        tracker.step(7, model, loss="low")
    assert len(tracker.record) == 2


def test_resume_with_another_model_or_top_k_is_refused(tmp_path):
    model = mlp()
    tracker = SpectralTracker(model, every=1, top_k=3)
    tracker.step(0, model)
    record = RunRecord.load(tracker.record.save(tmp_path / "run.npz"))
    with pytest.raises(ValueError, match="cannot resume"):
        SpectralTracker(mlp(widths=(12, 16, 5)), top_k=3, record=record)
    with pytest.raises(ValueError, match="top_k=3"):
        SpectralTracker(model, top_k=4, record=record)


def test_passing_another_model_to_step():
    tracker = SpectralTracker(mlp(), every=1)
    with pytest.raises(ValueError, match="changed shape"):
        tracker.step(0, mlp(widths=(12, 16, 16, 5)))


@pytest.mark.gpu
def test_cuda_record_matches_cpu(cuda):
    records = {}
    for device in ("cpu", cuda):
        model = mlp(seed=2).to(device)
        tracker = SpectralTracker(model, every=1, top_k=3)
        tracker.step(0, model)
        records[str(device)] = tracker.record
    cpu, gpu = records["cpu"], records[str(cuda)]
    assert gpu.meta["device"].startswith("cuda")
    for name in cpu.layers:
        np.testing.assert_allclose(
            gpu.singular_values(name), cpu.singular_values(name), rtol=1e-4, atol=1e-5
        )
        np.testing.assert_allclose(gpu.norm_eff_rank([name]), cpu.norm_eff_rank([name]), rtol=1e-4)


# ---- background=True: the SVDs on a worker thread, the same record
# ----------------------------------
@pytest.fixture
def threads():
    """Set torch's CPU thread count for one test, and put it back."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_background_tracking_warns_without_a_free_core(threads):
    import os

    threads(os.cpu_count())
    with pytest.warns(RuntimeWarning, match="leave a core free|Leave a core free"):
        SpectralTracker(mlp(), background=True)


def test_background_tracking_gives_the_same_record(threads):
    threads(1)
    records = {}
    for background in (False, True):
        model = mlp(seed=3)
        tracker = SpectralTracker(model, every=3, top_k=4, keep_weights=True, background=background)
        train(model, tracker, steps=31)  # the weights move between a snapshot and its decomposition
        records[background] = tracker.record  # waits for the snapshots in flight
    A, B = records[False].to_arrays(), records[True].to_arrays()
    assert sorted(A) == sorted(B)
    for key in A:
        if key != "__meta__":
            np.testing.assert_array_equal(A[key], B[key], err_msg=key)


def test_background_tracking_refuses_nan_at_the_step_and_raises_worker_errors(monkeypatch, threads):
    from spectral_lab import tracker as tracker_module

    threads(1)
    model = mlp()
    tracker = SpectralTracker(model, every=1, top_k=2, background=True)
    tracker.step(0, model)
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="at step 1, matrix '2' contains NaN"):
        tracker.step(1, model)  # checked on the caller's thread, at once
    assert list(tracker.record.steps) == [0]
    with torch.no_grad():
        model[2].weight[0, 0] = 0.0

    def broken_svd(A):
        raise RuntimeError("the SVD failed")

    monkeypatch.setattr(tracker_module, "_svd_checked", broken_svd)
    tracker.step(2, model)  # queued; fails on the worker
    with pytest.raises(RuntimeError, match="the SVD failed"):
        tracker.flush()
    assert list(tracker.record.steps) == [0]
