"""Dense models trained once per distinct training configuration, cached on disk.

The key hashes everything that decides the dense weights: a hash of the training tensors
themselves (so another folder with other files never reuses a model), the data settings,
the model, the training hyperparameters and seed, and the training noise. Not in the key:
the data folder's path, the fine-tuning epochs, masks and test noise (they act after the
dense model), and the device.

A file lock makes concurrent trials (threads, processes, machines sharing the folder) wait
for the one that trains instead of training the same model twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock

from ..spec import SweepSpec
from .cache_files import read_checked, write_checked

__all__ = ["dense_key", "DenseCache", "CacheResult"]


def dense_key(spec: SweepSpec, train_variance: float, data_fingerprint: str = "") -> tuple[str, dict]:
    """A short hash of the training configuration and the configuration itself (stored beside it)."""
    config = {
        "data_fingerprint": data_fingerprint,
        "data": spec.data.model_dump(exclude={"root", "download"}),
        "model": spec.model.model_dump(),
        "training": spec.training.model_dump(include={"lr", "batch_size", "epochs", "seed"}),
        # Only when set, so the caches of sweeps without clipping keep their keys.
        **({"clip_grad_norm": spec.training.clip_grad_norm} if spec.training.clip_grad_norm else {}),
        # A factory's model is its code too: an edited factory module trains a new dense model.
        **({"factory_source": factory_source(spec)} if spec.model.factory else {}),
        "train_noise": {
            "fraction": spec.noise.fraction if train_variance > 0 else 0.0,
            "variance": train_variance,
        },
        "format": 1,  # bump when the checkpoint layout changes
    }
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    return digest, config


def factory_source(spec: SweepSpec) -> str:
    """SHA-256 of the source file of `model.factory`'s module (imported from the spec's folder)."""
    import inspect

    from .factories import import_function

    function = import_function(spec.model.factory, "model.factory", spec.spec_dir)
    try:
        source = Path(inspect.getsourcefile(function)).read_bytes()
    except (TypeError, OSError):  # a built-in or a module without a file: the import path alone
        return ""
    return hashlib.sha256(source).hexdigest()[:16]


@dataclass(frozen=True)
class CacheResult:
    state_dict: dict[str, torch.Tensor]
    path: Path
    trained: bool  # True when this call trained the model, False on a cache hit
    metadata: dict


class DenseCache:
    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        return self.folder / f"dense-{key}.pt"

    def get_or_train(
        self, key: str, config: dict, train: Callable[[], tuple[dict[str, torch.Tensor], dict]],
        fits: Callable[[dict[str, torch.Tensor]], None] | None = None,
    ) -> CacheResult:
        """Load the dense model of `key`, or train it with `train()` -> (state_dict, metadata) and store it.
        A file that loads but holds another configuration, or whose weights `fits` rejects (it
        raises: another model's file, its checksum record lost), counts as damaged: reported,
        deleted, trained again."""
        path = self.path(key)

        def payload(file: Path) -> dict:
            loaded = self._payload(file)
            if loaded.get("config", config) != config:
                raise ValueError("it holds the dense model of another configuration")
            if fits is not None:
                try:
                    fits(loaded["state_dict"])
                except (RuntimeError, KeyError, ValueError, TypeError) as err:
                    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                    raise ValueError(f"its weights do not fit this model ({first})") from None
            return loaded

        cached = read_checked(path, payload, "dense model", repair=False)  # no lock to read a sound file
        if cached is not None:
            return CacheResult(cached["state_dict"], path, False, cached.get("metadata", {}))
        self.folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            # Trained by another trial while we waited, or damaged (then deleted and retrained).
            cached = read_checked(path, payload, "dense model")
            if cached is not None:
                return CacheResult(cached["state_dict"], path, False, cached.get("metadata", {}))
            state_dict, metadata = train()
            payload = {
                "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
                "config": config,
                "metadata": metadata,
            }
            # Write then rename, with a size and checksum record: a crash mid-write leaves no
            # half file that looks finished, and a file damaged later is caught.
            write_checked(path, lambda tmp: torch.save(payload, tmp))
            (self.folder / f"dense-{key}.json").write_text(
                json.dumps({"config": config, "metadata": metadata}, indent=2)
            )
            return CacheResult(payload["state_dict"], path, True, metadata)

    @staticmethod
    def _payload(path: Path) -> dict:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or "state_dict" not in payload:
            raise ValueError("not a dense-model checkpoint of this tool")
        return payload
