"""Records from checkpoints: the book's figures for a run nobody tracked, or for a finished model.

:func:`analyze` turns a folder (or glob) of checkpoints, or a live ``nn.Module``, into a
:class:`RunRecord`, with the tracker's own code path: every checkpoint becomes a module holding
its tensors under their state-dict names (or is loaded into the model you pass), and
:class:`SpectralTracker` takes the snapshot. So the layers, views, pairs and metrics are exactly
the tracker's, and a record made from checkpoints equals the one online tracking would have made
at those steps. ::

    record = analyze("runs/ckpts/", out="runs/ckpts.npz")    # or "runs/ckpts/step_*.pt"
    python -m spectral_lab analyze runs/ckpts --out runs/ckpts.npz

What counts as a checkpoint: a torch ``state_dict`` file (``.pt``, ``.pth``, ``.bin``, also inside
a dict under ``state_dict`` / ``model_state_dict`` / ``model``), a ``.safetensors`` file, a Hugging
Face ``save_pretrained`` folder (safetensors or ``pytorch_model.bin``, sharded or not, e.g. the
Trainer's ``checkpoint-500/``) and a Lightning ``.ckpt`` (its ``state_dict``). Pickles are read with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers; a
pickled whole model needs ``unsafe_allow_pickle=True``, because loading it runs code from the file.

Checkpoints are ordered by the step in their names (``step_300.pt``, ``epoch=2-step=300.ckpt``,
``checkpoint-300``: the number after "step", else the last number), or else in their metadata
(Lightning's ``global_step``, a ``step`` entry, the Trainer's ``trainer_state.json``). One is in
memory at a time. With ``out``, the run is resumable: steps already in the record are skipped. A
checkpoint that cannot be read stops the run, the record so far saved, unless ``skip_bad``.

Without the model, the matrices are found from the tensors alone: floating-point tensors with 2 or
more dimensions, named like the tracker names them, a convolution kernel flattened as
:func:`~spectral_lab.views.matrix_view` does. What needs the model's classes: transposed
convolutions (their kernels are stored ``(c_in, c_out, ...)``), norm layers with 2-D weights, and
the registration order for ``pairs="infer"`` (safetensors files store names sorted).

Chapter: "Checkpoints and heavy tails" (book/checkpoints.ipynb) analyzes a run's checkpoints.
"""

from __future__ import annotations

import glob
import json
import os
import pickle
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn
from tqdm import tqdm

from .record import RunRecord
from .runtime import get_device, progress_bar
from .tracker import SpectralTracker
from .views import LayerSelector, find_matrices

__all__ = [
    "analyze",
    "find_checkpoints",
    "load_checkpoint",
    "module_from_state_dict",
    "step_from_name",
    "Checkpoint",
    "CheckpointError",
]

SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
_HF_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module", "net")
_SAVE_EVERY_SECONDS = 30.0


