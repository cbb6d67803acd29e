"""Fixtures shared by the test files."""

import importlib.util
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from jepa_lite.core.config import Config, apply_overrides


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


# ----------------------------------------------------------------------------------------------------------
# a tiny image set and a tiny config: what the training, resume and fault tests run on (import from conftest)


class Blobs(Dataset):
    """A tiny image set: 64 images of 16x16 with a class-dependent bright square."""

    def __init__(self, n=64):
        g = torch.Generator().manual_seed(0)
        self.y = torch.arange(n) % 4
        self.x = torch.randn(n, 1, 16, 16, generator=g) * 0.3
        for i, c in enumerate(self.y.tolist()):
            self.x[i, :, 4 * c : 4 * c + 4, 4:12] += 2.0

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def tiny_config(*overrides):
    cfg = Config()
    apply_overrides(cfg, [
        "data.image_size=16", "model.patch_size=4", "model.embed_dim=32", "model.depth=2", "model.num_heads=4",
        "model.predictor_dim=16", "model.predictor_depth=1", "model.predictor_heads=2", "optim.global_batch=16",
        "optim.epochs=2", "optim.warmup_epochs=0.5", "mask.target_scale=[0.1,0.2]", "mask.min_context=2",
        *overrides,
    ])  # fmt: skip
    return cfg


def png_folder(folder: Path, classes=("cat", "dog"), per_class: int = 3) -> Path:
    """An image folder folder/CLASS/i.png of small RGB images of different sizes, one colour per class."""
    from PIL import Image

    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            colour = (40 * c + 10 * i, 100, 200)
            Image.new("RGB", (40 + 5 * i, 30), colour).save(folder / name / f"{i}.png")
    return folder


# a tiny Fashion-MNIST run through scripts/pretrain.py's command line (dotted overrides)
PRETRAIN_TINY = [
    "model.patch_size=7", "model.embed_dim=32", "model.depth=2", "model.num_heads=2", "model.predictor_dim=16",
    "model.predictor_depth=1", "model.predictor_heads=2", "optim.global_batch=32", "optim.max_steps=3",
    "data.limit=256", "mask.min_context=1", "eval.train_limit=300", "eval.test_limit=200",
    "eval.low_shot_per_class=5",
]  # fmt: skip
