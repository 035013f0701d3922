"""Run records: what a tracked run leaves behind, as plain arrays in one file.

A :class:`RunRecord` holds, for every snapshot step and every tracked layer,
the full singular spectrum, the top-k singular vectors, the Frobenius norm and
the derived metrics, plus scalars (loss, accuracy) at the same steps and the
run's metadata (config, seed, device, library versions). It knows nothing of
models: plots and analyses take records.

On disk a record is one compressed ``.npz`` file (numpy's zip of arrays, no
pickles), written atomically (:func:`spectral_lab.files.atomic_write`), so an
interrupted save leaves the previous file whole.

Record format 2 (this version; format-1 files still load):

* singular values, norms and ranks are stored at the precision they were computed in;
* singular vectors are stored as ``int16`` with one power-of-two scale per vector:
  ``u = q * 2**e`` with ``2**e`` the smallest power of two ``>= max|u| / 32767``, so every
  entry is within ``max|u| / 32767`` (3.1e-5 of the vector's largest entry) of the computed
  one. The record rounds vectors this way when a snapshot is appended, so the record in
  memory and the record loaded from its file are the same numbers, and a resumed run
  reproduces an uninterrupted one exactly. Agreement and alignment computed from the
  rounded vectors are within 1e-3 of the unrounded ones (tested);
* ``agreement_first`` and the pair alignments are functions of the stored vectors: they are
  computed when a snapshot is appended and again when a file is loaded, not stored.

Sizes (``benchmarks/tracking.py``): the quick grokking run (60 snapshots, top_k 10) is 1.46
MiB, 0.113 of the state-dict checkpoints at the same steps (12.9 MiB). Paper-scale grokking
(p=113, d 128, MLP 512, top_k 10, 40k steps every 100: 401 snapshots) stores per snapshot
25,703 vector entries at 2 bytes, 742 singular values at 4 and a few scalars, about 55 kB:
20.2 MiB in all, 0.058 of its 349 MiB of checkpoints.
"""

from __future__ import annotations

import json
import math
import os
import platform
import zipfile
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from .files import atomic_write
from .spectra import agreement_from_vectors, alignment_from_vectors
from .version import __version__

__all__ = ["RunRecord", "Snapshot", "LAYER_FIELDS", "plain_config"]

FORMAT = "spectral_lab.RunRecord"
FORMAT_VERSION = 2

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
DERIVED_FIELDS = ("agreement_first",)  # computed from the vectors, never stored (format 2)

#: How singular vectors are stored: "int16" (format 2, see the module docstring) or "float32"
#: (records loaded from format-1 files keep their full-precision vectors).
VECTOR_PRECISIONS = ("int16", "float32")
_Q = 32767  # the largest int16 magnitude used; -32768 is never produced

#: ``load`` refuses a file whose arrays would take more than this many times its size on disk
#: (or 64 MiB, whichever is larger) unless ``max_bytes`` says more: a compressed file of zeros
#: can otherwise make it allocate gigabytes.
EXPANSION_LIMIT = 64
_META_LIMIT = 64 * 2**20


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


def vector_scales(V: np.ndarray, axis: int) -> np.ndarray:
    """Per-vector power-of-two scales ``2**e >= max|v| / 32767`` (1 for a zero vector)."""
    return _scales_of_maxima(np.abs(V).max(axis=axis, keepdims=True))


def _scales_of_maxima(largest: np.ndarray) -> np.ndarray:
    top = largest.astype(np.float32) / np.float32(_Q)
    mantissa, exponent = np.frexp(np.where(top > 0, top, 1))  # top = mantissa * 2**exponent
    return np.ldexp(np.float32(1), exponent - (mantissa == 0.5)).astype(np.float32)


