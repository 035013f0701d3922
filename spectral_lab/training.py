"""The one training loop behind the command line, the sweeps and the chapters.

The grokking chapter writes this loop out once (forward, loss, backward, step,
track); afterwards it, the weight-decay sweep and ``python -m spectral_lab run``
all call :func:`train`. Full batch, AdamW, the tracker attached from outside.
Step ``s`` names the weights after ``s`` optimizer updates: step 0 is the
initialisation, step ``config.steps`` the end, and both are always recorded.

A run given an ``out`` path writes its record there and a checkpoint beside it
(model, optimizer, step, RNG state) every ``checkpoint_every`` steps and at the
end, each file atomically. ``resume=True`` continues from the checkpoint; on the
CPU the result is identical to a run that was never interrupted.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .data import ModularData
from .files import atomic_write
from .pruning import svd_prune
from .record import RunRecord
from .runtime import get_device, seed_everything
from .tracker import SpectralTracker

__all__ = [
    "TrainResult",
    "train",
    "evaluate",
    "loss_and_accuracy",
    "pruned_losses",
    "checkpoint_path",
    "load_or_train",
    "HISTORY_FIELDS",
    "plain_config",
    "progress_bar",
]

# : What :func:`evaluate` measures every ``eval_every`` steps (and the record keeps under
# ``meta["history"]``).
HISTORY_FIELDS = ("step", "train_loss", "train_acc", "val_loss", "val_acc")


@dataclass
class TrainResult:
    """What :func:`train` returns: the run ``record``, the trained ``model`` and the evaluation
    ``history``.

    ``history`` maps each of :data:`HISTORY_FIELDS` to an array over the
    evaluation steps (every ``eval_every``), finer than the record's snapshots.
    """

    record: RunRecord
    model: nn.Module
    history: dict[str, np.ndarray]

    def __repr__(self) -> str:
        h = self.history
        last = (
            f"step {int(h['step'][-1])}: train acc {h['train_acc'][-1]:.3f}, val acc "
            f"{h['val_acc'][-1]:.3f}"
            if len(h["step"])
            else "no evaluation yet"
        )
        return f"TrainResult({last}; {type(self.model).__name__}; {self.record!r})"


@torch.no_grad()
def loss_and_accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 4096
) -> tuple[float, float]:
    """Mean cross-entropy and fraction correct of ``model`` on ``(x, y)``, in chunks of ``chunk``
    examples
    (so that a large test set never needs all its logits in memory at once)."""
    total_loss, correct = 0.0, 0
    for start in range(0, len(y), chunk):
        logits = model(x[start : start + chunk])  # (n, classes)
        total_loss += float(F.cross_entropy(logits, y[start : start + chunk], reduction="sum"))
        correct += int((logits.argmax(dim=-1) == y[start : start + chunk]).sum())
    return total_loss / len(y), correct / len(y)


def evaluate(model: nn.Module, data: ModularData) -> dict[str, float]:
    """Full-batch ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc`` (cross-entropy, fraction
    correct)."""
    train_loss, train_acc = loss_and_accuracy(model, data.train_x, data.train_y)
    val_loss, val_acc = loss_and_accuracy(model, data.test_x, data.test_y)
    return {
        "train_loss": train_loss,
        "train_acc": train_acc,
        "val_loss": val_loss,
        "val_acc": val_acc,
    }


def pruned_losses(model: nn.Module, data: ModularData, fraction: float = 0.5) -> dict[str, float]:
    """Validation loss and accuracy of the SVD-pruned model, keeping the top or the bottom of each
    matrix.

    Returns ``val_loss_svd_top``, ``val_acc_svd_top``, ``val_loss_svd_bottom``,
    ``val_acc_svd_bottom`` (see :func:`~spectral_lab.pruning.svd_prune`; the last
    layer is not pruned).
    """
    out = {}
    for keep in ("top", "bottom"):
        loss, acc = loss_and_accuracy(svd_prune(model, keep, fraction), data.test_x, data.test_y)
        out[f"val_loss_svd_{keep}"], out[f"val_acc_svd_{keep}"] = loss, acc
    return out


# ---- files
# ------------------------------------------------------------------------------------------
def checkpoint_path(out: str | os.PathLike) -> Path:
    """Where the checkpoint of the run recorded at ``out`` lives: ``runs/grok.npz`` ->
    ``runs/grok.ckpt.pt``."""
    return Path(out).with_suffix(".ckpt.pt")


def _save_checkpoint(
    path: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer
) -> None:
    state = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    atomic_write(
        path, lambda handle: torch.save(state, handle)
    )  # an interrupted save leaves the old one whole


def _save(
    out: Path, record: RunRecord, history: dict[str, list], step: int, model, optimizer
) -> None:
    """Record first, then checkpoint: a record is never older than the checkpoint beside it."""
    record.meta["history"] = history
    record.save(out)
    _save_checkpoint(checkpoint_path(out), step, model, optimizer)


def plain_config(config) -> dict:
    """``asdict(config)`` as plain JSON types (tuples become lists): what a run record stores."""
    return json.loads(json.dumps(asdict(config)))


def _last_due(tracker: SpectralTracker, step: int) -> int | None:
    if isinstance(tracker.every, int):
        return step - step % tracker.every
    due = [s for s in tracker.every if s <= step]
    return max(due) if due else None


def _resume(config, out: Path, model: nn.Module, optimizer, device) -> tuple[RunRecord, dict, int]:
    ckpt = checkpoint_path(out)
    missing = [str(p) for p in (out, ckpt) if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"cannot resume: {' and '.join(missing)} not found; a resumable run leaves both the "
            "record and "
            f"{ckpt.name} beside it. Start the run without resume (or --resume) instead"
        )
    record = RunRecord.load(out)
    differences = config.differences(record.config, ignore=("device",))
    if differences:
        listed = "; ".join(
            f"{k}: this run {a!r}, the record {b!r}" for k, (a, b) in differences.items()
        )
        raise ValueError(
            f"cannot resume {out}: it was made with a different config ({listed}); "
            "resume with the same preset and overrides, or choose another output path"
        )
    state = torch.load(ckpt, map_location=device, weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    step = int(state["step"])
    record.truncate(step)
    saved = record.meta.get("history") or {k: [] for k in HISTORY_FIELDS}
    keep = sum(1 for s in saved["step"] if s <= step)
    history = {k: list(saved[k][:keep]) for k in HISTORY_FIELDS}
    return record, history, step


# ---- the loop
# ---------------------------------------------------------------------------------------
def progress_bar(progress: bool | None, total: int, initial: int, desc: str) -> tqdm:
    """The progress bar of every training loop: ``progress=None`` shows it only on a terminal, never
    under CI."""
    if progress is None:  # quiet under CI and when stderr is not a terminal (tqdm's disable=None)
        disable = True if os.environ.get("CI") else None
    else:
        disable = not progress
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        disable=disable,
        dynamic_ncols=True,
        mininterval=0.5,
    )


def train(
    config,
    model: nn.Module | None = None,
    data: ModularData | None = None,
    tracker: SpectralTracker | None = None,
    *,
    progress: bool | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train ``model`` on ``data`` as ``config`` says, tracking spectra; returns a
    :class:`TrainResult`.

    ``config`` is a :class:`~spectral_lab.experiments.GrokkingConfig` (anything
    with its fields and ``make_model`` / ``make_data`` / ``make_optimizer``).
    ``model``, ``data`` and ``tracker`` default to the config's; a tracker of
    your own keeps its cadence and layer selection. At every snapshot the
    record gets the losses and accuracies of :func:`evaluate` and of the
    SVD-pruned models (:func:`pruned_losses`). ``progress``: ``None`` shows a
    bar only on a terminal and never under ``CI``; ``True`` / ``False`` force it.
    ``out``: save the record there and a checkpoint beside it
    (:func:`checkpoint_path`); ``resume=True`` continues from those files.
    """
    device = get_device(config.device)
    if model is None:
        seed_everything(config.seed)
        model = config.make_model()
    model.to(device)
    data = (config.make_data() if data is None else data).to(device)
    optimizer = config.make_optimizer(model)
    out = None if out is None else Path(out)
    start = 0
    if resume:
        if out is None or tracker is not None:
            raise ValueError(
                "resume=True needs out= (the record to continue) and no tracker of your own"
            )
        record, history, start = _resume(config, out, model, optimizer, device)
        tracker = SpectralTracker(
            model, every=config.track_every, top_k=config.top_k, record=record
        )
        expected = start if start == config.steps else _last_due(tracker, start)
        if len(record) == 0 or record.steps[-1] != expected:
            raise ValueError(
                f"cannot resume {out}: the record ends at step {record.steps[-1:]} but the "
                "checkpoint "
                f"is at step {start}; the two files are from different runs"
            )
    else:
        if tracker is None:
            pairs = model.layer_pairs() if hasattr(model, "layer_pairs") else "infer"
            tracker = SpectralTracker(
                model,
                every=config.track_every,
                top_k=config.top_k,
                pairs=pairs,
                config=config,
                seed=config.seed,
            )
        history = {k: [] for k in HISTORY_FIELDS}
    record = tracker.record
    record.meta.update(
        experiment=getattr(config, "experiment", ""),
        preset=getattr(config, "preset", "custom"),
        device=str(device),
    )
    if not record.meta["config"]:
        record.meta["config"] = plain_config(config)

    def observe(step: int) -> None:
        final = step == config.steps
        scalars = None
        if step % config.eval_every == 0 or final:
            scalars = evaluate(model, data)
            for k in HISTORY_FIELDS:
                history[k].append(step if k == "step" else scalars[k])
            bar.set_postfix(
                loss=f"{scalars['train_loss']:.3g}",
                val_acc=f"{scalars['val_acc']:.3f}",
                refresh=False,
            )
        if tracker.due(step) or final:
            scalars = dict(
                scalars or evaluate(model, data),
                **pruned_losses(model, data, config.prune_fraction),
            )
            tracker.step(step, model, force=True, **scalars)
        if out is not None and step > start and (step % config.checkpoint_every == 0 or final):
            _save(out, record, history, step, model, optimizer)

    bar = progress_bar(progress, config.steps, start, desc=f"{getattr(config, 'preset', 'run')}")
    try:
        if start == 0:
            observe(0)
        for step in range(start, config.steps):
            loss = F.cross_entropy(model(data.train_x), data.train_y)  # full batch
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update(1)
            observe(step + 1)
    finally:
        bar.close()
    tracker.flush()  # a tracker of your own may decompose in the background
    record.meta["history"] = history
    return TrainResult(
        record,
        model,
        {
            k: np.asarray(v, dtype=np.int64 if k == "step" else np.float64)
            for k, v in history.items()
        },
    )


