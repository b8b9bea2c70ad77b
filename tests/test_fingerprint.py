"""A changed spec never reuses old results: the study records what its trials were run with."""

from __future__ import annotations

import optuna
import pytest
import yaml

from conftest import tiny_spec_dict
from expander_sweeps.spec import spec_from_dict
from expander_sweeps.sweep.fingerprint import (
    differences,
    fingerprint_of,
    result_settings,
    search_space,
)
from expander_sweeps.sweep.study import SpecMismatch, bind_spec, check_spec, open_study


def _spec(tmp_path, **sections):
    return spec_from_dict(tiny_spec_dict(tmp_path / "run", tmp_path / "data", **sections))


def test_result_settings_hold_what_changes_a_trial_and_nothing_else(tmp_path):
    settings = result_settings(_spec(tmp_path))
    assert settings["model.hidden"] == 16 and settings["training.epochs"] == 2
    assert settings["noise.variances"] == [0.3] and settings["data.limit_train"] == 600
    # Where the data lie, the device and trackers change no trial's numbers; the search space is apart.
    for key in ("data.root", "data.download", "training.device", "training.eval_batch_size",
                "masks.remaining", "masks.method", "training.seed"):
        assert key not in settings, key
    assert not any(k.startswith(("tracking", "report", "study")) for k in settings)
    assert search_space(_spec(tmp_path)) == {"masks.remaining": [1.0, 0.3, 0.05], "masks.method": "magnitude",
                                            "training.seed": 0}


def test_differences_name_each_field_with_both_values(tmp_path):
    before = result_settings(_spec(tmp_path))
    after = result_settings(_spec(tmp_path, model={"cell": "rnn", "hidden": 64},
                                  training={"epochs": 3, "finetune_epochs": 1, "batch_size": 64}))
    assert differences(before, after) == ["model.hidden: study 16, spec 64", "training.epochs: study 2, spec 3"]
    assert fingerprint_of(before) != fingerprint_of(after)
    assert fingerprint_of(before) == fingerprint_of(result_settings(_spec(tmp_path)))


@pytest.fixture(params=["sqlite", "journal", "redis"])
def storage(request, tmp_path):
    """The default SQLite study, a journal file, a journal in Redis: the settings live in the study."""
    if request.param == "sqlite":
        return None
    if request.param == "journal":
        return f"journal://{tmp_path / 'study.log'}"
    return request.getfixturevalue("redis_url")


def test_the_study_refuses_changed_settings_and_takes_a_grown_space_only_when_asked(tmp_path, storage):
    def _spec(tmp_path, **sections):  # every spec of this test on the same study
        return spec_from_dict(tiny_spec_dict(tmp_path / "run", tmp_path / "data", study={"storage": storage},
                                             **sections))

    spec = _spec(tmp_path)
    study = open_study(spec)
    assert bind_spec(study, spec) is None  # the first launch records
    assert bind_spec(study, _spec(tmp_path, data={"root": "/elsewhere"})) is None  # another machine's path

    changed = _spec(tmp_path, model={"cell": "rnn", "hidden": 64})
    with pytest.raises(SpecMismatch) as refused:
        bind_spec(study, changed, extend=True)  # --extend never covers settings
    message = str(refused.value)
    assert "model.hidden: study 16, spec 64" in message and "new `name`" in message and "--extend" not in message
    with pytest.raises(SpecMismatch):
        check_spec(study, changed)

    grown = _spec(tmp_path, masks={"remaining": [1.0, 0.3, 0.05, 0.01]})
    with pytest.raises(SpecMismatch) as refused:
        bind_spec(study, grown)
    assert "masks.remaining: study [1.0, 0.3, 0.05], spec [1.0, 0.3, 0.05, 0.01]" in str(refused.value)
    assert "--extend" in str(refused.value)
    note = bind_spec(study, grown, extend=True)
    assert note and "extended" in note
    assert bind_spec(study, grown) is None  # now the recorded space
    check_spec(study, grown)


