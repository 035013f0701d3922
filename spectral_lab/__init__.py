"""spectral_lab: the package behind the book *Deep learning through the spectral dynamics of
weights*.

Modules, one concept each:

* :mod:`spectral_lab.spectra`  - effective rank, stable rank, alignment, agreement (SPEC section 1)
* :mod:`spectral_lab.views`    - which parameters are weight matrices and their 2-D views
* :mod:`spectral_lab.tracker`  - :class:`SpectralTracker`, online SVDs during training
* :mod:`spectral_lab.record`   - :class:`RunRecord`, the arrays a run leaves behind, saved
  atomically
* :mod:`spectral_lab.plotting` - figures from records
* :mod:`spectral_lab.widgets`  - one control pattern: live in Jupyter, a static figure in the built
  book
* :mod:`spectral_lab.runtime`  - device, seed and run mode
* :mod:`spectral_lab.files`    - atomic writes: no file is ever seen half written

Experiments (chapters "Grokking" and "Weight decay"):

* :mod:`spectral_lab.data`, :mod:`spectral_lab.models` - modular addition and its transformer / MLP
* :mod:`spectral_lab.experiments` - one config dataclass per experiment, ``quick()`` / ``full()``
  presets
* :mod:`spectral_lab.training`    - the training loop, with checkpoints and resume
* :mod:`spectral_lab.pruning`     - SVD pruning
* :mod:`spectral_lab.sweeps`, :mod:`spectral_lab.analysis` - the weight-decay sweep and what is read
  from runs
* :mod:`spectral_lab.distributed` - :func:`sweep`: many runs on the serial, local, Dask or Ray
  engine, resumable
* ``python -m spectral_lab run NAME`` / ``sweep NAME`` - the command line (:mod:`spectral_lab.cli`)

Experiments (chapters "Memorization", "Lottery tickets", "Linear mode connectivity"):

* :mod:`spectral_lab.data`        - MNIST-1D and digits, with seeded label randomization
* :mod:`spectral_lab.supervised`  - :class:`ClassifierConfig` and :func:`fit`, minibatch SGD with
  masks and branches
* :mod:`spectral_lab.memorization`, :mod:`spectral_lab.lottery`, :mod:`spectral_lab.connectivity` -
  one per chapter
* :mod:`spectral_lab.pruning`     - magnitude and random masks (and SVD pruning)

Across architectures (chapter "The same bias across architectures"):

* :mod:`spectral_lab.architectures` - a ConvNet, an LSTM, a Transformer language model and a
  diffusion UNet,
  one training loop, SVD pruning with normalization statistics re-estimated

Spectral theory (chapters "A spectral theory of neural prediction", "Hessian outliers along
training"):

* :mod:`spectral_lab.prediction` - learning curves and error geometry from a model's activation
  spectrum
* :mod:`spectral_lab.hessian`    - Hessian and G-matrix of softmax regression on a Gaussian mixture,
  and of any small net

Your own training (chapter "Track your own model"):

* :mod:`spectral_lab.integrations` - Lightning / Hugging Face callbacks
  (``tracker.lightning_callback()``,
  ``tracker.hf_callback()``) and TensorBoard / W&B / MLflow sinks; each framework imported only when
  used

Importing the package has no side effects: no device probing, no seeding, no
change of precision.
"""

__version__ = "0.1.0"

from . import (
    analysis,
    architectures,
    connectivity,
    hessian,
    integrations,
    lottery,
    memorization,
    plotting,
    prediction,
    widgets,
)
from .architectures import ArchitectureRun, train_architecture
from .data import (
    ClassificationData,
    Corpus,
    ModularData,
    digits,
    grammar_corpus,
    mnist1d,
    modular_addition,
)
from .distributed import sweep
from .experiments import EXPERIMENTS, GrokkingConfig, WeightDecaySweep
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
from .pruning import magnitude_mask, random_mask_like, svd_prune, svd_truncate
from .record import RunRecord
from .runtime import get_device, run_mode, seed_everything
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
from .supervised import ClassifierConfig, FitResult, fit
from .sweeps import load_or_run_sweep, run_weight_decay_sweep
from .tracker import SpectralTracker
from .training import TrainResult, evaluate, load_or_train, train
from .views import centre_tap, find_matrices, matrix_view, split_gates, split_heads
from .widgets import interactive_figure

__all__ = [
    "__version__",
    "analysis",
    "architectures",
    "connectivity",
    "hessian",
    "integrations",
    "lottery",
    "memorization",
    "prediction",
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
    "matrix_view",
    "normalized_effective_rank",
    "run_mode",
    "seed_everything",
    "singular_values",
    "split_gates",
    "split_heads",
    "stable_rank",
    "svd",
    # experiments
    "EXPERIMENTS",
    "GrokkingConfig",
    "ModularData",
    "ModularMLP",
    "ModularTransformer",
    "TrainResult",
    "WeightDecaySweep",
    "evaluate",
    "load_or_run_sweep",
    "load_or_train",
    "modular_addition",
    "run_weight_decay_sweep",
    "sweep",
    "svd_prune",
    "svd_truncate",
    "train",
    "CNN1d",
    "ClassificationData",
    "ClassifierConfig",
    "FitResult",
    "MLP",
    "digits",
    "fit",
    "magnitude_mask",
    "mnist1d",
    "random_mask_like",
    # across architectures
    "ArchitectureRun",
    "Corpus",
    "DigitsCNN",
    "RowLSTM",
    "TinyUNet",
    "TransformerLM",
    "grammar_corpus",
    "train_architecture",
]
