"""``python -m spectral_lab``: see :mod:`spectral_lab.cli`."""

from .cli import main

raise SystemExit(main())
