"""spectral_lab.sweeps: engines agree, sweeps resume, failures are reported per config."""

import errno
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from spectral_lab import sweeps as sweeps_module
from spectral_lab.experiments.grokking import GrokkingConfig
from spectral_lab.experiments.weight_decay import train_record
from spectral_lab.locks import OutputLocked, lock_holder
from spectral_lab.record import RunRecord
from spectral_lab.sweeps import (
    StoreError,
    SweepError,
    config_key,
    load_result,
    result_path,
    save_result,
    storable,
    sweep,
)

TINY = GrokkingConfig.quick().with_overrides(
    p=7, d_model=8, n_heads=2, d_mlp=16, steps=20, eval_every=5, track_every=10, device="cpu"
)


def tiny(seed: int) -> GrokkingConfig:
    return replace(TINY, seed=seed, preset=f"tiny/seed={seed}")


def broken() -> GrokkingConfig:
    """A config that fails inside training (AdamW rejects lr < 0), past the constructor's checks."""
    config = tiny(9)
    object.__setattr__(config, "lr", -1.0)
    return config


def assert_same(a: RunRecord, b: RunRecord) -> None:
    A, B = a.to_arrays(), b.to_arrays()
    assert sorted(A) == sorted(B)
    for key in A:
        if key != "__meta__":
            np.testing.assert_array_equal(A[key], B[key], err_msg=key)
    assert a.meta == b.meta


CALLS = []


def counting_run(config) -> RunRecord:
    CALLS.append(config.seed)
    return train_record(config)


def interrupted_run(config) -> RunRecord:
    if config.seed == 2:
        raise KeyboardInterrupt
    return counting_run(config)


def test_config_key_is_stable_and_covers_every_field():
    assert config_key(tiny(0)) == config_key(tiny(0).with_overrides(lr="0.005"))
    assert len(config_key(tiny(0))) == 16
    assert config_key(tiny(0)) != config_key(tiny(1))
    assert config_key(tiny(0)) != config_key(tiny(0).with_overrides(eval_every=10))
    assert result_path("out", tiny(0)).name == f"{config_key(tiny(0))}.npz"


def test_serial_returns_records_in_config_order():
    configs = [tiny(1), tiny(0), tiny(1)]
    records = sweep(configs, train_record, progress=False)
    assert [r.config["seed"] for r in records] == [1, 0, 1]
    assert_same(records[1], train_record(tiny(0)))


def test_local_engine_on_two_workers_matches_serial_and_reports_failures(tmp_path):
    import socket

    busy = (
        socket.socket()
    )  # another cluster's HTTP server on Dask's default port must not disturb ours
    try:
        busy.bind(("127.0.0.1", 8787))
        busy.listen()
    except OSError:
        pass  # taken already: the same situation
    configs = [tiny(0), broken(), tiny(1)]
    before = os.environ.get("OMP_NUM_THREADS")
    with pytest.raises(SweepError) as serial:
        sweep(configs, train_record, engine="serial", progress=False)
    with pytest.raises(SweepError) as local:
        sweep(configs, train_record, engine="local", workers=2, out_dir=tmp_path, progress=False)
    assert (
        os.environ.get("OMP_NUM_THREADS") == before
    )  # the LocalCluster's nanny wrote it; restored
    for error in (serial.value, local.value):
        assert [f.index for f in error.failures] == [1]
        assert error.failures[0].config is configs[1]
        assert "Invalid learning rate" in error.failures[0].traceback
        assert error.results[1] is None
    for a, b in zip(serial.value.results, local.value.results):
        if a is not None:
            assert_same(a, b)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        result_path(tmp_path, c).name for c in (configs[0], configs[2])
    )
    busy.close()


