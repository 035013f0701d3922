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
