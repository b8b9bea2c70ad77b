"""Datasets as (N, k, features) float tensors with integer labels, and input noise."""

from __future__ import annotations

from pathlib import Path

from ..spec import AudioDataSpec, CustomDataSpec, MnistDataSpec
from .base import DataError, SequenceDataset, stratified_split, stratified_subset
from .mnist import load_mnist, read_idx
from .noise import add_noise, noise_std, noisy_test_sets

__all__ = [
    "DataError",
    "SequenceDataset",
    "load_dataset",
    "read_idx",
    "stratified_split",
    "stratified_subset",
    "add_noise",
    "noise_std",
    "noisy_test_sets",
]


def load_dataset(spec: MnistDataSpec | AudioDataSpec | CustomDataSpec, cache_dir: str | Path | None = None,
                 spec_dir: Path | None = None) -> SequenceDataset:
    """Load, split and shape the dataset the spec names. Audio features are cached in `cache_dir`;
    a custom `data.loader` module may sit in `spec_dir` (the spec's folder)."""
    try:
        if isinstance(spec, MnistDataSpec):
            return load_mnist(spec)
        if isinstance(spec, CustomDataSpec):
            from ..training.factories import dataset_from_loader

            return dataset_from_loader(spec, spec_dir)
        from .audio import load_audio  # torchaudio is imported only for audio datasets

        if cache_dir is None:
            raise ValueError("audio datasets need a cache_dir for their features")
        return load_audio(spec, Path(cache_dir))
    except PermissionError as err:  # a data folder or file this user may not read
        raise DataError(f"{err.filename or getattr(spec, 'root', '')}: permission denied; make the data "
                        "readable for this user, or point data.root at a copy that is") from None