def test_a_study_from_before_fingerprints_is_adopted_with_a_note(tmp_path):
    spec = _spec(tmp_path)
    study = open_study(spec)
    study.enqueue_trial({"layer": "W_xh", "remaining": 1.0})
    trial = study.ask()
    study.tell(trial, 0.5)
    note = bind_spec(study, spec)
    assert note and "1 finished trial(s)" in note
    assert study.user_attrs["settings"] == result_settings(spec)


@pytest.mark.slow
def _one_point_cli(tmp_path, mnist_dir):
    """A one-point sweep's spec file, and the real CLI (in this process) to run commands on it."""
    from click.testing import CliRunner

    from expander_sweeps.cli import main

    raw = tiny_spec_dict(tmp_path / "run", mnist_dir, masks={"remaining": [1.0], "layers": ["W_hh"]},
                         data={"limit_train": 200, "limit_test": 100}, model={"cell": "rnn", "hidden": 8},
                         training={"epochs": 1, "finetune_epochs": 1, "batch_size": 64},
                         tracking={"mlflow": {"enabled": False}})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))

    def cli(*args):
        return CliRunner().invoke(main, [str(a) for a in args], env={"COLUMNS": "200"})

    return path, cli


def test_cli_refuses_a_changed_spec_and_extends_on_request(tmp_path, mnist_dir):
    path, cli = _one_point_cli(tmp_path, mnist_dir)

    first = cli("launch", path, "--no-report")
    assert first.exit_code == 0, first.output
    for command in ("launch", "report"):
        refused = cli(command, path, "--set", "model.hidden=64", "--set", "training.epochs=3")
        assert refused.exit_code == 2, refused.output
        assert "model.hidden: study 8, spec 64" in refused.output and "training.epochs: study 1, spec 3" in refused.output
        assert "Traceback" not in refused.output
    grown = ("--set", "masks.remaining=[1.0, 0.5]")
    refused = cli("launch", path, *grown)
    assert refused.exit_code == 2 and "--extend" in refused.output
    extended = cli("launch", path, *grown, "--extend", "--no-report")
    assert extended.exit_code == 0, extended.output
    assert "ran 1 trial(s)" in extended.output  # only the new point
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'run' / 'optuna.db'}")
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert sorted(t.params["remaining"] for t in done) == [0.5, 1.0]
    assert {t.user_attrs["settings_fingerprint"] for t in done} == {study.user_attrs["settings_fingerprint"]}


def test_the_study_names_its_objectives(tmp_path):
    spec = _spec(tmp_path, study={"sampler": "tpe", "n_trials": 3, "objectives": ["accuracy", "remaining_edges"]},
                 masks={"remaining": {"low": 0.1, "high": 1.0}})
    assert open_study(spec).metric_names == ["acc/clean", "remaining_edges"]


def test_other_data_under_the_same_spec_is_refused_with_both_fingerprints(tmp_path, mnist_dir):
    """data.root pointed at other content (the same files, pixels inverted) for an existing study:
    refused on relaunch and on --extend, with both fingerprints and the ways out; nothing runs."""
    import gzip

    other = tmp_path / "other_mnist"
    other.mkdir()
    images = bytearray(gzip.decompress((mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes()))
    images[16:] = bytes(255 - b for b in images[16:])  # after the IDX header: every pixel inverted
    (other / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(images), compresslevel=1))
    (other / "t10k-labels-idx1-ubyte.gz").write_bytes((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    path, cli = _one_point_cli(tmp_path, mnist_dir)

    assert cli("launch", path, "--no-report").exit_code == 0
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'run' / 'optuna.db'}")
    ours = study.user_attrs["data_fingerprint"]
    for extra in ((), ("--set", "masks.remaining=[1.0, 0.5]", "--extend")):
        refused = cli("launch", path, "--set", f"data.root={other}", *extra, "--no-report")
        assert refused.exit_code == 2, refused.output
        assert ours in refused.output and "is not the data" in refused.output and "Traceback" not in refused.output
    assert len(study.get_trials()) == 1  # nothing ran on the other data
    again = cli("launch", path, "--no-report")  # the study's own data: accepted
    assert again.exit_code == 0 and "nothing to run" in again.output
