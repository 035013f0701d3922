"""Run records: what a tracked run leaves behind, as plain arrays in one file.

A :class:`RunRecord` holds, for every snapshot step and every tracked layer,
the full singular spectrum, the top-k singular vectors, the Frobenius norm and
the derived metrics, plus scalars (loss, accuracy) at the same steps and the
run's metadata (config, seed, device, library versions). It knows nothing of
models: plots and analyses take records.

On disk a record is one ``.npz`` file (numpy's zip of arrays, no pickles),
written atomically: a temporary file in the same folder, flushed to disk, then
renamed over the target, so an interrupted save leaves the previous file whole.
"""

from __future__ import annotations

import json
import os
import platform
import zipfile
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from .files import atomic_write
from .spectra import agreement_from_vectors
from .version import __version__

__all__ = ["RunRecord", "Snapshot", "LAYER_FIELDS", "plain_config"]

FORMAT = "spectral_lab.RunRecord"
FORMAT_VERSION = 1

#: Per-layer series, each an array whose first axis is the snapshot index.
LAYER_FIELDS = (
    "singular_values",  # (T, R) descending
    "U",  # (T, m, k) top-k left singular vectors (columns)
    "Vh",  # (T, k, n) top-k right singular vectors (rows)
    "fro_norm",  # (T,)
    "norm_eff_rank",  # (T,)
    "stable_rank",  # (T,)
    "agreement_first",  # (T, k, k) SVA with the first snapshot
)
OPTIONAL_LAYER_FIELDS = ("weights",)  # (T, m, n), only with keep_weights=True


