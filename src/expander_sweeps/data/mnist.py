"""Sequential MNIST from IDX files.

The four official files, or any subset holding at least one images/labels pair
(../shared/data/mnist holds only the 10k test pair). torchvision downloads the files where a
network is; everything after that reads IDX directly, so a local folder and a download take
the same path.
"""

from __future__ import annotations

import gzip
import math
import shutil
import zlib
from pathlib import Path

import numpy as np
import torch

from ..spec import MnistDataSpec
from .base import DataError, SequenceDataset, stratified_split, stratified_subset

__all__ = ["read_idx", "load_mnist"]
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array. A file that is not
    IDX, is cut short or holds a partial value raises DataError naming the file."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError; a cut .gz ends early
        kind = "not a gzip file or a damaged one" if path.suffix == ".gz" else "cannot be read"
        raise DataError(f"{path}: {kind} ({type(err).__name__}: {err}); replace the file") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: the IDX header is cut short ({len(data)} bytes; {header} expected)")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    itemsize = np.dtype(_IDX_DTYPES[data[2]]).itemsize
    if (len(data) - header) % itemsize:
        raise DataError(f"{path}: {len(data) - header} bytes of values is not a whole number of "
                        f"{itemsize}-byte values (the file is cut short)")
    array = np.frombuffer(data, dtype=_IDX_DTYPES[data[2]], offset=header)
    if array.size != math.prod(shape):
        raise DataError(f"{path}: IDX header says {shape} but the file holds {array.size} values")
    return array.reshape(shape)


_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "MNIST" / "raw", root / "raw"):
        for suffix in ("", ".gz"):
            candidate = folder / (stem + suffix)
            if candidate.is_file():
                return candidate
    return None


