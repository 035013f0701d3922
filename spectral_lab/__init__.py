"""spectral_lab: the package behind the book *Deep learning through the spectral dynamics of weights*.

Modules, one concept each:

* :mod:`spectral_lab.spectra`  - effective rank, stable rank, alignment, agreement (SPEC section 1)
* :mod:`spectral_lab.views`    - which parameters are weight matrices and their 2-D views
* :mod:`spectral_lab.tracker`  - :class:`SpectralTracker`, online SVDs during training
* :mod:`spectral_lab.record`   - :class:`RunRecord`, the arrays a run leaves behind, saved atomically
* :mod:`spectral_lab.plotting` - figures from records
* :mod:`spectral_lab.widgets`  - one control pattern: live in Jupyter, a static figure in the built book
* :mod:`spectral_lab.runtime`  - device, seed and run mode

Importing the package has no side effects: no device probing, no seeding, no
change of precision.
"""

__version__ = "0.1.0"

from . import plotting, widgets
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
from .tracker import SpectralTracker
from .views import find_matrices, matrix_view, split_gates, split_heads
from .widgets import interactive_figure

__all__ = [
    "__version__",
    "plotting",
    "widgets",
    "interactive_figure",
    "RunRecord",
    "SpectralTracker",
    "agreement",
    "alignment",
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
]
