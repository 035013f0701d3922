"""SpectralTracker on an MLP, a CNN, an LSTM and a transformer layer."""

import os
import warnings

import numpy as np
import pytest
import torch
from models import SmallCNN, SmallLSTM, SmallTransformer, mlp, train
from torch import nn

from spectral_lab import RunRecord, SpectralTracker
from spectral_lab import spectra as sp
from spectral_lab.tracker import choose_route


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
    assert sorted(calls) == [(1, 16, 3), (4, 16, 16)]  # the wide 3 x 16 through its transpose


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


@pytest.mark.gpu
@pytest.mark.parametrize("route", ["bidiagonal", "gram"])
def test_the_lapack_routes_are_refused_on_a_gpu_where_auto_keeps_the_full_svd(cuda, route):
    model = nn.Sequential(nn.Linear(300, 300)).to(cuda)
    with pytest.raises(ValueError, match=f"route='{route}' runs on the CPU"):
        SpectralTracker(model, route=route)
    assert SpectralTracker(model).routes == {"0": "full"}


@pytest.mark.gpu
def test_background_decomposes_a_gpus_weights_on_the_host_with_the_cpus_routes(cuda):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(300, 300), nn.Linear(300, 20)).to(cuda)
    on_host = SpectralTracker(model, every=1, top_k=10, background=True)
    assert on_host.svd_device.type == "cpu"
    assert on_host.routes == {"0": "gram", "1": "full"}  # the CPU's, not the GPU's
    on_host.snapshot(0, model)
    cpu_model = model.to("cpu")
    reference = SpectralTracker(cpu_model, every=1, top_k=10)
    reference.snapshot(0, cpu_model)
    record = on_host.record
    assert record.meta["svd_device"] == "cpu" and record.meta["device"].startswith("cuda")
    for name in record.layers:
        np.testing.assert_allclose(
            record.singular_values(name), reference.record.singular_values(name), rtol=1e-5
        )


def test_host_copies_travel_in_one_buffer_keep_each_dtype_and_never_alias_the_weights():
    """The path a GPU's weights take in background mode (forced here on the CPU)."""
    from spectral_lab.tracker import host_copies

    views = {
        "a": torch.randn(5, 3),
        "b": torch.randn(4, 4, dtype=torch.float64),
        "c": torch.randn(2, 6).half(),
    }
    for copy_once in (None, True):
        copies = host_copies(views, copy_once=copy_once)
        assert list(copies) == list(views)
        for name, W in views.items():
            assert copies[name].dtype == W.dtype and copies[name].shape == W.shape
            assert torch.equal(copies[name], W)
            assert copies[name].data_ptr() != W.data_ptr()
        views["a"].add_(1.0)  # training moves on: the copies stay as they were
        assert not torch.equal(copies["a"], views["a"])


# ---- background=True: the SVDs on a worker thread, the same record
# ----------------------------------
@pytest.fixture
def threads():
    """Set torch's CPU thread count for one test, and put it back."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_background_tracking_warns_without_a_free_core(threads):
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


# ---- routes (issue 17.2): a top-k route where it is faster, recorded, never mixed silently
# --------------------------------------------------------------------------------------------
def _trained_like_stack(n_layers: int = 2, width: int = 120, seed: int = 0) -> nn.Sequential:
    """Square layers whose spectra decay with gaps at the top (as after training)."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(*[nn.Linear(width, width) for _ in range(n_layers)])
    decay = torch.cat([10 * 0.75 ** torch.arange(20.0), 0.05 * torch.linspace(1, 0.1, width - 20)])
    with torch.no_grad():
        for layer in model:
            U = torch.linalg.qr(torch.randn(width, width, generator=g, dtype=torch.float64)).Q
            V = torch.linalg.qr(torch.randn(width, width, generator=g, dtype=torch.float64)).Q
            layer.weight.copy_((U * decay.double()) @ V.T)
    return model


