import gzip
import math

import numpy as np
import pytest
import torch

from expander_sweeps.data import (
    DataError,
    add_noise,
    load_dataset,
    noisy_test_sets,
    read_idx,
    stratified_split,
)
from expander_sweeps.spec import MnistDataSpec as DataSpec
from expander_sweeps.spec import NoiseSpec


def _write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_roundtrip(tmp_path, compress):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("x.idx.gz" if compress else "x.idx")
    _write_idx(path, array, compress)
    assert np.array_equal(read_idx(path), array)


def test_read_idx_rejects_other_files(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x89PNG....")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(bad)


def test_folder_with_only_the_test_pair_is_pooled_and_split(mnist_dir):
    data = load_dataset(DataSpec(root=str(mnist_dir), download=False))
    assert data.x_train.shape == (8000, 28, 28) and data.x_test.shape == (2000, 28, 28)
    assert data.x_train.dtype == torch.float32 and 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    # Stratified: every class keeps its share of the 10k set (e.g. class 1 has 1135 -> 227 in test).
    assert torch.bincount(data.y_test, minlength=10)[1].item() == 227
    assert torch.bincount(data.y_train).sum().item() == 8000
    # Seeded and disjoint: the same split twice, no image in both halves.
    again = load_dataset(DataSpec(root=str(mnist_dir), download=False))
    assert torch.equal(again.x_test, data.x_test)
    train_rows = {row.numpy().tobytes() for row in data.x_train.reshape(8000, -1)}
    assert not any(row.numpy().tobytes() in train_rows for row in data.x_test.reshape(2000, -1))
    other = load_dataset(DataSpec(root=str(mnist_dir), download=False, split_seed=1))
    assert not torch.equal(other.x_test, data.x_test)


def test_pixel_sequences_and_limits(mnist_dir):
    data = load_dataset(DataSpec(root=str(mnist_dir), download=False, sequence="pixels",
                                 limit_train=500, limit_test=120))
    assert data.x_train.shape == (500, 784, 1) and data.x_test.shape == (120, 784, 1)
    assert data.seq_len == 784 and data.features == 1
    assert torch.bincount(data.y_train, minlength=10).min() >= 40  # stratified, not the first 500


def test_any_idx_image_size_14x14_rows_and_pixels(tmp_path, mnist_dir):
    """IDX files of another image size (here MNIST subsampled to 14 x 14): k = rows, features =
    columns; pixels: k = rows x columns."""
    full = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")[:600]
    labels = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")[:600]
    small = full[:, ::2, ::2]
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", small, compress=False)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels, compress=False)
    rows = load_dataset(DataSpec(root=str(tmp_path), download=False, test_fraction=0.5))
    assert rows.x_train.shape == (300, 14, 14) and rows.seq_len == 14 and rows.features == 14
    assert "k=14, 14 x 14 images" in rows.description
    pooled = {image.tobytes() for image in (small.astype(np.float32) / 255.0)}
    assert all(x.numpy().tobytes() in pooled for x in rows.x_train)  # each sequence is one image's rows
    pixels = load_dataset(DataSpec(root=str(tmp_path), download=False, test_fraction=0.5, sequence="pixels"))
    assert pixels.x_test.shape == (300, 196, 1)
    assert torch.equal(pixels.x_test.reshape(300, 14, 14), rows.x_test)  # same split, pixel order row by row
    _write_idx(tmp_path / "train-images-idx3-ubyte", full, compress=False)  # 28 x 28 beside 14 x 14
    _write_idx(tmp_path / "train-labels-idx1-ubyte", labels, compress=False)
    with pytest.raises(DataError, match="differ in size"):
        load_dataset(DataSpec(root=str(tmp_path), download=False))


def test_official_split_needs_the_train_files(mnist_dir):
    with pytest.raises(DataError, match="lacks the train pair"):
        load_dataset(DataSpec(root=str(mnist_dir), download=False, split="official"))


def test_missing_folder_says_where_it_looked(tmp_path):
    with pytest.raises(DataError, match="no MNIST IDX files in .*data.root"):
        load_dataset(DataSpec(root=str(tmp_path / "empty"), download=False))


def test_stratified_split_is_exact():
    labels = np.repeat(np.arange(3), [50, 30, 20])
    train, test = stratified_split(labels, 0.2, seed=0)
    assert len(test) == 20 and len(train) == 80
    assert np.bincount(labels[test]).tolist() == [10, 6, 4]
    assert set(train).isdisjoint(test)


def test_noise_hits_a_fraction_p_with_the_given_variance():
    x = torch.zeros(200, 28, 28)
    generator = torch.Generator().manual_seed(0)
    noisy = add_noise(x, fraction=0.2, variance=0.45, generator=generator)
    touched = noisy != 0
    assert touched.float().mean().item() == pytest.approx(0.2, abs=0.005)
    # sigma is a variance: the standard deviation of the added values is sqrt(0.45) = 0.67.
    assert noisy[touched].var().item() == pytest.approx(0.45, rel=0.02)
    assert noisy[touched].mean().item() == pytest.approx(0.0, abs=0.01)
    assert noisy[touched].std().item() == pytest.approx(math.sqrt(0.45), rel=0.01)


def test_noisy_test_sets_are_seeded_and_include_clean():
    x = torch.rand(50, 28, 28)
    spec = NoiseSpec(fraction=0.2, variances=[0.6, 0.15], seed=3)
    first, second = noisy_test_sets(x, spec), noisy_test_sets(x, spec)
    assert list(first) == [0.0, 0.15, 0.6]
    assert torch.equal(first[0.0], x)
    assert torch.equal(first[0.6], second[0.6])
    assert not torch.equal(first[0.15], x)
