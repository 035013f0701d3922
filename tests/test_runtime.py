"""Device, seed and run-mode resolution."""

import random

import numpy as np
import pytest
import torch

from spectral_lab import get_device, run_mode, seed_everything


def test_auto_on_this_machine(monkeypatch):
    monkeypatch.delenv("SPECTRAL_LAB_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else None
    assert get_device("auto").type == (expected or get_device("auto").type)
    assert get_device("cpu") == torch.device("cpu")


def test_environment_override(monkeypatch):
    monkeypatch.setenv("SPECTRAL_LAB_DEVICE", "cpu")
    assert get_device("auto") == torch.device("cpu")
    assert get_device() == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_unavailable_cuda_is_an_error_not_a_fallback():
    with pytest.raises(ValueError, match="CUDA is not available"):
        get_device("cuda")


@pytest.mark.parametrize("bad", ["gpu0", "", 3])
def test_unknown_devices(bad):
    with pytest.raises(ValueError):
        get_device(bad)


def test_seed_everything_makes_all_generators_repeat():
    g = seed_everything(11)
    first = (
        random.random(),
        np.random.rand(),
        torch.rand(1).item(),
        torch.rand(1, generator=g).item(),
    )
    g = seed_everything(11)
    assert first == (
        random.random(),
        np.random.rand(),
        torch.rand(1).item(),
        torch.rand(1, generator=g).item(),
    )
    with pytest.raises(ValueError, match="non-negative integer"):
        seed_everything(-1)


def test_run_mode(monkeypatch):
    monkeypatch.setenv("SPECTRAL_LAB_MODE", "full")
    assert run_mode() == "full"
    monkeypatch.setenv("SPECTRAL_LAB_MODE", " Quick ")
    assert run_mode() == "quick"
    monkeypatch.delenv("SPECTRAL_LAB_MODE")
    assert run_mode() == "quick"  # on a GPU too: paper scale only when asked for
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert run_mode() == "quick"
    monkeypatch.setenv("SPECTRAL_LAB_MODE", "fast")
    with pytest.raises(ValueError, match="set it to 'quick' or 'full'"):
        run_mode()


def test_import_has_no_side_effects():
    import subprocess
    import sys

    code = (
        "import torch; state = torch.random.get_rng_state().clone(); dtype = "
        "torch.get_default_dtype();"
        "import spectral_lab;"
        "assert torch.equal(state, torch.random.get_rng_state()); assert "
        "torch.get_default_dtype() == dtype"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_progress_bar_is_quiet_under_ci_unless_forced(monkeypatch):
    from spectral_lab.runtime import progress_bar

    monkeypatch.setenv("CI", "true")
    assert progress_bar(None, 10, 0, "run").disable
    assert not progress_bar(True, 10, 0, "run").disable
    monkeypatch.delenv("CI")
    assert progress_bar(False, 10, 0, "run").disable


def test_runs_dir_is_the_repository_runs_folder_from_the_root_and_from_book(tmp_path, monkeypatch):
    from spectral_lab.runtime import runs_dir

    (tmp_path / "book").mkdir()
    monkeypatch.chdir(tmp_path)
    assert runs_dir().resolve() == (tmp_path / "runs").resolve()
    monkeypatch.chdir(tmp_path / "book")
    assert runs_dir().resolve() == (tmp_path / "runs").resolve()


def test_thread_policy_is_one_thread_unless_the_environment_says_otherwise(monkeypatch):
    from spectral_lab.runtime import THREADS_ENV, thread_policy, use_thread_policy

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv(THREADS_ENV, raising=False)
        assert thread_policy() == 1 and use_thread_policy() == 1
        assert torch.get_num_threads() == 1
        monkeypatch.setenv(THREADS_ENV, "2")
        assert use_thread_policy() == 2 and torch.get_num_threads() == 2
        for bad in ("0", "two", "-1"):
            monkeypatch.setenv(THREADS_ENV, bad)
            with pytest.raises(ValueError, match="must be a positive number of threads"):
                thread_policy()
    finally:
        torch.set_num_threads(before)


def test_chapter_runs_share_the_cores_only_where_quick_runs_train_on_a_cpu(monkeypatch):
    from spectral_lab import runtime

    monkeypatch.setenv("SPECTRAL_LAB_DEVICE", "cpu")
    monkeypatch.setattr(runtime, "cpu_cores", lambda: 2)
    monkeypatch.setenv("SPECTRAL_LAB_MODE", "quick")
    assert runtime.chapter_engine() == "processes"
    monkeypatch.setenv("SPECTRAL_LAB_MODE", "full")  # paper scale: each run takes the device
    assert runtime.chapter_engine() == "serial"
    monkeypatch.setenv("SPECTRAL_LAB_MODE", "quick")
    monkeypatch.setattr(runtime, "cpu_cores", lambda: 1)  # one core: nothing to share
    assert runtime.chapter_engine() == "serial"
    monkeypatch.setattr(runtime, "cpu_cores", lambda: 2)
    monkeypatch.setenv("SPECTRAL_LAB_THREADS", "2")  # two threads a run: the cores hold one run
    assert runtime.process_workers() == 1 and runtime.chapter_engine() == "serial"
    monkeypatch.setattr(runtime, "cpu_cores", lambda: 8)
    assert runtime.process_workers() == 4 and runtime.chapter_engine() == "processes"
    monkeypatch.setattr(runtime, "get_device", lambda name: torch.device("cuda"))  # a GPU
    assert runtime.chapter_engine() == "serial"