def test_processes_engine_matches_serial_and_reports_failures(tmp_path):
    configs = [tiny(0), broken(), tiny(1)]
    with pytest.raises(SweepError) as serial:
        sweep(configs, train_record, engine="serial", progress=False)
    with pytest.raises(SweepError) as processes:
        sweep(
            configs, train_record, engine="processes", workers=2, out_dir=tmp_path, progress=False
        )
    error = processes.value
    assert [f.index for f in error.failures] == [1] and error.results[1] is None
    assert "Invalid learning rate" in error.failures[0].traceback  # raised in the worker
    for a, b in zip(serial.value.results, error.results):
        if a is not None:
            assert_same(a, b)  # one thread in the worker, as here: the same numbers
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        result_path(tmp_path, c).name for c in (configs[0], configs[2])
    )


def dies_once_per_marker(config) -> RunRecord:
    """Kills its worker process while a marker file exists, removing it: a worker that dies."""
    marker = Path(os.environ["SPECTRAL_LAB_TEST_MARKERS"]) / str(config.seed)
    if marker.exists():
        marker.unlink()
        os._exit(1)
    return train_record(config)


def test_processes_engine_retries_the_runs_of_a_dead_worker(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECTRAL_LAB_TEST_MARKERS", str(tmp_path))  # spawned workers inherit it
    (tmp_path / "1").touch()  # seed 1's first attempt kills its worker (and breaks the pool)
    configs = [tiny(0), tiny(1)]
    records = sweep(configs, dies_once_per_marker, engine="processes", retries=1, progress=False)
    for config, record in zip(configs, records):
        assert_same(record, train_record(config))
    (tmp_path / "3").touch()  # retries=0: seed 3's one death fails it, with the reason
    with pytest.raises(SweepError) as info:
        sweep([tiny(3)], dies_once_per_marker, engine="processes", retries=0, progress=False)
    assert "worker process running this config died once" in info.value.failures[0].traceback


def sleeps_long(config) -> None:
    time.sleep(600)


def test_an_interrupted_processes_sweep_stops_its_workers(monkeypatch):
    """Ctrl-C in the parent (here: a KeyboardInterrupt from the progress bar) ends the runs in
    flight at once instead of after their ten minutes."""
    started = []

    class InterruptingBar:
        def update(self, n):
            raise KeyboardInterrupt

        def close(self):
            pass

    real_stop = sweeps_module._stop_workers

    def spy(pool):
        started.extend(p.pid for p in pool._processes.values())
        real_stop(pool)

    monkeypatch.setattr(sweeps_module, "progress_bar", lambda *a, **k: InterruptingBar())
    monkeypatch.setattr(sweeps_module, "_stop_workers", spy)
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        sweep([tiny(0), tiny(1)], _first_fast_then_slow, engine="processes", workers=2)
    assert time.monotonic() - start < 120 and len(started) == 2
    for pid in started:  # gone, not sleeping on
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def _first_fast_then_slow(config):
    return config.seed if config.seed == 0 else sleeps_long(config)


def test_failing_config_is_reported_and_the_others_are_saved(tmp_path):
    configs = [tiny(0), broken(), tiny(1)]
    with pytest.raises(SweepError, match="1 of 3 runs failed") as info:
        sweep(configs, train_record, out_dir=tmp_path, progress=False)
    for i in (0, 2):
        assert_same(RunRecord.load(result_path(tmp_path, configs[i])), info.value.results[i])
    CALLS.clear()
    with pytest.raises(SweepError):  # run again: only the failed config is tried again
        sweep(configs, counting_run, out_dir=tmp_path, progress=False)
    assert CALLS == [9]


def test_resume_after_an_interrupted_sweep(tmp_path, monkeypatch):
    configs = [tiny(0), tiny(1), tiny(2), tiny(3)]
    CALLS.clear()
    with pytest.raises(KeyboardInterrupt):
        sweep(configs, interrupted_run, out_dir=tmp_path, progress=False)
    assert CALLS == [0, 1]
    assert len(list(tmp_path.glob("*.npz"))) == 2 and not list(tmp_path.glob(".*"))
    CALLS.clear()
    resumed = sweep(configs, counting_run, out_dir=tmp_path, progress=False)
    assert CALLS == [2, 3]
    assert_same(resumed[0], train_record(tiny(0)))

    def no_engine(engine):
        raise AssertionError("an engine was started although every run was done")

    monkeypatch.setattr(sweeps_module, "_import_distributed", no_engine)
    again = sweep(configs, train_record, engine="local", out_dir=tmp_path, progress=False)
    for a, b in zip(resumed, again):
        assert_same(a, b)


def test_missing_dask_gives_the_install_hint(monkeypatch):
    monkeypatch.setitem(
        sys.modules, "distributed", None
    )  # `import distributed` now raises ImportError
    for engine, address in (("local", None), ("dask", "tcp://127.0.0.1:8786")):
        with pytest.raises(ImportError, match=r'pip install -e "\.\[dask\]"'):
            sweep([tiny(0)], train_record, engine=engine, address=address, progress=False)


def test_bad_arguments_fail_before_any_run(tmp_path):
    with pytest.raises(ValueError, match="engine must be one of"):
        sweep([tiny(0)], train_record, engine="threads")
    with pytest.raises(ValueError, match="needs address"):
        sweep([tiny(0)], train_record, engine="dask")
    with pytest.raises(ValueError, match="is for engine"):
        sweep([tiny(0)], train_record, address="tcp://127.0.0.1:8786")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="must be a folder"):
        sweep([tiny(0)], train_record, out_dir=tmp_path / "file")


