"""One writer per output: an exclusive lock that a second process fails on at once.

Two processes writing the same record, checkpoint or sweep store both "succeed"
without a lock: the last writer wins, and a crash can leave one run's record
beside another run's checkpoint. :func:`output_lock` makes the second one stop
before it writes anything::

    with output_lock("runs/grok.npz"):          # a file: runs/grok.npz.lock beside it
        train(config, out="runs/grok.npz")
    with output_lock("runs/wd", folder=True):   # a folder (a sweep store): runs/wd/.lock
        ...

The lock is ``fcntl.flock`` (exclusive, non-blocking) on the lock file, which
records the holder's pid and command line. The operating system drops a flock
when its process ends, however it ends (exit, exception, SIGKILL, out of
memory), so a crash never leaves a stale lock: a lock file left behind by a
killed process is taken over by the next taker. A second taker raises
:class:`OutputLocked` naming the holder's pid, its command and the path. The
lock file is removed on release, so a finished output folder holds only
results.

Who takes it: :func:`spectral_lab.sweep` for its ``out_dir`` (for the whole
sweep), the chapters' sweeps and ``python -m spectral_lab run|sweep`` for
their ``--out``. The lock is per process and re-entrant: the same process may
take it again (a sweep inside a command that already holds its folder), and it
is released when the outermost holder leaves. Worker processes of a sweep do
not take it; the process that owns the sweep holds it for them (Dask and Ray start
them fresh, so they do not inherit it; a child made with a bare ``fork`` shares the
lock until it ends, so a crashed parent's output stays locked while such a child
lives). POSIX only
(``fcntl``); on a network file system flock works where the server supports it
(NFSv4, Lustre with ``flock`` mounts).
"""

from __future__ import annotations

import errno
import os
import shlex
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["OutputLocked", "output_lock", "lock_path", "lock_holder"]


class OutputLocked(RuntimeError):
    """Another process holds the lock of this output; ``pid`` and ``command`` say which (when it
    wrote them), ``path`` is the output."""

    def __init__(self, path: Path, lock: Path, pid: int | None, command: str):
        self.path, self.lock, self.pid, self.command = path, lock, pid, command
        holder = f"process {pid}" if pid is not None else "another process"
        running = f" ({command})" if command else ""
        super().__init__(
            f"{path} is in use by {holder}{running}: two runs writing one output would overwrite "
            f"each other. Wait for it to finish (or stop it), or choose another output path. "
            f"(Lock file: {lock}.)"
        )


def lock_path(output: str | os.PathLike, folder: bool = False) -> Path:
    """The lock file of ``output``: ``<output>.lock`` beside a file, ``<output>/.lock`` in a
    folder."""
    output = Path(output)
    return output / ".lock" if folder else output.with_name(output.name + ".lock")


def lock_holder(lock: str | os.PathLike) -> tuple[int | None, str]:
    """``(pid, command line)`` as written in a lock file; ``(None, "")`` when it holds neither
    (not yet written, or not a lock file)."""
    try:
        text = Path(lock).read_text(errors="replace")
    except OSError:
        return None, ""
    first, _, rest = text.partition("\n")
    try:
        return int(first.strip()), rest.strip()
    except ValueError:
        return None, ""


# lock file (resolved) -> [open file descriptor, depth]; per process, guarded for threads
_HELD: dict[Path, list[int]] = {}
_GUARD = threading.Lock()


def _acquire(output: Path, lock: Path) -> int:
    import fcntl

    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputLocked(output, lock, *lock_holder(lock)) from None
            raise
        # The holder before us may have removed the file while we waited to lock it: then our lock
        # is on a file nobody else will open, so take the one now at the path instead.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n{shlex.join([sys.executable, *sys.argv])}\n".encode())
    return fd


@contextmanager
def output_lock(output: str | os.PathLike, folder: bool = False) -> Iterator[Path]:
    """Hold the exclusive lock of ``output`` (a file, or with ``folder=True`` a folder) for the
    ``with`` block; yields the lock file's path.

    Raises :class:`OutputLocked` at once (no waiting) when another process holds
    it, and ``OSError`` naming the lock file when it cannot be created (a
    read-only folder, a path under a file). The folder of the lock file is
    created if missing.
    """
    output = Path(output)
    lock = lock_path(output, folder)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        key = lock.resolve()
    except FileExistsError:  # what mkdir says when the folder is a file
        raise NotADirectoryError(
            errno.ENOTDIR, f"cannot lock {output}: {os.strerror(errno.ENOTDIR)}", str(lock.parent)
        ) from None
    except OSError as err:
        raise type(err)(err.errno, f"cannot lock {output}: {err.strerror}", str(lock)) from None
    with _GUARD:
        if key in _HELD:
            _HELD[key][1] += 1
        else:
            try:
                _HELD[key] = [_acquire(output, lock), 1]
            except OSError as err:  # a read-only folder, a full disk
                raise type(err)(
                    err.errno, f"cannot lock {output}: {err.strerror}", str(lock)
                ) from None
    try:
        yield lock
    finally:
        with _GUARD:
            _HELD[key][1] -= 1
            if _HELD[key][1] == 0:
                fd = _HELD.pop(key)[0]
                # remove the file while still holding the lock (see _acquire), then release
                try:
                    lock.unlink(missing_ok=True)
                except OSError:
                    pass  # a folder made read-only meanwhile: the next taker reuses the file
                os.close(fd)
