"""spectral_lab: the package behind *Deep learning through the spectral dynamics of weights*.

The package has three wings; each imports only the ones above it.

1. **The lens** - what readers reuse on their own models:

   * :mod:`~spectral_lab.spectra` - effective rank, stable rank, alignment, agreement
   * :mod:`~spectral_lab.views` - which parameters are weight matrices, and their 2-D views
   * :mod:`~spectral_lab.tracker` - :class:`SpectralTracker`, online SVDs during training
   * :mod:`~spectral_lab.record` - :class:`RunRecord`, the arrays a run leaves behind
   * :mod:`~spectral_lab.curves` - what is read from records (time to generalise, rank drop, ...)
   * :mod:`~spectral_lab.pruning` - SVD pruning and weight masks
   * :mod:`~spectral_lab.curvature` - Hessians, Hessian-vector products, Lanczos
   * :mod:`~spectral_lab.heavy_tail` - power-law alpha, MP spikes: WeightWatcher's lens, over time
   * :mod:`~spectral_lab.checkpoints` - :func:`analyze`: a record from saved checkpoints
   * :mod:`~spectral_lab.plotting`, :mod:`~spectral_lab.widgets` - figures from records
   * :mod:`~spectral_lab.runtime`, :mod:`~spectral_lab.files` - device, seed, run mode, atomic
     writes
   * :mod:`~spectral_lab.integrations` - Lightning / Hugging Face callbacks and TensorBoard /
     W&B / MLflow sinks; each framework imported only when used

2. **The run kit** - how the book's runs are described and run:

   * :mod:`~spectral_lab.config` - :class:`~spectral_lab.config.ExperimentConfig`: typed, checked
     configs with ``quick()`` / ``full()`` presets
   * :mod:`~spectral_lab.sweeps` - :func:`sweep`: many runs on the serial, local, Dask or Ray
     engine, with a resumable store
   * :mod:`~spectral_lab.bookkeeping` - the history, tracker and stamp every loop keeps
   * :mod:`~spectral_lab.data`, :mod:`~spectral_lab.models` - data sets and networks

3. **The book's experiments** - :mod:`spectral_lab.experiments`, one module per chapter
   (``grokking``, ``weight_decay``, ``memorization``, ``lottery``, ``connectivity``, ...), and
   the registry ``python -m spectral_lab run|sweep NAME`` reads (:mod:`spectral_lab.cli`).

Importing the package has no side effects: no device probing, no seeding, no
change of precision.
"""

from . import curves, experiments, heavy_tail, integrations, plotting, widgets
from .checkpoints import analyze
from .data import (
    ClassificationData,
    Corpus,
    ModularData,
    digits,
    grammar_corpus,
    mnist1d,
    modular_addition,
)
from .experiments import EXPERIMENTS
from .experiments.architectures import ArchitectureRun, train_architecture
from .experiments.classifier import ClassifierConfig, FitResult, fit
from .experiments.grokking import GrokkingConfig, TrainResult, evaluate, load_or_train, train
from .experiments.weight_decay import WeightDecaySweep, load_or_run_sweep, run_weight_decay_sweep
from .models import (
    MLP,
    CNN1d,
    DigitsCNN,
    ModularMLP,
    ModularTransformer,
    RowLSTM,
    TinyUNet,
    TransformerLM,
)
from .pruning import magnitude_mask, random_mask_like, svd_prune, svd_pruning_losses, svd_truncate
from .record import RunRecord
from .runtime import get_device, run_mode, runs_dir, seed_everything
from .spectra import (
    agreement,
    alignment,
    diagonal_mean,
    effective_rank,
    normalized_effective_rank,
    singular_values,
    stable_rank,
    svd,
)
from .sweeps import sweep
from .tracker import SpectralTracker
from .version import __version__
from .views import centre_tap, find_matrices, matrix_view, split_gates, split_heads
from .widgets import interactive_figure

__all__ = [
    "__version__",
    # the lens
    "analyze",
    "curves",
    "heavy_tail",
    "integrations",
    "plotting",
    "widgets",
    "interactive_figure",
    "RunRecord",
    "SpectralTracker",
    "agreement",
    "alignment",
    "centre_tap",
    "diagonal_mean",
    "effective_rank",
    "find_matrices",
    "get_device",
    "magnitude_mask",
    "matrix_view",
    "normalized_effective_rank",
    "random_mask_like",
    "run_mode",
    "runs_dir",
    "seed_everything",
    "singular_values",
    "split_gates",
    "split_heads",
    "stable_rank",
    "svd",
    "svd_prune",
    "svd_pruning_losses",
    "svd_truncate",
    # the run kit
    "sweep",
    "ClassificationData",
    "Corpus",
    "ModularData",
    "digits",
    "grammar_corpus",
    "mnist1d",
    "modular_addition",
    "CNN1d",
    "DigitsCNN",
    "MLP",
    "ModularMLP",
    "ModularTransformer",
    "RowLSTM",
    "TinyUNet",
    "TransformerLM",
    # the book's experiments
    "experiments",
    "EXPERIMENTS",
    "ArchitectureRun",
    "ClassifierConfig",
    "FitResult",
    "GrokkingConfig",
    "TrainResult",
    "WeightDecaySweep",
    "evaluate",
    "fit",
    "load_or_run_sweep",
    "load_or_train",
    "run_weight_decay_sweep",
    "train",
    "train_architecture",
]