def test_device_is_not_part_of_the_key():
    assert config_key(tiny(0)) == config_key(tiny(0).with_overrides(device="auto"))


def visible_gpu(config) -> str | None:
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def test_local_engine_gives_each_worker_its_own_gpu():
    """gpus=2: two workers, each told CUDA_VISIBLE_DEVICES=0 or 1 before its first run (checked on
    CPU)."""
    seen = sweep(
        [tiny(seed) for seed in range(6)], visible_gpu, engine="local", gpus=2, progress=False
    )
    assert set(seen) <= {"0", "1"} and len(seen) == 6
    with pytest.raises(ValueError, match="one worker per GPU"):
        sweep([tiny(0)], visible_gpu, engine="local", gpus=2, workers=3)
    with pytest.raises(ValueError, match="gpus= is for"):
        sweep([tiny(0)], visible_gpu, engine="serial", gpus=1)


def summary(config) -> dict:
    """A result that is not a RunRecord: stored as plain data."""
    CALLS.append(config.seed)
    return {
        "seed": config.seed,
        "final_loss": float(train_record(config).scalars["train_loss"][-1]),
    }


def test_other_results_are_stored_as_plain_data_and_labels_name_the_files(tmp_path):
    configs = [tiny(0), tiny(1)]
    CALLS.clear()
    first = sweep(
        configs, summary, out_dir=tmp_path, progress=False, label=lambda c: f"seed_{c.seed}"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"seed_{c.seed}-{config_key(c)}.npz" for c in configs
    ]
    again = sweep(
        configs, summary, out_dir=tmp_path, progress=False, label=lambda c: f"seed_{c.seed}"
    )
    assert first == again and CALLS == [0, 1]


STOPS = []


def checkpointed_run(config, out=None) -> RunRecord:
    """train_record that is interrupted once, at the first checkpoint after step 10 of seed 1."""
    from spectral_lab.experiments import grokking as training

    if config.seed == 1 and not STOPS:
        STOPS.append(out)
        real_save = training._save

        def save_then_stop(path, record, history, step, *args):
            real_save(path, record, history, step, *args)
            if step >= 10:
                raise KeyboardInterrupt

        training._save, saved = save_then_stop, training._save
        try:
            return train_record(config, out=out)
        finally:
            training._save = saved
    return train_record(config, out=out)


