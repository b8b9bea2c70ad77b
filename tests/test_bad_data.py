"""Broken data: one line naming the file and what is wrong, exit 2, nothing created; damaged caches
are reported, rebuilt, and the run goes on."""

from __future__ import annotations

import gzip
import logging
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import tiny_spec_dict
from expander_sweeps.cli import main
from expander_sweeps.data import read_idx
from expander_sweeps.training.cache_files import read_checked, write_checked
from expander_sweeps.training.dense_cache import DenseCache

N = 120  # images per test folder: enough for a stratified split of 10 classes


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    """An IDX file written by hand: magic (0, 0, type, ndim), big-endian sizes, the values."""
    dtype = {0x08: np.uint8, 0x0C: ">i4", 0x0D: ">f4"}[code]
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    return header + array.astype(dtype).tobytes()


@pytest.fixture(scope="module")
def real(mnist_dir):
    images = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")[:N]
    labels = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")[:N]
    return images, labels


def _folder(tmp_path: Path, images: bytes, labels: bytes, gz: bool = False) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    suffix = ".gz" if gz else ""
    (folder / f"t10k-images-idx3-ubyte{suffix}").write_bytes(gzip.compress(images) if gz else images)
    (folder / f"t10k-labels-idx1-ubyte{suffix}").write_bytes(gzip.compress(labels) if gz else labels)
    return folder


def _launch(tmp_path: Path, data: dict) -> tuple[int, str]:
    import yaml

    spec = tiny_spec_dict(tmp_path / "run", tmp_path / "unused", tracking={"mlflow": {"enabled": False}})
    spec["data"] = {"limit_train": None, "limit_test": None, "download": False, **data}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(main, ["launch", str(path)], env={"COLUMNS": "300"})
    return result.exit_code, result.output


def _cases(images: np.ndarray, labels: np.ndarray) -> dict[str, tuple[dict, str, str]]:
    """name -> (files to write, the file the message must name, words it must contain)."""
    good_i, good_l = idx_bytes(images), idx_bytes(labels)
    bad_labels = labels.copy()
    bad_labels[7] = 200
    return {
        "truncated gz": ({"images_gz": gzip.compress(good_i)[:-200], "labels_gz": gzip.compress(good_l)},
                         "t10k-images-idx3-ubyte.gz", "damaged"),
        "not gzip but .gz": ({"images_gz": good_i, "labels_gz": gzip.compress(good_l)},
                             "t10k-images-idx3-ubyte.gz", "not a gzip file"),
        "header only": ({"images": good_i[:16], "labels": good_l}, "t10k-images-idx3-ubyte", "header says"),
        "header cut short": ({"images": good_i[:10], "labels": good_l}, "t10k-images-idx3-ubyte", "header is cut short"),
        "int32 odd bytes": ({"images": good_i, "labels": idx_bytes(labels, 0x0C) + b"\x00"},
                            "t10k-labels-idx1-ubyte", "whole number"),
        "4-D images": ({"images": idx_bytes(images[:, :, :, None]), "labels": good_l},
                       "t10k-images-idx3-ubyte", "N x rows x columns"),
        "label 200": ({"images": good_i, "labels": idx_bytes(bad_labels)}, "t10k-labels-idx1-ubyte", "outside 0-9"),
        "count mismatch": ({"images": good_i, "labels": idx_bytes(labels[:-3])}, "t10k-labels-idx1-ubyte", "labels"),
        "bad magic": ({"images": b"GIF89a" + good_i, "labels": good_l}, "t10k-images-idx3-ubyte", "magic number"),
        "empty file": ({"images": b"", "labels": good_l}, "t10k-images-idx3-ubyte", "not an IDX file"),
        "labels 2-D": ({"images": good_i, "labels": idx_bytes(labels.reshape(-1, 2))}, "t10k-labels-idx1-ubyte",
                       "one number per image"),
        "no images": ({"images": idx_bytes(images[:0]), "labels": idx_bytes(labels[:0])}, "t10k-images-idx3-ubyte",
                      "holds no images"),
        "float pixels in [0, 1]": ({"images": idx_bytes(images / 255.0, 0x0D), "labels": good_l},
                                   "t10k-images-idx3-ubyte", "whole numbers 0-255"),
        "NaN pixels": ({"images": idx_bytes(np.where(images > 200, np.nan, images), 0x0D), "labels": good_l},
                       "t10k-images-idx3-ubyte", "NaN or infinite"),
        "NaN labels": ({"images": good_i, "labels": idx_bytes(np.where(np.arange(len(labels)) == 5, np.nan,
                                                                        labels), 0x0D)},
                       "t10k-labels-idx1-ubyte", "(some NaN)"),
    }


