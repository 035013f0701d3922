"""RunRecord: reading, atomic saving, loading with clear errors, comparing runs."""

import json

import numpy as np
import pytest
from models import mlp, train

from spectral_lab import RunRecord, SpectralTracker
from spectral_lab.record import FORMAT_VERSION


@pytest.fixture
def record():
    model = mlp()
    tracker = SpectralTracker(model, every=4, top_k=3, config={"lr": 0.05, "name": "test"}, seed=7)
    train(model, tracker, steps=13)
    return tracker.record


def test_round_trip_is_exact(record, tmp_path):
    loaded = RunRecord.load(record.save(tmp_path / "run.npz"))
    assert loaded.layers == record.layers and loaded.pairs == record.pairs
    assert loaded.meta["config"] == {"lr": 0.05, "name": "test"} and loaded.meta["seed"] == 7
    assert set(loaded.meta["versions"]) == {"spectral_lab", "torch", "numpy", "python"}
    a, b = record.to_arrays(), loaded.to_arrays()
    for key in a:
        if key != "__meta__":
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert repr(loaded).startswith("RunRecord(4 snapshots, steps 0..12, 3 layers")


def test_config_dataclass_is_stored_as_dict(tmp_path):
    from dataclasses import dataclass

    @dataclass
    class Config:
        lr: float = 0.1
        steps: int = 3

    model = mlp()
    tracker = SpectralTracker(model, config=Config(), every=1)
    tracker.step(0, model)
    assert RunRecord.load(tracker.record.save(tmp_path / "r.npz")).config == {"lr": 0.1, "steps": 3}


def test_save_leaves_no_temporary_files(record, tmp_path):
    record.save(tmp_path / "sub" / "run.npz")
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["run.npz"]


def test_interrupted_save_keeps_the_previous_file(record, tmp_path, monkeypatch):
    path = record.save(tmp_path / "run.npz")
    before = path.read_bytes()

    def crash(handle, **arrays):
        handle.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # the user pressed Ctrl-C mid-write

    monkeypatch.setattr(np, "savez_compressed", crash)
    with pytest.raises(KeyboardInterrupt):
        record.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.npz"]


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run record at"):
        RunRecord.load(tmp_path / "nope.npz")


def test_truncated_file(record, tmp_path):
    path = record.save(tmp_path / "run.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated, corrupt"):
        RunRecord.load(path)


def test_corrupt_bytes(tmp_path):
    path = tmp_path / "run.npz"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="not a readable run record"):
        RunRecord.load(path)


def test_foreign_npz(tmp_path):
    path = tmp_path / "weights.npz"
    np.savez(path, W=np.eye(3))
    with pytest.raises(ValueError, match="not a spectral_lab run record"):
        RunRecord.load(path)


def test_single_npy_array(tmp_path):
    path = tmp_path / "run.npz"
    with open(path, "wb") as handle:
        np.save(handle, np.eye(3))
    with pytest.raises(ValueError, match=r"single array \(.npy\)"):
        RunRecord.load(path)


def test_foreign_format_and_newer_version(record, tmp_path):
    arrays = record.to_arrays()
    meta = json.loads(str(arrays["__meta__"]))
    for change, message in [
        ({"format": "other"}, "not a spectral_lab run record"),
        ({"format_version": FORMAT_VERSION + 1}, "newer spectral_lab"),
    ]:
        arrays["__meta__"] = np.array(json.dumps({**meta, **change}))
        path = tmp_path / "run.npz"
        np.savez(path, **arrays)
        with pytest.raises(ValueError, match=message):
            RunRecord.load(path)


def test_inconsistent_arrays_are_reported(record, tmp_path):
    arrays = record.to_arrays()
    arrays["layer/0/fro_norm"] = arrays["layer/0/fro_norm"][:2]
    path = tmp_path / "run.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="corrupt run record.*fro_norm"):
        RunRecord.load(path)


def test_pickled_or_text_file_is_refused(tmp_path):
    path = tmp_path / "run.npz"
    path.write_text("step,loss\n0,1.0\n")
    with pytest.raises(ValueError, match="not a readable run record"):
        RunRecord.load(path)
    with pytest.raises(ValueError, match="is a directory"):
        RunRecord.load(tmp_path)