class CheckpointError(ValueError):
    """A checkpoint could not be read or tracked; the message names it."""


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint: a file or a ``save_pretrained`` folder, and its step if its name has
    one."""

    path: Path
    step: int | None

    @property
    def name(self) -> str:
        return self.path.name


def step_from_name(name: str) -> int | None:
    """The step in a checkpoint's name: the number after "step" (``epoch=2-step=300``), else the
    last number (``checkpoint-300``, ``model_0300.pt``), else ``None``."""
    stem = name[: -len(Path(name).suffix)] if Path(name).suffix in SUFFIXES else name
    after_step = re.findall(r"step[=_\-]?(\d+)", stem, flags=re.IGNORECASE)
    if after_step:
        return int(after_step[-1])
    numbers = re.findall(r"\d+", stem)
    return int(numbers[-1]) if numbers else None


def _is_hf_folder(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in _HF_FILES)


def find_checkpoints(source: str | os.PathLike | Iterable) -> list[Checkpoint]:
    """The checkpoints ``source`` names, in no particular order (:func:`analyze` orders them).

    ``source``: a ``save_pretrained`` folder, a folder of checkpoint files and ``save_pretrained``
    subfolders, a glob pattern, one file, or a list of these.
    """
    if not isinstance(source, (str, os.PathLike)):
        found = [c for item in source for c in find_checkpoints(item)]
        return list({c.path: c for c in found}.values())
    text = os.fspath(source)
    if re.search(r"[*?\[]", text):
        paths = [Path(p) for p in sorted(glob.glob(text))]
        found = [p for p in paths if (p.is_file() and p.suffix in SUFFIXES) or _is_hf_folder(p)]
        where = f"the pattern {text!r}"
    else:
        path = Path(text)
        if not path.exists():
            raise FileNotFoundError(f"no checkpoint folder or file at {path}")
        if path.is_file() or _is_hf_folder(path):
            return [Checkpoint(path, step_from_name(path.name))]
        children = sorted(path.iterdir())
        found = [p for p in children if (p.is_file() and p.suffix in SUFFIXES) or _is_hf_folder(p)]
        where = f"the folder {path}"
    if not found:
        raise FileNotFoundError(
            f"no checkpoints in {where}: looked for {', '.join(SUFFIXES)} files and Hugging Face "
            f"save_pretrained folders (with one of {', '.join(_HF_FILES)})"
        )
    return [Checkpoint(p, step_from_name(p.name)) for p in found]


# ---- reading one checkpoint
# ---------------------------------------------------------------------------


def _torch_load(path: Path, allow_pickle: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not allow_pickle:
            raise CheckpointError(
                f"{path.name} holds Python objects besides tensors (a whole pickled model?), and "
                "loading those runs code from the file. Save model.state_dict() instead, or, for "
                "a file you trust, pass unsafe_allow_pickle=True (--unsafe-load-pickles)"
            ) from err
    return torch.load(path, map_location="cpu", weights_only=False)


def _safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError as err:
        raise CheckpointError(
            f"{path.name} is a safetensors file: pip install safetensors "
            '(or "spectral-lab[checkpoints]")'
        ) from err
    return load_file(path, device="cpu")


def _hf_folder(path: Path, allow_pickle: bool) -> tuple[dict[str, torch.Tensor], dict]:
    meta = {}
    state_file = path / "trainer_state.json"
    if state_file.is_file():
        meta["step"] = json.loads(state_file.read_text()).get("global_step")
    for index_name, read in (
        ("model.safetensors.index.json", _safetensors),
        ("pytorch_model.bin.index.json", lambda p: _torch_load(p, allow_pickle)),
    ):
        if (path / index_name).is_file():
            shards = sorted(set(json.loads((path / index_name).read_text())["weight_map"].values()))
            state = {}
            for shard in shards:
                state.update(read(path / shard))
            return state, meta
    if (path / "model.safetensors").is_file():
        return _safetensors(path / "model.safetensors"), meta
    return _torch_load(path / "pytorch_model.bin", allow_pickle), meta


def _unwrap(obj: Any, name: str) -> tuple[Mapping[str, torch.Tensor] | nn.Module, dict]:
    """A state dict (or a whole model) and metadata from what a checkpoint file holds."""
    if isinstance(obj, nn.Module):
        return obj, {}
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{name} holds a {type(obj).__name__}, not a state dict or a model")
    meta = {}
    for key in ("global_step", "step"):
        if isinstance(obj.get(key), int) and not isinstance(obj.get(key), bool):
            meta["step"] = obj[key]
            break
    if any(torch.is_tensor(v) for v in obj.values()):
        return obj, meta
    for key in _NESTED_KEYS:
        if isinstance(obj.get(key), (Mapping, nn.Module)):
            inner, inner_meta = _unwrap(obj[key], name)
            return inner, {**inner_meta, **meta}
    raise CheckpointError(
        f"{name} holds a dict with no tensors and none of the entries {', '.join(_NESTED_KEYS)}: "
        f"its keys are {', '.join(map(str, list(obj)[:8]))}"
    )


def load_checkpoint(
    path: str | os.PathLike, unsafe_allow_pickle: bool = False
) -> tuple[Mapping[str, torch.Tensor] | nn.Module, dict]:
    """``(state_dict or model, metadata)`` from one checkpoint file or ``save_pretrained`` folder,
    on the CPU.

    ``metadata`` may hold ``"step"``. Raises :class:`CheckpointError` naming the file.
    """
    path = Path(path)
    try:
        if path.is_dir():
            state, meta = _hf_folder(path, unsafe_allow_pickle)
            inner, inner_meta = _unwrap(state, path.name)
            return inner, {**inner_meta, **meta}
        if path.suffix == ".safetensors":
            return _safetensors(path), {}
        return _unwrap(_torch_load(path, unsafe_allow_pickle), path.name)
    except CheckpointError:
        raise
    except Exception as err:  # any reader's failure: truncated zip, bad header, missing shard
        raise CheckpointError(f"cannot read checkpoint {path.name}: {err}") from err


class _Holder(nn.Module):
    """A node of the module tree that holds a state dict's tensors under their names."""


