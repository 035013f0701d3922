"""Running many configs at once: one call, five engines, a result store that makes sweeps
resumable.

``sweep(configs, run, engine="serial" | "processes" | "local" | "dask" | "ray", ...)`` calls
``run(config)`` for every config and returns the results in the order of
``configs``. ``run`` is a picklable top-level function of one config that
returns a :class:`~spectral_lab.record.RunRecord`, e.g.
:func:`spectral_lab.experiments.weight_decay.train_record`.

Engines:

* ``"serial"`` - one run after the other in this process; no extra dependency.
* ``"processes"`` - worker processes on this machine from the standard library
  (``concurrent.futures``, started by ``spawn``): ``workers`` of them (default: one per core,
  fewer where ``SPECTRAL_LAB_THREADS`` gives each run several, at most one per run;
  :func:`spectral_lab.runtime.process_workers`), each with the thread policy of
  :func:`spectral_lab.runtime.use_thread_policy` (one thread unless ``SPECTRAL_LAB_THREADS``),
  so a run gives the same numbers as in this process. No extra dependency; what the book's
  chapters use to put both cores of a laptop to work. A run whose worker dies is tried again in
  a new pool, up to ``retries`` times.
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
this process, atomically, to ``out_dir/<name>.npz``: a :class:`RunRecord` with
:meth:`RunRecord.save`, any other result with :func:`save_result` (plain data
as arrays plus JSON, see below). ``<name>`` is :func:`config_key` (16 hex
digits of SHA-256 over the config's class name and ``asdict``, every field but
``device``: where a run ran does not change what it is), prefixed by
``label(config)`` when a label function is given (``wd_0.1-3fa2...``). A
changed config never reads a stale result. A sweep run again loads what is
there, runs only the rest, and starts no engine when nothing is left; an
interrupted sweep loses only the runs in flight, and not even those when
``run`` keeps checkpoints: a ``run`` that takes ``out=`` is given
``out_dir/partial/<name>.npz`` to keep its work in progress (and to continue
from it when called again); the folder's files for a run are removed once its
result has landed.

No code runs from a store. Nothing is unpickled: a store is often shared or
downloaded, and a pickle runs code when it is loaded. A result that is not a
record is stored as plain data (:func:`save_result`): ``None``, bools, ints,
floats, strings, lists, tuples and dicts of them, numpy arrays and scalars,
torch tensors (back on the CPU, detached), and dataclasses on an explicit
allow-list (:func:`storable`), each array an entry of an ``.npz`` read with
``allow_pickle=False`` and the structure JSON with a format name and version.
A file of a store that is not ours, of an unknown format or version, or
corrupt, is a :class:`StoreError` naming it and what to do; an old ``.pkl``
result is refused (delete it and run again to regenerate it).

Ownership: the sweep checks that ``out_dir`` is a writable folder before any
run starts and holds its lock (:func:`spectral_lab.locks.output_lock`, the
file ``out_dir/.lock``) for the whole sweep, so a second sweep into the same
folder fails at once naming the first one's pid. A result that cannot be
written (full disk, read-only folder) stops the sweep with a
:class:`StoreError` naming the file and the reason; what was saved stays.

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
import tempfile
import traceback
import zipfile
from collections import OrderedDict
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from .files import atomic_write
from .locks import output_lock
from .record import FORMAT as RECORD_FORMAT
from .record import RunRecord
from .runtime import cpu_cores, install_hint, process_workers, progress_bar, use_thread_policy

__all__ = [
    "sweep",
    "config_key",
    "result_path",
    "partial_path",
    "save_result",
    "load_result",
    "storable",
    "locked_store",
    "StoreError",
    "SweepError",
    "SweepFailure",
    "ENGINES",
]

ENGINES = ("serial", "processes", "local", "dask", "ray")

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


def result_path(out_dir: str | os.PathLike, config, label: Callable | None = None) -> Path:
    """Where a sweep with ``out_dir`` keeps the result of ``config``:
    ``out_dir/[<label>-]<config_key>.npz``."""
    return Path(out_dir) / f"{_stem(config, label)}.npz"


def partial_path(out_dir: str | os.PathLike, config, label: Callable | None = None) -> Path:
    """The ``out=`` a sweep gives a ``run`` that takes one: ``out_dir/partial/<name>.npz``."""
    return Path(out_dir) / "partial" / f"{_stem(config, label)}.npz"


# ---- plain data on disk: arrays in an .npz, the structure in JSON, no pickles ------------------
STORE_FORMAT = "spectral_lab.StoreResult"
STORE_FORMAT_VERSION = 1

#: The dataclasses a store may hold: "module.QualName" -> (class, version). Filled by @storable.
STORABLE: dict[str, tuple[type, int]] = {}


class StoreError(ValueError):
    """A sweep store, or a file in it, that cannot be used: the message names it and the fix."""


def storable(cls: type | None = None, *, version: int = 1):
    """Class decorator: allow the dataclass ``cls`` in a store (:func:`save_result`).

    Stored by its module and name, with ``version``; a file naming a class that is
    not registered in the reading process, or another version of it, is refused.
    Only fields with ``init=True`` are stored; the class is rebuilt with ``cls(**fields)``.
    """

    def register(cls: type) -> type:
        if not (is_dataclass(cls) and isinstance(cls, type)):
            raise TypeError(f"@storable is for dataclasses, not {cls!r}")
        STORABLE[f"{cls.__module__}.{cls.__qualname__}"] = (cls, int(version))
        return cls

    return register if cls is None else register(cls)


def _tensor_node(value: torch.Tensor, arrays: list, where: str) -> dict:
    if value.layout != torch.strided or value.is_quantized:
        raise TypeError(f"cannot store the {value.layout} tensor at {where}: only dense tensors")
    tensor = value.detach().to("cpu").resolve_conj().resolve_neg().contiguous()
    node = {"$tensor": len(arrays), "dtype": str(tensor.dtype).removeprefix("torch.")}
    try:
        array = tensor.numpy()
    except TypeError:  # bfloat16 and the float8 types: numpy has none, keep their bits
        bits = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
        array, node["bits"] = tensor.view(bits[tensor.element_size()]).numpy(), True
    arrays.append(array)
    return node


def _check_key(key, where: str) -> None:
    if type(key) is tuple:
        for part in key:
            _check_key(part, where)
    elif key is not None and type(key) not in (bool, int, float, str):
        raise TypeError(
            f"cannot store the dict key {key!r} at {where}: keys are str, int, float, bool, None "
            "or tuples of them"
        )


def _encode(value, arrays: list, where: str):
    """``value`` as a JSON tree; its arrays are appended to ``arrays`` (see :func:`save_result`)."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if type(value) is list:
        return [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(value)]
    if type(value) is tuple:
        return {"$tuple": [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(value)]}
    if type(value) in (dict, OrderedDict):
        for key in value:
            _check_key(key, where)
        return {
            "$dict": [
                [_encode(k, arrays, f"{where} key {k!r}"), _encode(v, arrays, f"{where}[{k!r}]")]
                for k, v in value.items()
            ]
        }
    if isinstance(value, np.generic) or type(value) is np.ndarray:
        if value.dtype.hasobject:
            raise TypeError(f"cannot store the object array at {where}: objects would be pickled")
        arrays.append(np.asarray(value))
        return {"$scalar" if isinstance(value, np.generic) else "$array": len(arrays) - 1}
    if isinstance(value, torch.Tensor):
        return _tensor_node(value, arrays, where)
    if is_dataclass(value) and not isinstance(value, type):
        name = f"{type(value).__module__}.{type(value).__qualname__}"
        if STORABLE.get(name, (None,))[0] is not type(value):
            raise TypeError(
                f"cannot store the {name} at {where}: a dataclass is stored only when it is "
                "allowed, with @spectral_lab.sweeps.storable on its class"
            )
        return {
            "$dataclass": name,
            "version": STORABLE[name][1],
            "fields": {
                f.name: _encode(getattr(value, f.name), arrays, f"{where}.{f.name}")
                for f in fields(value)
                if f.init
            },
        }
    raise TypeError(
        f"cannot store the {type(value).__name__} at {where}: a stored result is plain data "
        "(None, bool, int, float, str, list, tuple, dict, numpy arrays, torch tensors, and "
        "dataclasses marked @storable)"
    )


