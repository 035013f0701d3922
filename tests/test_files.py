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
