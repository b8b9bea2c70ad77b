"""The audio path on real speech (../shared/data/fsdd) and on a Speech Commands-shaped folder."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile
import torch

from conftest import SHARED_DATA
from expander_sweeps.data import DataError, load_dataset
from expander_sweeps.data.audio import (
    clip_features,
    decode,
    fit_window,
    list_fsdd,
    list_speech_commands,
)
from expander_sweeps.spec import AudioDataSpec

FSDD_DIR = SHARED_DATA / "fsdd"


@pytest.fixture(scope="session")
def fsdd_dir():
    if not (FSDD_DIR / "recordings" / "0_george_0.wav").exists():
        pytest.skip(f"the Free Spoken Digit Dataset is not at {FSDD_DIR}")
    return FSDD_DIR


@pytest.fixture
def small_fsdd(tmp_path, fsdd_dir):
    """Digits 0-9 of two speakers, indices 0-7: 160 real recordings in a folder of the test's own."""
    folder = tmp_path / "fsdd"
    folder.mkdir()
    for digit in range(10):
        for speaker in ("george", "jackson"):
            for index in range(8):
                name = f"{digit}_{speaker}_{index}.wav"
                shutil.copy(fsdd_dir / "recordings" / name, folder / name)
    return folder


def test_decode_resample_and_window_a_real_recording(fsdd_dir):
    signal, rate = decode(fsdd_dir / "recordings" / "3_theo_12.wav")
    assert rate == 8000 and signal.dtype == torch.float32 and signal.abs().max() <= 1.0
    assert len(signal) == 2061  # a short clip: 0.26 s at 8 kHz
    window = fit_window(signal, 8000, "end")
    assert window.shape == (8000,)
    assert torch.equal(window[-2061:], signal)  # the word sits at the end of its window
    assert torch.count_nonzero(window[:-2061]) == 0  # padding before it


def test_fit_window_pads_and_crops_on_the_chosen_side():
    x = torch.arange(1.0, 5.0)
    assert fit_window(x, 6, "end").tolist() == [0, 0, 1, 2, 3, 4]
    assert fit_window(x, 6, "start").tolist() == [1, 2, 3, 4, 0, 0]
    assert fit_window(x, 6, "center").tolist() == [0, 1, 2, 3, 4, 0]
    assert fit_window(x, 2, "end").tolist() == [3, 4]
    assert fit_window(x, 2, "start").tolist() == [1, 2]


@pytest.mark.parametrize("features,width", [("mfcc", 40), ("logmel", 32), ("waveform", 40)])
def test_features_have_k_400_steps(features, width):
    spec = AudioDataSpec(dataset="fsdd", root=".", features=features, n_features=width if features != "waveform" else 40)
    windows = torch.randn(3, 16000) * 0.1
    out = clip_features(windows, spec)
    assert out.shape == (3, 400, width)
    assert torch.isfinite(out).all()
    if features == "waveform":
        assert torch.equal(out[1].flatten(), windows[1])  # frames of 40 consecutive samples


def test_fsdd_listing_and_customary_split(fsdd_dir):
    clips, vocabulary = list_fsdd(fsdd_dir)
    assert len(clips) == 3000 and vocabulary == [str(d) for d in range(10)]
    assert sum(c.test for c in clips) == 300  # indices 0-4 of each digit and speaker


def test_load_fsdd_features_split_and_standardisation(small_fsdd, tmp_path):
    spec = AudioDataSpec(dataset="fsdd", root=str(small_fsdd))
    data = load_dataset(spec, tmp_path / "cache")
    assert data.x_train.shape == (60, 400, 40) and data.x_test.shape == (100, 400, 40)
    assert data.num_classes == 10 and not data.from_cache
    assert data.x_train.mean().abs() < 1e-3 and (data.x_train.std(dim=(0, 1)) - 1).abs().max() < 1e-2
    pooled = load_dataset(spec.model_copy(update={"split": "pooled"}), tmp_path / "cache")
    assert pooled.x_test.shape[0] == 32 and pooled.from_cache  # 20% of 160, same features


def test_second_load_decodes_no_audio(small_fsdd, tmp_path):
    spec = AudioDataSpec(dataset="fsdd", root=str(small_fsdd))
    first = load_dataset(spec, tmp_path / "cache")
    # Ruin every recording but keep its size: only a load that decodes nothing can still work.
    for wav in small_fsdd.glob("*.wav"):
        wav.write_bytes(b"\0" * wav.stat().st_size)
    second = load_dataset(spec, tmp_path / "cache")
    assert second.from_cache and torch.equal(second.x_test, first.x_test)
    with pytest.raises(DataError, match="cannot decode"):  # another feature config must decode again
        load_dataset(spec.model_copy(update={"n_features": 20}), tmp_path / "cache")


