"""Writing files so that no reader ever sees half of one, and no crash loses the previous version.

Every file the package writes (run records, checkpoints) goes through
:func:`atomic_write`: the bytes go to a temporary file beside the target
(``.NAME.PID.XXXXXXXX.tmp``), are flushed to disk, and only then renamed over the
target. A failed save removes its temporary file. A process killed mid-write
(SIGKILL, power loss) cannot, so the next save of the same target removes the
stale temporaries it finds: those whose writer process is gone, and those older
than :data:`STALE_SECONDS` (a writer on another machine sharing the folder, whose
pid means nothing here). A concurrent writer on this machine is never disturbed.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable

__all__ = ["atomic_write", "STALE_SECONDS"]

#: A temporary file older than this is stale whatever its writer pid says.
STALE_SECONDS = 15 * 60


def _default_mode() -> int:
    # mkstemp creates files readable by the owner only; a saved record should get the permissions
    # any other file would get here (0o666 minus the umask, typically 0o644) so that others can read
    # it.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(path: Path, now: float | None = None) -> list[Path]:
    """Delete the temporaries of earlier saves of ``path`` whose writer died; returns them."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)\.[^.]+\.tmp$")
    now = time.time() if now is None else now
    removed = []
    for candidate in path.parent.glob(f".{path.name}.*.tmp"):
        match = pattern.match(candidate.name)
        if match is None:
            continue
        try:
            age = now - candidate.stat().st_mtime
        except FileNotFoundError:  # its writer just renamed it
            continue
        if age > STALE_SECONDS or not _alive(int(match.group(1))):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(handle)`` on a temporary file and rename it to ``path``; returns ``path``.

    Creates missing parent folders and removes stale temporaries of earlier,
    killed saves of ``path`` (module docstring). On any failure (including
    KeyboardInterrupt) the temporary file is removed, an existing ``path`` is
    left untouched, and the error propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent
    )
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
