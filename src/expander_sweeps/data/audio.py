"""Spoken words as feature sequences: Speech Commands and Free Spoken Digit Dataset folders.

Every clip is decoded with soundfile (torchaudio 2.9's loader needs FFmpeg), mixed to mono,
resampled to `sample_rate`, placed in a window of `clip_seconds` (padded with zeros or
cropped on the side `align` says), and turned into k = `seq_len` steps of features. The
features of a whole folder are cached on disk once per feature configuration, keyed by the
configuration and the files' names and sizes, so the trials of a sweep (and later sweeps)
decode no audio. Features are standardised per feature channel with the training split's
mean and standard deviation; input noise is added to these standardised features.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch
from filelock import FileLock

from ..spec import AudioDataSpec
from ..training.cache_files import read_checked, write_checked
from .base import DataError, SequenceDataset, stratified_split, stratified_subset

log = logging.getLogger("expander_sweeps")

__all__ = ["decode", "fit_window", "clip_features", "load_audio", "list_fsdd", "list_speech_commands"]

_CHUNK = 512  # clips decoded and featurised at a time: bounds memory on Speech Commands (105k clips)
_FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$", re.IGNORECASE)


def _torchaudio():
    """torchaudio, an extra (features, resampling, the Speech Commands download), or a DataError
    that says how to install it."""
    try:
        import torchaudio
    except ImportError as err:
        raise DataError(f"audio datasets need torchaudio, which is not installed ({err}): "
                        "pip install 'expander-sweeps[audio]' (a torchaudio matching your torch)") from None
    return torchaudio


@dataclass(frozen=True)
class Clip:
    path: Path
    label: int
    test: bool  # in the official test split
    excluded: bool = False  # in the official validation split: neither trained on nor tested


# torchaudio's resampler builds a filter of about (rate / gcd) x (target / gcd) taps: from 44,117 Hz
# to 16 kHz (gcd 1) that is gigabytes. Rates whose reduced ratio is larger than this are refused.
MAX_RESAMPLE_RATIO = 1000


def decode(path: Path, target_rate: int | None = None) -> tuple[torch.Tensor, int]:
    """Mono float32 samples in [-1, 1] and the file's sample rate (checked as `check_recording`)."""
    _check_regular(path)
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise DataError(f"{path}: cannot decode this audio file ({err})") from None
    _check_frames_and_rate(path, len(samples), rate, target_rate)
    return torch.from_numpy(samples.mean(axis=1)), rate


def check_recording(path: Path, target_rate: int | None = None) -> None:
    """From the file's header only: raise DataError naming the file for anything but a regular
    file (a FIFO would block a read forever), a clip of 0 frames, or a sample rate that cannot be
    resampled to `target_rate` in bounded memory."""
    _check_regular(path)
    try:
        info = soundfile.info(str(path))
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise DataError(f"{path}: cannot decode this audio file ({err})") from None
    _check_frames_and_rate(path, info.frames, info.samplerate, target_rate)


def _check_regular(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"{path}: not a regular file (a FIFO, a device or a dangling link); remove it from the data folder")


def _check_frames_and_rate(path: Path, frames: int, rate: int, target_rate: int | None) -> None:
    if frames == 0:
        raise DataError(f"{path}: the file holds no audio (0 frames); remove or replace it")
    if target_rate and rate != target_rate:
        divisor = math.gcd(rate, target_rate)
        if max(rate, target_rate) // divisor > MAX_RESAMPLE_RATIO:
            raise DataError(f"{path}: its sample rate {rate} Hz cannot be resampled to {target_rate} Hz in bounded "
                            f"memory (ratio {rate // divisor}:{target_rate // divisor}); convert it to a standard "
                            "rate (8, 16, 22.05, 44.1 or 48 kHz)")