def test_an_interrupted_run_continues_from_its_checkpoint(tmp_path):
    configs = [tiny(0), tiny(1).with_overrides(checkpoint_every=10)]
    STOPS.clear()
    with pytest.raises(KeyboardInterrupt):
        sweep(configs, checkpointed_run, out_dir=tmp_path, progress=False)
    partial = STOPS[0]
    assert partial == sweeps_module.partial_path(tmp_path, configs[1]) and partial.exists()
    assert RunRecord.load(partial).steps[-1] == 10  # the work in progress, kept
    resumed = sweep(configs, checkpointed_run, out_dir=tmp_path, progress=False)
    assert_same(resumed[1], train_record(configs[1]))  # continued, and equal to a run in one piece
    assert not (tmp_path / "partial").exists()  # cleaned once landed


def test_ray_engine_matches_serial():
    pytest.importorskip(
        "ray", reason='the ray engine needs the [ray] extra: pip install -e ".[ray]"'
    )
    configs = [tiny(0), broken(), tiny(1)]
    with pytest.raises(SweepError) as serial:
        sweep(configs, train_record, progress=False)
    with pytest.raises(SweepError) as ray:
        sweep(configs, train_record, engine="ray", workers=2, progress=False)
    assert [f.index for f in ray.value.failures] == [1]
    for a, b in zip(serial.value.results, ray.value.results):
        if a is not None:
            assert_same(a, b)


def test_dask_engine_takes_a_cluster_object_and_leaves_it_running():
    """What dask_jobqueue.SLURMCluster users do: pass the Cluster; the sweep closes only its
    client."""
    distributed_ = pytest.importorskip(
        "distributed", reason='needs the [dask] extra: pip install -e ".[dask]"'
    )
    with distributed_.LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        scheduler_kwargs=sweeps_module.LOCAL_SCHEDULER,
    ) as cluster:
        records = sweep(
            [tiny(0), tiny(1)], train_record, engine="dask", address=cluster, progress=False
        )
        assert [r.config["seed"] for r in records] == [0, 1]
        assert_same(records[0], train_record(tiny(0)))
        assert cluster.status.name == "running" and len(cluster.workers) == 1


def cuda_run(config) -> tuple[str, str, int]:
    """Where a run trained: the worker's CUDA_VISIBLE_DEVICES, the record's device, and the GPUs it
    could see."""
    import torch

    return (
        os.environ.get("CUDA_VISIBLE_DEVICES"),
        train_record(config).meta["device"],
        torch.cuda.device_count(),
    )


@pytest.mark.gpu
def test_local_engine_puts_one_worker_on_each_gpu():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    n = torch.cuda.device_count()
    seen = sweep(
        [tiny(seed).with_overrides(device="cuda") for seed in range(2 * n)],
        cuda_run,
        engine="local",
        gpus=n,
        progress=False,
    )
    assert {visible for visible, _, _ in seen} == {str(i) for i in range(n)}  # every GPU got work
    assert all(
        device.startswith("cuda") and count == 1 for _, device, count in seen
    )  # each worker saw one GPU