def module_from_state_dict(state: Mapping[str, torch.Tensor]) -> nn.Module:
    """A module tree whose parameters are the floating-point tensors of ``state`` with 2 or more
    dimensions, under their dotted names (``"blocks.0.mlp.weight"``), sharing their memory.

    Tensors that share storage (tied weights) are kept once, under their first name, as
    :func:`~spectral_lab.views.find_matrices` lists a shared parameter once.
    """
    root = _Holder()
    seen: set[tuple] = set()
    for key, tensor in state.items():
        if not (torch.is_tensor(tensor) and tensor.is_floating_point() and tensor.ndim >= 2):
            continue
        identity = (
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tuple(tensor.shape),
            tensor.stride(),
        )
        if identity in seen:
            continue
        seen.add(identity)
        *path, leaf = str(key).split(".")
        node = root
        try:
            for part in path:
                if part not in node._modules:
                    node.add_module(part, _Holder())
                node = node._modules[part]
            node.register_parameter(leaf, nn.Parameter(tensor, requires_grad=False))
        except (KeyError, TypeError) as err:
            raise CheckpointError(
                f"the state-dict key {key!r} cannot be a module path ({err}); pass the model"
            ) from err
    return root


def _strip_prefix(state: Mapping[str, torch.Tensor], wanted: list[str]) -> dict:
    """``state`` with the prefix its keys carry beyond the model's (``model.``, ``module.``,
    ``_orig_mod.``) removed."""
    if not wanted or wanted[0] in state:
        return dict(state)
    for key in state:
        if key.endswith("." + wanted[0]):
            prefix = key[: -len(wanted[0])]
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return dict(state)


def _load_into(model: nn.Module, state: Mapping[str, torch.Tensor], name: str) -> nn.Module:
    ours = model.state_dict()
    state = _strip_prefix(state, list(ours))
    unexpected = [k for k in state if k not in ours]
    tracked = {f"{r.module}.{r.param}".lstrip(".") for r in find_matrices(model)}
    missing = [k for k in tracked if k not in state]
    if unexpected or missing:
        raise CheckpointError(
            f"{name} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}; "
            "pass the model class the checkpoints were saved from"
        )
    model.load_state_dict(state, strict=False)
    return model


# ---- the run
# ---------------------------------------------------------------------------------------------


def _ordered(checkpoints: list[Checkpoint], allow_pickle: bool) -> list[Checkpoint]:
    """Every checkpoint with its step (from the name, else from the file), ordered; one without
    any step is step 0 when alone."""
    resolved = []
    for checkpoint in checkpoints:
        step = checkpoint.step
        if step is None and len(checkpoints) > 1:
            step = load_checkpoint(checkpoint.path, allow_pickle)[1].get("step")
            if step is None:
                raise CheckpointError(
                    f"cannot order {checkpoint.name}: it has no step in its name or metadata; "
                    "rename it with its step (step_300.pt) or leave it out of the glob"
                )
        resolved.append(Checkpoint(checkpoint.path, 0 if step is None else int(step)))
    resolved.sort(key=lambda c: c.step)
    for a, b in zip(resolved, resolved[1:]):
        if a.step == b.step:
            raise CheckpointError(
                f"{a.name} and {b.name} are both step {a.step}: keep one (a narrower glob)"
            )
    return resolved


