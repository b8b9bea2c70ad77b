"""What every dataset returns, the error it raises, and the seeded stratified split."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["SequenceDataset", "DataError", "stratified_split", "stratified_subset"]


class DataError(RuntimeError):
    """The dataset cannot be found or read; the message says where it looked and what to do."""


@dataclass
class SequenceDataset:
    """Train and test tensors shaped as sequences: x is (N, k, features) float32, y is int64."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    description: str
    from_cache: bool = False  # True when features came from the on-disk feature cache

    def fingerprint(self) -> str:
        """A hash of the training data itself: a dense model is reused only for the same data."""
        digest = hashlib.sha256()
        for tensor in (self.x_train, self.y_train):
            digest.update(tensor.contiguous().cpu().numpy().tobytes())
        return digest.hexdigest()[:16]

    @property
    def seq_len(self) -> int:
        return self.x_train.shape[1]

    @property
    def features(self) -> int:
        return self.x_train.shape[2]


def _per_class_counts(labels: np.ndarray, total: int) -> dict[int, int]:
    """Split `total` over the classes in proportion to their sizes, exactly (largest remainder)."""
    classes, sizes = np.unique(labels, return_counts=True)
    quotas = sizes * total / len(labels)
    counts = np.floor(quotas).astype(int)
    for i in np.argsort(-(quotas - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    return dict(zip(classes.tolist(), counts.tolist(), strict=True))


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test): round(test_fraction * N) held out, every class in proportion; seeded."""
    rng = np.random.default_rng(seed)
    n_test = _per_class_counts(labels, int(round(len(labels) * test_fraction)))
    train, test = [], []
    for cls, count in n_test.items():
        members = rng.permutation(np.flatnonzero(labels == cls))
        test.append(members[:count])
        train.append(members[count:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def stratified_subset(labels: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    """Exactly `size` indices (all when None or larger), every class in proportion; sorted."""
    if size is None or size >= len(labels):
        return np.arange(len(labels))
    _, keep = stratified_split(labels, size / len(labels), seed)
    return np.sort(keep)
