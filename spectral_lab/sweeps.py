"""Running many configs at once: one call, three engines, a result store that makes sweeps
resumable.

``sweep(configs, run, engine="serial" | "local" | "dask", ...)`` calls
``run(config)`` for every config and returns the results in the order of
``configs``. ``run`` is a picklable top-level function of one config that
returns a :class:`~spectral_lab.record.RunRecord`, e.g.
:func:`spectral_lab.experiments.weight_decay.train_record`.

Engines:

* ``"serial"`` - one run after the other in this process; no extra dependency
  (what the tests and the book build use).
* ``"local"`` - a Dask ``LocalCluster`` on this machine: ``workers`` processes
  (default: one per CPU core, at most one per run), one thread each, no
  dashboard. Processes, not threads: torch runs hold the GIL between kernels.
* ``"dask"`` - an existing Dask cluster: ``address`` is a scheduler address
  (``"tcp://host:8786"``) or a Cluster object, so ``dask_jobqueue.SLURMCluster``
  works unchanged. The cluster is left running; only the client is closed.
* ``"ray"`` - Ray: a local Ray started for the sweep (``workers`` CPUs), or the
  cluster at ``address`` (``"auto"``, ``"ray://host:10001"``). Each run asks
  for one CPU, and one GPU with ``gpus=``.

Dask and Ray are optional extras (``pip install -e ".[dask]"`` or ``".[ray]"`` in a
clone of the repository), imported only when their engine is asked for.

Result store (``out_dir``): every finished run is saved as it completes, by
this process, atomically: a :class:`RunRecord` with :meth:`RunRecord.save` to
``out_dir/<name>.npz``, any other result pickled to ``out_dir/<name>.pkl``
(read back with :mod:`pickle`: only load stores you wrote). ``<name>`` is
:func:`config_key` (16 hex digits of SHA-256 over the config's class name and
``asdict``, every field but ``device``: where a run ran does not change what
it is), prefixed by ``label(config)`` when a label function is given
(``wd_0.1-3fa2...``). A changed config never reads a stale result. A sweep run
again loads what is there, runs only the rest, and starts no engine when
nothing is left; an interrupted sweep loses only the runs in flight, and not
even those when ``run`` keeps checkpoints: a ``run`` that takes ``out=`` is
given ``out_dir/partial/<name>.npz`` to keep its work in progress (and to
continue from it when called again); the folder's files for a run are
removed once its result has landed.

Failures: an exception raised by ``run`` is caught on the worker and reported,
not retried (training is deterministic; the same config would fail again). A
worker that dies (killed, out of memory) is retried up to ``retries`` times by
Dask (``submit(..., retries=)``). When some runs fail, :func:`sweep` raises
:class:`SweepError` after every other run has landed (and been saved); it
carries ``results`` (``None`` where a run failed) and ``failures``.

Dask pitfalls handled here (measured on this project's small torch runs):

* the nanny sets ``MALLOC_TRIM_THRESHOLD_`` in each worker, which slows small
  torch runs about 1.9x: it is dropped from ``distributed.nanny.pre-spawn-environ``
  for the clusters this module starts (for a cluster of your own, set
  ``dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})``
  before creating it, or in the workers' Dask config);
* a ``LocalCluster`` writes ``OMP_NUM_THREADS=1`` (and MKL / OpenBLAS) into this
  process's environment: the environment is restored when the sweep ends;
* ``Client.submit`` deduplicates identical calls: runs are submitted with
  ``pure=False`` (identical configs are run once here, by their key).

GPUs: ``gpus=N`` with ``engine="local"`` starts one worker per GPU and gives
worker ``i`` ``CUDA_VISIBLE_DEVICES=i`` (before it imports CUDA), so configs
with ``device="auto"`` or ``"cuda"`` each use their own GPU; with
``engine="ray"`` each run reserves one GPU (Ray sets ``CUDA_VISIBLE_DEVICES``).
On a Dask cluster of your own, start one worker per GPU with its own
``CUDA_VISIBLE_DEVICES`` (``dask-cuda``'s ``LocalCUDACluster``, or
``CUDA_VISIBLE_DEVICES=i dask worker ADDRESS --nthreads 1`` once per GPU).
(The assignment is tested on CPU; CI has no GPU.)
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import pickle
import traceback
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Sequence

from .files import atomic_write
from .record import RunRecord
from .runtime import install_hint, progress_bar

__all__ = [
    "sweep",
    "config_key",
    "result_path",
    "partial_path",
    "SweepError",
    "SweepFailure",
    "ENGINES",
]

ENGINES = ("serial", "local", "dask", "ray")

INSTALL_HINT = install_hint("dask")
RAY_INSTALL_HINT = install_hint("ray")

# : No dashboard; the scheduler's HTTP server (which runs regardless) on a free local port, not on
# 8787,
# : where it would warn (and fail a run whose warnings are errors) when another cluster holds that
# port.
LOCAL_SCHEDULER = {"dashboard_address": "127.0.0.1:0"}

#: What a LocalCluster's nanny writes into this process's environment (restored after a sweep).
_SPAWN_ENV = (
    "MALLOC_TRIM_THRESHOLD_",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
)


def _without_device(value):
    if isinstance(value, dict):
        return {k: _without_device(v) for k, v in value.items() if k != "device"}
    if isinstance(value, (list, tuple)):
        return [_without_device(v) for v in value]
    return value


def _key_fields(config) -> dict:
    """``asdict(config)`` less the fields added after stores were written, where they hold their
    defaults (:attr:`~spectral_lab.config.ExperimentConfig.added_fields`)."""
    values = asdict(config)
    defaults = {f.name: f.default for f in fields(config)}
    for name in getattr(config, "added_fields", ()):
        if name in values and values[name] == defaults.get(name):
            del values[name]
    return values


def config_key(config) -> str:
    """The store key of ``config``: 16 hex digits of SHA-256 over its class name and ``asdict``,
    less ``device``."""
    payload = {"class": type(config).__name__, "config": _without_device(_key_fields(config))}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _stem(config, label: Callable | None) -> str:
    return config_key(config) if label is None else f"{label(config)}-{config_key(config)}"


def result_path(
    out_dir: str | os.PathLike, config, label: Callable | None = None, record: bool = True
) -> Path:
    """Where a sweep with ``out_dir`` keeps the result of ``config``:
    ``out_dir/[<label>-]<config_key>.npz``
    (``.pkl`` with ``record=False``: a result that is not a :class:`RunRecord`)."""
    return Path(out_dir) / f"{_stem(config, label)}{'.npz' if record else '.pkl'}"


def partial_path(out_dir: str | os.PathLike, config, label: Callable | None = None) -> Path:
    """The ``out=`` a sweep gives a ``run`` that takes one: ``out_dir/partial/<name>.npz``."""
    return Path(out_dir) / "partial" / f"{_stem(config, label)}.npz"


def _load_result(out_dir, config, label):
    record_file, other_file = (
        result_path(out_dir, config, label),
        result_path(out_dir, config, label, record=False),
    )
    if record_file.exists():
        return RunRecord.load(record_file)
    if other_file.exists():
        with open(other_file, "rb") as handle:
            return pickle.load(handle)
    return _MISSING


def _save_result(out_dir, config, label, value) -> None:
    if isinstance(value, RunRecord):
        value.save(result_path(out_dir, config, label))
    else:
        atomic_write(
            result_path(out_dir, config, label, record=False),
            lambda handle: pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL),
        )
    partial = partial_path(out_dir, config, label)
    for leftover in partial.parent.glob(f"{partial.stem}*") if partial.parent.exists() else ():
        leftover.unlink()


_MISSING = object()


def _takes_out(run: Callable) -> bool:
    try:
        return "out" in inspect.signature(run).parameters
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return False


@dataclass
class SweepFailure:
    """One run that raised: its position in ``configs``, the config, and the traceback text."""

    index: int
    config: Any
    traceback: str

    def __repr__(self) -> str:
        last = self.traceback.strip().splitlines()[-1] if self.traceback.strip() else ""
        return f"SweepFailure(#{self.index} {getattr(self.config, 'preset', '')!r}: {last})"


class SweepError(RuntimeError):
    """Some runs of a sweep failed; raised after all the others have finished (and been saved).

    ``results`` is in the order of the configs, ``None`` where a run failed;
    ``failures`` lists a :class:`SweepFailure` per failed config.
    """

    def __init__(self, results: list, failures: list[SweepFailure]):
        self.results = results
        self.failures = failures
        lines = [f"{len(failures)} of {len(results)} runs failed:"]
        lines += [
            f"  #{f.index} {f.config!r}\n    {f.traceback.strip().splitlines()[-1]}"
            for f in failures
        ]
        super().__init__("\n".join(lines))


class _Failed:
    """What a worker returns when ``run`` raised (so that Dask retries only lost workers)."""

    def __init__(self, text: str):
        self.traceback = text


def _call(run: Callable, config, out: Path | None = None) -> Any:
    try:
        return run(config) if out is None else run(config, out=out)
    except Exception:  # reported per config; KeyboardInterrupt and friends still stop the sweep
        return _Failed(traceback.format_exc())


def _import_distributed(engine: str):
    try:
        import dask
        import distributed
    except ImportError as err:
        raise ImportError(
            f'engine="{engine}" needs Dask distributed, an optional extra: {INSTALL_HINT}'
        ) from err
    return dask, distributed


def _import_ray():
    try:
        import ray
    except ImportError as err:
        raise ImportError(f'engine="ray" needs Ray, an optional extra: {RAY_INSTALL_HINT}') from err
    return ray


def sweep(
    configs: Sequence,
    run: Callable,
    engine: str = "serial",
    address=None,
    retries: int = 2,
    out_dir: str | os.PathLike | None = None,
    progress: bool | None = True,
    workers: int | None = None,
    gpus: int | None = None,
    label: Callable | None = None,
) -> list:
    """``[run(config) for config in configs]``, on the chosen engine; results in the order of
    ``configs``.

    ``engine``: ``"serial"``, ``"local"`` (``workers`` processes on this
    machine), ``"dask"`` (``address``: a scheduler address or a Cluster
    object) or ``"ray"`` (``address``: an existing Ray cluster, else a local
    one with ``workers`` CPUs). ``out_dir``: save each result as it lands and
    skip configs already there; ``label(config)`` prefixes the file names
    (see the module docstring for the layout). ``retries``: resubmissions of
    a run whose worker died. ``gpus``: one GPU per worker (``"local"``) or
    per run (``"ray"``). Raises :class:`SweepError` (with the finished
    results) if any run raised.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "dask" and address is None:
        raise ValueError('engine="dask" needs address= (a scheduler address or a Cluster object)')
    if engine in ("serial", "local") and address is not None:
        raise ValueError(f'address= is for engine="dask" or "ray", not {engine!r}')
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int) or workers < 1
    ):
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if gpus is not None:
        if engine not in ("local", "ray"):
            raise ValueError(
                'gpus= is for engine="local" (one worker per GPU) or "ray"; with '
                f"engine={engine!r} "
                "give each worker its GPU yourself (see spectral_lab.sweeps)"
            )
        if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
            raise ValueError(f"gpus must be a positive integer, got {gpus!r}")
        if engine == "local" and workers not in (None, gpus):
            raise ValueError(
                f"with gpus={gpus} the local engine runs one worker per GPU; drop workers={workers}"
            )
    configs = list(configs)
    keys = [config_key(c) for c in configs]
    results: list = [None] * len(configs)
    done: dict[str, Any] = {}
    if out_dir is not None:
        if Path(out_dir).exists() and not Path(out_dir).is_dir():
            raise ValueError(f"out_dir must be a folder; {out_dir} is a file")
        for config, key in zip(configs, keys):
            if key not in done and (value := _load_result(out_dir, config, label)) is not _MISSING:
                done[key] = value
    todo = {
        key: config for config, key in zip(configs, keys) if key not in done
    }  # identical configs run once
    outs = {
        key: partial_path(out_dir, config, label)
        if out_dir is not None and _takes_out(run)
        else None
        for key, config in todo.items()
    }
    failed: dict[str, str] = {}

    def land(key: str, value) -> None:
        if isinstance(value, _Failed):
            failed[key] = value.traceback
            return
        if out_dir is not None:
            _save_result(out_dir, todo[key], label, value)
        done[key] = value

    if todo:
        bar = progress_bar(progress, len(todo), 0, desc=f"sweep ({engine})")
        try:
            if engine == "serial":
                for key, config in todo.items():
                    land(key, _call(run, config, outs[key]))
                    bar.update(1)
            elif engine == "ray":
                _run_ray(address, todo, outs, run, retries, workers, gpus, land, bar)
            else:
                _run_dask(engine, address, todo, outs, run, retries, workers, gpus, land, bar)
        finally:
            bar.close()
            partial = Path(out_dir) / "partial" if out_dir is not None else None
            if partial is not None and partial.is_dir() and not any(partial.iterdir()):
                partial.rmdir()
    failures = []
    for i, (config, key) in enumerate(zip(configs, keys)):
        if key in failed:
            failures.append(SweepFailure(i, config, failed[key]))
        else:
            results[i] = done[key]
    if failures:
        raise SweepError(results, failures)
    return results