def _versions() -> dict[str, str]:
    return {
        "spectral_lab": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def plain_config(config: Any) -> dict:
    """``asdict(config)`` (or a dict) as plain JSON types, tuples as lists: what a record stores.

    ``None`` gives ``{}``; anything that JSON cannot hold raises ``ValueError``.
    """
    if config is None:
        return {}
    if is_dataclass(config) and not isinstance(config, type):
        config = asdict(config)
    try:
        return json.loads(json.dumps(config))
    except TypeError as err:
        raise ValueError(
            f"the config must be a dataclass or a JSON-serialisable dict: {err}"
        ) from err


@dataclass(frozen=True)
class Snapshot:
    """One snapshot of a record (:meth:`RunRecord.at`): its step, every layer's fields, the pair
    alignments and the scalars logged with it (NaN where it logged none)."""

    step: int
    layers: dict[str, dict[str, np.ndarray]]
    pairs: dict[tuple[str, str], np.ndarray]
    scalars: dict[str, float]


class RunRecord:
    """Arrays keyed by step and layer name, plus the run's metadata.

    Read it with :attr:`steps`, :attr:`layers`, :meth:`series`,
    :meth:`norm_eff_rank`, :attr:`scalars`, :meth:`alignment`,
    :meth:`agreement_with`; write it with :meth:`save`, read a file with
    :meth:`load`. A tracker appends to it; a resumed run keeps appending.
    """

    def __init__(
        self,
        layers: dict[str, tuple[int, int]],
        top_k: int,
        pairs: Iterable[tuple[str, str]] = (),
        config: Any = None,
        seed: int | None = None,
        device: str = "cpu",
        meta: dict | None = None,
    ):
        self.meta: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config": plain_config(config),
            "seed": seed,
            "device": str(device),
            "versions": _versions(),
            "top_k": int(top_k),
            "shapes": {name: list(shape) for name, shape in layers.items()},
            "pairs": [list(p) for p in pairs],
        }
        if meta:
            self.meta.update(meta)
        self._steps: list[int] = []
        self._layers: dict[str, dict[str, list[np.ndarray]]] = {name: {} for name in layers}
        self._pairs: list[list[np.ndarray]] = [[] for _ in self.meta["pairs"]]
        self._scalars: dict[str, list[float]] = {}

    # ---- reading
    # -----------------------------------------------------------------------------------
    @property
    def steps(self) -> np.ndarray:
        return np.asarray(self._steps, dtype=np.int64)

    @property
    def layers(self) -> list[str]:
        return list(self._layers)

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return [tuple(p) for p in self.meta["pairs"]]

    @property
    def config(self) -> dict:
        return self.meta["config"]

    @property
    def top_k(self) -> int:
        return self.meta["top_k"]

    def __len__(self) -> int:
        return len(self._steps)

    def __repr__(self) -> str:
        span = f"steps {self._steps[0]}..{self._steps[-1]}" if self._steps else "no snapshots"
        return (
            f"RunRecord({len(self)} snapshots, {span}, {len(self._layers)} layers, "
            f"top_k={self.top_k}, scalars={sorted(self._scalars)}, device={self.meta['device']!r})"
        )

    def _layer(self, layer: str) -> dict[str, list[np.ndarray]]:
        if layer not in self._layers:
            raise KeyError(f"no layer {layer!r} in this record; layers: {', '.join(self._layers)}")
        return self._layers[layer]

    def series(self, layer: str, field: str) -> np.ndarray:
        """One layer's field over the snapshots, e.g. ``series("fc1", "singular_values")`` -> ``(T,
        R)``."""
        data = self._layer(layer)
        if field not in LAYER_FIELDS + OPTIONAL_LAYER_FIELDS:
            raise KeyError(
                f"unknown field {field!r}; fields: "
                f"{', '.join(LAYER_FIELDS + OPTIONAL_LAYER_FIELDS)}"
            )
        if field == "weights" and field not in data:
            raise KeyError(
                "this record has no weight copies: track with keep_weights=True to keep them"
            )
        values = data.get(field)
        return np.stack(values) if values else np.empty((0,))

    def singular_values(self, layer: str) -> np.ndarray:
        return self.series(layer, "singular_values")

    def _per_layer(self, field: str, layers: Iterable[str] | None) -> np.ndarray:
        names = self.layers if layers is None else list(layers)
        return np.stack([self.series(name, field) for name in names], axis=1)

    def norm_eff_rank(self, layers: Iterable[str] | None = None) -> np.ndarray:
        """NormEffRank as ``(T, L)``, columns in the order of ``layers`` (default: all)."""
        return self._per_layer("norm_eff_rank", layers)

    def stable_rank(self, layers: Iterable[str] | None = None) -> np.ndarray:
        return self._per_layer("stable_rank", layers)

    def fro_norm(self, layers: Iterable[str] | None = None) -> np.ndarray:
        return self._per_layer("fro_norm", layers)

    @property
    def scalars(self) -> dict[str, np.ndarray]:
        """Scalars logged at the snapshot steps, each ``(T,)``; NaN where a step did not log it."""
        return {
            name: np.asarray(values, dtype=np.float64) for name, values in self._scalars.items()
        }

    def alignment(self, pair: tuple[str, str] | None = None) -> np.ndarray:
        """``|Vh_next @ U_prev|`` over time, ``(T, k, k)``, for one tracked pair (default: the
        first)."""
        if not self.pairs:
            raise KeyError(
                "this record tracks no layer pairs: pass pairs=[(prev, next)] to the tracker"
            )
        index = 0 if pair is None else self._pair_index(tuple(pair))
        return np.stack(self._pairs[index])

    def _pair_index(self, pair: tuple[str, str]) -> int:
        try:
            return self.pairs.index(pair)
        except ValueError:
            raise KeyError(f"pair {pair} is not tracked; pairs: {self.pairs}") from None

    def at(self, index: int) -> Snapshot:
        """Snapshot ``index`` (negative counts from the end) without stacking the series: what a
        sink sends as each snapshot is taken, in time linear in the run's length."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"snapshot {index} of a record with {len(self)} snapshots")
        layers = {
            name: {field: values[index] for field, values in fields.items()}
            for name, fields in self._layers.items()
        }
        pairs = {pair: values[index] for pair, values in zip(self.pairs, self._pairs)}
        scalars = {name: float(values[index]) for name, values in self._scalars.items()}
        return Snapshot(int(self._steps[index]), layers, pairs, scalars)

    def index_of(self, step: int) -> int:
        try:
            return self._steps.index(int(step))
        except ValueError:
            raise KeyError(
                f"no snapshot at step {step}; snapshots span {self._steps[:1]}..{self._steps[-1:]}"
            ) from None

    def agreement_with(
        self,
        reference: "str | RunRecord" = "final",
        reference_step: int | None = None,
        layers: Iterable[str] | None = None,
        steps: Iterable[int] | None = None,
    ) -> dict[str, np.ndarray]:
        """Singular-vector agreement ``S(t)`` of snapshots with a reference, per layer ``(T, k,
        k)``.

        * ``"final"``: against this record's last snapshot (the paper's section 7.1);
        * another ``RunRecord``: against its snapshot at the same step (lottery
          tickets: masked vs dense run), or at ``reference_step`` if given
          (linear mode connectivity: endpoint vs endpoint).

        ``steps``: the snapshots of this record to compare (default: all of them).
        """
        if not self._steps:
            raise ValueError("the record has no snapshots yet")
        names = self.layers if layers is None else list(layers)
        rows = list(range(len(self._steps))) if steps is None else [self.index_of(s) for s in steps]
        if isinstance(reference, str):
            if reference != "final":
                raise ValueError(f"reference must be 'final' or a RunRecord, got {reference!r}")
            reference, reference_step = self, self._steps[-1]
        if not isinstance(reference, RunRecord):
            raise TypeError(
                f"reference must be 'final' or a RunRecord, got {type(reference).__name__}"
            )
        out = {}
        for name in names:
            U, Vh = self.series(name, "U")[rows], self.series(name, "Vh")[rows]
            if name not in reference._layers:
                raise KeyError(f"layer {name!r} is not in the reference record")
            U_ref_all, Vh_ref_all = reference.series(name, "U"), reference.series(name, "Vh")
            if U_ref_all.shape[1:] != U.shape[1:] or Vh_ref_all.shape[1:] != Vh.shape[1:]:
                raise ValueError(f"layer {name!r} has different shapes or top_k in the two records")
            if reference_step is not None:
                i = reference.index_of(reference_step)
                U_ref, Vh_ref = U_ref_all[i][None], Vh_ref_all[i][None]
            else:
                idx = [reference.index_of(self._steps[row]) for row in rows]
                U_ref, Vh_ref = U_ref_all[idx], Vh_ref_all[idx]
            out[name] = agreement_from_vectors(U, Vh, U_ref, Vh_ref)
        return out

    # ---- writing
    # -----------------------------------------------------------------------------------
    def append(
        self,
        step: int,
        layers: dict[str, dict[str, np.ndarray]],
        pairs: list[np.ndarray] | None = None,
        scalars: dict[str, float] | None = None,
    ) -> None:
        """Add one snapshot. Steps must increase strictly; every layer and pair must be present."""
        step = int(step)
        if self._steps and step <= self._steps[-1]:
            raise ValueError(
                f"step {step} is not after the last recorded step {self._steps[-1]}; to resume "
                "from an earlier "
                f"checkpoint, call record.truncate({step - 1}) first"
            )
        if set(layers) != set(self._layers):
            raise ValueError(
                f"a snapshot must cover exactly the record's layers {self.layers}, got "
                f"{sorted(layers)}"
            )
        pairs = pairs or []
        if len(pairs) != len(self._pairs):
            raise ValueError(f"expected {len(self._pairs)} pair alignments, got {len(pairs)}")
        for name, fields in layers.items():
            for field, value in fields.items():
                self._layers[name].setdefault(field, []).append(np.asarray(value))
        for store, value in zip(self._pairs, pairs):
            store.append(np.asarray(value))
        n_before = len(self._steps)
        for name, value in (scalars or {}).items():
            self._scalars.setdefault(name, [float("nan")] * n_before).append(float(value))
        self._steps.append(step)
        for values in self._scalars.values():
            if len(values) < len(self._steps):
                values.append(float("nan"))

    def truncate(self, last_step: int) -> None:
        """Drop every snapshot after ``last_step`` (to resume from an earlier checkpoint)."""
        keep = sum(1 for s in self._steps if s <= last_step)
        del self._steps[keep:]
        for fields in self._layers.values():
            for values in fields.values():
                del values[keep:]
        for values in self._pairs:
            del values[keep:]
        for values in self._scalars.values():
            del values[keep:]

    def to_arrays(self) -> dict[str, np.ndarray]:
        meta = dict(self.meta, layers=self.layers, scalars=list(self._scalars))
        arrays = {"__meta__": np.array(json.dumps(meta)), "steps": self.steps}
        for i, name in enumerate(self._layers):
            for field, values in self._layers[name].items():
                arrays[f"layer/{i}/{field}"] = np.stack(values) if values else np.empty((0,))
        for i, values in enumerate(self._pairs):
            arrays[f"pair/{i}"] = np.stack(values) if values else np.empty((0,))
        for i, name in enumerate(self._scalars):
            arrays[f"scalar/{i}"] = np.asarray(self._scalars[name], dtype=np.float64)
        return arrays

    def save(self, path: str | os.PathLike) -> Path:
        """Write the record to ``path`` atomically and return the path.

        The data goes to a temporary file beside ``path``, is flushed to disk,
        and only then renamed over ``path``; if anything fails on the way, the
        temporary file is removed and an existing ``path`` is left untouched.
        """
        path = Path(path)
        if path.is_dir():
            raise ValueError(f"{path} is a directory; give a file path such as {path / 'run.npz'}")
        arrays = self.to_arrays()
        return atomic_write(path, lambda handle: np.savez(handle, **arrays))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RunRecord":
        """Read a record written by :meth:`save`, with a clear error for anything else."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no run record at {path}: train first, or check the path")
        if path.is_dir():
            raise ValueError(f"{path} is a directory, not a run record file")
        try:
            # Open the file ourselves: np.load leaks its handle when the zip is truncated.
            with open(path, "rb") as handle:
                data = np.load(handle, allow_pickle=False)
                if not isinstance(data, np.lib.npyio.NpzFile):
                    raise ValueError("it holds a single array (.npy), not an .npz archive")
                with data:
                    arrays = {key: data[key] for key in data.files}
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as err:
            raise ValueError(
                f"{path} is not a readable run record (truncated, corrupt, or not an .npz file: "
                f"{err}); "
                "delete it and run again"
            ) from err
        if "__meta__" not in arrays:
            raise ValueError(
                f"{path} is an .npz file but not a spectral_lab run record (no __meta__ entry)"
            )
        try:
            meta = json.loads(str(arrays.pop("__meta__")))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} has a corrupt __meta__ entry: {err}") from err
        if meta.get("format") != FORMAT:
            raise ValueError(
                f"{path} is not a spectral_lab run record (format {meta.get('format')!r})"
            )
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(
                f"{path} was written by a newer spectral_lab (record format "
                f"{meta['format_version']}); upgrade"
            )
        return cls._from_arrays(meta, arrays, path)

    @classmethod
    def _from_arrays(cls, meta: dict, arrays: dict[str, np.ndarray], path: Path) -> "RunRecord":
        layer_names, scalar_names = meta.pop("layers"), meta.pop("scalars")
        record = cls(
            {n: tuple(meta["shapes"][n]) for n in layer_names},
            meta["top_k"],
            meta["pairs"],
            meta=meta,
        )
        record.meta = meta
        steps = arrays.get("steps")
        if steps is None:
            raise ValueError(f"{path} is a corrupt run record: no steps array")
        T = len(steps)
        record._steps = [int(s) for s in steps]

        def rows(key: str) -> list[np.ndarray]:
            value = arrays.get(key)
            if value is None:
                raise ValueError(f"{path} is a corrupt run record: {key!r} is missing")
            if T and len(value) != T:
                raise ValueError(
                    f"{path} is a corrupt run record: {key!r} has {len(value)} rows for {T} steps"
                )
            return list(value) if T else []

        for i, name in enumerate(layer_names):
            for field in LAYER_FIELDS + OPTIONAL_LAYER_FIELDS:
                key = f"layer/{i}/{field}"
                if key in arrays or field in LAYER_FIELDS:
                    record._layers[name][field] = rows(key)
        record._pairs = [rows(f"pair/{i}") for i in range(len(meta["pairs"]))]
        record._scalars = {
            name: [float(v) for v in rows(f"scalar/{i}")] for i, name in enumerate(scalar_names)
        }
        return record