class _Corrupt(Exception):
    pass


def _decode(node, arrays: dict, where: str):
    if node is None or type(node) in (bool, int, float, str):
        return node
    if type(node) is list:
        return [_decode(v, arrays, f"{where}[{i}]") for i, v in enumerate(node)]
    if type(node) is not dict or not node:
        raise _Corrupt(f"unexpected {type(node).__name__} at {where}")
    tag = next(iter(node))
    if tag == "$tuple":
        return tuple(_decode(v, arrays, f"{where}[{i}]") for i, v in enumerate(node[tag]))
    if tag == "$dict":
        return {
            _decode(k, arrays, where): _decode(v, arrays, f"{where}[{k!r}]") for k, v in node[tag]
        }
    if tag in ("$array", "$scalar", "$tensor"):
        key = f"array/{node[tag]}"
        if key not in arrays:
            raise _Corrupt(f"{where} refers to the missing entry {key}")
        array = arrays[key]
        if tag == "$array":
            return array
        if tag == "$scalar":
            return array[()]
        tensor = torch.from_numpy(array if array.flags.writeable else array.copy())
        dtype = getattr(torch, str(node["dtype"]), None)
        if not isinstance(dtype, torch.dtype):
            raise _Corrupt(f"{where} has the unknown tensor dtype {node['dtype']!r}")
        tensor = tensor.view(dtype) if node.get("bits") else tensor
        if tensor.dtype != dtype:
            raise _Corrupt(f"{where} is {tensor.dtype} on disk, {dtype} in its description")
        return tensor
    if tag == "$dataclass":
        name, version = node[tag], node.get("version")
        if name not in STORABLE:
            raise StoreError(
                f"holds a {name}, which is not an allowed result type in this process: import "
                "the module that defines it (and marks it @storable) before loading, or upgrade "
                "spectral_lab"
            )
        cls, known = STORABLE[name]
        if version != known:
            raise StoreError(
                f"holds a {name} of version {version}; this spectral_lab reads version {known}. "
                "Use the spectral_lab that wrote it, or delete the file and run again"
            )
        values = {k: _decode(v, arrays, f"{where}.{k}") for k, v in node["fields"].items()}
        expected = {f.name for f in fields(cls) if f.init}
        if set(values) != expected:
            raise _Corrupt(
                f"{where} has the fields {sorted(values)}, {name} has {sorted(expected)}"
            )
        return cls(**values)
    raise _Corrupt(f"unknown entry {tag!r} at {where}")