def _mnist_parts(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    parts = {}
    for part, (images_stem, labels_stem) in _MNIST_FILES.items():
        images, labels = _find(root, images_stem), _find(root, labels_stem)
        if images and labels:
            x, y = read_idx(images), read_idx(labels)
            if x.ndim != 3 or 0 in x.shape[1:]:
                raise DataError(f"{images}: images must be stored as N x rows x columns, but the file "
                                f"holds shape {x.shape}")
            if len(x) == 0:
                raise DataError(f"{images}: the file holds no images (its header says 0); replace it")
            if not np.issubdtype(x.dtype, np.integer):
                # Pixels are divided by 255 below: float pixels already in [0, 1] would become
                # near-zero images and train to chance, and NaN would fail every trial.
                finite = np.isfinite(x)
                what = (f"{int((~finite).sum())} NaN or infinite value(s)" if not finite.all()
                        else f"values from {float(x.min()):g} to {float(x.max()):g}")
                raise DataError(f"{images}: MNIST pixels are whole numbers 0-255 (IDX unsigned bytes), but the file "
                                f"holds {x.dtype.name} ({what}); convert it, or load such data with a custom "
                                "data.loader")
            if x.min() < 0 or x.max() > 255:
                raise DataError(f"{images}: pixels must be 0-255, but the file holds {int(x.min())} to {int(x.max())}")
            if y.ndim != 1:
                raise DataError(f"{labels}: labels must be one number per image, but the file holds shape {y.shape}")
            if not np.issubdtype(y.dtype, np.integer):
                raise DataError(f"{labels}: labels must be whole numbers 0-9, but the file holds {y.dtype.name} "
                                f"values{' (some NaN)' if np.isnan(y).any() else ''}; replace it")
            if len(x) != len(y):
                raise DataError(f"{images} holds {len(x)} images but {labels} holds {len(y)} labels")
            bad = np.flatnonzero((y < 0) | (y > 9))
            if len(bad):
                raise DataError(f"{labels}: {len(bad)} label(s) outside 0-9 (the first: {int(y[bad[0]])} "
                                f"at index {int(bad[0])})")
            parts[part] = (x, y.astype(np.int64))
    sizes = {part: x.shape[1:] for part, (x, _) in parts.items()}
    if len(set(sizes.values())) > 1:
        raise DataError(f"{root}: the train and test images differ in size ("
                        + ", ".join(f"{p} {r} x {c}" for p, (r, c) in sizes.items()) + "); they must match")
    return parts


def _download_mnist(root: Path) -> None:
    """torchvision's download into root/MNIST/raw; on failure, nothing it created is left behind."""
    try:
        from torchvision.datasets import MNIST
    except ImportError as err:  # torchvision is the `vision` extra
        raise DataError(f"downloading MNIST needs torchvision, which is not installed ({err}): "
                        "pip install 'expander-sweeps[vision]' (a torchvision matching your torch), or "
                        "point data.root at a folder that holds the IDX files") from None
    # The outermost folder this download creates (none if MNIST/ was there already).
    created = next((p for p in (root, root / "MNIST") if not p.exists()), None)
    for train in (True, False):
        try:
            MNIST(str(root), train=train, download=True)
        except Exception as err:  # network errors come in many types
            if created is not None:
                shutil.rmtree(created, ignore_errors=True)
            raise DataError(
                f"no MNIST IDX files in {root}, and downloading them failed ({err}). "
                "Put the IDX files there, or set data.root to a folder that has them."
            ) from None


def load_mnist(spec: MnistDataSpec) -> SequenceDataset:
    """Load the dataset the spec names, split it, shape it as sequences."""
    root = Path(spec.root).expanduser()
    parts = _mnist_parts(root) if root.is_dir() else {}
    if not parts and spec.download:
        _download_mnist(root)
        parts = _mnist_parts(root)
    if not parts:
        raise DataError(
            f"no MNIST IDX files in {root} (looked for t10k-images-idx3-ubyte[.gz] and friends, "
            f"also under MNIST/raw). Set data.root to the folder that holds them"
            + ("" if spec.download else ", or set data.download=true where a network is")
            + "."
        )
    if spec.split == "official":
        missing = [p for p in _MNIST_FILES if p not in parts]
        if missing:
            raise DataError(
                f"data.split 'official' needs MNIST's train and test files, but {root} lacks the "
                f"{' and '.join(missing)} pair; use data.split=pooled to split what is there"
            )
        (x_tr, y_tr), (x_te, y_te) = parts["train"], parts["test"]
        how = "official 60k/10k split"
    else:
        x_all = np.concatenate([parts[p][0] for p in parts])
        y_all = np.concatenate([parts[p][1] for p in parts])
        train_idx, test_idx = stratified_split(y_all, spec.test_fraction, spec.split_seed)
        x_tr, y_tr, x_te, y_te = x_all[train_idx], y_all[train_idx], x_all[test_idx], y_all[test_idx]
        how = f"pooled {len(y_all)} images ({'+'.join(parts)}), stratified {100 * spec.test_fraction:g}% test, seed {spec.split_seed}"
    keep_tr = stratified_subset(y_tr, spec.limit_train, spec.split_seed + 1)
    keep_te = stratified_subset(y_te, spec.limit_test, spec.split_seed + 2)
    x_tr, y_tr, x_te, y_te = x_tr[keep_tr], y_tr[keep_tr], x_te[keep_te], y_te[keep_te]

    rows, cols = x_tr.shape[1:]
    steps = rows if spec.sequence == "rows" else rows * cols

    def as_sequences(images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(images.astype(np.float32) / 255.0)
        # rows: step t sees image row t (k = rows, columns features; 28 x 28 for MNIST);
        # pixels: one pixel per step (k = rows x columns, 784 for MNIST).
        return x.reshape(len(x), rows, cols) if spec.sequence == "rows" else x.reshape(len(x), steps, 1)

    return SequenceDataset(
        x_train=as_sequences(x_tr),
        y_train=torch.from_numpy(y_tr),
        x_test=as_sequences(x_te),
        y_test=torch.from_numpy(y_te),
        num_classes=10,
        description=f"MNIST ({spec.sequence}, k={steps}"
        + (f", {rows} x {cols} images" if (rows, cols) != (28, 28) else "") + f"): {how}; "
        f"{len(y_tr)} train / {len(y_te)} test",
    )
