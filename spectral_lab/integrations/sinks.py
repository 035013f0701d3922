"""Sinks: send what the tracker measures to an experiment tracker (TensorBoard, W&B, MLflow).

A sink receives every snapshot as flat scalars, named ``<prefix><metric>/<layer>``:

* ``norm_eff_rank/<layer>``, ``stable_rank/<layer>``, ``fro_norm/<layer>``;
* ``singular_value_<i>/<layer>`` for the top ``top`` singular values;
* ``agreement_first/<layer>``: mean of the first (up to 10) diagonal entries of the
  singular-vector agreement with the first snapshot (SPEC section 1);
* ``alignment/<prev>-<next>``: the same summary of the alignment of a tracked pair;
* the run's own scalars (``loss``, ...) under their names.

Live, during training: pass sinks to the tracker (``SpectralTracker(model, sinks=[...])``
or ``tracker.add_sink(...)``); every snapshot is pushed, and ``tracker.close()`` (called
by the Lightning and HF callbacks at the end of training) adds the figures and closes
the sinks. After the fact, for a saved record: :func:`export` or one of
``export_to_tensorboard`` / ``export_to_wandb`` / ``export_to_mlflow``.

Each backend is imported only when its sink is created; a missing one raises an
ImportError that names the extra to install.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg

from .. import plotting
from ..record import RunRecord
from . import require

__all__ = [
    "Sink",
    "TensorBoardSink",
    "WandbSink",
    "MLflowSink",
    "snapshot_scalars",
    "export",
    "export_to_tensorboard",
    "export_to_wandb",
    "export_to_mlflow",
]

SUMMARY_K = 10  # the paper's scalar summary: mean of the first 10 diagonal entries


def snapshot_scalars(record: RunRecord, index: int = -1, top: int = 3) -> dict[str, float]:
    """The flat scalars of snapshot ``index`` of ``record`` (module docstring), NaN scalars left
    out.

    Reads the one snapshot only (not the whole series), so pushing every snapshot
    of a long run stays linear in its length.
    """
    if len(record) == 0:
        raise ValueError("the record has no snapshots yet")
    snapshot = record.at(index)
    values: dict[str, float] = {}
    for name, fields in snapshot.layers.items():
        S = fields["singular_values"]  # (R,)
        for field in ("norm_eff_rank", "stable_rank", "fro_norm"):
            values[f"{field}/{name}"] = float(fields[field])
        for i in range(min(top, S.shape[0])):
            values[f"singular_value_{i + 1}/{name}"] = float(S[i])
        agreement = fields["agreement_first"]  # (k, k)
        values[f"agreement_first/{name}"] = float(np.diagonal(agreement)[:SUMMARY_K].mean())
    for (prev, nxt), A in snapshot.pairs.items():  # (k, k)
        values[f"alignment/{prev}-{nxt}"] = float(np.diagonal(A)[:SUMMARY_K].mean())
    for name, value in snapshot.scalars.items():
        if np.isfinite(value):
            values[name] = value
    return values


def _figures(record: RunRecord, top: int) -> dict[str, Any]:
    return {
        "norm_eff_rank_heatmap": plotting.plot_rank_heatmap(record),
        "singular_values": plotting.plot_singular_values(record, top=max(top, 10)),
    }


def _image(fig) -> np.ndarray:
    """A figure rendered to an RGB array ``(H, W, 3)`` of uint8, without pyplot."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


class Sink(ABC):
    """Where snapshots go. Subclasses implement :meth:`log_scalars`, and may implement
    :meth:`log_figures` and :meth:`close`.

    A sink opens its backend (event file, run) when the first snapshot arrives, not
    when it is built: in a multi-process run every process may build the same
    tracker with the same sinks, and only the one that records (rank 0) opens anything.

    Args:
        prefix: put before every name (``"spectral/"`` keeps these apart from the run's other
        metrics).
        top: how many of the largest singular values per layer to send.
        figures: at :meth:`finish`, also send the NormEffRank heat map and the
            singular-value trajectories (:mod:`spectral_lab.plotting`).
    """

    def __init__(self, prefix: str = "spectral/", top: int = 3, figures: bool = True):
        self.prefix, self.top, self.figures = prefix, int(top), bool(figures)
        self.closed = False

    def push(self, record: RunRecord, index: int = -1) -> None:
        """Send snapshot ``index`` of ``record`` (the tracker calls this after every snapshot)."""
        step = int(record.steps[index])
        values = snapshot_scalars(record, index, self.top)
        self.log_scalars({self.prefix + name: value for name, value in values.items()}, step)

    def finish(self, record: RunRecord | None = None) -> None:
        """Send the figures of ``record`` (if ``figures``) and close; calling it again does
        nothing."""
        if self.closed:
            return
        if self.figures and record is not None and len(record):
            figs = _figures(record, self.top)
            self.log_figures(
                {self.prefix + name: fig for name, fig in figs.items()}, int(record.steps[-1])
            )
        self.close()
        self.closed = True

    @abstractmethod
    def log_scalars(self, values: dict[str, float], step: int) -> None:
        """Send ``{name: value}`` at ``step`` to the backend (each sink's one required method)."""

    def log_figures(self, figures: dict[str, Any], step: int) -> None:
        """Figures are optional for a sink: the default sends none."""

    def close(self) -> None:
        """Flush and release the backend, if it was opened."""


