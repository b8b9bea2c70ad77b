import subprocess
import sys
import textwrap

import torch

from expander_sweeps.spec import SweepSpec
from expander_sweeps.training.dense_cache import DenseCache, dense_key


def test_key_covers_training_config_but_not_finetuning_or_folder():
    base = SweepSpec(name="a")
    key, _ = dense_key(base, 0.0)
    same = SweepSpec(name="b", data={"root": "/elsewhere"}, training={"finetune_epochs": 3},
                     masks={"remaining": [0.5]}, noise={"variances": [0.6]})
    assert dense_key(same, 0.0)[0] == key
    assert dense_key(SweepSpec(name="a", training={"epochs": 3}), 0.0)[0] != key
    assert dense_key(SweepSpec(name="a", model={"init": "pytorch_default"}), 0.0)[0] != key
    assert dense_key(SweepSpec(name="a", training={"seed": 1}), 0.0)[0] != key
    assert dense_key(base, 0.3)[0] != key  # training noise changes the dense weights


def test_second_request_loads_instead_of_training(tmp_path):
    cache = DenseCache(tmp_path)
    calls = []

    def train():
        calls.append(1)
        return {"w": torch.ones(2)}, {"accuracy": {"acc/clean": 0.5}}

    first = cache.get_or_train("k", {}, train)
    second = cache.get_or_train("k", {}, train)
    assert (first.trained, second.trained) == (True, False)
    assert len(calls) == 1
    assert torch.equal(second.state_dict["w"], torch.ones(2))
    assert second.metadata["accuracy"]["acc/clean"] == 0.5


def test_two_processes_at_once_train_the_dense_model_once(tmp_path):
    script = textwrap.dedent(f"""
        import time, torch
        from expander_sweeps.training.dense_cache import DenseCache

        def train():
            with open({str(tmp_path / "trainings.log")!r}, "a") as log:
                log.write("trained\\n")
            time.sleep(1.5)  # long enough for the other process to arrive and wait
            return {{"w": torch.zeros(1)}}, {{}}

        result = DenseCache({str(tmp_path / "cache")!r}).get_or_train("same-key", {{}}, train)
        print("trained" if result.trained else "loaded")
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert all(p.returncode == 0 for p in procs)
    assert outputs == ["loaded", "trained"]
    assert (tmp_path / "trainings.log").read_text().count("trained") == 1
