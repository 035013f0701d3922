"""Writing files so that no reader ever sees half of one, and no crash loses the previous version.

Every file the package writes (run records, checkpoints) goes through
:func:`atomic_write`: the bytes go to a temporary file beside the target, are
flushed to disk, and only then renamed over the target. A run killed mid-save
leaves the old file whole and no temporary file behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

__all__ = ["atomic_write"]


def _default_mode() -> int:
    # mkstemp creates files readable by the owner only; a saved record should get the permissions
    # any other file would get here (0o666 minus the umask, typically 0o644) so that others can read
    # it.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(handle)`` on a temporary file and rename it to ``path``; returns ``path``.

    Creates missing parent folders. On any failure (including KeyboardInterrupt)
    the temporary file is removed, an existing ``path`` is left untouched, and
    the error propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