class TensorBoardSink(Sink):
    """Event files in ``log_dir``, through ``torch.utils.tensorboard.SummaryWriter`` (extra
    ``tensorboard``).

    Read them with ``tensorboard --logdir <log_dir>``; figures appear under Images.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike,
        prefix: str = "spectral/",
        top: int = 3,
        figures: bool = True,
    ):
        super().__init__(prefix, top, figures)
        require("tensorboard", "tensorboard", "TensorBoardSink")
        self.log_dir = str(log_dir)
        self._writer = None

    def __repr__(self) -> str:
        return f"TensorBoardSink({self.log_dir!r})"

    @property
    def writer(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(self.log_dir)
        return self._writer

    def log_scalars(self, values, step):
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def log_figures(self, figures, step):
        for name, fig in figures.items():
            self.writer.add_image(name, _image(fig), step, dataformats="HWC")

    def close(self):
        if self._writer is not None:
            self._writer.close()


class WandbSink(Sink):
    """Weights & Biases (extra ``wandb``): logs into ``run``, the active run, or a new one.

    A run this sink starts (``wandb.init(**init_kwargs)``, e.g. ``project=...``,
    ``mode="offline"``, ``dir=...``) is finished by :meth:`close`; a run it was
    given, or found active (such as Lightning's ``WandbLogger``), is left open.
    Snapshots are plotted against their own step metric ``<prefix>step``, so they
    never clash with the step counter of the run's other metrics.
    """

    def __init__(
        self, run=None, prefix: str = "spectral/", top: int = 3, figures: bool = True, **init_kwargs
    ):
        super().__init__(prefix, top, figures)
        require("wandb", "wandb", "WandbSink")
        self.init_kwargs = init_kwargs
        self.step_metric = f"{prefix}step"
        self._run, self._owns = run, False
        self._opened = False

    def __repr__(self) -> str:
        return f"WandbSink(run={getattr(self._run, 'id', None)!r})"

    @property
    def run(self):
        if not self._opened:
            import wandb

            if self._run is None:
                self._owns = wandb.run is None
                self._run = wandb.run if wandb.run is not None else wandb.init(**self.init_kwargs)
            self._run.define_metric(self.step_metric)
            self._run.define_metric(f"{self.prefix}*", step_metric=self.step_metric)
            self._opened = True
        return self._run

    def log_scalars(self, values, step):
        self.run.log({**values, self.step_metric: step})

    def log_figures(self, figures, step):
        import wandb

        self.run.log(
            {
                **{name: wandb.Image(_image(fig)) for name, fig in figures.items()},
                self.step_metric: step,
            }
        )

    def close(self):
        if self._opened and self._owns:
            self._run.finish()


class MLflowSink(Sink):
    """MLflow (extra ``mlflow``, the ``mlflow-skinny`` client): metrics into a run, figures as
    artifacts.

    Logs into ``run_id``, else the active run (``mlflow.start_run()``), else a new
    run in ``experiment`` (created if missing) that :meth:`close` ends.
    ``tracking_uri`` defaults to MLflow's own (``MLFLOW_TRACKING_URI``); a local
    folder is a ``file:`` URI (MLflow 3 wants ``MLFLOW_ALLOW_FILE_STORE=true`` for it).
    Metric names keep only the characters MLflow accepts.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str | None = None,
        run_id: str | None = None,
        run_name: str | None = None,
        prefix: str = "spectral/",
        top: int = 3,
        figures: bool = True,
    ):
        super().__init__(prefix, top, figures)
        require("mlflow", "mlflow", "MLflowSink")
        self.tracking_uri, self.experiment, self.run_name = tracking_uri, experiment, run_name
        self._run_id, self._owns, self._client = run_id, False, None

    def __repr__(self) -> str:
        return f"MLflowSink(run_id={self._run_id!r})"

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.tracking_uri)
        return self._client

    @property
    def run_id(self) -> str:
        if self._run_id is None:
            import mlflow

            active = mlflow.active_run() if self.tracking_uri is None else None
            if active is not None:
                self._run_id = active.info.run_id
            else:
                experiment_id = "0"
                if self.experiment is not None:
                    found = self.client.get_experiment_by_name(self.experiment)
                    experiment_id = (
                        found.experiment_id
                        if found
                        else self.client.create_experiment(self.experiment)
                    )
                self._run_id = self.client.create_run(
                    experiment_id, run_name=self.run_name
                ).info.run_id
                self._owns = True
        return self._run_id

    @staticmethod
    def _key(name: str) -> str:
        return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)

    def log_scalars(self, values, step):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(self._key(name), value, now, step) for name, value in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def log_figures(self, figures, step):
        for name, fig in figures.items():
            self.client.log_figure(self.run_id, fig, f"{self._key(name)}.png")

    def close(self):
        if self._owns:
            self.client.set_terminated(self._run_id)


def export(record: RunRecord, *sinks: Sink) -> None:
    """Send every snapshot of a finished ``record`` to each sink, then its figures, and close
    them."""
    if len(record) == 0:
        raise ValueError("the record has no snapshots to export")
    for sink in sinks:
        for index in range(len(record)):
            sink.push(record, index)
        sink.finish(record)


def export_to_tensorboard(
    record: RunRecord, log_dir: str | os.PathLike, **kwargs
) -> TensorBoardSink:
    """``export(record, TensorBoardSink(log_dir, **kwargs))``; returns the (closed) sink."""
    sink = TensorBoardSink(log_dir, **kwargs)
    export(record, sink)
    return sink


def export_to_wandb(record: RunRecord, **kwargs) -> WandbSink:
    """``export(record, WandbSink(**kwargs))``, e.g. ``project="...", name="..."``; returns the
    sink."""
    sink = WandbSink(**kwargs)
    export(record, sink)
    return sink


def export_to_mlflow(record: RunRecord, **kwargs) -> MLflowSink:
    """``export(record, MLflowSink(**kwargs))``; returns the sink (``sink.run_id`` names the
    run)."""
    sink = MLflowSink(**kwargs)
    export(record, sink)
    return sink