def fit_window(signal: torch.Tensor, length: int, align: str) -> torch.Tensor:
    """Pad with zeros or crop to `length` samples, keeping the clip at the `align` side."""
    n = signal.shape[-1]
    if n >= length:
        start = {"start": 0, "end": n - length, "center": (n - length) // 2}[align]
        return signal[start : start + length]
    pad = length - n
    before = {"start": 0, "end": pad, "center": pad // 2}[align]
    return torch.nn.functional.pad(signal, (before, pad - before))


def _window_samples(spec: AudioDataSpec) -> int:
    return int(round(spec.sample_rate * spec.clip_seconds))


def _check_shape(spec: AudioDataSpec) -> None:
    samples = _window_samples(spec)
    if spec.features == "waveform" and samples % spec.seq_len:
        raise DataError(
            f"data.features 'waveform' cuts {samples} samples into data.seq_len={spec.seq_len} frames, "
            f"which does not divide evenly; choose seq_len dividing {samples} (e.g. 400 frames of 40)"
        )
    if spec.features != "waveform" and samples // spec.seq_len < 1:
        raise DataError(f"data.seq_len={spec.seq_len} exceeds the {samples} samples of a window")


def clip_features(windows: torch.Tensor, spec: AudioDataSpec) -> torch.Tensor:
    """(N, samples) windows -> (N, k, features)."""
    k = spec.seq_len
    if spec.features == "waveform":
        return windows.reshape(len(windows), k, -1)
    hop = _window_samples(spec) // k
    # A 25 ms analysis window (at least two hops), as is usual for speech.
    n_fft = max(2 * hop, int(0.025 * spec.sample_rate))
    mel = {"n_fft": n_fft, "hop_length": hop, "n_mels": max(spec.n_features, 40), "center": True}
    if spec.features == "mfcc":
        transform = _torchaudio().transforms.MFCC(spec.sample_rate, n_mfcc=spec.n_features, melkwargs=mel)
        feats = transform(windows)
    else:
        mel["n_mels"] = spec.n_features
        feats = torch.log(_torchaudio().transforms.MelSpectrogram(spec.sample_rate, **mel)(windows) + 1e-6)
    # center=True gives 1 + samples // hop frames; the first k cover the window.
    return feats[..., :k].transpose(1, 2).contiguous()


# ----------------------------------------------------------------------------- folders


def list_fsdd(root: Path) -> tuple[list[Clip], list[str]]:
    """FSDD files `{digit}_{speaker}_{index}.wav` (any case of .wav); the customary test split
    is indices 0-4. WAV files named otherwise have no label: they are left out with a warning."""
    folder = root / "recordings" if (root / "recordings").is_dir() else root
    clips, unnamed = [], []
    wavs = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".wav") if folder.is_dir() else []
    for path in wavs:
        match = _FSDD_NAME.match(path.name)
        if match:
            clips.append(Clip(path, int(match.group(1)), int(match.group(3)) <= 4))
        else:
            unnamed.append(path.name)
    if not clips:
        raise DataError(
            f"no FSDD recordings ({{digit}}_{{speaker}}_{{index}}.wav) in {folder}"
            + (f" ({len(unnamed)} WAV file(s) named otherwise, such as {unnamed[0]})" if unnamed else "")
            + "; set data.root to the folder that holds them"
        )
    if unnamed:
        log.warning("%d WAV file(s) in %s are not named {digit}_{speaker}_{index}.wav and are left out "
                    "(for example %s)", len(unnamed), folder, ", ".join(unnamed[:3]))
    return clips, [str(d) for d in range(10)]


def _speech_commands_folder(root: Path) -> Path | None:
    for candidate in (root, root / "speech_commands_v0.02", root / "SpeechCommands" / "speech_commands_v0.02"):
        if (candidate / "testing_list.txt").is_file():
            return candidate
    return None


def list_speech_commands(root: Path, download: bool, words: list[str] | None) -> tuple[list[Clip], list[str]]:
    """Speech Commands v0.02: one folder per word, official testing/validation lists."""
    folder = _speech_commands_folder(root)
    if folder is None and download:
        try:
            root.mkdir(parents=True, exist_ok=True)
            _torchaudio().datasets.SPEECHCOMMANDS(str(root), download=True)  # download + extract only
        except Exception as err:  # network errors come in many types
            raise DataError(f"Speech Commands is not in {root} and downloading it failed ({err})") from None
        folder = _speech_commands_folder(root)
    if folder is None:
        raise DataError(
            f"no Speech Commands folder (with testing_list.txt) in {root}; set data.root to it"
            + ("" if download else ", or set data.download=true where a network is")
        )

    def listed(name: str) -> set[str]:
        return {line.strip() for line in (folder / name).read_text().splitlines() if line.strip()}

    testing, validation = listed("testing_list.txt"), listed("validation_list.txt")
    available = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("_"))
    vocabulary = words or available
    unknown = sorted(set(vocabulary) - set(available))
    if unknown:
        raise DataError(f"data.words {unknown} are not folders of {folder}; available: {available}")
    clips = []
    for label, word in enumerate(vocabulary):
        for path in sorted((folder / word).glob("*.wav")):
            relative = f"{word}/{path.name}"
            clips.append(Clip(path, label, relative in testing, relative in validation))
    return clips, list(vocabulary)


# ----------------------------------------------------------------------------- features + cache


