"""spectral_lab.locks: one writer per output, checked with real processes (flock is per process)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spectral_lab import locks
from spectral_lab.locks import OutputLocked, lock_holder, lock_path, output_lock

# The other process loads locks.py on its own (it imports only the standard library), so it starts
# in a fraction of a second instead of importing torch with the package.
HOLDER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("locks", sys.argv[1])
locks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(locks)
folder = sys.argv[3] == "folder"
try:
    with locks.output_lock(sys.argv[2], folder=folder):
        print("held", flush=True)
        sys.stdin.readline()  # hold until told (or killed)
except locks.OutputLocked as err:
    print(f"refused {err.pid}: {err}", flush=True)
"""


def start_holder(target: Path, folder: bool = False) -> subprocess.Popen:
    """Another process that takes the lock of ``target`` and holds it until its stdin has a
    line; returns once it holds the lock (or has been refused)."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            HOLDER,
            locks.__file__,
            str(target),
            "folder" if folder else "file",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    process.first_line = process.stdout.readline().strip()
    return process


def release(process: subprocess.Popen) -> None:
    """Tell the holder to let go (a refused or killed one has ended), wait, close its pipes."""
    for step in (lambda: process.stdin.write("\n"), process.stdin.flush):
        try:
            step()
        except BrokenPipeError:
            break
    process.wait(timeout=30)
    for pipe in (process.stdin, process.stdout):
        try:
            pipe.close()
        except BrokenPipeError:  # the line we could not send: closed all the same
            pass


def test_lock_files_sit_beside_a_file_and_inside_a_folder(tmp_path):
    assert lock_path(tmp_path / "run.npz") == tmp_path / "run.npz.lock"
    assert lock_path(tmp_path / "store", folder=True) == tmp_path / "store" / ".lock"


def test_a_second_process_fails_fast_naming_the_holder(tmp_path):
    target = tmp_path / "run.npz"
    holder = start_holder(target)
    try:
        assert holder.first_line == "held"
        pid, command = lock_holder(lock_path(target))
        assert pid == holder.pid and "-c" in command
        started = time.monotonic()
        with pytest.raises(OutputLocked) as info:
            with output_lock(target):
                raise AssertionError("took a lock another process holds")
        assert time.monotonic() - started < 1.0  # fails at once, no waiting
        assert info.value.pid == holder.pid
        assert f"process {holder.pid}" in str(info.value) and str(target) in str(info.value)
        assert "choose another output path" in str(info.value)
    finally:
        release(holder)
    assert not lock_path(target).exists()  # removed on release: the folder holds only outputs
    with output_lock(target) as lock:  # and free again
        assert lock_holder(lock)[0] == os.getpid()


def test_a_held_folder_refuses_another_process(tmp_path):
    store = tmp_path / "store"
    with output_lock(store, folder=True) as lock:
        assert lock == store / ".lock" and lock_holder(lock)[0] == os.getpid()
        other = start_holder(store, folder=True)
        release(other)
        assert other.first_line.startswith(f"refused {os.getpid()}:")
        assert str(store) in other.first_line
    assert not (store / ".lock").exists()


def test_a_killed_holder_leaves_no_lock_behind(tmp_path):
    """flock dies with its process: a crash (here SIGKILL) frees the output for the next run."""
    target = tmp_path / "run.npz"
    holder = start_holder(target)
    assert holder.first_line == "held"
    holder.send_signal(signal.SIGKILL)
    release(holder)
    assert lock_path(target).exists()  # the stale file is left, with the dead pid in it...
    assert lock_holder(lock_path(target))[0] == holder.pid
    with output_lock(target) as lock:  # ...and taken over
        assert lock_holder(lock)[0] == os.getpid()


def test_the_lock_is_reentrant_in_one_process_and_held_until_the_outermost_leaves(tmp_path):
    target = tmp_path / "run.npz"
    with output_lock(target):
        with output_lock(target):
            pass
        assert lock_path(target).exists()
        other = start_holder(target)
        release(other)
        assert other.first_line.startswith(f"refused {os.getpid()}")
    other = start_holder(target)
    try:
        assert other.first_line == "held"
    finally:
        release(other)


def test_an_exception_releases_the_lock(tmp_path):
    target = tmp_path / "run.npz"
    with pytest.raises(KeyError):
        with output_lock(target):
            raise KeyError("boom")
    assert not lock_path(target).exists() and not locks._HELD


def test_a_lock_that_cannot_be_created_names_the_path_and_the_reason(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match=r"cannot lock .*file/run\.npz: Not a directory"):
        with output_lock(tmp_path / "file" / "run.npz"):
            pass


def test_lock_holder_of_a_file_that_is_not_a_lock(tmp_path):
    assert lock_holder(tmp_path / "missing") == (None, "")
    (tmp_path / "junk").write_text("not a pid\n")
    assert lock_holder(tmp_path / "junk") == (None, "")
    message = str(OutputLocked(tmp_path / "x", tmp_path / "x.lock", None, ""))
    assert "in use by another process" in message
