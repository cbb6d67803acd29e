"""Tests of jepa_lite/data/__init__.py: IDX parsing, Fashion-MNIST lookup, ShapesWorld labels, build_dataset."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import png_folder
from jepa_lite.data import DATASETS, build_dataset, dataset_info, fashion_mnist, image_folders
from jepa_lite.data.fashion_mnist import FMNIST_MEAN, FMNIST_STD, FashionMNIST, find_fashion_mnist, read_idx
from jepa_lite.data.shapes import ShapesWorld, dominant_shape

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
HAS_DEBIAN = all(
    (DEBIAN / f"{name}.gz").is_file() or (DEBIAN / name).is_file()
    for pair in fashion_mnist.FMNIST_FILES.values()
    for name in pair
)
BACKGROUND = (0.0 - FMNIST_MEAN) / FMNIST_STD  # normalised value of a black pixel


# ----------------------------------------------------------------------------------------------------------
# helpers: IDX files written by hand (independently of read_idx)


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    """Write `array` in the IDX format: magic 0x0000TTDD, big-endian uint32 dims, big-endian data."""
    codes = {np.dtype("uint8"): 0x08, np.dtype("int32"): 0x0C, np.dtype("float32"): 0x0D}
    header = struct.pack(">BBBB", 0, 0, codes[array.dtype], array.ndim)
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def make_fake_fmnist(folder: Path, n_train: int = 6, n_test: int = 4, seed: int = 0, gz: bool = True) -> Path:
    """A complete tiny Fashion-MNIST folder; labels start at `seed % 10` so folders can be told apart."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        image_name, label_name = fashion_mnist.FMNIST_FILES[split]
        write_idx(folder / image_name, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), gz=gz)
        labels = ((np.arange(n) + seed) % 10).astype(np.uint8)
        write_idx(folder / label_name, labels, gz=not gz)  # mix raw and gz in one folder
    return folder


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No $JEPA_DATA, no Debian folder, an empty cache: only what a test creates is found."""
    monkeypatch.delenv("JEPA_DATA", raising=False)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    monkeypatch.setattr(fashion_mnist, "CACHE_DIR", tmp_path / "cache")
    return tmp_path


# ----------------------------------------------------------------------------------------------------------
# read_idx


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trips_uint8_images_and_labels(tmp_path, gz):
    images = np.random.default_rng(0).integers(0, 256, (3, 5, 7), dtype=np.uint8)
    labels = np.array([9, 0, 4], dtype=np.uint8)
    got_images = read_idx(write_idx(tmp_path / "img", images, gz=gz))
    got_labels = read_idx(write_idx(tmp_path / "lab", labels, gz=gz))
    assert got_images.dtype == torch.uint8 and got_images.shape == (3, 5, 7)
    assert torch.equal(got_images, torch.from_numpy(images))
    assert got_labels.tolist() == [9, 0, 4]


def test_read_idx_reads_big_endian_wider_types(tmp_path):
    values = np.array([[1, -2, 70000], [2**30, 0, -(2**31)]], dtype=np.int32)
    got = read_idx(write_idx(tmp_path / "ints", values))
    assert got.dtype == torch.int32 and got.tolist() == values.tolist()


@pytest.mark.parametrize(
    "payload", [b"\x89PNG\r\n\x1a\n" + bytes(16), b"\x00\x00\x07\x01" + bytes(8), b"\x00"]
)
def test_read_idx_rejects_bad_magic_number(tmp_path, payload):
    path = tmp_path / "not_idx"
    path.write_bytes(payload)
    with pytest.raises(ValueError, match="magic number") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_read_idx_rejects_truncated_file(tmp_path):
    path = write_idx(tmp_path / "img", np.zeros((4, 3, 3), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"shape \[4, 3, 3\]"):
        read_idx(path)


# ----------------------------------------------------------------------------------------------------------
# find_fashion_mnist


def test_lookup_order_root_then_env_then_debian_then_cache(isolated, monkeypatch):
    root = make_fake_fmnist(isolated / "root", seed=1)
    env = make_fake_fmnist(isolated / "env", seed=2)
    debian = make_fake_fmnist(isolated / "debian", seed=3)
    cache = make_fake_fmnist(isolated / "cache" / "fashion-mnist", seed=4)
    monkeypatch.setenv("JEPA_DATA", str(env))
    assert find_fashion_mnist(root) == root
    assert find_fashion_mnist(str(root)) == root  # str accepted too
    assert find_fashion_mnist() == env
    monkeypatch.delenv("JEPA_DATA")
    assert find_fashion_mnist() == debian
    monkeypatch.setattr(fashion_mnist, "DEBIAN_FASHION_MNIST", isolated / "nowhere")
    assert find_fashion_mnist() == cache
    # the folder found is the one whose files are read
    assert FashionMNIST(root, train=False).targets[0].item() == 1
    assert FashionMNIST(train=False).targets[0].item() == 4


def test_lookup_finds_subfolder_layouts(isolated, monkeypatch):
    nested = make_fake_fmnist(isolated / "data" / "fashion-mnist")
    assert find_fashion_mnist(isolated / "data") == nested
    torchvision_layout = make_fake_fmnist(isolated / "tv" / "FashionMNIST" / "raw")
    monkeypatch.setenv("JEPA_DATA", str(isolated / "tv"))
    assert find_fashion_mnist() == torchvision_layout


def test_incomplete_folder_is_skipped_in_the_search(isolated, monkeypatch):
    partial = make_fake_fmnist(isolated / "partial")
    next(partial.glob("t10k-labels*")).unlink()
    debian = make_fake_fmnist(isolated / "debian")
    monkeypatch.setenv("JEPA_DATA", str(partial))
    assert find_fashion_mnist() == debian


def test_an_explicit_root_is_used_or_rejected_never_replaced(isolated, monkeypatch):
    make_fake_fmnist(isolated / "debian")  # a good copy elsewhere must not be picked up instead
    monkeypatch.setenv("JEPA_DATA", str(make_fake_fmnist(isolated / "env")))
    partial = make_fake_fmnist(isolated / "partial")
    next(partial.glob("t10k-labels*")).unlink()
    for root, why in (
        (partial, "missing t10k-labels-idx1-ubyte[.gz]"),
        (isolated / "nope", "no such folder"),
    ):
        with pytest.raises(FileNotFoundError) as err:
            find_fashion_mnist(root)
        msg = str(err.value)
        assert f"{root} (root argument): {why}" in msg and "point --data / data.root at a folder" in msg
        assert str(isolated / "env") not in msg and str(isolated / "debian") not in msg


def test_not_found_error_lists_every_place_and_the_fixes(isolated, monkeypatch):
    partial = make_fake_fmnist(isolated / "partial")
    next(partial.glob("t10k-labels*")).unlink()
    monkeypatch.setenv("JEPA_DATA", str(partial))
    with pytest.raises(FileNotFoundError) as err:
        find_fashion_mnist()
    msg = str(err.value)
    for place in (partial, isolated / "debian", isolated / "cache"):
        assert str(place) in msg
    assert "missing t10k-labels-idx1-ubyte[.gz]" in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "JEPA_DATA" in msg and "download=True" in msg
    # the order of the listing is the search order
    assert msg.index(str(partial)) < msg.index(str(isolated / "debian")) < msg.index(str(isolated / "cache"))


def test_error_says_when_env_var_is_unset(isolated):
    with pytest.raises(FileNotFoundError, match=r"\$JEPA_DATA: not set"):
        find_fashion_mnist()


class _FakeTorchvisionFashionMNIST:
    """Stands in for torchvision.datasets.FashionMNIST: 'downloads' into root/FashionMNIST/raw."""

    calls: list = []
    fail = False

    def __init__(self, root, train=True, download=False):
        type(self).calls.append((root, train, download))
        if type(self).fail:
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: no internet")
        make_fake_fmnist(Path(root) / "FashionMNIST" / "raw", seed=7)


def test_download_uses_torchvision_into_the_cache(isolated, monkeypatch):
    import torchvision.datasets

    fake = _FakeTorchvisionFashionMNIST
    monkeypatch.setattr(fake, "calls", [])
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", fake)
    with pytest.raises(FileNotFoundError):
        find_fashion_mnist()  # download=False never downloads
    assert fake.calls == []
    folder = find_fashion_mnist(download=True)
    assert folder == isolated / "cache" / "FashionMNIST" / "raw"
    assert fake.calls == [(str(isolated / "cache"), True, True)]
    assert find_fashion_mnist() == folder  # found in the cache next time, no second download
    assert len(fake.calls) == 1


def test_failed_download_is_reported_with_the_places(isolated, monkeypatch):
    import torchvision.datasets

    monkeypatch.setattr(_FakeTorchvisionFashionMNIST, "fail", True)
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", _FakeTorchvisionFashionMNIST)
    with pytest.raises(FileNotFoundError, match="no internet") as err:
        find_fashion_mnist(download=True)
    assert str(isolated / "debian") in str(err.value)


# ----------------------------------------------------------------------------------------------------------
# FashionMNIST on a fake folder (exact values) and on the real files


def test_items_are_normalised_pixels(isolated):
    ds = FashionMNIST(make_fake_fmnist(isolated / "f", n_train=6), train=True)
    assert len(ds) == 6 and ds.images.dtype == torch.uint8 and ds.images.shape == (6, 28, 28)
    assert ds.targets.dtype == torch.long and len(ds.classes) == 10
    image, label = ds[3]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert isinstance(label, int) and label == ds.targets[3].item()
    expected = (ds.images[3].float() / 255 - FMNIST_MEAN) / FMNIST_STD
    torch.testing.assert_close(image[0], expected)


@pytest.mark.parametrize("size", [32, 31, 40])
def test_padding_keeps_the_28px_image_centred(isolated, size):
    folder = make_fake_fmnist(isolated / "f")
    small, big = FashionMNIST(folder, image_size=28), FashionMNIST(folder, image_size=size)
    lo = (size - 28) // 2
    for i in (0, 5):
        x28, x = small[i][0], big[i][0]
        assert x.shape == (1, size, size)
        torch.testing.assert_close(x[:, lo : lo + 28, lo : lo + 28], x28)
        border = torch.ones(size, size, dtype=torch.bool)
        border[lo : lo + 28, lo : lo + 28] = False
        torch.testing.assert_close(x[0][border], torch.full((int(border.sum()),), BACKGROUND))
    if size == 32:  # symmetric: 2 px on each side
        assert lo == 2 and (size - 28 - lo) == 2


def test_tensors_matches_items_and_limit_keeps_the_first(isolated):
    folder = make_fake_fmnist(isolated / "f", n_train=6)
    ds = FashionMNIST(folder, image_size=32, limit=4)
    full = FashionMNIST(folder, image_size=32)
    images, labels = ds.tensors()
    assert images.shape == (4, 1, 32, 32) and labels.tolist() == full.targets[:4].tolist()
    for i in range(4):
        assert torch.equal(images[i], ds[i][0]) and torch.equal(images[i], full[i][0])


def test_fashion_mnist_rejects_bad_arguments(isolated):
    folder = make_fake_fmnist(isolated / "f")
    with pytest.raises(ValueError, match="image_size"):
        FashionMNIST(folder, image_size=16)
    with pytest.raises(ValueError, match="limit"):
        FashionMNIST(folder, limit=0)


@pytest.fixture(scope="module")
def real_fmnist():
    if not HAS_DEBIAN:
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    return FashionMNIST(DEBIAN, train=True), FashionMNIST(DEBIAN, train=False, image_size=32)


def test_real_fashion_mnist_shapes_labels_and_statistics(real_fmnist):
    train, test = real_fmnist
    assert train.images.shape == (60000, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (10000, 28, 28)
    for ds in (train, test):
        assert torch.equal(torch.bincount(ds.targets), torch.full((10,), len(ds) // 10))  # balanced 0..9
    subset = torch.stack([train[i][0] for i in range(0, 60000, 30)])  # 2,000 images
    assert abs(subset.mean().item()) < 0.03 and abs(subset.std().item() - 1) < 0.03
    x, y = test[0]
    assert x.shape == (1, 32, 32) and y == test.targets[0].item()
    torch.testing.assert_close(x[0, 2:30, 2:30], (test.images[0].float() / 255 - FMNIST_MEAN) / FMNIST_STD)


# ----------------------------------------------------------------------------------------------------------
# ShapesWorld


def _components(fg: torch.Tensor) -> list[torch.Tensor]:
    """4-connected components of masks fg [B, S, S]: one label map [S, S] per image (0 = background)."""
    b, s, _ = fg.shape
    ids = torch.arange(1, s * s + 1, dtype=torch.float32).view(1, s, s).expand(b, s, s)
    lab = torch.where(fg, ids, 0.0)
    while True:  # propagate the largest id through each component until nothing changes
        p = F.pad(lab, (1, 1, 1, 1))
        neighbours = torch.stack([lab, p[:, :-2, 1:-1], p[:, 2:, 1:-1], p[:, 1:-1, :-2], p[:, 1:-1, 2:]])
        new = torch.where(fg, neighbours.amax(0), 0.0)
        if torch.equal(new, lab):
            return list(lab)
        lab = new


def _foreground(ds: ShapesWorld) -> torch.Tensor:
    """Object pixels [N, S, S]: backgrounds are below 0.12 * 255, object colours above 0.3 * 255."""
    return ds.images.amax(1) > 50


@pytest.fixture(scope="module")
def shapes():
    return ShapesWorld(600, seed=5)


def test_shapes_are_deterministic_given_the_seed():
    a, b, c = ShapesWorld(64, seed=0), ShapesWorld(64, seed=0), ShapesWorld(64, seed=1)
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)
    assert torch.equal(a.counts, b.counts) and torch.equal(a.positions, b.positions)
    assert not torch.equal(a.images, c.images)
    x, y = a[10]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)


def test_shapes_items_match_tensors_and_are_normalised(shapes):
    images, labels = shapes.tensors()
    assert images.shape == (600, 3, 32, 32) and torch.equal(labels, shapes.targets)
    assert torch.equal(images[7], shapes[7][0])
    assert images.mean((0, 2, 3)).abs().max() < 0.1 and (images.std((0, 2, 3)) - 1).abs().max() < 0.1


def test_shapes_label_ranges_and_balance(shapes):
    assert shapes.counts.min() >= 1 and shapes.counts.max() <= 4
    assert set(shapes.positions.tolist()) == set(range(9))
    assert set(shapes.targets.tolist()) == {0, 1, 2}
    assert torch.bincount(shapes.counts, minlength=5)[1:].min() > 100  # every count 1..4 is common
    assert torch.bincount(shapes.targets).min() > 150


def test_shapes_count_equals_the_objects_drawn(shapes):
    fg = _foreground(shapes)[:200]
    drawn = torch.tensor([len(lab.unique()) - 1 for lab in _components(fg)])
    assert torch.equal(drawn, shapes.counts[:200])


def test_shapes_single_object_position_and_kind_match_its_pixels(shapes):
    single = (shapes.counts == 1).nonzero().squeeze(1)
    assert len(single) > 100
    fg = _foreground(shapes)
    centre = torch.arange(32, dtype=torch.float32) + 0.5
    for i in single.tolist():
        ys, xs = fg[i].nonzero(as_tuple=True)
        cy, cx = centre[ys].mean(), centre[xs].mean()
        cell = min(int(cy * 3 / 32), 2) * 3 + min(int(cx * 3 / 32), 2)
        assert shapes.positions[i].item() == cell
        height, width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        fill = len(ys) / (height * width).item()
        low = ((ys.float().mean() - ys.min()) / (height - 1)).item()  # 0.5 symmetric, ~2/3 for a triangle
        kind = 1 if fill == 1.0 else (2 if low > 0.6 else 0)  # square fills its box; triangle is bottom-heavy
        assert shapes.targets[i].item() == kind, (i, fill, low)


def test_shapes_position_is_the_cell_of_the_largest_object(shapes):
    fg = _foreground(shapes)
    centre = torch.arange(32, dtype=torch.float32) + 0.5
    checked = 0
    for i, lab in enumerate(_components(fg[:150])):
        ids, areas = lab[lab > 0].unique(return_counts=True)
        if (areas == areas.max()).sum() > 1:
            continue  # two largest objects of equal area: either may be the one
        ys, xs = (lab == ids[areas.argmax()]).nonzero(as_tuple=True)
        cy, cx = centre[ys].mean(), centre[xs].mean()
        assert shapes.positions[i].item() == min(int(cy * 3 / 32), 2) * 3 + min(int(cx * 3 / 32), 2)
        checked += 1
    assert checked > 100


def test_dominant_shape_majority_wins_ties_go_to_the_largest():
    kind = torch.tensor([[0, 1, 1, 2], [0, 1, 2, 2], [2, 0, 0, 0], [1, 2, 0, 0]])
    active = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    areas = torch.tensor([[99.0, 5, 5, 50], [99, 5, 5, 50], [10, 30, 99, 99], [3, 99, 99, 99]])
    # row 0: two squares beat a big circle; row 1: two triangles beat a big circle;
    # row 2: one triangle vs one circle (inactive circles ignored) -> larger = circle; row 3: only a square
    assert dominant_shape(kind, active, areas).tolist() == [1, 2, 0, 1]


def test_shapes_rejects_bad_arguments():
    for kwargs, name in [
        ({"n": 0}, "n="),
        ({"image_size": 8}, "image_size"),
        ({"max_objects": 0}, "max_objects"),
    ]:
        with pytest.raises(ValueError, match=name):
            ShapesWorld(**kwargs)


def test_shapes_max_objects_one_gives_single_objects():
    ds = ShapesWorld(50, seed=3, max_objects=1, image_size=48)
    assert ds.counts.eq(1).all() and ds.images.shape == (50, 3, 48, 48)


# ----------------------------------------------------------------------------------------------------------
# build_dataset and dataset_info


def test_image_folder_loads_classes_and_transforms(tmp_path):
    from torchvision import transforms as T

    root = png_folder(tmp_path / "pets")
    train = build_dataset("imagefolder", root=root, image_size=16)
    assert len(train) == 6 and train.classes == ["cat", "dog"]
    x, y = train[4]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y == 1 and isinstance(y, int)
    # training: RandomResizedCrop(scale 0.3-1.0), ToTensor, Normalize and nothing else (the paper's recipe)
    steps = train.transform.transforms
    assert [type(t) for t in steps] == [T.RandomResizedCrop, T.ToTensor, T.Normalize]
    assert steps[0].scale == (0.3, 1.0) and steps[0].size == (16, 16)
    evaluation = build_dataset("imagefolder", root=root, image_size=224, train=False)
    steps = evaluation.transform.transforms
    assert [type(t) for t in steps] == [T.Resize, T.CenterCrop, T.ToTensor, T.Normalize]
    assert steps[0].size == 256 and evaluation[0][0].shape == (3, 224, 224)


def test_image_folder_uses_train_and_val_subfolders(tmp_path):
    png_folder(tmp_path / "inet" / "train", classes=("a", "b", "c"))
    png_folder(tmp_path / "inet" / "val", classes=("a", "b", "c"), per_class=1)
    assert len(build_dataset("imagefolder", root=tmp_path / "inet", image_size=8)) == 9
    assert len(build_dataset("imagefolder", root=tmp_path / "inet", image_size=8, train=False)) == 3


def test_image_folder_errors_name_the_path(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        build_dataset("imagefolder", root=missing)
    empty = tmp_path / "empty"
    (empty / "cat").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=str(empty)):
        build_dataset("imagefolder", root=empty)
    with pytest.raises(ValueError, match="root"):
        build_dataset("imagefolder")


def test_unknown_dataset_name_lists_valid_names():
    for call in (lambda: build_dataset("mnist"), lambda: dataset_info("mnist")):
        with pytest.raises(ValueError, match="mnist") as err:
            call()
        assert all(name in str(err.value) for name in DATASETS)


def test_dataset_info():
    assert {k: dataset_info("fmnist")[k] for k in ("in_chans", "image_size", "num_classes")} == {
        "in_chans": 1,
        "image_size": 28,
        "num_classes": 10,
    }
    for name in DATASETS:
        info = dataset_info(name)
        assert len(info["mean"]) == len(info["std"]) == info["in_chans"]


def test_build_fmnist_and_shapes(isolated):
    ds = build_dataset("fmnist", root=make_fake_fmnist(isolated / "f"), image_size=32, train=False)
    assert isinstance(ds, FashionMNIST) and len(ds) == 4 and ds[0][0].shape == (1, 32, 32)
    train, test = build_dataset("shapes", limit=20), build_dataset("shapes", limit=20, train=False)
    assert len(train) == 20 and train[0][0].shape == (3, 32, 32)
    assert not torch.equal(train.images, test.images)  # different seeds


def test_torchvision_dataset_missing_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        build_dataset("cifar10", root=tmp_path)


def test_build_dataset_validates_arguments():
    with pytest.raises(ValueError, match="crop_scale"):
        build_dataset("shapes", crop_scale=(0.8, 0.3))
    with pytest.raises(ValueError, match="limit"):
        build_dataset("shapes", limit=-1)


# ----------------------------------------------------------------------------------------------------------
# image folders: corrupt files are skipped and counted, every image mode becomes RGB


def _modes_folder(folder: Path) -> Path:
    (folder / "a").mkdir(parents=True)
    rgb = Image.new("RGB", (12, 10), (200, 30, 60))
    rgb.convert("L").save(folder / "a" / "gray.png")
    rgb.convert("LA").save(folder / "a" / "gray_alpha.png")
    Image.new("RGBA", (12, 10), (200, 30, 60, 0)).save(folder / "a" / "rgba.png")
    rgb.convert("P").save(folder / "a" / "palette.png")
    pal = rgb.convert("P")
    pal.info["transparency"] = 0
    pal.save(folder / "a" / "palette_transparent.png", transparency=0)
    rgb.convert("CMYK").save(folder / "a" / "cmyk.jpg")
    Image.fromarray(np.full((10, 12), 40000, dtype=np.uint16)).save(folder / "a" / "gray16.png")
    rgb.save(folder / "a" / "rgb.bmp")
    return folder


def test_image_folder_converts_every_mode_to_rgb(tmp_path, recwarn):
    ds = build_dataset("imagefolder", root=_modes_folder(tmp_path / "modes"), image_size=8, train=False)
    assert len(ds) == 8 and not ds.skipped
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (3, 8, 8) and torch.isfinite(x).all() and y == 0
    gray16 = image_folders.load_rgb(tmp_path / "modes" / "a" / "gray16.png")
    assert gray16.getpixel((0, 0)) == (156, 156, 156)  # 40000 / 257, not clipped to white
    assert not [w for w in recwarn if "Palette" in str(w.message)]  # transparency handled, no PIL warning


def test_corrupt_images_are_skipped_and_counted_with_a_warning(tmp_path):
    root = png_folder(tmp_path / "pets")
    (root / "cat" / "empty.png").write_bytes(b"")
    (root / "dog" / "page.jpg").write_bytes(b"<html>404 not found</html>")
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image file\(s\) of 8 .*first: .*empty\.png"):
        ds = build_dataset("imagefolder", root=root, image_size=8)
    assert len(ds) == 6 and len(ds.skipped) == 2 and ds.targets.count(1) == 3


def test_truncated_image_is_replaced_by_the_next_with_a_warning(tmp_path):
    root = png_folder(tmp_path / "pets")
    bad = root / "cat" / "0.png"
    big = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    big.save(bad)
    bad.write_bytes(bad.read_bytes()[:200])  # the header survives, the pixels do not
    ds = build_dataset("imagefolder", root=root, image_size=8, train=False)
    assert len(ds) == 6  # the header scan cannot tell
    with pytest.warns(UserWarning, match=r"skipping unreadable image file .*0\.png .*1 skipped so far"):
        x, y = ds[0]
    assert x.shape == (3, 8, 8) and y == 0 and ds.skipped == [str(bad)]
    assert torch.equal(ds[0][0], ds[1][0])  # deterministic: always the next readable image


# ----------------------------------------------------------------------------------------------------------
# the download a fresh machine makes: torchvision's real downloader against a local file server


@pytest.fixture
def local_mirror(tmp_path, monkeypatch):
    """A tiny Fashion-MNIST served over HTTP on 127.0.0.1, torchvision's only mirror (with its MD5 sums)."""
    import functools
    import hashlib
    import http.server
    import threading

    from torchvision.datasets import FashionMNIST as TorchvisionFashionMNIST

    served = tmp_path / "served"
    make_fake_fmnist(served, n_train=6, n_test=4, seed=5, gz=True)
    for raw in [p for p in served.iterdir() if p.suffix != ".gz"]:  # torchvision fetches .gz files only
        raw.with_name(raw.name + ".gz").write_bytes(gzip.compress(raw.read_bytes()))
        raw.unlink()
    resources = [(p.name, hashlib.md5(p.read_bytes()).hexdigest()) for p in sorted(served.iterdir())]
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(TorchvisionFashionMNIST, "mirrors", [f"http://127.0.0.1:{server.server_port}/"])
    monkeypatch.setattr(TorchvisionFashionMNIST, "resources", resources)
    yield server
    server.shutdown()