def test_auto_route_by_shape_is_recorded_and_matches_the_full_svd():
    model = nn.Sequential(nn.Linear(300, 300), nn.Linear(300, 20))
    tracker = SpectralTracker(model, every=1, top_k=10)
    assert tracker.routes == {"0": "gram", "1": "full"}  # rank 20: below the gram route's 32
    assert tracker.record.meta["svd_routes"] == {"0": "gram", "1": "full"}
    # LAPACK's routes are the CPU's; on a GPU the full SVD was the fastest measured
    assert choose_route((300, 300), 10, "cuda") == choose_route((2048, 2048), 10, "cuda") == "full"
    assert choose_route((64, 44), 10, "cpu") == choose_route((43, 64), 10, "cpu") == "gram"
    assert choose_route((64, 3), 10, "cpu") == choose_route((10, 256), 10, "cpu") == "full"
    # float64 weights: the Gram matrix would lose their precision; the bidiagonal route keeps it
    assert choose_route((300, 300), 10, "cpu", torch.float64) == "bidiagonal"
    assert choose_route((300, 300), 80, "cpu", torch.float64) == "full"  # k a large part of R
    assert choose_route((120, 120), 10, "cpu", torch.float64) == "full"
    doubles = SpectralTracker(nn.Sequential(nn.Linear(300, 300)).double(), every=1)
    assert doubles.routes == {"0": "bidiagonal"}

    trained = _trained_like_stack()  # 120 wide: auto would pick "full"; the route is forced
    fast = SpectralTracker(trained, every=1, top_k=10, route="values+topk")
    full = SpectralTracker(trained, every=1, top_k=10, route="full")
    for step in range(3):
        for tracker in (fast, full):
            tracker.step(step, trained)
        with torch.no_grad():
            for layer in trained:
                layer.weight.mul_(1.01)
    # the first snapshot has no spectrum to predict from: the full SVD, recorded as a fallback
    assert fast.record.meta["svd_fallbacks"] == {"0": [0], "1": [0]}
    a, b = fast.record, full.record
    for name in a.layers:
        np.testing.assert_allclose(
            a.singular_values(name), b.singular_values(name), rtol=0, atol=1e-5 * 10
        )
        for field in ("U", "Vh"):
            # vectors agree up to sign: |<a, b>| = 1 within the route's 1e-4 and the rounding
            x, y = a.series(name, field), b.series(name, field)
            axis = 1 if field == "U" else 2
            np.testing.assert_allclose(np.abs((x * y).sum(axis)), 1.0, atol=1e-4)