def _matches(record: RunRecord, config) -> dict:
    if record.meta.get("experiment") != getattr(config, "experiment", None):
        return {"experiment": (config.experiment, record.meta.get("experiment"))}
    return config.differences(record.config)


def load_or_train(
    config, path: str | os.PathLike, fallback=None, progress: bool | None = None
) -> RunRecord:
    """The record at ``path`` if it holds a finished run of ``config``; otherwise a run trained now.

    A record matches when its experiment, preset and every training setting
    equal ``config``'s (where and how often it was observed may differ: see
    :data:`~spectral_lab.experiments.OBSERVATION_FIELDS`), so a quick record is
    never shown as a full one. Without a match, ``fallback`` (default:
    ``config``) is trained in place. A run of ``config`` itself is saved to
    ``path`` when nothing is there yet; a fallback run and an occupied
    ``path`` are never written, so a paper-scale record is never overwritten.
    """
    path = Path(path)
    if path.exists():
        record = RunRecord.load(path)
        differences = _matches(record, config)
        finished = len(record) and int(record.steps[-1]) == config.steps
        if not differences and finished:
            return record
        why = (
            f"differs in {', '.join(differences)}"
            if differences
            else f"is unfinished (step {int(record.steps[-1]) if len(record) else 0} of "
            f"{config.steps})"
        )
        chosen = fallback if fallback is not None else config
        print(
            f"{path} {why} from the {config.preset!r} preset; training {chosen.preset!r} here "
            "instead "
            f"(the file is left as it is)"
        )
        return train(chosen, progress=progress).record
    if fallback is not None:
        return train(fallback, progress=progress).record
    return train(config, progress=progress, out=path).record