def encode_vectors(V: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """``(q, scale)``, ``q`` int16: ``V ~= q * scale`` and ``|V - q * scale| <= max|v| / 32767``.

    ``axis`` runs along each vector (-2 for the columns of ``U``, -1 for the rows of ``Vh``).
    Decoding then encoding again gives the same ``(q, scale)``: the scale is a power of two, so
    ``q * scale`` and ``V / scale`` are exact and the largest ``|q|`` stays in
    ``(16383, 32767]``.
    """
    scale = vector_scales(V, axis)
    return np.rint(V / scale).astype(np.int16), scale


def decode_vectors(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) * scale  # exact: int16 times a power of two fits float32


def round_vectors(V: np.ndarray, axis: int) -> np.ndarray:
    """``V`` at the record's storage precision (float32, each entry within ``max|v| / 32767``)."""
    return decode_vectors(*encode_vectors(np.asarray(V), axis))


def round_vector_sets(vectors: list[tuple[np.ndarray, int]]) -> list[np.ndarray]:
    """:func:`round_vectors` of many arrays at once, equal to it entry for entry.

    ``vectors`` holds ``(V, axis)`` pairs. A snapshot holds two small arrays per matrix, and
    numpy's cost per call, not per entry, dominated rounding them one by one (about 20 calls
    each): here the vectors of every array with the same number of them are packed as columns
    of one array, their maxima taken per segment, and all of them rounded in one pass.
    """
    out: list[np.ndarray | None] = [None] * len(vectors)
    columns: dict[int, list[int]] = {}
    for i, (V, axis) in enumerate(vectors):
        k = V.shape[-1] if axis == -2 else V.shape[-2]
        columns.setdefault((k, V.dtype), []).append(i)
    for indices in columns.values():
        parts = [
            vectors[i][0] if vectors[i][1] == -2 else vectors[i][0].swapaxes(-1, -2)
            for i in indices
        ]  # each (length, k): one vector per column
        if any(p.ndim != 2 or not p.size for p in parts):  # stacks, or empty: one by one
            for i in indices:
                out[i] = round_vectors(*vectors[i])
            continue
        lengths = np.array([len(p) for p in parts])
        packed = np.concatenate(parts)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        scale = _scales_of_maxima(np.maximum.reduceat(np.abs(packed), starts, axis=0))
        every = np.repeat(scale, lengths, axis=0)
        rounded = (np.rint(packed / every) + 0).astype(np.float32) * every  # + 0: no -0.0
        for i, start, length in zip(indices, starts, lengths):
            part = rounded[start : start + length]
            out[i] = part if vectors[i][1] == -2 else part.swapaxes(-1, -2)
    return out  # type: ignore[return-value]


def derived_agreement(U, Vh, U0, Vh0) -> np.ndarray:
    """``agreement_first`` of one snapshot from stored vectors (the same call on append and on
    load, so the two agree exactly)."""
    return agreement_from_vectors(U, Vh, U0, Vh0)


def derived_alignment(U_prev: np.ndarray, Vh_next: np.ndarray) -> np.ndarray:
    k = min(U_prev.shape[-1], Vh_next.shape[-2])
    return alignment_from_vectors(
        np.ascontiguousarray(U_prev[:, :k], dtype=Vh_next.dtype), Vh_next[:k]
    )


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
            "vector_precision": "int16",
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
    @property
    def vector_precision(self) -> str:
        return self.meta.get("vector_precision", "float32")

    def append(
        self,
        step: int,
        layers: dict[str, dict[str, np.ndarray]],
        pairs: list[np.ndarray] | None = None,
        scalars: dict[str, float] | None = None,
    ) -> None:
        """Add one snapshot. Steps must increase strictly; every layer and pair must be present.

        Singular vectors are rounded to the record's storage precision (module docstring);
        ``agreement_first`` and the pair alignments are then computed from the rounded vectors
        (values passed for them are replaced), so that a loaded record equals this one.
        """
        step = int(step)
        if self._steps and step <= self._steps[-1]:
            raise ValueError(self._repeated_step_message(step))
        if set(layers) != set(self._layers):
            raise ValueError(
                f"a snapshot must cover exactly the record's layers {self.layers}, got "
                f"{sorted(layers)}"
            )
        pairs = pairs or []
        has_vectors = all("U" in f and "Vh" in f for f in layers.values())
        if len(pairs) != len(self._pairs) and not has_vectors:
            raise ValueError(f"expected {len(self._pairs)} pair alignments, got {len(pairs)}")
        rows = {
            name: {f: np.asarray(v) for f, v in fields.items()} for name, fields in layers.items()
        }
        if has_vectors:
            if self.vector_precision == "int16":
                rounded = iter(
                    round_vector_sets(
                        [(f[v], axis) for f in rows.values() for v, axis in (("U", -2), ("Vh", -1))]
                    )
                )
                for fields in rows.values():
                    fields["U"], fields["Vh"] = next(rounded), next(rounded)
            for name, fields in rows.items():
                first = self._layers[name].get("U")
                U0, Vh0 = (
                    (first[0], self._layers[name]["Vh"][0])
                    if first
                    else (fields["U"], fields["Vh"])
                )
                fields["agreement_first"] = derived_agreement(fields["U"], fields["Vh"], U0, Vh0)
            pairs = [derived_alignment(rows[a]["U"], rows[b]["Vh"]) for a, b in self.pairs]
        for name, fields in rows.items():
            for field, value in fields.items():
                self._layers[name].setdefault(field, []).append(value)
        for store, value in zip(self._pairs, pairs):
            store.append(np.asarray(value))
        n_before = len(self._steps)
        for name, value in (scalars or {}).items():
            self._scalars.setdefault(name, [float("nan")] * n_before).append(float(value))
        self._steps.append(step)
        for values in self._scalars.values():
            if len(values) < len(self._steps):
                values.append(float("nan"))

    def _repeated_step_message(self, step: int) -> str:
        last, first = self._steps[-1], self._steps[0]
        message = f"step {step} is not after the last recorded step {last}"
        if step <= first:
            return (
                f"{message}, and not after the first ({first}) either: this looks like a new run. "
                "Start it with a new tracker (or a new RunRecord); truncating would empty this one"
            )
        return (
            f"{message}; to resume from an earlier checkpoint, call record.truncate({step - 1}) "
            f"first (it drops the {sum(s >= step for s in self._steps)} snapshot(s) from step "
            f"{step} on)"
        )

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
        for steps in self.meta.get("svd_fallbacks", {}).values():
            steps[:] = [s for s in steps if s <= last_step]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays :meth:`save` writes (format 2: vectors encoded, derived fields left out)."""
        meta = dict(self.meta, format_version=FORMAT_VERSION, layers=self.layers)
        meta["scalars"] = list(self._scalars)
        arrays = {"__meta__": np.array(json.dumps(meta)), "steps": self.steps}
        encoded = self.vector_precision == "int16"
        for i, name in enumerate(self._layers):
            for field, values in self._layers[name].items():
                if field in DERIVED_FIELDS:
                    continue
                value = np.stack(values) if values else np.empty((0,))
                if encoded and field in ("U", "Vh") and values:
                    value, scale = encode_vectors(value, axis=-2 if field == "U" else -1)
                    arrays[f"layer/{i}/{field}_scale"] = scale
                arrays[f"layer/{i}/{field}"] = value
        for i, name in enumerate(self._scalars):
            arrays[f"scalar/{i}"] = np.asarray(self._scalars[name], dtype=np.float64)
        if not self._steps:  # no snapshots: empty arrays of the shapes load expects
            for key, (shape, kinds) in _expected_shapes(meta, 0).items():
                if "?" not in key:
                    arrays[key] = np.empty(shape, np.int16 if "i" in kinds else np.float32)
        return arrays

    def save(self, path: str | os.PathLike) -> Path:
        """Write the record to ``path`` atomically (a compressed ``.npz``) and return the path.

        The data goes to a temporary file beside ``path``, is flushed to disk,
        and only then renamed over ``path``; if anything fails on the way, the
        temporary file is removed and an existing ``path`` is left untouched.
        """
        path = Path(path)
        if path.is_dir():
            raise ValueError(f"{path} is a directory; give a file path such as {path / 'run.npz'}")
        arrays = self.to_arrays()
        return atomic_write(path, lambda handle: np.savez_compressed(handle, **arrays))

    @classmethod
    def load(cls, path: str | os.PathLike, max_bytes: int | None = None) -> "RunRecord":
        """Read a record written by :meth:`save` (format 1 or 2), with a clear error for anything
        else.

        The metadata and every array are checked before they are used: the arrays must have
        the shapes the metadata implies (checked from their headers, before reading them),
        steps must increase, and values must be finite (scalars may be NaN). The arrays may
        take at most ``max_bytes`` (default: 64 times the file's size, at least 64 MiB).
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no run record at {path}: train first, or check the path")
        if path.is_dir():
            raise ValueError(f"{path} is a directory, not a run record file")
        try:
            # open the file ourselves: np.load leaks its handle when the zip is truncated
            handle = open(path, "rb")
        except OSError as err:
            raise OSError(
                err.errno,
                f"cannot read the run record {path}: {err.strerror or err}. The file is "
                "unchanged; check its permissions (or that the disk is mounted)",
            ) from err
        with handle:
            if handle.read(4) != b"PK\x03\x04":
                handle.seek(0)
                kind = (
                    "it holds a single array (.npy), not an .npz archive"
                    if handle.read(6) == b"\x93NUMPY"
                    else "not an .npz file"
                )
                raise ValueError(f"{path} is not a readable run record ({kind}); {_CORRUPT_HINT}")
            handle.seek(0)
            try:
                with zipfile.ZipFile(handle) as archive:
                    meta, arrays = _read_archive(archive, path, max_bytes)
            except (zipfile.BadZipFile, EOFError, ValueError, KeyError, OSError) as err:
                if isinstance(err, _RecordError):
                    raise ValueError(str(err)) from None
                raise ValueError(
                    f"{path} is not a readable run record (truncated, corrupt, or not an .npz "
                    f"file: {err}); {_CORRUPT_HINT}"
                ) from err
        return cls._from_arrays(meta, arrays, path)

    @classmethod
    def _from_arrays(cls, meta: dict, arrays: dict[str, np.ndarray], path: Path) -> "RunRecord":
        layer_names, scalar_names = meta.pop("layers"), meta.pop("scalars")
        version = meta.get("format_version", 1)
        meta.setdefault("vector_precision", "float32")
        record = cls(
            {n: tuple(meta["shapes"][n]) for n in layer_names}, meta["top_k"], meta["pairs"]
        )
        record.meta = meta
        steps = arrays["steps"]
        T = len(steps)
        record._steps = [int(s) for s in steps]
        for i, name in enumerate(layer_names):
            for field in LAYER_FIELDS + OPTIONAL_LAYER_FIELDS:
                key = f"layer/{i}/{field}"
                if key not in arrays:
                    continue
                value = arrays[key]
                if f"{key}_scale" in arrays:
                    value = decode_vectors(value, arrays[f"{key}_scale"])
                record._layers[name][field] = list(value) if T else []
        if version >= 2:
            record._derive_all()
        else:
            record._pairs = [
                list(arrays[f"pair/{i}"]) if T else [] for i in range(len(meta["pairs"]))
            ]
        record._scalars = {
            name: [float(v) for v in arrays[f"scalar/{i}"]] if T else []
            for i, name in enumerate(scalar_names)
        }
        return record

    def _derive_all(self) -> None:
        """Recompute ``agreement_first`` and the pair alignments from the stored vectors."""
        for fields in self._layers.values():
            U, Vh = fields.get("U"), fields.get("Vh")
            if U:
                fields["agreement_first"] = [
                    derived_agreement(u, vh, U[0], Vh[0]) for u, vh in zip(U, Vh)
                ]
        self._pairs = [
            [derived_alignment(u, vh) for u, vh in zip(self._layers[a]["U"], self._layers[b]["Vh"])]
            for a, b in self.pairs
        ]


_CORRUPT_HINT = (
    "if it is a record of yours that a crash or a full disk cut short, delete it and run again"
)


class _RecordError(ValueError):
    """A structural problem found while reading, with a message that already names the file."""


def _header(archive: zipfile.ZipFile, name: str) -> tuple[tuple[int, ...], np.dtype]:
    with archive.open(name) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    return tuple(shape), dtype


def _read(archive: zipfile.ZipFile, name: str) -> np.ndarray:
    with archive.open(name) as member:
        return np.lib.format.read_array(member, allow_pickle=False)


def _check_meta(meta: Any, path: Path) -> None:
    def bad(what: str) -> _RecordError:
        return _RecordError(f"{path} has a malformed __meta__: {what}")

    if not isinstance(meta, dict):
        raise bad(f"expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise _RecordError(
            f"{path} is not a spectral_lab run record (format {meta.get('format')!r})"
        )
    version = meta.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise bad(f"format_version must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise _RecordError(
            f"{path} was written by a newer spectral_lab (record format {version}); upgrade"
        )
    for key, kind in (("shapes", dict), ("layers", list), ("pairs", list), ("scalars", list)):
        if not isinstance(meta.get(key), kind):
            raise bad(f"{key!r} must be a {kind.__name__}, got {type(meta.get(key)).__name__}")
    top_k = meta.get("top_k")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise bad(f"'top_k' must be a positive integer, got {top_k!r}")
    shapes, layers = meta["shapes"], meta["layers"]
    if sorted(layers) != sorted(shapes) or len(set(layers)) != len(layers):
        raise bad(f"'layers' {layers} do not match the layers of 'shapes' {list(shapes)}")
    for name, shape in shapes.items():
        if not (
            isinstance(shape, list)
            and len(shape) == 2
            and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
        ):
            raise bad(f"the shape of layer {name!r} must be [m, n] with m, n > 0, got {shape!r}")
    for pair in meta["pairs"]:
        if not (isinstance(pair, list) and len(pair) == 2 and all(p in shapes for p in pair)):
            raise bad(f"pair {pair!r} is not two of the record's layers")
    if not all(isinstance(n, str) for n in meta["scalars"]):
        raise bad("'scalars' must be a list of names")
    if meta.get("vector_precision", "float32") not in VECTOR_PRECISIONS:
        raise bad(f"unknown vector_precision {meta.get('vector_precision')!r}")


def _expected_shapes(meta: dict, T: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """Every array the metadata implies, as ``{name: (shape, dtype kinds)}``; ``"?"`` marks an
    optional one."""
    version = meta.get("format_version", 1)
    encoded = meta.get("vector_precision", "float32") == "int16"
    expected = {"steps": ((T,), "iu")}
    for i, name in enumerate(meta["layers"]):
        m, n = meta["shapes"][name]
        R, k = min(m, n), min(meta["top_k"], m, n)
        layer = {
            "singular_values": (T, R),
            "U": (T, m, k),
            "Vh": (T, k, n),
            "fro_norm": (T,),
            "norm_eff_rank": (T,),
            "stable_rank": (T,),
            "?weights": (T, m, n),
        }
        if version < 2:
            layer["agreement_first"] = (T, k, k)
        for field, shape in layer.items():
            kinds = "iu" if encoded and field in ("U", "Vh") else "f"
            expected[f"layer/{i}/{field}"] = (shape, kinds)
        if encoded:
            expected[f"layer/{i}/U_scale"] = ((T, 1, k), "f")
            expected[f"layer/{i}/Vh_scale"] = ((T, k, 1), "f")
    if version < 2:
        for i, (a, b) in enumerate(meta["pairs"]):
            k = min(meta["top_k"], *meta["shapes"][a], *meta["shapes"][b])
            expected[f"pair/{i}"] = ((T, k, k), "f")
    for i in range(len(meta["scalars"])):
        expected[f"scalar/{i}"] = ((T,), "f")
    return expected


def _read_archive(
    archive: zipfile.ZipFile, path: Path, max_bytes: int | None
) -> tuple[dict, dict[str, np.ndarray]]:
    members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
    if "__meta__" not in members:
        raise _RecordError(
            f"{path} is an .npz file but not a spectral_lab run record (no __meta__ entry)"
        )
    if members["__meta__"].file_size > _META_LIMIT:
        raise _RecordError(f"{path} has a malformed __meta__: larger than {_META_LIMIT} bytes")
    try:
        meta = json.loads(str(_read(archive, members["__meta__"].filename)))
    except json.JSONDecodeError as err:
        raise _RecordError(f"{path} has a corrupt __meta__ entry: {err}") from err
    _check_meta(meta, path)
    if "steps" not in members:
        raise _RecordError(f"{path} is a corrupt run record: no steps array")
    steps_shape, _ = _header(archive, members["steps"].filename)
    if len(steps_shape) != 1:
        raise _RecordError(f"{path} is a corrupt run record: 'steps' has shape {steps_shape}")
    expected = _expected_shapes(meta, steps_shape[0])
    limit = (
        max_bytes
        if max_bytes is not None
        else max(64 * 2**20, EXPANSION_LIMIT * path.stat().st_size)
    )
    total = 0
    for key, (shape, kinds) in expected.items():
        optional = key.rsplit("/", 1)[-1].startswith("?")
        key = key.replace("?", "")
        if key not in members:
            if optional:
                continue
            raise _RecordError(f"{path} is a corrupt run record: {key!r} is missing")
        declared, dtype = _header(archive, members[key].filename)
        if declared != shape or dtype.kind not in kinds or dtype.hasobject:
            raise _RecordError(
                f"{path} is a corrupt run record: {key!r} is {dtype} {declared}, the metadata "
                f"implies shape {shape}"
            )
        total += math.prod(shape) * dtype.itemsize
    if total > limit:
        raise _RecordError(
            f"{path} declares {total / 2**20:.0f} MiB of arrays, more than the "
            f"{limit / 2**20:.0f} MiB allowed for a file of its size; if you trust it, "
            f"load it with RunRecord.load(path, max_bytes={total})"
        )
    known = {key.replace("?", "") for key in expected} | {"__meta__"}
    unknown = sorted(set(members) - known)
    if unknown:
        raise _RecordError(f"{path} is a corrupt run record: unexpected arrays {unknown}")
    arrays = {key: _read(archive, members[key].filename) for key in members if key != "__meta__"}
    _check_values(meta, arrays, path)
    return meta, arrays


def _check_values(meta: dict, arrays: dict[str, np.ndarray], path: Path) -> None:
    steps = arrays["steps"]
    if len(steps) and (steps.min() < 0 or np.any(np.diff(steps) <= 0)):
        raise _RecordError(
            f"{path} is a corrupt run record: field 'steps' must be non-negative and strictly "
            f"increasing, got {steps.tolist()[:10]}"
        )
    for i, name in enumerate(meta["layers"]):
        zero = arrays[f"layer/{i}/fro_norm"] == 0
        for key, value in arrays.items():
            if not key.startswith(f"layer/{i}/") or value.dtype.kind not in "f":
                continue
            bad = ~np.isfinite(value)
            if key.endswith(("rank",)):
                bad &= ~zero  # a zero matrix has no rank; format 1 recorded NaN there
            if bad.any():
                raise _RecordError(
                    f"{path} is a corrupt run record: field {key.rsplit('/', 1)[-1]!r} of layer "
                    f"{name!r} contains NaN or infinite values"
                )
