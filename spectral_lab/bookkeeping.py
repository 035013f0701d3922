"""What every training loop keeps besides the weights: the history, the tracker, the stamp.

The three loops (full-batch grokking, minibatch classification, the
architectures' loop) each measure some scalars every ``eval_every`` steps,
attach a :class:`~spectral_lab.tracker.SpectralTracker` from a config, and stamp
the record with what ran. This module is that bookkeeping, written once.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from .record import RunRecord, plain_config
from .tracker import SpectralTracker

__all__ = ["History", "config_tracker", "stamp"]


class History:
    """Scalars measured along a run: lists while it trains, arrays when it is done.

    ``fields`` names the series; the first must be ``"step"`` (kept as int64).
    """

    def __init__(self, fields: Iterable[str], values: dict | None = None):
        self.fields = tuple(fields)
        if not self.fields or self.fields[0] != "step":
            raise ValueError(f"a history's first field is 'step', got {self.fields}")
        self.values: dict[str, list] = {name: [] for name in self.fields}
        for name, series in (values or {}).items():
            self.values[name] = list(series)

    def add(self, step: int, scalars: dict[str, float]) -> None:
        """Append one measurement: ``scalars`` must hold every field but ``step``."""
        for name in self.fields:
            self.values[name].append(int(step) if name == "step" else float(scalars[name]))

    def until(self, step: int) -> History:
        """The measurements at steps ``<= step`` (a resumed run continues from there)."""
        keep = sum(1 for s in self.values["step"] if s <= step)
        return History(self.fields, {k: v[:keep] for k, v in self.values.items()})

    def lists(self) -> dict[str, list]:
        """Plain lists, as a record's ``meta["history"]`` keeps them."""
        return {name: list(values) for name, values in self.values.items()}

    def arrays(self) -> dict[str, np.ndarray]:
        """``{field: array}``, steps as int64 and the rest as float64."""
        return {
            name: np.asarray(values, dtype=np.int64 if name == "step" else np.float64)
            for name, values in self.values.items()
        }

    def __len__(self) -> int:
        return len(self.values["step"])


def config_tracker(model, config, **options) -> SpectralTracker:
    """The tracker a config asks for: every ``track_every`` steps, its ``top_k`` vectors, the
    model's own ``layer_pairs()`` when it declares them, the config and seed in the record."""
    pairs = model.layer_pairs() if hasattr(model, "layer_pairs") else "infer"
    return SpectralTracker(
        model,
        every=config.track_every,
        top_k=config.top_k,
        pairs=pairs,
        config=config,
        seed=config.seed,
        **options,
    )


def stamp(record: RunRecord, config, device, **extra) -> RunRecord:
    """Write what ran into ``record.meta``: experiment, preset, device, config and ``extra``."""
    record.meta.update(
        experiment=getattr(config, "experiment", ""),
        preset=getattr(config, "preset", "custom"),
        device=str(device),
        **extra,
    )
    if not record.meta.get("config"):
        record.meta["config"] = plain_config(config)
    return record
