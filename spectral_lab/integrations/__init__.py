"""Track a model inside someone else's training loop, and send the results to experiment trackers.

* :mod:`spectral_lab.integrations.callbacks` - a PyTorch Lightning callback and a Hugging Face
  ``TrainerCallback`` (``lightning_callback(tracker)`` /
  ``hf_callback(tracker)``);
  one snapshot per optimizer step that is due, on rank 0, sharded weights gathered or refused
  with a message.
* :mod:`spectral_lab.integrations.sinks` - TensorBoard, Weights & Biases and MLflow, live
  (``SpectralTracker(model, sinks=[...])``) or for a saved record (``export_to_tensorboard(record,
  dir)``).

Nothing here imports a framework at import time: each one is imported when the
object that needs it is built, and a missing one raises an ImportError that says
which extra to install (``pip install -e ".[lightning]"`` in a clone of the repository).

Chapter: "Track your own model".
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..runtime import install_hint

__all__ = [
    "require",
    "lightning_callback",
    "hf_callback",
    "ShardedWeightsError",
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


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module`` or raise an ImportError that names the extra providing it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{what} needs the {module!r} package, which is not installed: {install_hint(extra)}"
        ) from err


_LAZY = {
    "lightning_callback": "callbacks",
    "hf_callback": "callbacks",
    "ShardedWeightsError": "callbacks",
    "SpectralLightningCallback": "callbacks",
    "SpectralHFCallback": "callbacks",
    "Sink": "sinks",
    "TensorBoardSink": "sinks",
    "WandbSink": "sinks",
    "MLflowSink": "sinks",
    "snapshot_scalars": "sinks",
    "export": "sinks",
    "export_to_tensorboard": "sinks",
    "export_to_wandb": "sinks",
    "export_to_mlflow": "sinks",
}


def __getattr__(name: str):
    # the submodules import no framework either; this only keeps `import spectral_lab` light
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
