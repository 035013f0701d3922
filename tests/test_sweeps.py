"""spectral_lab.sweeps: engines agree, sweeps resume, failures are reported per config."""

import os
import sys
from dataclasses import replace

import numpy as np
import pytest

from spectral_lab import sweeps as sweeps_module
from spectral_lab.experiments.grokking import GrokkingConfig
from spectral_lab.experiments.weight_decay import train_record
from spectral_lab.record import RunRecord
from spectral_lab.sweeps import SweepError, config_key, result_path, sweep

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
    """A result that is not a RunRecord: stored pickled."""
    CALLS.append(config.seed)
    return {
        "seed": config.seed,
        "final_loss": float(train_record(config).scalars["train_loss"][-1]),
    }


def test_other_results_are_pickled_and_labels_name_the_files(tmp_path):
    configs = [tiny(0), tiny(1)]
    CALLS.clear()
    first = sweep(
        configs, summary, out_dir=tmp_path, progress=False, label=lambda c: f"seed_{c.seed}"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"seed_{c.seed}-{config_key(c)}.pkl" for c in configs
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