def save_result(path: str | os.PathLike, value) -> Path:
    """Write one result to ``path`` (an ``.npz``) atomically; returns the path.

    A :class:`RunRecord` is saved with :meth:`RunRecord.save`. Anything else
    must be plain data (see the module docstring); arrays and tensors are kept
    bit for bit, tuples stay tuples, dict keys and their order are kept
    (an ``OrderedDict`` comes back a ``dict``). Raises ``TypeError`` naming
    the first part that cannot be stored.
    """
    if isinstance(value, RunRecord):
        return value.save(path)
    arrays: list = []
    tree = _encode(value, arrays, "result")
    kind = tree.get("$dataclass", "plain") if isinstance(tree, dict) else "plain"
    meta = {
        "format": STORE_FORMAT,
        "format_version": STORE_FORMAT_VERSION,
        "schema": kind,
        "value": tree,
    }
    entries = {f"array/{i}": array for i, array in enumerate(arrays)}
    entries["__meta__"] = np.array(json.dumps(meta))
    return atomic_write(path, lambda handle: np.savez(handle, **entries))


def load_result(path: str | os.PathLike):
    """Read a result written by :func:`save_result` (a :class:`RunRecord` or plain data).

    Never unpickles: the archive is read with ``allow_pickle=False`` and the
    only classes built are those allowed by :func:`storable`. Anything else at
    ``path`` (a foreign, corrupt, unknown or newer file) is a :class:`StoreError`
    naming it.
    """
    path = Path(path)
    if path.is_dir():
        raise StoreError(f"{path} is a folder where a sweep result belongs: move it away")
    try:
        handle = open(path, "rb")
    except OSError as err:  # not the file's fault: never advise deleting it
        raise StoreError(f"cannot read {path}: {err.strerror}; check its permissions") from err
    redo = "delete it (or move it away) and run the sweep again to redo that run"
    try:
        with handle:  # opened by us: np.load leaks its handle when the zip is truncated
            data = np.load(handle, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("it holds a single array (.npy), not an .npz archive")
            with data:
                arrays = {key: data[key] for key in data.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise StoreError(
            f"{path} is not a readable sweep result (truncated, corrupt, or another kind of file: "
            f"{err}); {redo}"
        ) from err
    try:
        meta = json.loads(str(arrays.pop("__meta__")))
        kind, version = meta.get("format"), meta.get("format_version")
    except (KeyError, ValueError, AttributeError):
        raise StoreError(
            f"{path} is an .npz file but not a spectral_lab result (no readable __meta__ entry): "
            f"a foreign file in the store; {redo}"
        ) from None
    if kind == RECORD_FORMAT:
        return RunRecord.load(path)
    if kind != STORE_FORMAT:
        raise StoreError(f"{path} is not a spectral_lab sweep result (format {kind!r}); {redo}")
    if not isinstance(version, int) or version > STORE_FORMAT_VERSION:
        raise StoreError(
            f"{path} has the store format version {version!r}; this spectral_lab reads up to "
            f"{STORE_FORMAT_VERSION}: upgrade spectral_lab, or {redo}"
        )
    try:
        return _decode(meta["value"], arrays, "result")
    except StoreError as err:
        raise StoreError(f"{path} {err}") from None
    except (
        _Corrupt,
        KeyError,
        TypeError,
        ValueError,
        IndexError,
        AttributeError,
        RuntimeError,
    ) as err:
        raise StoreError(f"{path} is a corrupt sweep result ({err}); {redo}") from None


# ---- the store of a sweep ---------------------------------------------------------------------
def _load_result(out_dir, config, label):
    path = result_path(out_dir, config, label)
    if path.exists():
        return load_result(path)
    legacy = path.with_suffix(".pkl")
    if legacy.exists():
        raise StoreError(
            f"{legacy} is a pickled result of an older spectral_lab; it is refused, because "
            f"loading a pickle runs code from the file. Delete it (or move it out of {out_dir}) "
            f"and run the sweep again: that run is redone and saved as {path.name}"
        )
    return _MISSING


def _save_result(out_dir, config, label, value) -> None:
    path = result_path(out_dir, config, label)
    try:
        save_result(path, value)
        partial = partial_path(out_dir, config, label)
        for leftover in partial.parent.glob(f"{partial.stem}*") if partial.parent.exists() else ():
            leftover.unlink()
    except OSError as err:
        stored = sum(1 for _ in Path(out_dir).glob("*.npz"))
        at = f" ({err.filename})" if err.filename and str(err.filename) != str(path) else ""
        raise StoreError(
            f"could not save {path}: {err.strerror or err}{at}. The sweep stopped; "
            f"the {stored} result(s) saved in {out_dir} are kept. Free space or fix the folder, "
            "then run the same sweep again to continue"
        ) from err


def _check_store(out_dir) -> Path:
    """``out_dir`` as a folder this process can write, created if missing; a clear error if not."""
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise StoreError(f"out_dir must be a folder; {folder} is a file")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise StoreError(
            f"cannot write the sweep store {folder}: {err.strerror or err}"
            f"{f' ({err.filename})' if err.filename and str(err.filename) != str(folder) else ''}"
            "; no run was started. Choose another folder or make this one writable"
        ) from err
    return folder


@contextmanager
def locked_store(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Check that ``out_dir`` is a writable folder and hold its lock for the ``with`` block.

    What :func:`sweep` does around a sweep; a caller that also deletes or
    rewrites files of the store (``--overwrite``) takes it around all of it.
    Raises :class:`StoreError` (unwritable) or
    :class:`~spectral_lab.locks.OutputLocked` (another process holds it).
    """
    folder = _check_store(out_dir)
    with output_lock(folder, folder=True):
        yield folder


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

    ``engine``: ``"serial"``, ``"processes"`` (``workers`` processes on this machine, standard
    library), ``"local"`` (the same with Dask), ``"dask"`` (``address``: a scheduler address or
    a Cluster object) or ``"ray"`` (``address``: an existing Ray cluster, else a local one with
    ``workers`` CPUs). ``out_dir``: save each result as it lands and skip configs already there;
    ``label(config)`` prefixes the file names (see the module docstring for the layout).
    ``retries``: resubmissions of a run whose worker died. ``gpus``: one GPU per worker
    (``"local"``) or per run (``"ray"``). Raises :class:`SweepError` (with the finished results)
    if any run raised; :class:`StoreError` if ``out_dir`` cannot be written (before any run) or
    a result cannot be saved (what was saved stays); :class:`~spectral_lab.locks.OutputLocked`
    if another process holds ``out_dir``.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "dask" and address is None:
        raise ValueError('engine="dask" needs address= (a scheduler address or a Cluster object)')
    if engine in ("serial", "processes", "local") and address is not None:
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
    with nullcontext() if out_dir is None else locked_store(out_dir):
        return _sweep(
            configs, run, engine, address, retries, out_dir, progress, workers, gpus, label
        )


def _sweep(configs, run, engine, address, retries, out_dir, progress, workers, gpus, label) -> list:
    keys = [config_key(c) for c in configs]
    results: list = [None] * len(configs)
    done: dict[str, Any] = {}
    if out_dir is not None:
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
            elif engine == "processes":
                _run_processes(todo, outs, run, retries, workers, land, bar)
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


def _run_processes(todo: dict, outs: dict, run, retries: int, workers, land, bar) -> None:
    """The ``processes`` engine: a ``concurrent.futures`` pool of spawned processes.

    ``spawn``, not ``fork``: a forked child of a process whose OpenMP threads have run can hang.
    A worker that dies breaks the whole pool, and the runs that were not finished cannot tell
    which of them killed it: each is tried again in a new pool, up to ``retries`` times.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    remaining, deaths = dict(todo), dict.fromkeys(todo, 0)
    while remaining:
        pool = ProcessPoolExecutor(
            max_workers=min(workers or process_workers(), len(remaining)),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=use_thread_policy,  # the parent's threads per run: the same numbers
        )
        try:
            futures = {
                pool.submit(_call, run, config, outs[key]): key for key, config in remaining.items()
            }
            for future in as_completed(futures):
                key = futures[future]
                try:
                    value = future.result()
                except BrokenProcessPool:
                    deaths[key] += 1
                    if deaths[key] <= retries:
                        continue  # in the next pool
                    value = _Failed(
                        "the worker process running this config died "
                        + ("once" if deaths[key] == 1 else f"{deaths[key]} times")
                        + " "
                        "(killed, or out of memory); run it alone to see why\n"
                        + traceback.format_exc()
                    )
                except Exception:  # e.g. a result that cannot be sent back
                    value = _Failed(traceback.format_exc())
                del remaining[key]
                land(key, value)
                bar.update(1)
        except BaseException:  # interrupted (or a result could not be saved): stop the workers
            _stop_workers(pool)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _stop_workers(pool) -> None:
    """End a pool's processes now instead of after the runs they are in (Python 3.14 has
    ``terminate_workers``; before, the pool's process table is the only handle)."""
    terminate = getattr(pool, "terminate_workers", None)
    if terminate is not None:
        terminate()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()


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
                n = gpus or workers or min(len(todo), cpu_cores())
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
        local = {} if address is not None else {"num_cpus": workers or min(len(todo), cpu_cores())}
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