def _speech_commands_folder(root):
    """A Speech Commands-shaped folder: word folders of 16 kHz WAVs and the two official lists."""
    folder = root / "SpeechCommands" / "speech_commands_v0.02"
    rng = np.random.default_rng(0)
    for word, pitch in (("yes", 300), ("no", 500), ("up", 700)):
        (folder / word).mkdir(parents=True)
        for speaker in range(5):
            t = np.arange(int(16000 * rng.uniform(0.5, 1.2))) / 16000
            tone = 0.3 * np.sin(2 * np.pi * pitch * t) + 0.01 * rng.standard_normal(len(t))
            soundfile.write(folder / word / f"spk{speaker}_nohash_0.wav", tone.astype(np.float32), 16000)
    (folder / "_background_noise_").mkdir()
    soundfile.write(folder / "_background_noise_" / "white.wav", np.zeros(1600, np.float32), 16000)
    (folder / "testing_list.txt").write_text("yes/spk0_nohash_0.wav\nno/spk0_nohash_0.wav\nup/spk0_nohash_0.wav\n")
    (folder / "validation_list.txt").write_text("yes/spk1_nohash_0.wav\nno/spk1_nohash_0.wav\n")
    return folder


def test_speech_commands_official_lists(tmp_path):
    _speech_commands_folder(tmp_path)
    clips, vocabulary = list_speech_commands(tmp_path, download=False, words=None)
    assert vocabulary == ["no", "up", "yes"]  # word folders, background noise left out
    assert sum(c.test for c in clips) == 3 and sum(c.excluded for c in clips) == 2
    spec = AudioDataSpec(dataset="speech_commands", root=str(tmp_path), download=False)
    data = load_dataset(spec, tmp_path / "cache")
    assert data.x_test.shape == (3, 400, 40) and data.x_train.shape == (10, 400, 40)
    assert sorted(data.y_test.tolist()) == [0, 1, 2]
    only = load_dataset(spec.model_copy(update={"words": ["yes", "up"]}), tmp_path / "cache")
    assert only.num_classes == 2 and only.x_test.shape[0] == 2
    with pytest.raises(DataError, match="not folders"):
        load_dataset(spec.model_copy(update={"words": ["maybe"]}), tmp_path / "cache")


def test_missing_folders_say_what_to_do(tmp_path):
    with pytest.raises(DataError, match="no FSDD recordings"):
        load_dataset(AudioDataSpec(dataset="fsdd", root=str(tmp_path)), tmp_path / "c")
    with pytest.raises(DataError, match="no Speech Commands folder"):
        load_dataset(AudioDataSpec(dataset="speech_commands", root=str(tmp_path), download=False), tmp_path / "c")
    with pytest.raises(DataError, match="does not divide evenly"):
        load_dataset(AudioDataSpec(dataset="fsdd", root=str(tmp_path), features="waveform", seq_len=300), tmp_path / "c")


@pytest.mark.slow
def test_lstm_sweep_on_real_speech_reports_stacked_and_gate_graphs(small_fsdd, tmp_path, write_spec):
    from test_cli import run_cli, run_here

    spec = write_spec({
        "name": "speech_tiny",
        "run_dir": str(tmp_path / "run"),
        "data": {"dataset": "fsdd", "root": str(small_fsdd), "seq_len": 100, "n_features": 13},
        "model": {"cell": "lstm", "hidden": 16},
        "training": {"epochs": 1, "finetune_epochs": 1, "batch_size": 32},
        "masks": {"remaining": [1.0, 0.2]},
        "noise": {"variances": [0.3]},
        "tracking": {"mlflow": {"enabled": False}},
    })
    first = run_cli("launch", spec)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "features computed" in first.stdout and "ran 3 trial(s)" in first.stdout
    crossings = (tmp_path / "run" / "report" / "crossings.csv").read_text()
    for graph in ("W_xh", "W_xh.i", "W_xh.f", "W_xh.g", "W_xh.o", "W_hh.o"):
        assert f",{graph}," in crossings, graph
    # A second launch with new trials: the features come from the cache, no audio is decoded.
    # (in-process: the same CLI without a second interpreter start; --extend: the grid grew)
    second = run_here("launch", spec, "--set", "masks.remaining=[1.0, 0.2, 0.05]", "--extend")
    assert second.returncode == 0, second.stderr
    assert "features from cache" in second.stdout and "ran 2 trial(s)" in second.stdout


def test_without_the_audio_extra_an_audio_dataset_names_it(small_fsdd, tmp_path, monkeypatch):
    """torchaudio is an extra: a real failed import (the module blocked in sys.modules) ends in a
    DataError that says which extra to install, not in a traceback."""
    import sys

    monkeypatch.setitem(sys.modules, "torchaudio", None)  # `import torchaudio` raises ImportError
    with pytest.raises(DataError, match=r"pip install 'expander-sweeps\[audio\]'"):
        load_dataset(AudioDataSpec(dataset="fsdd", root=str(small_fsdd)), tmp_path / "cache")
