"""spectral_lab.distributed: engines agree, sweeps resume, failures are reported per config."""

import os
import sys

import numpy as np
import pytest

from spectral_lab import distributed
from spectral_lab.distributed import SweepError, config_key, result_path, sweep, train_record
from spectral_lab.experiments import GrokkingConfig
from spectral_lab.record import RunRecord

TINY = GrokkingConfig.quick().with_overrides(p=7, d_model=8, n_heads=2, d_mlp=16, steps=20, eval_every=5,
                                             track_every=10, device="cpu")


def tiny(seed: int) -> GrokkingConfig:
    return TINY.with_overrides(seed=seed, preset=f"tiny/seed={seed}")


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
    records = sweep(configs, progress=False)
    assert [r.config["seed"] for r in records] == [1, 0, 1]
    assert_same(records[1], train_record(tiny(0)))


def test_local_engine_on_two_workers_matches_serial_and_reports_failures(tmp_path):
    configs = [tiny(0), broken(), tiny(1)]
    before = os.environ.get("OMP_NUM_THREADS")
    with pytest.raises(SweepError) as serial:
        sweep(configs, engine="serial", progress=False)
    with pytest.raises(SweepError) as local:
        sweep(configs, engine="local", workers=2, out_dir=tmp_path, progress=False)
    assert os.environ.get("OMP_NUM_THREADS") == before  # the LocalCluster's nanny wrote it; restored
    for error in (serial.value, local.value):
        assert [f.index for f in error.failures] == [1]
        assert error.failures[0].config is configs[1]
        assert "Invalid learning rate" in error.failures[0].traceback
        assert error.results[1] is None
    for a, b in zip(serial.value.results, local.value.results):
        if a is not None:
            assert_same(a, b)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(result_path(tmp_path, c).name
                                                                for c in (configs[0], configs[2]))


def test_failing_config_is_reported_and_the_others_are_saved(tmp_path):
    configs = [tiny(0), broken(), tiny(1)]
    with pytest.raises(SweepError, match="1 of 3 runs failed") as info:
        sweep(configs, out_dir=tmp_path, progress=False)
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

    monkeypatch.setattr(distributed, "_import_distributed", no_engine)
    again = sweep(configs, engine="local", out_dir=tmp_path, progress=False)
    for a, b in zip(resumed, again):
        assert_same(a, b)


def test_missing_dask_gives_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` now raises ImportError
    for engine, address in (("local", None), ("dask", "tcp://127.0.0.1:8786")):
        with pytest.raises(ImportError, match=r'pip install "spectral-lab\[dask\]"'):
            sweep([tiny(0)], engine=engine, address=address, progress=False)


def test_bad_arguments_fail_before_any_run(tmp_path):
    with pytest.raises(ValueError, match="engine must be one of"):
        sweep([tiny(0)], engine="threads")
    with pytest.raises(ValueError, match="needs address"):
        sweep([tiny(0)], engine="dask")
    with pytest.raises(ValueError, match="is for engine"):
        sweep([tiny(0)], address="tcp://127.0.0.1:8786")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="must be a folder"):
        sweep([tiny(0)], out_dir=tmp_path / "file")
