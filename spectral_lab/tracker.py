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
"""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from .record import RunRecord
from .spectra import (
    _svd_checked,
    agreement_from_vectors,
    alignment_from_vectors,
    effective_rank_from_spectrum,
    stable_rank_from_spectrum,
)
from .views import LayerSelector, MatrixRef, find_matrices

__all__ = ["SpectralTracker", "infer_pairs"]


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


def _check_finite(step: int, views: dict[str, torch.Tensor]) -> None:
    """Refuse a snapshot of diverged weights, naming the first bad matrix (one device sync per
    device)."""
    by_device: dict[torch.device, list[str]] = defaultdict(list)
    for name, W in views.items():
        by_device[W.device].append(name)
    for names in by_device.values():
        finite = torch.stack([torch.isfinite(views[n]).all() for n in names]).tolist()
        if not all(finite):
            bad = [n for n, ok in zip(names, finite) if not ok]
            raise ValueError(
                f"at step {step}, matrix {bad[0]!r} contains NaN or infinite entries: training "
                "has diverged "
                "(lower the learning rate or add gradient clipping); the record so far is kept"
            )


class SpectralTracker:
    """Snapshots of the spectra of ``model``'s weight matrices every ``every`` steps.

    Args:
        model: the network; its matrices are found with :func:`find_matrices`.
        every: snapshot when ``step % every == 0``, or a collection of steps.
        top_k: how many leading singular vectors to keep per matrix (alignment
            and agreement are computed on these).
        layers: ``None`` (all), a glob, a list of names, or ``f(name, param)``.
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
        background: decompose on a worker thread while training goes on. The
            weights are copied (and checked for NaN) at the step itself; the SVDs
            run on the copies, so the record is the same as without it. Worth it
            on a CPU with a core to spare, where it hides most of a snapshot's
            cost. :attr:`record` (and :meth:`save`, :meth:`flush`, :meth:`close`)
            waits for the snapshots in flight; an error in one is raised there
            or at the next snapshot. Sinks are then called from the worker thread.
            On a CPU it needs a core that training leaves free: with torch using
            every core, the two threads' thread pools fight over them (measured
            3.4x slower training on 2 cores), and the tracker warns.

    Matrices of equal shape, dtype and device are decomposed in one batched
    ``torch.linalg.svd`` call on the device they live on.
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
    ):
        self.every = _check_every(every)
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        self.top_k = int(top_k)
        self.keep_weights = bool(keep_weights)
        self.refs = find_matrices(model, layers)
        self._by_name = {ref.name: ref for ref in self.refs}
        self.pairs = self._resolve_pairs(pairs)
        device = next(model.parameters()).device
        shapes = {ref.name: ref.shape for ref in self.refs}
        if record is None:
            record = RunRecord(
                shapes, self.top_k, self.pairs, config=config, seed=seed, device=str(device)
            )
        else:
            self._check_resumable(record, shapes)
        self._record = record
        self.background = bool(background)
        if (
            self.background
            and device.type == "cpu"
            and torch.get_num_threads() >= (os.cpu_count() or 1)
        ):
            warnings.warn(
                f"background=True on a CPU where torch uses all {torch.get_num_threads()} cores: "
                "the tracker's thread "
                "would compete with training for them and slow it down. Leave a core free "
                f"(torch.set_num_threads({max(1, torch.get_num_threads() - 1)})) or use "
                "background=False.",
                RuntimeWarning,
                stacklevel=2,
            )
        self._worker: ThreadPoolExecutor | None = None
        self._in_flight: list[Future] = []
        self._first: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.sinks: list = []
        for sink in sinks:
            self.add_sink(sink)
        self.path = Path(path) if path is not None else None

    def __repr__(self) -> str:
        every = self.every if isinstance(self.every, int) else f"{len(self.every)} steps"
        return (
            f"SpectralTracker({len(self.refs)} matrices, every={every}, top_k={self.top_k}, "
            f"pairs={len(self.pairs)}, snapshots={len(self.record)})"
        )

    @property
    def record(self) -> RunRecord:
        """The run so far (with ``background=True``, once the snapshots in flight have landed)."""
        self.flush()
        return self._record

    def flush(self) -> None:
        """Wait for the snapshots in flight (``background=True``); raise the first error among
        them."""
        in_flight, self._in_flight = self._in_flight, []
        for future in in_flight:
            future.result()

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
        views = self._views(model)
        _check_finite(step, views)
        if not self.background:
            self._append_snapshot(step, views, values)
            return
        self._in_flight = [f for f in self._in_flight if not f.done() or f.exception() is not None]
        if any(f.done() for f in self._in_flight):
            # an earlier snapshot failed: raise its error now, at a step of the caller's
            self.flush()
        copies = {name: W.clone() for name, W in views.items()}  # the views are the live weights
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spectral-tracker")
        self._in_flight.append(self._worker.submit(self._append_snapshot, step, copies, values))

    def _append_snapshot(
        self, step: int, views: dict[str, torch.Tensor], values: dict[str, float]
    ) -> None:
        groups: dict[tuple, list[str]] = defaultdict(list)
        for name, W in views.items():
            groups[(tuple(W.shape), W.dtype, W.device)].append(name)
        on_device: dict[str, dict[str, torch.Tensor]] = {}
        for (_, dtype, _), names in groups.items():
            compute = torch.float64 if dtype == torch.float64 else torch.float32
            A = torch.stack([views[n] for n in names]).to(compute)  # (B, m, n)
            U, S, Vh = _svd_checked(A)
            R = S.shape[-1]
            k = min(self.top_k, R)
            stats = {
                "singular_values": S,
                # contiguous: matmuls on strided views round differently, and a resumed
                # run (vectors reloaded from disk) must reproduce an uninterrupted one
                "U": U[..., :, :k].contiguous(),
                "Vh": Vh[..., :k, :].contiguous(),
                "fro_norm": S.square().sum(-1).sqrt(),  # ||W||_F^2 = sum s^2
                "norm_eff_rank": effective_rank_from_spectrum(S) / R,
                "stable_rank": stable_rank_from_spectrum(S),
            }
            for i, name in enumerate(names):
                on_device[name] = {field: value[i] for field, value in stats.items()}
        for name, fields in on_device.items():
            if name not in self._first:
                self._first[name] = self._first_vectors(name, fields)
            U0, Vh0 = self._first[name]
            fields["agreement_first"] = agreement_from_vectors(fields["U"], fields["Vh"], U0, Vh0)
            if self.keep_weights:
                fields["weights"] = views[name].to(
                    dtype=torch.float32, copy=True
                )  # never alias the live weights
        alignments = []
        for prev, nxt in self.pairs:
            U_prev, Vh_next = on_device[prev]["U"], on_device[nxt]["Vh"]
            k = min(U_prev.shape[-1], Vh_next.shape[-2])
            alignments.append(alignment_from_vectors(U_prev[:, :k].to(Vh_next.dtype), Vh_next[:k]))
        layers = {
            name: {f: v.cpu().numpy() for f, v in fields.items()}
            for name, fields in on_device.items()
        }
        self._record.append(
            step,
            {n: layers[n] for n in self._by_name},
            [a.cpu().numpy() for a in alignments],
            values,
        )
        for sink in self.sinks:
            sink.push(self._record, -1)

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

    def _first_vectors(
        self, name: str, fields: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if len(self._record):  # resuming: the first snapshot is in the record
            U0 = torch.as_tensor(self._record.series(name, "U")[0])
            Vh0 = torch.as_tensor(self._record.series(name, "Vh")[0])
            return U0.to(fields["U"]), Vh0.to(fields["Vh"])
        return fields["U"].clone(), fields["Vh"].clone()

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