def test_every_broken_mnist_folder_gives_one_clean_line_exit_2_and_creates_nothing(tmp_path, real):
    names = {"images": "t10k-images-idx3-ubyte", "labels": "t10k-labels-idx1-ubyte"}
    clean = 0
    cases = _cases(*real)
    for name, (files, culprit, words) in cases.items():
        case = tmp_path / name.replace(" ", "_")
        folder = case / "data"
        folder.mkdir(parents=True)
        for key, content in files.items():
            kind, _, gz = key.partition("_")
            (folder / (names[kind] + (".gz" if gz else ""))).write_bytes(content)
        code, output = _launch(case, {"root": str(folder)})
        errors = [line for line in output.splitlines() if line.startswith("error:")]
        assert code == 2, f"{name}: exit {code}\n{output}"
        assert "Traceback" not in output and len(errors) == 1, f"{name}: {output}"
        assert str(folder / culprit) in errors[0] and words in errors[0], f"{name}: {errors[0]}"
        assert not (case / "run").exists(), f"{name}: the run folder was created"
        clean += 1
    print(f"broken MNIST folders: {clean} of {len(cases)} clean")


def test_a_failed_download_leaves_nothing_behind(tmp_path, real, monkeypatch):
    # No network here: torchvision's download fails as it would offline (monkeypatching only
    # the mirror list so the test does not wait on DNS timeouts).
    from torchvision.datasets import MNIST

    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])
    empty = tmp_path / "empty"
    empty.mkdir()
    code, output = _launch(tmp_path, {"root": str(empty), "download": True})
    assert code == 2 and "downloading them failed" in output, output
    assert list(empty.iterdir()) == []  # no MNIST/raw left behind
    code, output = _launch(tmp_path, {"root": str(tmp_path / "new" / "mnist"), "download": True})
    assert code == 2 and not (tmp_path / "new" / "mnist").exists()


def _wav(path: Path, seconds: float = 0.2) -> None:
    import soundfile

    t = np.arange(int(8000 * seconds)) / 8000
    soundfile.write(path, 0.1 * np.sin(2 * np.pi * 440 * t), 8000)


def test_fsdd_names_are_checked_and_the_odd_ones_reported(tmp_path, caplog):
    from expander_sweeps.data.audio import list_fsdd
    from expander_sweeps.data.base import DataError

    only_odd = tmp_path / "odd"
    only_odd.mkdir()
    _wav(only_odd / "five_theo_10.wav")
    with pytest.raises(DataError, match=r"named otherwise, such as five_theo_10\.wav"):
        list_fsdd(only_odd)

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("5_theo_10.WAV", "3_jackson_2.wav", "five_theo_10.wav", "notes.wav"):
        _wav(mixed / name)
    with caplog.at_level(logging.WARNING, logger="expander_sweeps"):
        clips, _ = list_fsdd(mixed)
    assert sorted((c.path.name, c.label, c.test) for c in clips) == [("3_jackson_2.wav", 3, True),
                                                                   ("5_theo_10.WAV", 5, False)]
    assert "2 WAV file(s)" in caplog.text and "five_theo_10.wav" in caplog.text and "notes.wav" in caplog.text