def _see_one_gpu(index: int) -> str:
    """Run on a worker before its first task: it sees GPU ``index`` only (CUDA reads this when it
    starts)."""
    os.environ["CUDA_VISIBLE_DEVICES"] = str(index)
    return os.environ["CUDA_VISIBLE_DEVICES"]


def _run_dask(
    engine, address, todo: dict, outs: dict, run, retries: int, workers, gpus, land, bar
) -> None:
    dask, distributed = _import_distributed(engine)
    saved_env = {name: os.environ.get(name) for name in _SPAWN_ENV}
    cluster = client = None
    try:
        # Dropped before any nanny spawns (see the module docstring): None removes the variable.
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
            if engine == "local":
                n = gpus or workers or min(len(todo), os.cpu_count() or 1)
                cluster = distributed.LocalCluster(
                    n_workers=n,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                    scheduler_kwargs=LOCAL_SCHEDULER,
                )
                client = distributed.Client(cluster)
                if gpus:
                    client.wait_for_workers(n)
                    by_name = {
                        info["name"]: worker
                        for worker, info in client.scheduler_info()["workers"].items()
                    }
                    for index, name in enumerate(sorted(by_name)):
                        client.run(_see_one_gpu, index, workers=[by_name[name]])
            else:
                client = distributed.Client(address)
            futures = {
                client.submit(
                    _call,
                    run,
                    config,
                    outs[key],
                    pure=False,
                    retries=retries,
                    key=f"spectral-lab-run-{key}-{os.urandom(4).hex()}",
                ): key
                for key, config in todo.items()
            }
            for future in distributed.as_completed(futures):
                key = futures[future]
                try:
                    value = future.result()
                except (
                    Exception
                ):  # the worker died more than `retries` times (KilledWorker) or similar
                    value = _Failed(traceback.format_exc())
                land(key, value)
                bar.update(1)
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        for name, value in saved_env.items():  # the nanny wrote these into our environment
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _run_ray(address, todo: dict, outs: dict, run, retries: int, workers, gpus, land, bar) -> None:
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        local = (
            {}
            if address is not None
            else {"num_cpus": workers or min(len(todo), os.cpu_count() or 1)}
        )
        if gpus and address is None:
            local["num_gpus"] = gpus
        ray.init(address=address, include_dashboard=False, log_to_driver=False, **local)
    try:
        # max_retries resubmits a task whose worker process died; an exception in run is a _Failed
        # value.
        remote = ray.remote(_call).options(
            num_cpus=1, num_gpus=1 if gpus else 0, max_retries=retries
        )
        pending = {remote.remote(run, config, outs[key]): key for key, config in todo.items()}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            key = pending.pop(ready[0])
            try:
                value = ray.get(ready[0])
            except Exception:  # the worker died more than `retries` times
                value = _Failed(traceback.format_exc())
            land(key, value)
            bar.update(1)
    finally:
        if started:
            ray.shutdown()
