"""Scratch matrices kept between calls of the spectra's hot path.

Why: a fresh array of a few MB is handed back to the operating system when freed, so the
next call's array of the same size page-faults its way in again: a 512 x 512 layer's spectra
made ~1,500 page faults a call, 3-5 ms of the ~10 ms computation. Reusing the same buffers
costs nothing after the first call.

Buffers are per thread (no two computations share one) and only up to `LARGEST_KEPT` bytes
each: bigger matrices are rare and their arithmetic dwarfs the faults. Never hand a buffer
back to a caller: the next call overwrites it.
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["buffer", "LARGEST_KEPT"]

LARGEST_KEPT = 16 * 2**20


class _PerThread(threading.local):
    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}


_kept = _PerThread()


def buffer(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised C-ordered array of `shape` and `dtype`, the same memory as the last
    buffer of that `name` in this thread when it fits."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    if size > LARGEST_KEPT:
        return np.empty(shape, dtype)
    kept = _kept.arrays.get(name)
    if kept is None or kept.dtype != dtype or kept.nbytes < size:
        kept = _kept.arrays[name] = np.empty(size // dtype.itemsize, dtype)
    return kept[: size // dtype.itemsize].reshape(shape)