# ---- no code runs from a store ------------------------------------------------------------------
class Planted:
    """What an attacker pickles: unpickling it calls ``Path.touch(marker)``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def planted_pickle(marker: Path) -> bytes:
    payload = pickle.dumps(Planted(marker))
    probe = marker.with_name("probe")
    pickle.loads(pickle.dumps(Planted(probe)))  # the payload is live: unpickled, it runs
    assert probe.exists()
    probe.unlink()
    return payload


def test_a_planted_pickle_in_a_store_never_runs(tmp_path):
    store, marker = tmp_path / "store", tmp_path / "pwned"
    store.mkdir()
    payload = planted_pickle(marker)
    # the old layout's name for tiny(0)'s result
    result_path(store, tiny(0)).with_suffix(".pkl").write_bytes(payload)
    CALLS.clear()
    with pytest.raises(StoreError, match="refused, because loading a pickle runs code") as info:
        sweep([tiny(0)], counting_run, out_dir=store, progress=False)
    assert str(result_path(store, tiny(0)).with_suffix(".pkl")) in str(info.value)
    assert "run the sweep again" in str(info.value)
    assert not marker.exists() and CALLS == []
    # a pickle under the new name, and an .npz whose array is a pickled object: refused unread
    result_path(store, tiny(0)).write_bytes(payload)
    with pytest.raises(StoreError, match="not a readable sweep result"):
        sweep([tiny(0)], counting_run, out_dir=store, progress=False)
    with open(result_path(store, tiny(1)), "wb") as handle:
        np.savez(handle, __meta__=np.array("{}"), x=np.array([Planted(marker)], dtype=object))
    with pytest.raises(StoreError, match="not a readable sweep result"):
        load_result(result_path(store, tiny(1)))
    assert not marker.exists() and CALLS == []


def bits(tensor: torch.Tensor) -> bytes:
    return tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes()


def assert_identical(a, b, where="result"):
    """``a`` and ``b`` are the same plain data, type for type and bit for bit."""
    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and b.device.type == "cpu", where
        assert bits(a) == bits(b), where
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), where
    elif isinstance(a, float):
        assert a.hex() == b.hex(), where
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}[{key!r}]")
    elif hasattr(a, "__dataclass_fields__"):
        for name in a.__dataclass_fields__:
            assert_identical(getattr(a, name), getattr(b, name), f"{where}.{name}")
    else:
        assert a == b, where


@storable
@dataclass
class Point:
    """A dataclass allowed in stores (registered at import, as a chapter module does)."""

    name: str
    xy: np.ndarray
    weights: dict


@dataclass
class NotAllowed:
    value: int


PLAIN = {
    "none": None,
    "flags": [True, False],
    "ints": (0, -3, 2**70),
    "floats": [1.5, -0.0, float("nan"), float("inf"), 0.1 + 0.2],
    "text": 'α-β \\n "quoted"',
    3: "an int key",
    (1, "a"): "a tuple key",
    "arrays": [
        np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
        np.array([np.nan, -0.0, 1e-310]),
        np.array(3, dtype=np.int64),
        np.array([1 + 2j], dtype=np.complex128),
        np.array([[True, False]]),
        np.empty((0, 4), dtype=np.float16),
        np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        np.array(["ab", "c"]),
    ],
    "scalars": [np.float32(0.1), np.int16(-7), np.bool_(True)],
    "tensors": OrderedDict(
        w=torch.randn(4, 3, generator=torch.Generator().manual_seed(0)),
        t=torch.arange(6, dtype=torch.float64).reshape(2, 3).t(),
        half=torch.tensor([0.1, -2.0], dtype=torch.bfloat16),
        step=torch.tensor(7),
        mask=torch.tensor([True, False]),
        scalar=torch.tensor(float("nan")),
    ),
    "point": Point("p", np.array([1.0, 2.0]), {"fc1.weight": torch.ones(2, 2)}),
}


def test_plain_data_round_trips_bit_for_bit(tmp_path):
    path = save_result(tmp_path / "plain.npz", PLAIN)
    back = load_result(path)
    expected = dict(PLAIN, tensors=dict(PLAIN["tensors"]))  # an OrderedDict comes back a dict
    expected["tensors"]["t"] = expected["tensors"]["t"].contiguous()
    assert_identical(back, expected)
    assert back["tensors"]["half"].dtype == torch.bfloat16
    with zipfile.ZipFile(path) as archive:  # arrays as .npy entries, no pickle anywhere
        assert all(name.endswith(".npy") for name in archive.namelist())
    meta = json.loads(str(np.load(path, allow_pickle=False)["__meta__"]))
    assert (meta["format"], meta["format_version"], meta["schema"]) == (
        "spectral_lab.StoreResult",
        1,
        "plain",
    )
    point = load_result(save_result(tmp_path / "point.npz", PLAIN["point"]))
    assert_identical(point, PLAIN["point"])
    meta = json.loads(str(np.load(tmp_path / "point.npz", allow_pickle=False)["__meta__"]))
    assert meta["schema"] == f"{Point.__module__}.Point"


def test_a_run_record_round_trips(tmp_path):
    record = train_record(tiny(0))
    back = load_result(save_result(tmp_path / "record.npz", record))
    assert isinstance(back, RunRecord)
    assert_same(back, record)


def test_what_cannot_be_stored_is_named_before_anything_is_written(tmp_path):
    for value, named in (
        ({"a": [1, NotAllowed(3)]}, r"NotAllowed at result\['a'\]\[1\]: a dataclass is stored"),
        ({"f": lambda: 0}, r"function at result\['f'\]"),
        ({"o": np.array([object()])}, "object array"),
        ({"s": torch.eye(2).to_sparse()}, "only dense tensors"),
        ({"m": np.ma.masked_array([1, 2])}, "MaskedArray"),
        ({np.int64(1): 2}, r"dict key np.int64\(1\) at result: keys are str"),
    ):
        with pytest.raises(TypeError, match=named):
            save_result(tmp_path / "x.npz", value)
    assert not list(tmp_path.iterdir())


def write_meta(path: Path, meta: dict, **arrays) -> Path:
    with open(path, "wb") as handle:
        np.savez(handle, __meta__=np.array(json.dumps(meta)), **arrays)
    return path


def test_foreign_unknown_and_corrupt_files_are_named(tmp_path):
    good = save_result(tmp_path / "good.npz", {"x": np.arange(3)})
    meta = json.loads(str(np.load(good, allow_pickle=False)["__meta__"]))
    cases = {
        "foreign.npz": (lambda p: np.savez(p, x=np.arange(3)), "not a spectral_lab result"),
        "text.npz": (lambda p: p.write_text("hello"), "not a readable sweep result"),
        "other.npz": (
            lambda p: write_meta(p, dict(meta, format="someone.else")),
            "format 'someone.else'",
        ),
        "newer.npz": (
            lambda p: write_meta(p, dict(meta, format_version=99)),
            "store format version 99; this spectral_lab reads up to 1: upgrade",
        ),
        "missing.npz": (lambda p: write_meta(p, meta), "corrupt sweep result .*array/0"),
        "badtag.npz": (
            lambda p: write_meta(p, dict(meta, value={"$eval": "1"})),
            "unknown entry '\\$eval'",
        ),
        "unknown.npz": (
            lambda p: write_meta(
                p, dict(meta, value={"$dataclass": "evil.Thing", "version": 1, "fields": {}})
            ),
            "evil.Thing, which is not an allowed result type",
        ),
        "oldpoint.npz": (
            lambda p: write_meta(
                p,
                dict(
                    meta,
                    value={"$dataclass": f"{Point.__module__}.Point", "version": 2, "fields": {}},
                ),
            ),
            "of version 2; this spectral_lab reads version 1",
        ),
    }
    for name, (make, message) in cases.items():
        path = tmp_path / name
        make(path)
        with pytest.raises(StoreError, match=message) as info:
            load_result(path)
        assert str(path) in str(info.value), name
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(StoreError, match="truncated, corrupt.*delete it"):
        load_result(truncated)


def test_a_foreign_file_in_a_store_stops_the_sweep_before_any_run(tmp_path):
    np.savez(result_path(tmp_path, tiny(1)), x=np.arange(3))
    CALLS.clear()
    with pytest.raises(StoreError, match="not a spectral_lab result") as info:
        sweep([tiny(0), tiny(1)], counting_run, out_dir=tmp_path, progress=False)
    assert str(result_path(tmp_path, tiny(1))) in str(info.value) and CALLS == []


# ---- an output folder that cannot be written ----------------------------------------------------
def test_an_unwritable_store_is_found_before_any_run(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    CALLS.clear()
    for out in (tmp_path / "file" / "store", tmp_path / "file" / "deeper" / "store"):
        with pytest.raises(StoreError, match="cannot write the sweep store") as info:
            sweep([tiny(0)], counting_run, out_dir=out, progress=False)
        assert str(out) in str(info.value) and "Not a directory" in str(info.value)
        assert "no run was started" in str(info.value)
        assert "fix the failing configs" not in str(info.value)
    # a read-only disk, simulated (chmod does not stop root, and CI runs as root)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(kwargs.get("dir")))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(StoreError, match="cannot write the sweep store .*Read-only file system"):
        sweep([tiny(0)], counting_run, out_dir=tmp_path / "ro", progress=False)
    assert CALLS == []


def cheap_run(config) -> dict:
    """A run that trains nothing: a plain result, for tests of the store itself."""
    CALLS.append(config.seed)
    return {"seed": config.seed, "weights": torch.full((2, 2), float(config.seed))}


def test_a_full_disk_during_a_sweep_names_the_file_and_keeps_what_was_saved(tmp_path, monkeypatch):
    configs = [tiny(0), tiny(1), tiny(2)]
    real_write = sweeps_module.atomic_write

    def full_after_one(path, write):
        if list(tmp_path.glob("*.npz")):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_write(path, write)

    monkeypatch.setattr(sweeps_module, "atomic_write", full_after_one)
    CALLS.clear()
    with pytest.raises(StoreError) as info:
        sweep(configs, cheap_run, out_dir=tmp_path, progress=False)
    message = str(info.value)
    assert f"could not save {result_path(tmp_path, tiny(1))}: No space left on device" in message
    assert "the 1 result(s) saved" in message and "run the same sweep again" in message
    assert "fix the failing configs" not in message
    assert CALLS == [0, 1]  # stopped at the first failed save
    assert_identical(load_result(result_path(tmp_path, tiny(0))), cheap_run(tiny(0)))
    monkeypatch.setattr(sweeps_module, "atomic_write", real_write)
    CALLS.clear()
    results = sweep(configs, cheap_run, out_dir=tmp_path, progress=False)
    assert CALLS == [1, 2] and [r["seed"] for r in results] == [0, 1, 2]


# ---- one sweep per store ------------------------------------------------------------------------
HOLDING_SWEEP = """
import sys, time
from dataclasses import dataclass
from pathlib import Path
from spectral_lab.sweeps import sweep

