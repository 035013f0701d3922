"""Running many configs at once: one call, three engines, a result store that makes sweeps resumable.

``sweep(configs, run, engine="serial" | "local" | "dask", ...)`` calls
``run(config)`` for every config and returns the results in the order of
``configs``. ``run`` is a picklable top-level function of one config that
returns a :class:`~spectral_lab.record.RunRecord`, e.g. :func:`train_record`.

Engines:

* ``"serial"`` - one run after the other in this process; no extra dependency
  (what the tests and the book build use).
* ``"local"`` - a Dask ``LocalCluster`` on this machine: ``workers`` processes
  (default: one per CPU core, at most one per run), one thread each, no
  dashboard. Processes, not threads: torch runs hold the GIL between kernels.
* ``"dask"`` - an existing Dask cluster: ``address`` is a scheduler address
  (``"tcp://host:8786"``) or a Cluster object, so ``dask_jobqueue.SLURMCluster``
  works unchanged. The cluster is left running; only the client is closed.

Dask is an optional extra (``pip install "spectral-lab[dask]"``), imported only
when a Dask engine is asked for.

Result store (``out_dir``): every finished run is saved as it completes, by
this process, with :meth:`RunRecord.save` (atomic), to
``out_dir/<config_key(config)>.npz``. :func:`config_key` is the first 16 hex
digits of the SHA-256 of ``{"class": type(config).__name__, "config":
asdict(config)}`` as JSON with sorted keys: every field counts, including
``device`` and the cadences, so a changed config never reads a stale result.
A sweep run again loads what is there, runs only the rest, and starts no
engine when nothing is left; an interrupted sweep loses only the runs in flight.

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

GPUs: start one worker per GPU and give each its own ``CUDA_VISIBLE_DEVICES``
(e.g. ``dask-cuda``'s ``LocalCUDACluster``, or ``CUDA_VISIBLE_DEVICES=i dask
worker ADDRESS --nthreads 1`` once per GPU ``i``), with ``device="auto"`` or
``"cuda"`` in the configs; then ``engine="dask", address=...``. (Not tested
here: CI has no GPU.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm import tqdm

from .record import RunRecord

__all__ = ["sweep", "train_record", "config_key", "result_path", "SweepError", "SweepFailure", "ENGINES"]

ENGINES = ("serial", "local", "dask")

INSTALL_HINT = 'pip install "spectral-lab[dask]"'

#: What a LocalCluster's nanny writes into this process's environment (restored after a sweep).
_SPAWN_ENV = ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def train_record(config) -> RunRecord:
    """``train(config).record``, without a progress bar: the ``run`` of a sweep of grokking configs."""
    from .training import train

    return train(config, progress=False).record


def config_key(config) -> str:
    """The store key of ``config``: 16 hex digits of SHA-256 over its class name and ``asdict``."""
    payload = {"class": type(config).__name__, "config": asdict(config)}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def result_path(out_dir: str | os.PathLike, config) -> Path:
    """Where a sweep with ``out_dir`` keeps the result of ``config``: ``out_dir/<config_key>.npz``."""
    return Path(out_dir) / f"{config_key(config)}.npz"


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
        lines += [f"  #{f.index} {f.config!r}\n    {f.traceback.strip().splitlines()[-1]}" for f in failures]
        super().__init__("\n".join(lines))


class _Failed:
    """What a worker returns when ``run`` raised (so that Dask retries only lost workers)."""

    def __init__(self, text: str):
        self.traceback = text


def _call(run: Callable, config) -> Any:
    try:
        return run(config)
    except Exception:  # reported per config; KeyboardInterrupt and friends still stop the sweep
        return _Failed(traceback.format_exc())


def _import_distributed(engine: str):
    try:
        import dask
        import distributed
    except ImportError as err:
        raise ImportError(f'engine="{engine}" needs Dask distributed, an optional extra: {INSTALL_HINT}') from err
    return dask, distributed


def sweep(configs: Sequence, run: Callable = train_record, engine: str = "serial", address=None,
          retries: int = 2, out_dir: str | os.PathLike | None = None, progress: bool = True,
          workers: int | None = None) -> list:
    """``[run(config) for config in configs]``, on the chosen engine; results in the order of ``configs``.

    ``engine``: ``"serial"``, ``"local"`` (``workers`` processes on this
    machine) or ``"dask"`` (``address``: a scheduler address or a Cluster
    object). ``out_dir``: save each result (a :class:`RunRecord`) as it lands
    and skip configs already there (see the module docstring for the layout).
    ``retries``: resubmissions of a run whose worker died. Raises
    :class:`SweepError` (with the finished results) if any run raised.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "dask" and address is None:
        raise ValueError('engine="dask" needs address= (a scheduler address or a Cluster object)')
    if engine != "dask" and address is not None:
        raise ValueError(f'address= is for engine="dask", not {engine!r}')
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    configs = list(configs)
    keys = [config_key(c) for c in configs]
    results: list = [None] * len(configs)
    done: dict[str, Any] = {}
    if out_dir is not None:
        if Path(out_dir).exists() and not Path(out_dir).is_dir():
            raise ValueError(f"out_dir must be a folder; {out_dir} is a file")
        for config, key in zip(configs, keys):
            path = result_path(out_dir, config)
            if key not in done and path.exists():
                done[key] = RunRecord.load(path)
    todo = {key: config for config, key in zip(configs, keys) if key not in done}  # identical configs run once
    failed: dict[str, str] = {}

    def land(key: str, value) -> None:
        if isinstance(value, _Failed):
            failed[key] = value.traceback
            return
        if out_dir is not None:
            if not isinstance(value, RunRecord):
                raise TypeError(f"with out_dir, run must return a RunRecord, got {type(value).__name__}")
            value.save(result_path(out_dir, todo[key]))
        done[key] = value

    if todo:
        bar = tqdm(total=len(todo), desc=f"sweep ({engine})", disable=not progress, dynamic_ncols=True)
        try:
            if engine == "serial":
                for key, config in todo.items():
                    land(key, _call(run, config))
                    bar.update(1)
            else:
                _run_dask(engine, address, todo, run, retries, workers, land, bar)
        finally:
            bar.close()
    failures = []
    for i, (config, key) in enumerate(zip(configs, keys)):
        if key in failed:
            failures.append(SweepFailure(i, config, failed[key]))
        else:
            results[i] = done[key]
    if failures:
        raise SweepError(results, failures)
    return results


def _run_dask(engine, address, todo: dict, run, retries: int, workers, land, bar) -> None:
    dask, distributed = _import_distributed(engine)
    saved_env = {name: os.environ.get(name) for name in _SPAWN_ENV}
    cluster = client = None
    try:
        # Dropped before any nanny spawns (see the module docstring): None removes the variable.
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
            if engine == "local":
                n = workers or min(len(todo), os.cpu_count() or 1)
                cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                                   dashboard_address=None, silence_logs=logging.ERROR)
                client = distributed.Client(cluster)
            else:
                client = distributed.Client(address)
            futures = {client.submit(_call, run, config, pure=False, retries=retries,
                                     key=f"spectral-lab-run-{key}-{os.urandom(4).hex()}"): key
                       for key, config in todo.items()}
            for future in distributed.as_completed(futures):
                key = futures[future]
                try:
                    value = future.result()
                except Exception:  # the worker died more than `retries` times (KilledWorker) or similar
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