def _cache_key(spec: AudioDataSpec, clips: list[Clip]) -> str:
    config = spec.model_dump(include={"dataset", "features", "seq_len", "n_features", "sample_rate",
                                      "clip_seconds", "align"})
    digest = hashlib.sha256(json.dumps({"config": config, "format": 1}, sort_keys=True).encode())
    # Names and sizes, not times: a copied dataset keeps its cache; a changed file changes size.
    for clip in clips:
        digest.update(f"{clip.path.parent.name}/{clip.path.name}:{clip.path.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


def _featurise(clips: list[Clip], spec: AudioDataSpec) -> torch.Tensor:
    length = _window_samples(spec)
    chunks = []
    for start in range(0, len(clips), _CHUNK):
        windows = []
        for clip in clips[start : start + _CHUNK]:
            signal, rate = decode(clip.path, spec.sample_rate)
            if rate != spec.sample_rate:
                signal = _torchaudio().functional.resample(signal, rate, spec.sample_rate)
            windows.append(fit_window(signal, length, spec.align))
        # float16 halves the cache (Speech Commands: 105k x 400 x 40); features are standardised later.
        chunks.append(clip_features(torch.stack(windows), spec).to(torch.float16))
    return torch.cat(chunks)


def _cached_features(spec: AudioDataSpec, clips: list[Clip], cache_dir: Path) -> tuple[torch.Tensor, bool]:
    """Features of every clip, from the cache or computed (once, under a lock) and stored."""
    path = cache_dir / f"features-{spec.dataset}-{_cache_key(spec, clips)}.pt"

    def load(file: Path) -> torch.Tensor:
        features = torch.load(file, weights_only=True)
        if not isinstance(features, torch.Tensor) or features.shape[0] != len(clips):
            raise ValueError(f"holds {getattr(features, 'shape', type(features))}, not features of {len(clips)} clips")
        return features

    cached = read_checked(path, load, "audio features", repair=False)
    if cached is not None:
        return cached, True
    for clip in clips:  # a broken recording is reported before the cache folder is made
        check_recording(clip.path, spec.sample_rate)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        cached = read_checked(path, load, "audio features")  # computed meanwhile, or damaged and deleted
        if cached is not None:
            return cached, True
        features = _featurise(clips, spec)
        write_checked(path, lambda tmp: torch.save(features, tmp))
        return features, False


def load_audio(spec: AudioDataSpec, cache_dir: Path) -> SequenceDataset:
    _check_shape(spec)
    root = Path(spec.root).expanduser()
    if spec.dataset == "fsdd":
        clips, vocabulary = list_fsdd(root)
    else:
        clips, vocabulary = list_speech_commands(root, spec.download, spec.words)
    features, from_cache = _cached_features(spec, clips, Path(cache_dir) / "features")
    labels = np.array([c.label for c in clips])
    if spec.split == "official":
        train_idx = np.array([i for i, c in enumerate(clips) if not c.test and not c.excluded])
        test_idx = np.array([i for i, c in enumerate(clips) if c.test])
        how = "official split" + (" (validation list left out)" if spec.dataset == "speech_commands"
                                  else " (indices 0-4 as test)")
    else:
        train_idx, test_idx = stratified_split(labels, spec.test_fraction, spec.split_seed)
        how = f"stratified {100 * spec.test_fraction:g}% test, seed {spec.split_seed}"
    train_idx = train_idx[stratified_subset(labels[train_idx], spec.limit_train, spec.split_seed + 1)]
    test_idx = test_idx[stratified_subset(labels[test_idx], spec.limit_test, spec.split_seed + 2)]
    x_train = features[torch.from_numpy(train_idx)].float()
    x_test = features[torch.from_numpy(test_idx)].float()
    # Standardise each feature channel with the training split's statistics only.
    mean = x_train.mean(dim=(0, 1), keepdim=True)
    std = x_train.std(dim=(0, 1), keepdim=True).clamp_min(1e-5)
    name = "Speech Commands v0.02" if spec.dataset == "speech_commands" else "FSDD"
    return SequenceDataset(
        x_train=(x_train - mean) / std,
        y_train=torch.from_numpy(labels[train_idx]),
        x_test=(x_test - mean) / std,
        y_test=torch.from_numpy(labels[test_idx]),
        num_classes=len(vocabulary),
        description=f"{name} ({spec.features}, k={spec.seq_len} x {features.shape[2]}, "
        f"{spec.sample_rate} Hz, {spec.clip_seconds:g} s aligned {spec.align}): {len(clips)} clips, {how}; "
        f"{len(train_idx)} train / {len(test_idx)} test; features {'from cache' if from_cache else 'computed'}",
        from_cache=from_cache,
    )