def test_save_to_a_directory_is_refused(record, tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        record.save(tmp_path)


def test_truncate_then_append(record):
    record.truncate(5)
    np.testing.assert_array_equal(record.steps, [0, 4])
    assert record.series("0", "U").shape[0] == 2 and record.scalars["loss"].shape == (2,)
    assert record.alignment().shape[0] == 2


def test_scalars_missing_at_a_step_are_nan():
    model = mlp()
    tracker = SpectralTracker(model, every=1)
    tracker.step(0, model, loss=1.0)
    tracker.step(1, model, loss=0.5, val_acc=0.3)
    tracker.step(2, model, val_acc=0.4)
    scalars = tracker.record.scalars
    np.testing.assert_array_equal(scalars["loss"], [1.0, 0.5, np.nan])
    np.testing.assert_array_equal(scalars["val_acc"], [np.nan, 0.3, 0.4])


def test_agreement_with_another_run_at_the_same_step_and_at_a_fixed_step():
    records = []
    for seed in (0, 0, 5):
        model = mlp(seed=seed)
        tracker = SpectralTracker(model, every=4, top_k=3)
        train(model, tracker, steps=13, seed=seed)
        records.append(tracker.record)
    same, twin, other = records
    S_twin = same.agreement_with(twin)["2"]
    np.testing.assert_allclose(
        np.diagonal(S_twin, axis1=1, axis2=2), 1.0, atol=1e-4
    )  # stored vectors
    S_other = same.agreement_with(other, reference_step=12)["2"]
    assert S_other.shape == (4, 3, 3)
    assert np.diagonal(S_other[-1]).mean() < 0.5  # independent initialisations share no directions
    S_some = same.agreement_with(other, steps=[4, 12])[
        "2"
    ]  # a subset of the snapshots, same-step mode
    np.testing.assert_array_equal(S_some, same.agreement_with(other)["2"][[1, 3]])


def test_bad_lookups_say_what_exists(record):
    with pytest.raises(KeyError, match="no layer 'fc'.*layers: 0, 2, 4"):
        record.series("fc", "U")
    with pytest.raises(KeyError, match="unknown field"):
        record.series("0", "eigenvalues")
    with pytest.raises(KeyError, match="no snapshot at step 3"):
        record.index_of(3)
    with pytest.raises(ValueError, match="'final' or a RunRecord"):
        record.agreement_with("first")
    with pytest.raises(KeyError, match="not tracked"):
        record.alignment(("4", "0"))


def test_at_returns_one_snapshot_without_stacking(record):
    last = record.at(-1)
    assert last.step == int(record.steps[-1])
    for name in record.layers:
        np.testing.assert_array_equal(
            last.layers[name]["singular_values"], record.singular_values(name)[-1]
        )
    for pair in record.pairs:
        np.testing.assert_array_equal(last.pairs[pair], record.alignment(pair)[-1])
    assert set(last.scalars) == set(record.scalars)
    with pytest.raises(IndexError, match="snapshot"):
        record.at(len(record))


# ---- format 2: vectors at a documented precision, format 1 still loads (issue 17.4)
# --------------------------------------------------------------------------------------------
def test_vectors_are_stored_as_int16_within_the_documented_precision(record, tmp_path):
    from spectral_lab.record import decode_vectors, encode_vectors

    rng = np.random.default_rng(0)
    U = np.linalg.qr(rng.standard_normal((50, 6)))[0].astype(np.float32)
    q, scale = encode_vectors(U, axis=-2)
    assert q.dtype == np.int16 and scale.shape == (1, 6)
    assert np.all(np.log2(scale) == np.round(np.log2(scale)))  # powers of two
    error = np.abs(decode_vectors(q, scale) - U)
    assert np.all(error <= np.abs(U).max(0) / 32767)
    again = encode_vectors(decode_vectors(q, scale), axis=-2)  # idempotent: exact round trips
    np.testing.assert_array_equal(again[0], q)
    np.testing.assert_array_equal(again[1], scale)

    arrays = record.to_arrays()
    assert arrays["layer/0/U"].dtype == np.int16 and "layer/0/agreement_first" not in arrays
    assert json.loads(str(arrays["__meta__"]))["format_version"] == FORMAT_VERSION == 2


def test_rounding_many_vector_sets_at_once_equals_rounding_each():
    from spectral_lab.record import round_vector_sets, round_vectors

    rng = np.random.default_rng(1)
    items = []
    for m, n, k in [(114, 128, 10), (384, 128, 10), (5, 3, 3), (7, 7, 7), (2, 9, 2)]:
        for dtype in (np.float32, np.float64):
            for size in (1.0, 3.0, 1e-30):  # 1e-30: scales far below 1
                U = (size * rng.standard_normal((m, k))).astype(dtype)
                U[:, 0] = 0  # a zero vector: scale 1, entries 0 (not -0)
                U[0, 1] = -1e-9 * size  # rounds to zero from below
                items += [(U, -2), ((size * rng.standard_normal((k, n))).astype(dtype), -1)]
    items.append((rng.standard_normal((3, 5, 2)).astype(np.float32), -2))  # a stack
    for (V, axis), got in zip(items, round_vector_sets(items), strict=True):
        expected = round_vectors(V, axis)
        assert got.shape == expected.shape and got.dtype == expected.dtype == np.float32
        np.testing.assert_array_equal(got, expected)
        assert not np.signbit(got[got == 0]).any()  # as decoded from int16: no negative zeros


def test_metrics_from_a_loaded_record_are_within_1e_3_of_the_unrounded_ones(tmp_path):
    import torch

    from spectral_lab import spectra as sp

    model = mlp()
    tracker = SpectralTracker(model, every=3, top_k=4, keep_weights=True)
    train(model, tracker, steps=13)
    loaded = RunRecord.load(tracker.record.save(tmp_path / "run.npz"))
    weights = {n: torch.as_tensor(loaded.series(n, "weights")) for n in loaded.layers}
    for name, W in weights.items():
        k = min(4, *W.shape[-2:])
        exact = sp.agreement(W, W[0], k=k).numpy()  # from the weights, full precision
        np.testing.assert_allclose(loaded.series(name, "agreement_first"), exact, atol=1e-3)
        final = sp.agreement(W, W[-1], k=k).numpy()
        np.testing.assert_allclose(loaded.agreement_with("final")[name], final, atol=1e-3)
        np.testing.assert_allclose(
            loaded.norm_eff_rank([name])[:, 0], sp.normalized_effective_rank(W), rtol=1e-5
        )
        np.testing.assert_allclose(
            loaded.singular_values(name), sp.singular_values(W), rtol=1e-5, atol=1e-6
        )
    for a, b in loaded.pairs:
        exact = sp.alignment(weights[a], weights[b], k=4).numpy()
        np.testing.assert_allclose(loaded.alignment((a, b)), exact, atol=1e-3)


def _as_version_1(record: RunRecord) -> dict[str, np.ndarray]:
    """The arrays a format-1 save wrote: float32 vectors, agreement and alignments stored."""
    meta = dict(record.meta, format_version=1, layers=record.layers, scalars=list(record._scalars))
    for key in ("vector_precision", "svd_routes", "svd_fallbacks"):
        meta.pop(key, None)
    arrays = {"__meta__": np.array(json.dumps(meta)), "steps": record.steps}
    for i, name in enumerate(record.layers):
        for field in ("singular_values", "U", "Vh", "fro_norm", "norm_eff_rank", "stable_rank"):
            arrays[f"layer/{i}/{field}"] = record.series(name, field)
        arrays[f"layer/{i}/agreement_first"] = record.series(name, "agreement_first")
    for i, pair in enumerate(record.pairs):
        arrays[f"pair/{i}"] = record.alignment(pair)
    for i, name in enumerate(record._scalars):
        arrays[f"scalar/{i}"] = record.scalars[name]
    return arrays


def test_a_version_1_record_still_loads_and_resumes(record, tmp_path):
    path = tmp_path / "v1.npz"
    np.savez(path, **_as_version_1(record))
    old = RunRecord.load(path)
    assert old.vector_precision == "float32" and old.meta["format_version"] == 1
    for name in record.layers:
        for field in ("singular_values", "U", "agreement_first"):
            np.testing.assert_array_equal(old.series(name, field), record.series(name, field))
    np.testing.assert_array_equal(old.alignment(), record.alignment())
    model = mlp()
    resumed = SpectralTracker(model, every=4, top_k=3, record=old)
    assert resumed.routes == dict.fromkeys(record.layers, "full")  # what format 1 used
    resumed.step(16, model)
    again = RunRecord.load(resumed.record.save(tmp_path / "v2.npz"))
    assert again.meta["format_version"] == 2 and again.vector_precision == "float32"
    np.testing.assert_array_equal(again.series("0", "U"), resumed.record.series("0", "U"))


# ---- issue 14.8 and 14.10: load tells the truth and validates before it allocates
# --------------------------------------------------------------------------------------------
def test_unreadable_file_gets_no_destructive_advice(record, tmp_path, monkeypatch):
    from spectral_lab import record as record_module

    path = record.save(tmp_path / "run.npz")

    def denied(file, mode="r", *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(record_module, "open", denied, raising=False)
    with pytest.raises(PermissionError, match="cannot read.*Permission denied.*permissions") as e:
        RunRecord.load(path)
    assert "delete" not in str(e.value)
    assert path.exists()


def _saved_with(record, tmp_path, change) -> str:
    arrays = record.to_arrays()
    change(arrays)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


def _meta_change(**updates):
    def change(arrays):
        meta = json.loads(str(arrays["__meta__"]))
        meta.update(updates)
        arrays["__meta__"] = np.array(json.dumps(meta))

    return change


@pytest.mark.parametrize(
    "change, message",
    [
        (_meta_change(top_k="3"), "malformed __meta__: 'top_k' must be a positive integer"),
        (_meta_change(shapes=[]), "malformed __meta__: 'shapes' must be a dict"),
        (_meta_change(shapes={"0": [12, -1], "2": [32, 32], "4": [5, 32]}), "shape of layer '0'"),
        (_meta_change(layers=["0", "2"]), "'layers'.*do not match"),
        (_meta_change(pairs=[["0", "nope"]]), "pair.*is not two of the record's layers"),
        (_meta_change(format_version="2"), "format_version must be a positive integer"),
        (lambda a: a.update({"__meta__": np.array("[1, 2]")}), "expected a JSON object"),
        (
            lambda a: a.update({"layer/1/singular_values": a["layer/1/singular_values"] * np.nan}),
            "field 'singular_values' of layer '2' contains NaN",
        ),
        (
            lambda a: a.update({"layer/0/fro_norm": np.full(4, np.inf, np.float32)}),
            "field 'fro_norm' of layer '0' contains NaN or infinite",
        ),
        (lambda a: a.update({"steps": np.array([0, 4, 4, 12])}), "'steps' must be.*increasing"),
        (
            lambda a: a.update({"layer/0/U": a["layer/0/U"][:, :, :2]}),
            r"'layer/0/U' is int16 \(4, 32, 2\), the metadata implies shape \(4, 32, 3\)",
        ),
        (lambda a: a.update({"extra": np.zeros(3)}), "unexpected arrays \\['extra'\\]"),
        (lambda a: a.update({"layer/0/U": a["layer/0/U"].astype(object)}), "object"),
    ],
)
def test_malformed_contents_name_the_file_and_the_field(record, tmp_path, change, message):
    path = _saved_with(record, tmp_path, change)
    with pytest.raises(ValueError, match=message) as error:
        RunRecord.load(path)
    assert str(path) in str(error.value)


def test_a_small_file_cannot_make_load_allocate_gigabytes(tmp_path):
    """Issue 14.10: a 1.6 MB file used 1.9 GB. Shapes are checked from the array headers
    against the metadata, and their total against the file's size, before any array is read."""
    import tracemalloc

    zeros = RunRecord({"big": (1000, 1000)}, top_k=1)
    row = {
        "singular_values": np.zeros(1000, np.float32),
        "U": np.eye(1000, 1, dtype=np.float32),
        "Vh": np.eye(1, 1000, dtype=np.float32),
        "fro_norm": np.float32(0),
        "norm_eff_rank": np.float32(0),
        "stable_rank": np.float32(0),
        "weights": np.zeros((1000, 1000), np.float32),
    }
    for step in range(20):
        zeros.append(step, {"big": row})
    path = zeros.save(tmp_path / "zeros.npz")  # 80 MB of zero weights compress to ~100 kB
    assert path.stat().st_size < 1_000_000
    tracemalloc.start()
    with pytest.raises(ValueError, match="declares 76 MiB of arrays.*max_bytes="):
        RunRecord.load(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 5 * 2**20
    assert len(RunRecord.load(path, max_bytes=100 * 2**20)) == 20  # trusted: say so


def test_a_header_that_lies_about_its_shape_is_refused_before_reading(record, tmp_path):
    arrays = record.to_arrays()
    path = tmp_path / "liar.npz"
    np.savez(path, **arrays)
    import zipfile

    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    import io

    lie = io.BytesIO()  # a header declaring 1.5 GB in front of the real 768 bytes
    header = {"descr": "<i2", "fortran_order": False, "shape": (4000000, 32, 3)}
    np.lib.format.write_array_header_1_0(lie, header)
    members["layer/0/U.npy"] = lie.getvalue() + arrays["layer/0/U"].tobytes()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(ValueError, match=r"'layer/0/U' is int16 \(4000000, 32, 3\)"):
        RunRecord.load(path)


def test_a_record_without_snapshots_round_trips(tmp_path):
    empty = RunRecord({"a": (4, 3), "b": (3, 2)}, top_k=2, pairs=[("a", "b")])
    loaded = RunRecord.load(empty.save(tmp_path / "empty.npz"))
    assert len(loaded) == 0 and loaded.layers == ["a", "b"] and loaded.pairs == [("a", "b")]
