"""Shared test set-up: a quiet, deterministic, headless environment."""

import os

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot: tests never open windows

import pytest
import torch

os.environ.setdefault("SPECTRAL_LAB_MODE", "quick")


@pytest.fixture(autouse=True)
def _deterministic():
    """Every test starts from the same RNG state and single-threaded maths where it matters."""
    torch.manual_seed(0)
    yield


@pytest.fixture
def cuda():
    """The CUDA device, or skip: CUDA tests run only where a GPU is present (marked `gpu`)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return torch.device("cuda")