def test_a_fresh_machine_downloads_fashion_mnist_into_the_cache_and_checks_it(isolated, local_mirror):
    test = build_dataset("fmnist", train=False)  # nothing local: fetched, MD5-checked, read
    assert test.root == isolated / "cache" / "FashionMNIST" / "raw"
    assert len(test) == 4 and test.targets.tolist() == [5, 6, 7, 8]
    assert len(build_dataset("fmnist", train=True)) == 6  # found in the cache now, no second download


def test_a_corrupt_download_is_refused(isolated, local_mirror, monkeypatch):
    from torchvision.datasets import FashionMNIST as TorchvisionFashionMNIST

    wrong = [(name, "0" * 32) for name, _ in TorchvisionFashionMNIST.resources]
    monkeypatch.setattr(TorchvisionFashionMNIST, "resources", wrong)
    with pytest.raises(FileNotFoundError, match="download into .* failed"):
        build_dataset("fmnist", train=False)


def test_no_download_into_a_folder_you_named_and_a_clear_error_offline(isolated, monkeypatch):
    from torchvision.datasets import FashionMNIST as TorchvisionFashionMNIST

    monkeypatch.setattr(TorchvisionFashionMNIST, "mirrors", ["http://127.0.0.1:9/"])  # nothing listens there
    with pytest.raises(FileNotFoundError, match=r"root argument\): no such folder") as err:
        build_dataset("fmnist", root=isolated / "mine")
    assert "the download into" not in str(err.value)  # a named folder is never a download target
    with pytest.raises(FileNotFoundError, match=r"is the internet reachable\?") as err:
        build_dataset("fmnist")
    assert "apt-get install dataset-fashion-mnist" in str(err.value)