@pytest.mark.parametrize("shape", [(300, 300), (260, 400), (400, 260), (64, 44)])
@pytest.mark.parametrize("route", ["bidiagonal", "gram"])
def test_the_lapack_routes_equal_the_full_svd_with_or_without_a_gap(route, shape):
    """At initialisation (near-degenerate top values, where the randomized route falls back) and
    after a few steps, without falling back: the record of either LAPACK route matches the
    full SVD's to the record's own rounding."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(shape[1], shape[0]))
    fast = SpectralTracker(model, every=1, top_k=10, route=route)
    full = SpectralTracker(model, every=1, top_k=10, route="full")
    assert fast.routes == {"0": route}
    for step in range(2):
        for tracker in (fast, full):
            tracker.step(step, model)
        with torch.no_grad():  # a rank-one push opens a gap at the top
            model[0].weight += 3 * torch.outer(torch.randn(shape[0]), torch.randn(shape[1])) / 300
    assert fast.record.meta["svd_fallbacks"] == {"0": []}
    a, b = fast.record, full.record
    np.testing.assert_allclose(a.singular_values("0"), b.singular_values("0"), rtol=0, atol=1e-5)
    for field, axis in (("U", 1), ("Vh", 2)):
        x, y = a.series("0", field), b.series("0", field)
        np.testing.assert_allclose(np.abs((x * y).sum(axis)), 1.0, atol=1e-4)
    for metric in ("fro_norm", "norm_eff_rank", "stable_rank"):
        np.testing.assert_allclose(a.series("0", metric), b.series("0", metric), rtol=1e-5)


def test_the_route_falls_back_at_initialisation_and_says_so():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(120, 120))  # random: near-degenerate gaps at the top
    fast = SpectralTracker(model, every=1, top_k=10, route="values+topk")
    full = SpectralTracker(model, every=1, top_k=10, route="full")
    for step in range(2):
        fast.step(step, model)
        full.step(step, model)
    assert fast.record.meta["svd_fallbacks"] == {"0": [0, 1]}
    np.testing.assert_array_equal(fast.record.series("0", "U"), full.record.series("0", "U"))


def test_resuming_with_another_route_is_refused_and_auto_keeps_the_records(tmp_path):
    model = _trained_like_stack(1)
    tracker = SpectralTracker(model, every=1, route="full")
    tracker.step(0, model)
    record = RunRecord.load(tracker.record.save(tmp_path / "run.npz"))
    with pytest.raises(ValueError, match="cannot resume.*route 'full'.*does not mix routes"):
        SpectralTracker(model, every=1, route="values+topk", record=record)
    resumed = SpectralTracker(model, every=1, record=record)  # auto: the record's route
    assert resumed.routes == {"0": "full"}
    with pytest.raises(ValueError, match="route must be"):
        SpectralTracker(model, route="lanczos")


# ---- snapshot overhead (issue 17.3): one host copy, finiteness read from the decomposition
# --------------------------------------------------------------------------------------------
def test_the_gpu_path_copies_to_the_host_once_and_gives_the_same_record(monkeypatch):
    """The buffer path a CUDA snapshot takes, forced on the CPU: one .cpu() for everything."""
    from spectral_lab import tracker as tracker_module

    records = {}
    calls = []
    real_cpu = torch.Tensor.cpu
    for forced in (False, True):
        if forced:
            real_to_host = tracker_module.to_host
            monkeypatch.setattr(
                tracker_module, "to_host", lambda ts: real_to_host(ts, copy_once=True)
            )
            monkeypatch.setattr(
                torch.Tensor, "cpu", lambda self, *a, **kw: calls.append(1) or real_cpu(self)
            )
        torch.manual_seed(0)
        model = SmallTransformer()
        tracker = SpectralTracker(model, every=1, top_k=3, pairs=None)
        tracker.step(0, model)
        records[forced] = tracker.record.to_arrays()
    assert len(calls) == 1
    for key in records[False]:
        np.testing.assert_array_equal(records[False][key], records[True][key], err_msg=key)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_is_found_in_the_decomposition_without_a_separate_pass(monkeypatch, bad):
    from spectral_lab import tracker as tracker_module

    def no_separate_check(*args):
        raise AssertionError("the synchronous snapshot must not scan the weights twice")

    monkeypatch.setattr(tracker_module, "_check_finite", no_separate_check)
    model = mlp()
    tracker = SpectralTracker(model, every=1)
    tracker.step(0, model)
    with torch.no_grad():
        model[2].weight[1, 1] = bad
    with pytest.raises(ValueError, match="at step 1, matrix '2' contains NaN or infinite"):
        tracker.step(1, model)
    assert tracker.record.steps.tolist() == [0]


# ---- background=True (issue 17.1): its own thread budget, a bounded number in flight
# --------------------------------------------------------------------------------------------
def test_the_worker_sets_its_own_thread_count_from_the_free_cores(threads, monkeypatch):
    from spectral_lab import tracker as tracker_module

    monkeypatch.setattr(tracker_module, "cpu_cores", lambda: 4)
    threads(1)
    model = mlp()
    tracker = SpectralTracker(model, every=1, background=True)
    assert tracker.worker_threads == 3  # 4 cores, training uses 1
    tracker.step(0, model)
    assert tracker._worker.submit(torch.get_num_threads).result() == 3
    assert torch.get_num_threads() == 1  # the caller's pool is untouched
    if hasattr(os, "getpriority"):  # and it yields to training on a busy machine (Linux)
        import threading

        def nice():
            return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        assert tracker._worker.submit(nice).result() == min(19, nice() + 10)
    threads(2)
    assert SpectralTracker(model, background=True).worker_threads == 2
    tracker.close()


def test_at_most_max_in_flight_snapshots_wait_then_the_step_blocks(monkeypatch, threads):
    import threading

    from spectral_lab import tracker as tracker_module

    threads(1)
    gate = threading.Event()
    real = tracker_module._svd_checked

    def gated(A):
        gate.wait(30)
        return real(A)

    monkeypatch.setattr(tracker_module, "_svd_checked", gated)
    model = mlp()
    tracker = SpectralTracker(model, every=1, background=True, max_in_flight=2)
    tracker.step(0, model)
    tracker.step(1, model)
    assert len(tracker._in_flight) == 2  # two copies of the weights held, none recorded
    third = threading.Thread(target=tracker.step, args=(2, model))
    third.start()
    third.join(0.5)
    assert third.is_alive()  # blocked: a third copy would exceed the bound
    gate.set()
    third.join(30)
    assert not third.is_alive()
    assert tracker.record.steps.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="max_in_flight must be"):
        SpectralTracker(model, max_in_flight=0)


# ---- issue 14.12: edges, each a clear message or documented behaviour
# --------------------------------------------------------------------------------------------
def test_meta_device_model_is_refused_with_the_fix():
    model = nn.Linear(4, 3, device="meta")
    with pytest.raises(ValueError, match="'weight' is on the meta device.*to_empty"):
        SpectralTracker(model)


def test_uninitialised_lazy_layer_is_refused_not_skipped():
    model = nn.Sequential(nn.LazyLinear(4), nn.Linear(4, 3))
    with pytest.raises(ValueError, match="'0.weight' is an uninitialised lazy.*forward pass"):
        SpectralTracker(model)
    model(torch.randn(2, 5))  # materialised: both layers are tracked
    assert [ref.name for ref in SpectralTracker(model).refs] == ["0", "1"]


def test_complex_weights_are_refused_by_name():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    with torch.no_grad():
        model[1].weight = nn.Parameter(model[1].weight.to(torch.complex64))
    with pytest.raises(ValueError, match="matrix '1' is complex.*real weight matrices only"):
        SpectralTracker(model)


def test_zero_size_matrix_is_refused_by_name():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: initialising zero elements
        model = nn.Sequential(nn.Linear(4, 3), nn.Linear(0, 2))
    with pytest.raises(ValueError, match=r"matrix '1' is empty \(shape \(2, 0\)\).*layers="):
        SpectralTracker(model)


def test_all_zero_matrix_has_ranks_zero_not_nan(tmp_path):
    model = nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 4))
    with torch.no_grad():
        model[1].weight.zero_()  # zero-initialised output layers are common
    tracker = SpectralTracker(model, every=1, top_k=2)
    tracker.step(0, model)
    record = RunRecord.load(tracker.record.save(tmp_path / "run.npz"))
    assert record.norm_eff_rank(["1"]).tolist() == [[0.0]]
    assert record.stable_rank(["1"]).tolist() == [[0.0]] and record.fro_norm(["1"]).tolist() == [
        [0.0]
    ]
    assert np.isfinite(record.norm_eff_rank(["0"])).all()


def test_top_k_above_the_rank_is_clamped_and_said_in_the_repr():
    model = mlp()  # ranks 12, 32, 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # documented, not warned: small layers are ordinary
        tracker = SpectralTracker(model, every=1, top_k=20)
    tracker.step(0, model)
    assert tracker.record.series("4", "U").shape == (1, 5, 5)
    assert tracker.record.series("2", "U").shape == (1, 32, 20)
    assert "top_k=20 (clamped to the rank for 2)" in repr(tracker)
    assert "clamped" not in repr(SpectralTracker(model, top_k=5))


def test_tied_weights_are_selected_by_either_name():
    embed = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = embed.weight
    model = nn.ModuleDict({"embed": embed, "head": head})
    by_first = SpectralTracker(model, layers=["embed"])
    by_second = SpectralTracker(model, layers=["head"])  # "unknown layer 'head'" before
    assert [r.name for r in by_first.refs] == [r.name for r in by_second.refs] == ["embed"]


def test_a_slow_or_large_snapshot_warns_once_with_the_estimate_and_the_cheaper_route(
    monkeypatch,
):
    from spectral_lab import tracker as tracker_module

    seconds, peak = tracker_module.snapshot_cost([(4096, 4096)], "full")
    assert 30 < seconds < 300 and 2**28 < peak < 2**31  # issue 14: 89 s and 840 MB measured
    cheaper, _ = tracker_module.snapshot_cost([(4096, 4096)], "values+topk")
    assert cheaper < seconds

    monkeypatch.setattr(tracker_module, "SLOW_SNAPSHOT_SECONDS", 1e-9)
    model = mlp()
    with pytest.warns(RuntimeWarning, match=r"will take about .* s and .* MiB.*route='gram'"):
        tracker = SpectralTracker(model, every=1, route="full")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tracker.step(0, model)  # warned once, before the first snapshot; not again
        tracker.step(1, model)
