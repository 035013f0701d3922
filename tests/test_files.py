import os
import stat

import pytest

from spectral_lab.files import atomic_write


def test_writes_and_creates_parents(tmp_path):
    path = atomic_write(tmp_path / "a" / "b" / "x.bin", lambda h: h.write(b"hello"))
    assert path.read_bytes() == b"hello"
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.bin"]


def test_file_gets_the_usual_permissions_not_mkstemps_owner_only(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "x.bin", lambda h: h.write(b"1"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    path = atomic_write(tmp_path / "x.bin", lambda h: h.write(b"old"))

    def fail(handle):
        handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_a_killed_save_leaves_a_temporary_that_the_next_save_removes(tmp_path):
    """Issue 14.11: a writer killed mid-save (no cleanup ran) left .NAME.XXXX.tmp forever."""
    import subprocess
    import sys
    import time

    target = tmp_path / "run.npz"
    import spectral_lab.files

    code = (  # files.py alone (no torch import): a quick subprocess
        "import importlib.util, os\n"
        f"spec = importlib.util.spec_from_file_location('files', {spectral_lab.files.__file__!r})\n"
        "files = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(files)\n"
        "def write(handle):\n"
        "    handle.write(b'half')\n"
        "    handle.flush()\n"
        "    os._exit(9)  # killed: no except, no finally\n"
        f"files.atomic_write({str(target)!r}, write)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=False)
    stale = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(stale) == 1 and stale[0].name.startswith(".run.npz.")

    # a concurrent writer (alive: this process) keeps its fresh temporary
    live = tmp_path / f".run.npz.{os.getpid()}.abcd1234.tmp"
    live.write_bytes(b"being written")
    # another target's temporary is not ours to touch
    other = tmp_path / ".other.npz.1.abcd1234.tmp"
    other.write_bytes(b"x")
    atomic_write(target, lambda h: h.write(b"whole"))
    assert target.read_bytes() == b"whole"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["run.npz", live.name, other.name])

    # older than STALE_SECONDS: stale whatever its pid (a writer on another machine)
    from spectral_lab.files import STALE_SECONDS

    old = time.time() - STALE_SECONDS - 60
    os.utime(live, (old, old))
    atomic_write(target, lambda h: h.write(b"again"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["run.npz", other.name])
