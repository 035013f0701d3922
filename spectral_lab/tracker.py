"""Online tracking of the spectra of a model's weight matrices during training.

The authors of the paper saved full checkpoints and decomposed them offline
(terabytes for the paper). :class:`SpectralTracker` instead decomposes the
weights while training runs, on the model's own device, and keeps only what
the analyses need: all singular values, the top-k singular vectors, the norm
and the derived metrics. Usage, in any plain loop::

    tracker = SpectralTracker(model, every=50, top_k=10)
    for step in range(steps):
        ...  # forward, loss, backward, optimizer step
        tracker.step(step, model, loss=loss.item())
    tracker.record.save("runs/mlp.npz")

In someone else's training loop, a callback drives it:
``Trainer(callbacks=[lightning_callback(tracker)])`` or ``hf_callback(tracker)``
(:mod:`spectral_lab.integrations`; the tracker itself knows no framework). Sinks
(TensorBoard, W&B, MLflow) receive every snapshot as it is taken.

The tracker attaches nothing to the model (no hooks, no global state): it
reads the parameters when ``step`` says a snapshot is due.

Cost (issue 17, ``benchmarks/tracking.py``): a snapshot is one batched decomposition per
group of equal shapes plus one copy to the host. On the CPU, float32 weights of rank 32 or more
take the ``gram`` route: every singular value and only the top-k vectors from the float64
eigendecomposition of the Gram matrix on the smaller side (:mod:`spectral_lab.gram`; as accurate
as the float32 SVD or more, with or without a spectral gap, in 0.3-0.9 of its time); float64
weights take the ``bidiagonal`` route from rank 256 (:mod:`spectral_lab.bidiagonal`, LAPACK's
``gesvdx`` method, 0.4-0.7 of the full SVD's time). A GPU keeps the full SVD: on an
H200 the randomized ``values+topk`` route took 1.8-3.0 times its time at every size from 128^2 to
2048^2. ``background=True`` moves the decompositions to a worker thread on the host, with its
own thread budget and a bounded number of weight copies in flight; a GPU's weights are copied
to the host for it, so that the GPU is left to training.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from .bidiagonal import top_k_svd_bidiagonal
from .gram import BLOCK_BYTES as gram_block_bytes
from .gram import lapack_threads as gram_threads
from .gram import top_k_svd_gram
from .lapack import KEEP_THREADS, blas_threads
from .record import RunRecord
from .runtime import cpu_cores
from .spectra import (
    _svd_checked,
    top_k_svd,
    top_k_svd_likely_exact,
)
from .views import LayerSelector, MatrixRef, _layer_name, find_matrices

__all__ = ["SpectralTracker", "infer_pairs", "ROUTES", "snapshot_cost"]

#: How a snapshot decomposes a matrix: ``"full"`` (``torch.linalg.svd``, the reference),
#: ``"values+topk"`` (:func:`spectral_lab.spectra.top_k_svd`: ``svdvals`` for every value, a
#: checked randomized method for the top-k vectors, the full SVD where the check fails; any
#: device), ``"bidiagonal"`` (:func:`spectral_lab.bidiagonal.top_k_svd_bidiagonal`: every value
#: and the top-k vectors from one bidiagonal reduction by LAPACK, exact without a gap; CPU only)
#: or ``"gram"`` (:func:`spectral_lab.gram.top_k_svd_gram`: the same from the float64
#: eigendecomposition of the Gram matrix on the smaller side; CPU only).
ROUTES = ("full", "values+topk", "bidiagonal", "gram")

# "auto" keeps the full SVD (the reference) where a top-k route saves little or costs more:
# measured with benchmarks/tracking.py (torch 2.13, CPU, one thread), the bidiagonal route takes
# 0.59 of the full SVD's time at 256^2, 0.45 at 512^2 and 0.38 at 1024^2, but 0.88 at 128^2 and
# 1.15 at 256 x 64 (about 0.3 ms of calls per matrix weigh more there). On a GPU (an H200, torch
# 2.11 + CUDA 13, 2026-11-30) the randomized route never paid off: 12 / 19 / 44 / 120 / 408 ms
# against the full SVD's 4 / 8 / 21 / 57 / 226 ms from 128^2 to 2048^2 (one matrix; eight: 1.9
# to 3.0 times), because cuSOLVER's svdvals costs as much as its full SVD there.
_TOPK_MIN_RANK = 256
# The gram route (float32 weights, computed in float64) measured against torch's full SVD on one
# thread (torch 2.13, this project's CPU, 2026-12-01): 64 x 44 0.235 / 0.265 ms, 192 x 64 0.38 /
# 0.69, 256 x 40 0.25 / 0.35, 256^2 4.0 / 8.6 (bidiagonal 4.3), 512^2 21 / 54 (bidiagonal 24),
# 1024^2 131 / 407 (bidiagonal 156); below rank 32 its ~0.1 ms of calls lose (64 x 3: 0.094
# against 0.019, 10 x 256: 0.117 against 0.093).
_GRAM_MIN_RANK = 32
# Cost model for the warning before a slow or large snapshot: the full SVD of an (m, n) matrix
# takes about m n R "units" at this many units per second per CPU thread (measured: 2.5e9 at
# 1024^2, 0.8e9 at 4096^2 on this project's CPU; the slower figure is used; on an H200 1.9e10 at
# 1024^2, one matrix or eight, and 3.8e10 at 2048^2), and the top-k routes this fraction of it.
_CPU_UNITS_PER_SECOND = 0.8e9
_CUDA_UNITS_PER_SECOND = 1.9e10
_ROUTE_FRACTION = {"full": 1.0, "values+topk": 0.6, "bidiagonal": 0.5, "gram": 0.45}
SLOW_SNAPSHOT_SECONDS = 10.0
LARGE_SNAPSHOT_BYTES = 512 * 2**20


def infer_pairs(refs: list[MatrixRef]) -> list[tuple[str, str]]:
    """Consecutive matrices, in registration order, where one's output feeds the next's input.

    A pair ``(a, b)`` is inferred when ``b`` directly follows ``a`` and
    ``b.shape[1] == a.shape[0]``. This is right for plain feed-forward stacks;
    for models with branches (attention, skip connections) declare pairs.
    """
    return [(a.name, b.name) for a, b in zip(refs, refs[1:]) if b.shape[1] == a.shape[0]]


def _check_every(every) -> int | frozenset[int]:
    if isinstance(every, (int, np.integer)) and not isinstance(every, bool):
        if every < 1:
            raise ValueError(f"every must be a positive number of steps, got {every}")
        return int(every)
    if isinstance(every, Iterable) and not isinstance(every, (str, bytes)):
        steps = list(every)
        if steps and all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0 for s in steps
        ):
            return frozenset(int(s) for s in steps)
    raise ValueError(
        "every must be a positive int or a non-empty collection of step numbers >= 0, got "
        f"{every!r}"
    )


def _scalar(name: str, value: Any) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.detach().item())
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return float(value)
    raise ValueError(
        f"scalar {name!r} must be a number or a one-element tensor, got {type(value).__name__}"
    )


def _diverged(step: int, name: str) -> ValueError:
    return ValueError(
        f"at step {step}, matrix {name!r} contains NaN or infinite entries: training has diverged "
        "(lower the learning rate or add gradient clipping); the record so far is kept"
    )


def _check_finite(step: int, views: dict[str, torch.Tensor]) -> None:
    """Refuse a snapshot of diverged weights, naming the first bad matrix (one device sync per
    device). Used where the weights are copied for the worker thread; otherwise the check is
    read from the decomposition (a NaN or inf entry makes the singular values NaN)."""
    by_device: dict[torch.device, list[str]] = defaultdict(list)
    for name, W in views.items():
        by_device[W.device].append(name)
    for names in by_device.values():
        finite = torch.stack([torch.isfinite(views[n]).all() for n in names]).tolist()
        for name, ok in zip(names, finite):
            if not ok:
                raise _diverged(step, name)


def to_host(tensors: list[torch.Tensor], copy_once: bool | None = None) -> list[np.ndarray]:
    """``tensors`` as numpy arrays, with one device-to-host copy for all of them (numpy arrays
    among them, results computed on the host, pass through on the CPU).

    On a GPU every tensor is flattened into one buffer (float64 if any is, else float32: exact
    for each) that is copied once and split again; on the CPU (``copy_once=None``) the tensors
    are already host memory and are only viewed. ``copy_once=True`` forces the buffer path.
    """
    if copy_once is None:
        copy_once = any(not isinstance(t, np.ndarray) and t.device.type != "cpu" for t in tensors)
    if not copy_once:
        return [t if isinstance(t, np.ndarray) else t.detach().numpy() for t in tensors]
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    flat = torch.cat([t.detach().reshape(-1).to(dtype) for t in tensors]).cpu().numpy()
    out, offset = [], 0
    for t in tensors:
        chunk = flat[offset : offset + t.numel()].reshape(tuple(t.shape))
        out.append(chunk.astype(np.float64 if t.dtype == torch.float64 else np.float32))
        offset += t.numel()
    return out


def host_copies(
    views: dict[str, torch.Tensor], copy_once: bool | None = None
) -> dict[str, torch.Tensor]:
    """Copies of ``views`` in host memory, each in its own dtype, never aliasing the live weights:
    on the CPU clones; from a GPU (or with ``copy_once=True``) one transfer for all of them
    (:func:`to_host`)."""
    if copy_once is None:
        copy_once = any(W.device.type != "cpu" for W in views.values())
    if not copy_once:
        return {name: W.clone() for name, W in views.items()}
    arrays = to_host(list(views.values()), copy_once=True)  # fresh host arrays, float32/64
    return {
        name: torch.from_numpy(array).to(W.dtype) for (name, W), array in zip(views.items(), arrays)
    }


def _start_worker(threads: int) -> None:
    """The worker thread's set-up: its own intra-op thread count (pools are per thread), and a
    lower scheduling priority (Linux: nice is per thread), so that on a busy machine the
    decompositions wait for the cores training does not use instead of taking turns with it."""
    torch.set_num_threads(threads)
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + 10))
    except (AttributeError, OSError):  # not Linux, or not allowed: only the priority is lost
        pass


def choose_route(
    shape: tuple[int, int],
    top_k: int,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> str:
    """The faster route for one ``(m, n)`` matrix of ``dtype`` keeping ``top_k`` vectors on
    ``device`` (see :data:`ROUTES`): on the CPU ``"gram"`` from rank 32 for weights below float64
    (computed in float64: as accurate as their SVD), ``"bidiagonal"`` for float64 weights from
    rank 256 unless ``top_k`` is a large part of the rank, else ``"full"``; on a GPU always
    ``"full"`` (measured faster there at every size; ``"values+topk"`` stays for a user to
    choose)."""
    if torch.device(device).type != "cpu":
        return "full"
    R = min(shape)
    if dtype != torch.float64:
        return "gram" if R >= _GRAM_MIN_RANK else "full"
    k = min(top_k, R)
    if R < _TOPK_MIN_RANK or 4 * (k + max(10, k)) > R:
        return "full"
    return "bidiagonal"


def snapshot_cost(
    shapes: Iterable[tuple[int, int]],
    route: str | dict = "full",
    device: str | torch.device = "cpu",
    threads: int = 1,
    itemsize: int = 4,
) -> tuple[float, float]:
    """Estimated ``(seconds, peak bytes)`` of one snapshot of matrices of these shapes.

    A rough model (module constants, measured on a CPU): the full SVD of an ``(m, n)``
    matrix costs ``m n R`` units, the ``values+topk`` route about 0.6 of it, the
    ``bidiagonal`` route 0.5 and the ``gram`` route 0.45; memory is the matrix, its copy in the
    decomposition, ``U`` and ``Vh`` (full route only), LAPACK's ``~4 R^2`` workspace and, for the
    ``gram`` route, the float64 copy (in blocks of at most
    :data:`spectral_lab.gram.BLOCK_BYTES`) and the float64 Gram matrix.
    """
    cuda = torch.device(device).type == "cuda"
    seconds = peak = 0.0
    for i, (m, n) in enumerate(shapes):
        R = min(m, n)
        chosen = route if isinstance(route, str) else list(route.values())[i]
        # the gram route keeps small matrices on one thread (spectral_lab.gram.lapack_threads)
        used = gram_threads((m, n), threads) if chosen == "gram" else threads
        rate = _CUDA_UNITS_PER_SECOND if cuda else _CPU_UNITS_PER_SECOND * max(1, used)
        seconds += _ROUTE_FRACTION[chosen] * m * n * R / rate
        peak += itemsize * (2 * m * n + (m * R + R * n if chosen == "full" else 0) + 4 * R * R)
        peak += min(8 * m * n, gram_block_bytes) + 8 * R * R if chosen == "gram" else 0
    return seconds, peak


def _uninitialised(model: nn.Module) -> list[str]:
    lazy = nn.parameter.UninitializedParameter
    return [name for name, p in model.named_parameters() if isinstance(p, lazy)]


def _translate_tied(model: nn.Module, layers: LayerSelector) -> LayerSelector:
    """Names of tied weights under their first name: ``find_matrices`` lists a shared parameter
    once, under the first name ``named_modules`` gives it."""
    if layers is None or isinstance(layers, str) or callable(layers):
        return layers
    first: dict[int, str] = {}
    alias: dict[str, str] = {}
    for module_name, module in model.named_modules(remove_duplicate=False):
        for param_name, param in module.named_parameters(recurse=False):
            layer = _layer_name(module_name, param_name)
            if id(param) in first and first[id(param)] != layer:
                alias[layer] = first[id(param)]
            first.setdefault(id(param), layer)
    wanted = list(layers)
    return [alias.get(w, w) if isinstance(w, str) else w for w in wanted]


class SpectralTracker:
    """Snapshots of the spectra of ``model``'s weight matrices every ``every`` steps.

    Args:
        model: the network; its matrices are found with :func:`find_matrices`.
        every: snapshot when ``step % every == 0``, or a collection of steps.
        top_k: how many leading singular vectors to keep per matrix (alignment
            and agreement are computed on these). A matrix of rank ``R < top_k``
            keeps ``R``: the clamp is documented here and shown by ``repr`` (not a
            warning: the default 10 exceeds the rank of small layers, such as a
            3-position embedding, in ordinary use).
        layers: ``None`` (all), a glob, a list of names, or ``f(name, param)``.
            Tied (shared) weights are tracked once, under their first name;
            selecting one by its second name selects it under the first.
        pairs: ``"infer"`` (consecutive feed-forward layers, see
            :func:`infer_pairs`), ``None`` for none, or ``[(prev, next), ...]``.
        keep_weights: also keep a float32 CPU copy of every matrix at every
            snapshot (memory grows with the model; off by default).
        config, seed: stored in the record's metadata (``asdict(config)``).
        record: a :class:`RunRecord` to append to, to resume a run.
        sinks: where every snapshot is also sent as it is taken (TensorBoard, W&B,
            MLflow: :mod:`spectral_lab.integrations.sinks`); more with :meth:`add_sink`.
        path: where :meth:`close` saves the record (the training callbacks call
            it at the end of training); ``None`` keeps it in memory only.
        route: how each matrix is decomposed (:data:`ROUTES`): ``"auto"`` (default)
            picks per shape, dtype, ``top_k`` and device (:func:`choose_route`): on the CPU
            ``"gram"`` for float32 weights from rank 32 (``"bidiagonal"`` for float64 ones
            from rank 256), ``"full"`` below and on a GPU. The
            record's metadata keeps the route of every layer (``svd_routes``) and
            the steps where a top-k route fell back to the full SVD
            (``svd_fallbacks``); a resumed record keeps its routes, and an explicit
            route that differs from them is refused.
        background: decompose on a worker thread while training goes on. The
            weights are copied (and checked for NaN) at the step itself; the SVDs
            run on the copies, so the record is the same as without it. Weights on
            a GPU are copied to the host (one transfer) and decomposed there, with
            the CPU's routes (``svd_device`` in the record's metadata), so the GPU
            is left to training; such a record matches the CPU's decomposition of
            the same weights, not the GPU's. The worker
            sets its own torch thread count (thread pools are per thread) to the
            cores training leaves free: ``cores - torch.get_num_threads()`` of the
            creating thread, at least 1 (so with torch on every core the two share
            one and the tracker warns), or all cores but one for a GPU's weights,
            and runs at a lower scheduling priority
            (nice +10 on Linux) so that on a busy machine it yields to training.
            At most ``max_in_flight`` snapshots wait for the worker, each holding a
            copy of the weights: a further snapshot
            *blocks* the training step until the oldest is recorded, so memory
            stays bounded and no snapshot is skipped. :attr:`record` (and
            :meth:`save`, :meth:`flush`, :meth:`close`) waits for the snapshots in
            flight; an error in one is raised there or at the next step. The worker
            only decomposes; finished snapshots are recorded (and sent to the sinks)
            on the training thread at its next ``step``, so the worker's Python never
            holds the GIL for long while training waits for it.
        max_in_flight: the bound above (default 2).

    Matrices of equal shape, dtype, device and route are decomposed in one batched
    call on the device they live on; one copy to the host per snapshot brings back
    every result. All-zero matrices are recorded with ranks 0 (their effective and stable
    ranks have no limit there) and whatever orthonormal vectors the SVD returns.
    Before the first snapshot the tracker warns once if one will be slow (over
    :data:`SLOW_SNAPSHOT_SECONDS` by :func:`snapshot_cost`) or large (over
    :data:`LARGE_SNAPSHOT_BYTES`), with the estimate and the cheaper route.
    """

    def __init__(
        self,
        model: nn.Module,
        every=100,
        top_k: int = 10,
        layers: LayerSelector = None,
        pairs="infer",
        keep_weights: bool = False,
        config: Any = None,
        seed: int | None = None,
        record: RunRecord | None = None,
        sinks: Iterable = (),
        path: str | Path | None = None,
        background: bool = False,
        route: str = "auto",
        max_in_flight: int = 2,
    ):
        self.every = _check_every(every)
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        if route != "auto" and route not in ROUTES:
            raise ValueError(f"route must be 'auto' or one of {ROUTES}, got {route!r}")
        if (
            isinstance(max_in_flight, bool)
            or not isinstance(max_in_flight, int)
            or max_in_flight < 1
        ):
            raise ValueError(f"max_in_flight must be a positive integer, got {max_in_flight!r}")
        self.top_k = int(top_k)
        self.keep_weights = bool(keep_weights)
        lazy = _uninitialised(model)
        if lazy:
            raise ValueError(
                f"{lazy[0]!r} is an uninitialised lazy parameter (nn.LazyLinear and friends): its "
                "shape is unknown until the first forward pass; run one batch through the model "
                "before creating the tracker"
            )
        self.refs = find_matrices(model, _translate_tied(model, layers))
        self._by_name = {ref.name: ref for ref in self.refs}
        device = self._check_weights(model)
        # Where the decompositions run: with background=True the host's free cores, also for a
        # GPU's weights (on the GPU they would share it with training: the first GPU run
        # measured background=True no faster than the training thread, 1.165 against 1.162).
        self.svd_device = torch.device("cpu") if background else device
        if route in ("bidiagonal", "gram") and self.svd_device.type != "cpu":
            raise ValueError(
                f"route={route!r} runs on the CPU (LAPACK) and the weights are on {device}: "
                "use route='auto' or 'full' (the GPU's full SVD, its fastest route measured), "
                "or background=True (the decompositions then run on the host)"
            )
        self.pairs = self._resolve_pairs(pairs)
        shapes = {ref.name: ref.shape for ref in self.refs}
        dtypes = {ref.name: ref.view(model).dtype for ref in self.refs}
        if route == "auto" and record is not None and "svd_routes" in record.meta:
            self.routes = dict(record.meta["svd_routes"])
        elif route == "auto" and record is not None:
            self.routes = dict.fromkeys(shapes, "full")  # format-1 records: the full SVD
        else:
            self.routes = {
                n: choose_route(s, self.top_k, self.svd_device, dtypes[n])
                if route == "auto"
                else route
                for n, s in shapes.items()
            }
        if record is None:
            record = RunRecord(
                shapes, self.top_k, self.pairs, config=config, seed=seed, device=str(device)
            )
        else:
            self._check_resumable(record, shapes)
        record.meta["svd_routes"] = dict(self.routes)
        record.meta["svd_device"] = str(self.svd_device)
        fallbacks = record.meta.setdefault("svd_fallbacks", {})
        for name, chosen in self.routes.items():
            if chosen != "full":
                fallbacks.setdefault(name, [])
        self._record = record
        self._last_step = int(record.steps[-1]) if len(record) else None
        self.background = bool(background)
        self.max_in_flight = max_in_flight
        # the cores training leaves free: on a CPU those its torch threads do not use; with the
        # weights on a GPU, all but the one that launches the GPU's kernels
        busy = torch.get_num_threads() if device.type == "cpu" else 1
        self.worker_threads = max(1, cpu_cores() - busy)
        if self.background and device.type == "cpu" and torch.get_num_threads() >= cpu_cores():
            warnings.warn(
                f"background=True on a CPU where torch uses all {torch.get_num_threads()} cores: "
                "the tracker's thread "
                "would compete with training for them and slow it down. Leave a core free "
                f"(torch.set_num_threads({max(1, torch.get_num_threads() - 1)})) or use "
                "background=False.",
                RuntimeWarning,
                stacklevel=2,
            )
        self._warn_if_costly(self.svd_device, stacklevel=2)
        self._worker: ThreadPoolExecutor | None = None
        self._in_flight: list[tuple[int, dict, Future]] = []
        self._last_spectrum: dict[str, np.ndarray] = {
            n: record.series(n, "singular_values")[-1] for n in shapes if len(record)
        }
        self.sinks: list = []
        for sink in sinks:
            self.add_sink(sink)
        self.path = Path(path) if path is not None else None

    def __repr__(self) -> str:
        every = self.every if isinstance(self.every, int) else f"{len(self.every)} steps"
        routes = sorted(set(self.routes.values()))
        clamped = sum(min(ref.shape) < self.top_k for ref in self.refs)
        top_k = f"{self.top_k}" + (f" (clamped to the rank for {clamped})" if clamped else "")
        return (
            f"SpectralTracker({len(self.refs)} matrices, every={every}, top_k={top_k}, "
            f"pairs={len(self.pairs)}, route={'/'.join(routes)}, snapshots={len(self.record)})"
        )

    @property
    def record(self) -> RunRecord:
        """The run so far (with ``background=True``, once the snapshots in flight have landed)."""
        self.flush()
        return self._record

    def flush(self) -> None:
        """Wait for the snapshots in flight (``background=True``) and record them; raise the
        first error among them (the snapshots after it are dropped)."""
        try:
            self._drain(block=True)
        finally:
            self._in_flight = []

    def _check_weights(self, model: nn.Module) -> torch.device:
        """The device the tracked weights live on, after refusing what cannot be decomposed."""
        views = {ref.name: ref.view(model) for ref in self.refs}
        for name, W in views.items():
            if W.device.type == "meta":
                raise ValueError(
                    f"matrix {name!r} is on the meta device (a shape without values): materialise "
                    "the model first, e.g. model.to_empty(device='cpu') and initialise or load "
                    "its weights, then create the tracker"
                )
            if W.is_complex():
                raise ValueError(
                    f"matrix {name!r} is complex ({W.dtype}); the tracker handles real weight "
                    "matrices only: leave it out with layers=..."
                )
            if W.numel() == 0:
                raise ValueError(
                    f"matrix {name!r} is empty (shape {tuple(W.shape)}): it has no spectrum; "
                    "leave it out with layers=..."
                )
        return next(iter(views.values())).device

    def _warn_if_costly(self, device: torch.device, stacklevel: int) -> None:
        shapes = [ref.shape for ref in self.refs]
        threads = self.worker_threads if self.background else torch.get_num_threads()
        seconds, peak = snapshot_cost(shapes, self.routes, device, threads)
        if seconds < SLOW_SNAPSHOT_SECONDS and peak < LARGE_SNAPSHOT_BYTES:
            return
        if device.type == "cpu" and any(r == "full" for r in self.routes.values()):
            cheaper, _ = snapshot_cost(shapes, "gram", device, threads)
            advice = (
                f"route='gram' (all values, only the top-{self.top_k} vectors) "
                f"would take about {cheaper:.0f} s"
            )
        else:
            advice = "snapshot less often (every=...) or track fewer layers (layers=...)"
        warnings.warn(
            f"each snapshot of these {len(shapes)} matrices will take about {seconds:.0f} s and "
            f"{peak / 2**20:.0f} MiB on {device} ({threads} thread(s), estimated); {advice}",
            RuntimeWarning,
            stacklevel=stacklevel + 1,
        )

    # ---- set-up checks
    # -----------------------------------------------------------------------------
    def _name(self, name: str) -> str:
        if name in self._by_name:
            return name
        hits = [ref.name for ref in self.refs if ref.module == name]
        if len(hits) == 1:
            return hits[0]
        raise ValueError(
            f"pair member {name!r} is not a tracked matrix; tracked: {', '.join(self._by_name)}"
        )

    def _resolve_pairs(self, pairs) -> list[tuple[str, str]]:
        if pairs is None:
            return []
        if isinstance(pairs, str):
            if pairs != "infer":
                raise ValueError(
                    f"pairs must be 'infer', None or a list of (prev, next) names, got {pairs!r}"
                )
            return infer_pairs(self.refs)
        resolved = []
        for pair in pairs:
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise ValueError(f"each pair must be (prev, next), got {pair!r}")
            prev, nxt = self._name(pair[0]), self._name(pair[1])
            m_prev, n_next = self._by_name[prev].shape[0], self._by_name[nxt].shape[1]
            if m_prev != n_next:
                raise ValueError(
                    f"mismatched pair shapes: {prev!r} is {self._by_name[prev].shape} (out, in) "
                    f"and {nxt!r} is "
                    f"{self._by_name[nxt].shape}; alignment needs the next layer's input size "
                    f"({n_next}) to equal "
                    f"the previous layer's output size ({m_prev})"
                )
            resolved.append((prev, nxt))
        return resolved

    def _check_resumable(self, record: RunRecord, shapes: dict[str, tuple[int, int]]) -> None:
        theirs = {name: tuple(shape) for name, shape in record.meta["shapes"].items()}
        if theirs != shapes or record.layers != list(shapes):
            raise ValueError(
                f"cannot resume: the record tracks {theirs} but this model gives {shapes}; "
                "use the same model and layer selection as the run that wrote the record"
            )
        if record.top_k != self.top_k:
            raise ValueError(
                f"cannot resume: the record has top_k={record.top_k}, this tracker {self.top_k}"
            )
        theirs = record.meta.get("svd_routes") or dict.fromkeys(shapes, "full")
        if theirs != self.routes:
            differ = [n for n in shapes if theirs.get(n) != self.routes.get(n)]
            raise ValueError(
                f"cannot resume: the record decomposed {differ[0]!r} with route "
                f"{theirs.get(differ[0])!r}, this tracker with {self.routes[differ[0]]!r}; a "
                "record does not mix routes: pass route='auto' to continue with the record's"
            )
        self.pairs = record.pairs

    # ---- tracking
    # ----------------------------------------------------------------------------------
    def due(self, step: int) -> bool:
        if isinstance(self.every, int):
            return step % self.every == 0
        return step in self.every

    def step(self, step: int, model: nn.Module, force: bool = False, **scalars) -> bool:
        """Take a snapshot if one is due at ``step`` (or ``force``); returns whether it did.

        ``scalars`` (loss, accuracy, ...) are recorded with the snapshot.
        """
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        if not (force or self.due(int(step))):
            return False
        self.snapshot(int(step), model, **scalars)
        return True

    @torch.no_grad()
    def snapshot(self, step: int, model: nn.Module, **scalars) -> None:
        """Decompose every tracked matrix now and append the results to :attr:`record`."""
        values = {name: _scalar(name, value) for name, value in scalars.items()}
        if self.background:
            self._drain(block=False)
        if self._last_step is not None and step <= self._last_step:
            self.flush()
            raise ValueError(self._record._repeated_step_message(step))
        views = self._views(model)
        if not self.background:
            self._commit(step, self._decompose(step, views), values)
            self._last_step = step
            return
        while len(self._in_flight) >= self.max_in_flight:
            self._drain(block=True, at_most=1)  # block: each snapshot in flight holds a copy
        _check_finite(step, views)
        copies = host_copies(views)  # the views are the live weights; a GPU's come to the host
        if self._worker is None:
            self._worker = ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix="spectral-tracker",
                initializer=_start_worker,
                initargs=(self.worker_threads,),
            )
        future = self._worker.submit(self._decompose, step, copies)
        self._in_flight.append((step, values, future))
        self._last_step = step

    def _drain(self, block: bool, at_most: int | None = None) -> None:
        """Record the finished snapshots of the worker, oldest first, on the caller's thread.

        The worker only decomposes (torch releases the GIL there); the record's Python
        bookkeeping runs here, so the worker never holds the GIL for long while training waits.
        """
        done = 0
        while self._in_flight and (block or self._in_flight[0][2].done()):
            step, values, future = self._in_flight.pop(0)
            self._commit(step, future.result(), values)
            done += 1
            if at_most is not None and done >= at_most:
                return

    def _commit(self, step: int, decomposed, values: dict[str, float]) -> None:
        layers, fallbacks = decomposed
        self._record.append(step, layers, scalars=values)
        for name in fallbacks:
            self._record.meta["svd_fallbacks"][name].append(step)
        for sink in self.sinks:
            sink.push(self._record, -1)

    def _route_now(self, name: str) -> str:
        """The route for ``name`` at this snapshot: ``values+topk`` only where the previous
        spectrum predicts its check will pass (:func:`top_k_svd_likely_exact`)."""
        if self.routes[name] != "values+topk":
            return self.routes[name]
        S = self._last_spectrum.get(name)
        return "values+topk" if S is not None and top_k_svd_likely_exact(S, self.top_k) else "full"

    def _decompose(
        self, step: int, views: dict[str, torch.Tensor]
    ) -> tuple[dict[str, dict[str, np.ndarray]], list[str]]:
        """Every field of every matrix on the host, with one device-to-host copy, and the names
        of the top-k-route matrices decomposed by the full SVD at this step."""
        groups: dict[tuple, list[str]] = defaultdict(list)
        for name, W in views.items():
            groups[(tuple(W.shape), W.dtype, W.device, self._route_now(name))].append(name)
        results: list[tuple[list[str], list[torch.Tensor]]] = []
        # LAPACK's threads for the CPU routes: this thread's torch count (the gram route's small
        # matrices one), set once per snapshot; a group that wants fewer sets its own
        available = torch.get_num_threads()
        threads = {
            key: gram_threads(key[0], available) if key[3] == "gram" else available
            for key in groups
            if key[3] in ("bidiagonal", "gram")
        }
        most = max(threads.values(), default=0)
        with blas_threads(most) if threads else contextlib.nullcontext():
            for key, names in groups.items():
                own = threads.get(key, most)
                own = KEEP_THREADS if own == most else own
                results.append((names, self._decompose_group(step, views, names, *key[1:], own)))
        host_tensors = iter(to_host([t for _, tensors in results for t in tensors]))
        host: dict[str, dict[str, np.ndarray]] = {}
        spectra, rows = [], []
        fallbacks = []
        for names, tensors in results:
            S, U, Vh = next(host_tensors), next(host_tensors), next(host_tensors)
            exact = next(host_tensors) if len(tensors) == 4 else np.ones(len(names))
            for j, name in enumerate(names):
                host[name] = {"singular_values": S[j], "U": U[j], "Vh": Vh[j]}
                spectra.append(S[j])
                rows.append(name)
                if exact[j] and self.routes[name] != "full":
                    fallbacks.append(name)
        # every matrix's metrics in one vectorised pass over the spectra, zero-padded to the
        # longest (zeros add nothing to the sums): effective rank exp(-sum p log p) with
        # p = s / sum s, stable rank sum s^2 / s_1^2, ||W||_F = sqrt(sum s^2). A zero matrix has
        # neither rank: recorded as 0 (class docstring).
        width = max(len(S) for S in spectra)
        padded = np.zeros((len(spectra), width), dtype=np.float64)
        for i, S in enumerate(spectra):
            padded[i, : len(S)] = S
        finite = np.isfinite(padded).all(-1)  # a NaN or inf entry of W makes its S NaN
        if not finite.all():
            raise _diverged(step, rows[int(np.argmin(finite))])
        ranks = np.array([len(S) for S in spectra])
        total = padded.sum(-1, keepdims=True)
        p = padded / np.where(total > 0, total, 1)
        entropy = -(p * np.log(np.where(p > 0, p, 1))).sum(-1)
        zero = padded[:, 0] == 0
        squares = (padded**2).sum(-1)
        eff = np.where(zero, 0, np.exp(entropy) / ranks)
        stable = np.where(zero, 0, squares / np.where(zero, 1, padded[:, 0] ** 2))
        fro = np.sqrt(squares)
        for i, name in enumerate(rows):
            dtype = spectra[i].dtype.type
            self._last_spectrum[name] = spectra[i]
            host[name].update(
                fro_norm=dtype(fro[i]), norm_eff_rank=dtype(eff[i]), stable_rank=dtype(stable[i])
            )
        if self.keep_weights:
            for name, W in views.items():  # never alias the live weights
                host[name]["weights"] = W.to(device="cpu", dtype=torch.float32, copy=True).numpy()
        return {n: host[n] for n in self._by_name}, fallbacks

    def _decompose_group(
        self, step: int, views: dict, names: list[str], dtype, device, route: str, threads
    ) -> list:
        """``[S, U_k, Vh_k]`` (and ``exact`` for a top-k route) of the matrices ``names``, of one
        shape, dtype, device and route, in one batched call."""
        compute = torch.float64 if dtype == torch.float64 else torch.float32
        # (B, m, n); a lone matrix is viewed, not copied (the decompositions only read it)
        A = torch.stack([views[n] for n in names]) if len(names) > 1 else views[names[0]][None]
        if A.dtype != compute:
            A = A.to(compute)
        k = min(self.top_k, *A.shape[-2:])
        try:
            if route == "full":
                U, S, Vh = _svd_checked(A)
                return [S, U[..., :k], Vh[..., :k, :]]
            if route in ("bidiagonal", "gram"):  # threads: as _decompose chose them
                top_k_route = top_k_svd_gram if route == "gram" else top_k_svd_bidiagonal
                U, S, Vh, exact = top_k_route(A, k, threads=threads, as_numpy=True)
                return [S, U, Vh, exact]  # numpy: on the host already
            U, S, Vh, exact = top_k_svd(A, k)
            return [S, U, Vh, exact.to(S.dtype)]
        except (torch.linalg.LinAlgError, RuntimeError):
            # a NaN or inf entry can make LAPACK fail instead of returning NaN
            finite = torch.isfinite(A).flatten(1).all(1).tolist()
            for name, ok in zip(names, finite):
                if not ok:
                    raise _diverged(step, name) from None
            raise

    def _views(self, model: nn.Module) -> dict[str, torch.Tensor]:
        views = {}
        for ref in self.refs:
            try:
                W = ref.view(model)
            except AttributeError as err:
                raise ValueError(
                    f"the model passed to step() has no matrix {ref.name!r}: pass the tracked model"
                ) from err
            if tuple(W.shape) != ref.shape:
                raise ValueError(
                    f"matrix {ref.name!r} changed shape from {ref.shape} to {tuple(W.shape)}"
                )
            views[ref.name] = W.detach()
        return views

    def save(self, path) -> None:
        """Save the record so far atomically (see :meth:`RunRecord.save`)."""
        self.record.save(path)

    # ---- sinks and training frameworks
    # ---------------------------------------------------------------
    def add_sink(self, sink) -> "SpectralTracker":
        """Send every later snapshot to ``sink`` too (a :class:`spectral_lab.integrations.Sink`)."""
        if not (callable(getattr(sink, "push", None)) and callable(getattr(sink, "finish", None))):
            raise TypeError(
                "a sink needs push(record, index) and finish(record) methods, got "
                f"{type(sink).__name__}; "
                "see spectral_lab.integrations.sinks"
            )
        self.sinks.append(sink)
        return self

    def close(self) -> None:
        """End of training: save the record to :attr:`path` (if given), send figures to the sinks
        and close them."""
        self.flush()
        if self._worker is not None:
            self._worker.shutdown()
            self._worker = None
        if self.path is not None and len(self.record):
            self.record.save(self.path)
        for sink in self.sinks:
            sink.finish(self.record)