def test_a_damaged_cache_file_is_reported_deleted_and_rebuilt(tmp_path, caplog):
    path = tmp_path / "thing.pt"
    write_checked(path, lambda tmp: torch.save({"x": torch.arange(1000)}, tmp))
    assert read_checked(path, torch.load, "thing")["x"].sum() == 499500
    data = path.read_bytes()
    for damage, words in ((data[: len(data) // 2], "truncated"),
                          (data[:-8] + b"\x00" * 8, "SHA-256 differs")):
        path.write_bytes(damage)
        assert read_checked(path, torch.load, "thing", repair=False) is None and path.exists()
        with caplog.at_level(logging.WARNING, logger="expander_sweeps"):
            assert read_checked(path, torch.load, "thing") is None
        assert words in caplog.text and str(path) in caplog.text and not path.exists()
        write_checked(path, lambda tmp: torch.save({"x": torch.arange(1000)}, tmp))
    # A file from before sidecars: trusted if it loads, rebuilt if it does not.
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(b"PK\x03\x04 not really a zip")
    assert read_checked(legacy, torch.load, "thing") is None and not legacy.exists()


def test_a_truncated_dense_model_is_retrained_not_fatal(tmp_path, caplog):
    cache = DenseCache(tmp_path)
    calls = []

    def train():
        calls.append(1)
        return {"w": torch.ones(3, 3)}, {"epochs": 1}

    first = cache.get_or_train("k", {}, train)
    assert first.trained and cache.get_or_train("k", {}, train).trained is False
    path = cache.path("k")
    path.write_bytes(path.read_bytes()[:100])  # what a full disk or a killed copy leaves
    with caplog.at_level(logging.WARNING, logger="expander_sweeps"):
        again = cache.get_or_train("k", {}, train)
    assert again.trained and len(calls) == 2 and torch.equal(again.state_dict["w"], torch.ones(3, 3))
    assert f"the cached dense model {path} is damaged" in caplog.text


@pytest.mark.slow
def test_a_truncated_feature_cache_is_rebuilt_by_the_next_load(tmp_path, caplog):
    from expander_sweeps.data import load_dataset
    from expander_sweeps.spec import AudioDataSpec

    folder = tmp_path / "fsdd"
    folder.mkdir()
    for digit in range(10):
        for index in range(6):
            _wav(folder / f"{digit}_anna_{index}.wav")
    spec = AudioDataSpec(dataset="fsdd", root=str(folder), seq_len=20, n_features=8, sample_rate=8000,
                         clip_seconds=0.25)
    first = load_dataset(spec, tmp_path / "cache")
    (cached,) = (tmp_path / "cache" / "features").glob("features-*.pt")
    cached.write_bytes(cached.read_bytes()[:500])
    with caplog.at_level(logging.WARNING, logger="expander_sweeps"):
        again = load_dataset(spec, tmp_path / "cache")
    assert "audio features" in caplog.text and "damaged" in caplog.text
    assert not again.from_cache and torch.equal(again.x_train, first.x_train)
    shutil.rmtree(tmp_path / "cache")


@pytest.mark.parametrize("fault, words", [("empty", "holds no audio (0 frames)"),
                                          ("fifo", "not a regular file"),
                                          ("odd rate", "44117 Hz cannot be resampled")])
def test_a_broken_recording_is_one_line_in_bounded_time_and_memory(tmp_path, fault, words):
    """A WAV of 0 frames, a FIFO named like a WAV (reading it blocked forever) and a WAV at
    44,117 Hz (its resampling filter to 16 kHz needed gigabytes): one `error:` line naming the
    file, exit 2, no run folder."""
    import os
    import resource

    import soundfile

    folder = tmp_path / "fsdd"
    folder.mkdir()
    for digit in range(10):
        for index in range(6):
            _wav(folder / f"{digit}_anna_{index}.wav")
    culprit = folder / "3_bob_1.wav"
    if fault == "empty":
        soundfile.write(culprit, np.zeros(0), 8000)
    elif fault == "fifo":
        os.mkfifo(culprit)
    else:
        soundfile.write(culprit, np.zeros(4411), 44117)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, output = _launch(tmp_path, {"dataset": "fsdd", "root": str(folder), "seq_len": 20, "n_features": 8,
                                      "sample_rate": 16000, "clip_seconds": 0.25})
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in output, output
    assert str(culprit) in errors[0] and words in errors[0], errors[0]
    assert grown_mb < 500, f"peak memory grew by {grown_mb:.0f} MB"
    assert not (tmp_path / "run").exists()


def test_a_loadable_cache_file_of_another_model_is_rebuilt_not_fatal(tmp_path, caplog):
    """What is in the file is checked, not only its bytes: another model's weights (its checksum
    record lost, so the bytes look fine) used to fail every trial on every relaunch."""
    from expander_sweeps.training.cache_files import _sidecar

    model = torch.nn.RNN(4, 8, batch_first=True)
    other = torch.nn.RNN(4, 16, batch_first=True)
    cache = DenseCache(tmp_path)
    calls = []

    def train():
        calls.append(1)
        return model.state_dict(), {"epochs": 1}

    cache.get_or_train("k", {"hidden": 8}, train, fits=model.load_state_dict)
    path = cache.path("k")
    torch.save({"state_dict": other.state_dict(), "config": {"hidden": 8}, "metadata": {}}, path)
    _sidecar(path).unlink()
    with caplog.at_level(logging.WARNING, logger="expander_sweeps"):
        again = cache.get_or_train("k", {"hidden": 8}, train, fits=model.load_state_dict)
    assert again.trained and len(calls) == 2 and "its weights do not fit this model" in caplog.text
    caplog.clear()
    torch.save({"state_dict": model.state_dict(), "config": {"hidden": 99}, "metadata": {}}, path)
    _sidecar(path).unlink()
    with caplog.at_level(logging.WARNING, logger="expander_sweeps"):
        assert cache.get_or_train("k", {"hidden": 8}, train, fits=model.load_state_dict).trained
    assert "another configuration" in caplog.text and len(calls) == 3


def test_a_data_folder_this_user_may_not_read_is_one_line(tmp_path, monkeypatch):
    """Root reads every folder, so the refusal is injected where the listing happens (the one
    stand-in in this module): the launch says which folder, exit 2, no run folder."""
    folder = tmp_path / "fsdd"
    folder.mkdir()
    _wav(folder / "0_anna_0.wav")
    real_iterdir = Path.iterdir

    def refusing(path):
        if path == folder:
            raise PermissionError(13, "Permission denied", str(path))
        return real_iterdir(path)

    monkeypatch.setattr(Path, "iterdir", refusing)
    code, output = _launch(tmp_path, {"dataset": "fsdd", "root": str(folder), "seq_len": 20, "n_features": 8,
                                      "sample_rate": 8000, "clip_seconds": 0.25})
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in output, output
    assert f"{folder}: permission denied" in errors[0]
    assert not (tmp_path / "run").exists()


def test_without_the_vision_extra_a_download_names_it(tmp_path, real, monkeypatch):
    import sys

    from expander_sweeps.data import DataError, load_dataset
    from expander_sweeps.spec import MnistDataSpec

    monkeypatch.setitem(sys.modules, "torchvision", None)  # `import torchvision...` raises ImportError
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"pip install 'expander-sweeps\[vision\]'"):
        load_dataset(MnistDataSpec(root=str(empty), download=True))
