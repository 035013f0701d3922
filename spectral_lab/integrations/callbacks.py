"""A PyTorch Lightning callback and a Hugging Face ``TrainerCallback`` that drive a
:class:`SpectralTracker`.

Build them from the tracker, so that nothing is imported until asked for::

    tracker = SpectralTracker(model, every=100, path="runs/spectra.npz")
    trainer = lightning.Trainer(callbacks=[lightning_callback(tracker)])
    trainer = transformers.Trainer(model, args, callbacks=[hf_callback(tracker)])

What both guarantee:

* **Steps are optimizer steps.** The step of a snapshot is the framework's own
  counter of optimizer steps taken (Lightning's ``trainer.global_step``, HF's
  ``state.global_step``), so with gradient accumulation the tracker sees each
  optimizer step once, not once per micro-batch. Step 0 holds the weights when
  training starts; step ``s`` the weights after ``s`` updates. A step already in
  the record (a resumed run) is never taken twice.
* **Rank 0 records.** In a multi-process run only global rank 0 decomposes and
  logs; the other ranks take part only in gathering sharded weights.
* **Sharded weights are gathered or refused.** FSDP (``FullyShardedDataParallel``)
  is gathered with ``summon_full_params`` and DeepSpeed ZeRO-3 with
  ``deepspeed.zero.GatheredParameters`` (both collective: every rank calls the
  callback at the same steps). Weights that are split in ways these do not cover
  (DTensors of FSDP2 ``fully_shard`` or tensor parallelism, empty local shards)
  stop the tracking with one warning that says why and what to do; training goes on.
* **Scalars come along**: the metrics the model logged (``self.log`` in Lightning,
  the Trainer's ``loss`` / ``grad_norm`` / ``learning_rate`` in HF).
* **At the end of training** rank 0 calls ``tracker.close()``: the record is
  saved (atomically) when the tracker was given a ``path``, and sinks get their
  figures and are closed.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from collections.abc import Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from ..views import MatrixRef, matrix_view
from . import require

if TYPE_CHECKING:
    from ..tracker import SpectralTracker

__all__ = [
    "lightning_callback",
    "hf_callback",
    "ShardedWeightsError",
    "full_weights",
    "find_sharding",
]


class ShardedWeightsError(RuntimeError):
    """The tracked matrices are not whole on this rank and cannot be gathered here."""


# ---- sharded weights
# ----------------------------------------------------------------------------------


def _parameter(model: nn.Module, ref: MatrixRef) -> tuple[nn.Module, torch.Tensor]:
    module = model.get_submodule(ref.module) if ref.module else model
    return module, getattr(module, ref.param)


def _is_dtensor(param: torch.Tensor) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch built without distributed
        return False
    return isinstance(param, DTensor)


def _fsdp_class():
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # pragma: no cover - torch built without distributed
        return None
    return FullyShardedDataParallel


def find_sharding(model: nn.Module, refs: list[MatrixRef]) -> tuple[str | None, dict[str, str]]:
    """How the tracked matrices are split across ranks: ``(kind, {matrix: what is wrong with it})``.

    ``kind`` is ``None`` (every matrix whole here), ``"fsdp"`` (the model holds
    ``FullyShardedDataParallel`` modules), ``"deepspeed"`` (parameters with a
    ``ds_numel`` attribute: ZeRO-3 partitions), ``"dtensor"`` or ``"local"``
    (a local tensor whose shape is not the tracked matrix's, e.g. an empty shard).
    """
    FSDP = _fsdp_class()
    if FSDP is not None and any(isinstance(m, FSDP) for m in model.modules()):
        return "fsdp", {}
    found: dict[str, dict[str, str]] = {"deepspeed": {}, "dtensor": {}, "local": {}}
    for ref in refs:
        try:
            module, param = _parameter(model, ref)
        except AttributeError:  # not this model's matrix: the tracker says so when it reads it
            continue
        if hasattr(param, "ds_numel"):
            found["deepspeed"][ref.name] = (
                f"a DeepSpeed ZeRO-3 partition (ds_numel={param.ds_numel}, "
                f"local shape {tuple(param.shape)})"
            )
        elif _is_dtensor(param):
            found["dtensor"][ref.name] = (
                f"a DTensor with placements {tuple(getattr(param, 'placements', ()))}"
            )
        else:
            W = matrix_view(ref.param, param, module) if param.numel() else None
            if W is None or tuple(W.shape) != ref.shape:
                found["local"][ref.name] = (
                    f"local shape {tuple(param.shape)}, expected the matrix {ref.shape}"
                )
    for kind, names in found.items():
        if names:
            return kind, names
    return None, {}


def _refusal(kind: str, names: dict[str, str]) -> str:
    listed = "; ".join(f"{name!r} is {why}" for name, why in list(names.items())[:3])
    more = f" (and {len(names) - 3} more)" if len(names) > 3 else ""
    if kind == "deepspeed":
        return (
            f"the tracked matrices are sharded by DeepSpeed ZeRO-3 ({listed}{more}), and "
            "deepspeed cannot be "
            "imported to gather them. Install deepspeed in this environment, or train with ZeRO "
            "stage 1 or 2, "
            "which keep whole weights on every rank."
        )
    if kind == "dtensor":
        return (
            f"the tracked matrices are DTensors sharded across ranks ({listed}{more}): FSDP2's "
            "fully_shard or "
            "tensor parallelism. No rank holds a whole matrix and spectral_lab does not gather "
            "DTensors during "
            "training. Train with FullyShardedDataParallel (FSDP1), which the callbacks gather "
            "with "
            "summon_full_params, or save full state dicts (torch.distributed.checkpoint.state_dict."
            "get_model_state_dict with StateDictOptions(full_state_dict=True)) and call "
            "tracker.step on an "
            "unsharded copy of the model loaded from them."
        )
    return (
        f"the tracked matrices are not whole on this rank ({listed}{more}): their parameters are "
        "split by a "
        "sharding scheme spectral_lab does not know. Build the tracker on the unsharded model, "
        "and train with "
        "FullyShardedDataParallel or DeepSpeed ZeRO-3 (gathered by the callbacks), or with a "
        "strategy that "
        "keeps whole weights on every rank (DDP, ZeRO 1 or 2)."
    )


@contextmanager
def full_weights(model: nn.Module, refs: list[MatrixRef], rank0_only: bool = True):
    """Inside the block, the tracked matrices of ``model`` are whole (on rank 0 at least).

    Collective for sharded models: every rank must enter it at the same time.
    Raises :class:`ShardedWeightsError` (on every rank) when the weights are
    split in a way it cannot gather; the message says why and what to do.
    """
    kind, names = find_sharding(model, refs)
    if kind is None:
        yield
    elif kind == "fsdp":
        with _fsdp_class().summon_full_params(model, writeback=False, rank0_only=rank0_only):
            yield
    elif kind == "deepspeed":
        try:
            deepspeed = importlib.import_module("deepspeed")
        except ImportError:
            raise ShardedWeightsError(_refusal(kind, names)) from None
        params = [_parameter(model, ref)[1] for ref in refs]
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            yield
    else:
        raise ShardedWeightsError(_refusal(kind, names))


# ---- the part both callbacks share
# ------------------------------------------------------------------


def _numbers(values: Mapping | None) -> dict[str, float]:
    """The entries of ``values`` that are plain numbers or one-element tensors, as floats."""
    out = {}
    for name, value in (values or {}).items():
        if isinstance(value, torch.Tensor):
            if value.numel() == 1:
                out[str(name)] = float(value.detach().float().item())
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[str(name)] = float(value)
    return out


_RESERVED = ("step", "model", "force")  # argument names of tracker.step, not scalars


class _Snapshots:
    """Once per optimizer step that is due, on every rank: gather if needed, record on rank 0."""

    def __init__(self, tracker: "SpectralTracker"):
        self.tracker = tracker
        self.last = int(tracker.record.steps[-1]) if len(tracker.record) else -1
        self.refused: str | None = None  # why tracking stopped, once it has

    def wants(self, step: int) -> bool:
        return step > self.last and self.tracker.due(step)

    def take(
        self,
        step: int,
        model: nn.Module,
        is_zero: bool,
        scalars: Callable[[], dict[str, float]] = dict,
    ) -> bool:
        """Snapshot at ``step`` if due and new; returns whether this rank recorded one."""
        step = int(step)
        if not self.wants(step) or self.refused is not None:
            return False
        self.last = step
        try:
            with full_weights(model, self.tracker.refs):
                if is_zero:
                    values = {k: v for k, v in scalars().items() if k not in _RESERVED}
                    self.tracker.step(step, model, force=True, **values)
        except ShardedWeightsError as err:
            self.refused = str(err)
            if is_zero:
                warnings.warn(
                    f"spectral_lab stops tracking at step {step}: {err}",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return False
        return is_zero


# ---- PyTorch Lightning
# ------------------------------------------------------------------------------


def _lightning():
    try:
        return importlib.import_module("lightning.pytorch")
    except ImportError:
        pass
    try:  # the standalone package, same API
        return importlib.import_module("pytorch_lightning")
    except ImportError:
        return require("lightning.pytorch", "lightning", "lightning_callback(tracker)")


class _LightningHooks:
    """Snapshots of ``tracker`` at Lightning's optimizer steps (``trainer.global_step``); see the
    module docstring.

    Built by :func:`lightning_callback`. Scalars: ``trainer.callback_metrics``
    (what the module logged with ``self.log``) and the step's ``loss``.
    """

    def __init__(self, tracker: "SpectralTracker"):
        self.tracker = tracker
        self.snapshots = _Snapshots(tracker)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.tracker!r})"

    def _take(self, trainer, pl_module, outputs=None) -> None:
        def scalars() -> dict[str, float]:
            values = _numbers(trainer.callback_metrics)
            if "loss" not in values and isinstance(outputs, Mapping) and "loss" in outputs:
                # Lightning divides the loss by accumulate_grad_batches before backward: undo it
                values.update(_numbers({"loss": outputs["loss"] * trainer.accumulate_grad_batches}))
            return values

        self.snapshots.take(trainer.global_step, pl_module, trainer.is_global_zero, scalars)

    def on_train_start(self, trainer, pl_module) -> None:
        self._take(trainer, pl_module)  # the weights before the first update

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # fires after every micro-batch; global_step moves only when the optimizer steps
        self._take(trainer, pl_module, outputs)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.tracker.close()


@functools.cache
def _lightning_class() -> type:
    pl = _lightning()
    return type(
        "SpectralLightningCallback",
        (_LightningHooks, pl.Callback),
        {
            "__module__": __name__,
            "__qualname__": "SpectralLightningCallback",
            "__doc__": _LightningHooks.__doc__,
        },
    )


def lightning_callback(tracker: "SpectralTracker"):
    """A ``lightning.pytorch.Callback`` that drives ``tracker`` (needs the extra ``lightning``)."""
    return _lightning_class()(tracker)


# ---- Hugging Face Trainer
# ---------------------------------------------------------------------------


class _HFHooks:
    """Snapshots of ``tracker`` at the HF Trainer's optimizer steps (``state.global_step``); see the
    module docstring.

    Built by :func:`hf_callback`. With ``log_at_snapshots`` (the
    default) the callback asks the Trainer to log at every snapshot step and takes
    the snapshot when the log arrives, so the record gets the Trainer's ``loss``,
    ``grad_norm`` and ``learning_rate`` at the same step (the Trainer's logged loss
    is then averaged since the previous log, snapshot steps included). Without it,
    snapshots carry no scalars.
    """

    def __init__(self, tracker: "SpectralTracker", log_at_snapshots: bool = True):
        self.tracker = tracker
        self.log_at_snapshots = bool(log_at_snapshots)
        self.snapshots = _Snapshots(tracker)
        self._pending: int | None = None  # a due step waiting for the Trainer's log

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.tracker!r}, log_at_snapshots={self.log_at_snapshots})"

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.snapshots.take(state.global_step, model, state.is_world_process_zero)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        self._pending = None  # a step whose log never came: its weights are gone
        if self.snapshots.wants(step):
            if self.log_at_snapshots:
                control.should_log = (
                    True  # same decision on every rank: the Trainer's log is collective
                )
                self._pending = step
            else:
                self.snapshots.take(step, model, state.is_world_process_zero)
        return control

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        if self._pending is not None and self._pending == state.global_step:
            self._pending = None
            self.snapshots.take(
                state.global_step, model, state.is_world_process_zero, lambda: _numbers(logs)
            )

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self._pending is not None:
            self._pending = None
            self.snapshots.take(state.global_step, model, state.is_world_process_zero)
        if state.is_world_process_zero:
            self.tracker.close()


@functools.cache
def _hf_class() -> type:
    transformers = require("transformers", "hf", "hf_callback(tracker)")
    return type(
        "SpectralHFCallback",
        (_HFHooks, transformers.TrainerCallback),
        {"__module__": __name__, "__qualname__": "SpectralHFCallback", "__doc__": _HFHooks.__doc__},
    )


def hf_callback(tracker: "SpectralTracker", log_at_snapshots: bool = True):
    """A ``transformers.TrainerCallback`` that drives ``tracker`` (needs the extra ``hf``)."""
    return _hf_class()(tracker, log_at_snapshots=log_at_snapshots)


def __getattr__(name: str) -> Any:
    # the classes exist once their framework is imported; this also lets pickle find them
    if name == "SpectralLightningCallback":
        return _lightning_class()
    if name == "SpectralHFCallback":
        return _hf_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
