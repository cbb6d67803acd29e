"""Fixtures shared by the test files."""

import importlib.util
from pathlib import Path

import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny models and problems: one thread avoids OpenMP contention on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def evaluate_script():
    """scripts/evaluate.py as a module, to call its `main(argv)` in-process."""
    path = Path(__file__).resolve().parents[1] / "scripts" / "evaluate.py"
    spec = importlib.util.spec_from_file_location("evaluate_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