def analyze(
    source,
    *,
    model: nn.Module | Callable[[], nn.Module] | None = None,
    out: str | os.PathLike | None = None,
    layers: LayerSelector = None,
    pairs="infer",
    top_k: int = 10,
    step: int = 0,
    skip_bad: bool = False,
    unsafe_allow_pickle: bool = False,
    device: str = "cpu",
    progress: bool | None = None,
) -> RunRecord:
    """A :class:`RunRecord` of ``source``'s checkpoints (see the module docstring), or of a live
    ``nn.Module`` at ``step``.

    ``model``: the network the checkpoints were saved from (an instance or a zero-argument
    factory); each state dict is loaded into it (a prefix such as ``model.`` is stripped).
    ``layers``, ``pairs``, ``top_k``: as :class:`SpectralTracker`'s. ``out``: the record is saved
    there (atomically, every 30 s and at the end) and an existing record there is resumed.
    ``skip_bad``: report an unreadable checkpoint on stderr and go on, instead of stopping.
    ``unsafe_allow_pickle``: also load whole pickled models, which EXECUTES CODE from the files.
    ``device``: where the SVDs run.
    """
    device = get_device(device)
    out = Path(out) if out is not None else None
    record = RunRecord.load(out) if out is not None and out.exists() else None
    tracker: SpectralTracker | None = None
    if isinstance(model, nn.Module) or model is None:
        target = model
    elif callable(model):
        target = model()
    else:
        raise TypeError(f"model must be an nn.Module or a factory, got {type(model).__name__}")

    def track(module: nn.Module, at: int) -> None:
        nonlocal tracker
        if tracker is None:
            tracker = SpectralTracker(
                module, every=1, top_k=top_k, layers=layers, pairs=pairs, record=record
            )
        tracker.step(at, module, force=True)

    if isinstance(source, nn.Module):
        track(source.to(device) if device.type != "cpu" else source, step)
        return _finish(tracker, out, {"source": "module", "checkpoints": []})
    checkpoints = _ordered(find_checkpoints(source), unsafe_allow_pickle)
    done = set(record.steps.tolist()) if record is not None else set()
    last = max(done) if done else -1
    late = [c for c in checkpoints if c.step not in done and c.step < last]
    if late:
        raise CheckpointError(
            f"{out} already ends at step {last}, and {late[0].name} (step {late[0].step}) comes "
            "before it: a record only grows forward; write to a new --out"
        )
    meta = {"source": os.fspath(source) if isinstance(source, (str, os.PathLike)) else "list"}
    meta["checkpoints"] = [[c.step, c.name] for c in checkpoints]
    meta["skipped"] = []
    saved_at = time.monotonic()
    # the same bar as the training loops': text on a terminal, none in a notebook or under CI
    bar = progress_bar(progress, len(checkpoints), 0, "analyze")
    for checkpoint in checkpoints:
        bar.update(1)
        if checkpoint.step in done:
            continue
        bar.set_postfix_str(checkpoint.name)
        try:
            state, _ = load_checkpoint(checkpoint.path, unsafe_allow_pickle)
            if isinstance(state, nn.Module):
                module = state
            elif target is not None:
                module = _load_into(target, state, checkpoint.name)
            else:
                module = module_from_state_dict(state)
            track(module.to(device), checkpoint.step)
        except (CheckpointError, ValueError) as err:
            message = str(err) if checkpoint.name in str(err) else f"{checkpoint.name}: {err}"
            if not skip_bad:
                kept = ""
                if tracker is not None and len(tracker.record) and out is not None:
                    _finish(tracker, out, meta)
                    kept = f"; the record so far is saved in {out}"
                raise CheckpointError(
                    f"{message}{kept}. Rerun with --skip-bad (skip_bad=True) to go past it"
                ) from err
            meta["skipped"].append(checkpoint.name)
            tqdm.write(f"skipped {message}", file=sys.stderr)
            continue
        del state, module  # one checkpoint in memory at a time
        if out is not None and time.monotonic() - saved_at > _SAVE_EVERY_SECONDS:
            _finish(tracker, out, meta)
            saved_at = time.monotonic()
    bar.close()
    if tracker is None:
        if record is not None:
            return record
        raise CheckpointError(f"no checkpoint of {source} could be read: nothing to analyze")
    return _finish(tracker, out, meta)


def _finish(tracker: SpectralTracker, out: Path | None, meta: dict) -> RunRecord:
    record = tracker.record
    record.meta["analyze"] = meta
    if out is not None:
        record.save(out)
    return record