@dataclass
class Job:
    n: int

def wait_for_go(job):
    go = Path(sys.argv[2])
    while not go.exists():
        time.sleep(0.05)
    return {"n": job.n}

print(sweep([Job(1)], wait_for_go, out_dir=sys.argv[1], progress=False), flush=True)
"""


def test_a_second_sweep_into_a_busy_store_fails_naming_the_first(tmp_path):
    store, go = tmp_path / "store", tmp_path / "go"
    first = subprocess.Popen(
        [sys.executable, "-c", HOLDING_SWEEP, str(store), str(go)],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
    )
    try:
        for _ in range(1200):  # the first sweep holds the store once its lock names it
            if lock_holder(store / ".lock")[0] == first.pid:
                break
            assert first.poll() is None, "the first sweep ended early"
            time.sleep(0.05)
        CALLS.clear()
        with pytest.raises(OutputLocked) as info:
            sweep([tiny(0)], cheap_run, out_dir=store, progress=False)
        assert info.value.pid == first.pid and str(store) in str(info.value)
        assert CALLS == [] and not result_path(store, tiny(0)).exists()
    finally:
        go.touch()
        output, _ = first.communicate(timeout=60)
    assert first.returncode == 0 and "{'n': 1}" in output
    assert len(list(store.glob("*.npz"))) == 1  # the first sweep's result, saved
    sweep([tiny(0)], cheap_run, out_dir=store, progress=False)  # free again
    assert CALLS == [0] and not (store / ".lock").exists()
