"""What reaches the screen: no secret, whatever the shape of the URL or message that carries it, and one line saying what is wrong and what to do when a store is damaged or unreachable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import tiny_spec_dict
from expander_sweeps.spec import redact_secrets

CLI = [str(Path(sys.executable).parent / "expander-sweeps")]


@pytest.mark.parametrize("text", [
    "postgresql//user:S3CRET@host/db",  # the typo that passed the URL redaction
    "could not connect to http://user:S3CRET@127.0.0.1:9/api (Connection refused)",
    "MlflowException: API request to 'https://bob:S3CRET@mlflow.lab/api/2.0' failed",
    "dsn: host=db user=bob password=S3CRET dbname=x",
    "postgresql://u@h/db?sslmode=require&password=S3CRET",
    "token: S3CRET",
    "tracking.mlflow.uri https://S3CRET@mlflow.example.org/ failed",  # a token as the user part
])
def test_every_shape_loses_its_secret_and_keeps_the_rest(text):
    redacted = redact_secrets(text)
    assert "S3CRET" not in redacted and "***" in redacted
    before, after = text.split("S3CRET")
    assert before in redacted and after in redacted


def test_a_web_token_in_the_user_part_is_redacted_but_a_database_user_is_kept():
    from expander_sweeps.spec import redact_url

    assert redact_url("https://S3CRET@mlflow.example.org/") == "https://***@mlflow.example.org/"
    assert redact_url("postgresql+psycopg://bob@db/optuna") == "postgresql+psycopg://bob@db/optuna"


def test_text_without_secrets_is_unchanged():
    for text in ["sqlite:////tmp/run/optuna.db", "trial 3: W_hh 50%, seed 0 | clean 93.7%", "a:b c@d",
                 "postgresql://bob@127.0.0.1:5432/db"]:
        assert redact_secrets(text) == text


def test_a_storage_url_with_a_typo_keeps_its_password_off_screen(tmp_path, mnist_dir):
    spec = tiny_spec_dict(tmp_path / "run", mnist_dir, study={"storage": "postgresql//bob:S3CRET@127.0.0.1/db"})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    for command, code in (("validate", 2), ("launch", 2)):  # not a URL: a spec error, masked
        result = subprocess.run([*CLI, command, str(path)], capture_output=True, text=True, timeout=120)
        output = result.stdout + result.stderr
        assert result.returncode == code, output
        assert "S3CRET" not in output and "bob:***@" in output and "Traceback" not in output


@pytest.mark.slow
def test_sync_says_in_one_line_what_is_wrong_with_a_tracker_and_recovers(tmp_path, mnist_dir):
    """A half-truncated mlflow.db and an MLflow server that does not answer (its URL with a
    password): one `error:` line each, naming the store and what to do, never a traceback or the
    password; the advice for the damaged file works."""
    spec = tiny_spec_dict(tmp_path / "run", mnist_dir, masks={"remaining": [1.0, 0.5], "layers": ["W_hh"]},
                          data={"limit_train": 200, "limit_test": 100}, model={"cell": "rnn", "hidden": 8},
                          training={"epochs": 1, "finetune_epochs": 1},
                          tracking={"mlflow": {"enabled": True, "log_models": False}})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))

    def cli(*args):
        result = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)
        return result.returncode, result.stdout + result.stderr

    code, output = cli("launch", str(path), "--workers", "1", "--no-report")
    assert code == 0, output
    store = tmp_path / "run" / "mlflow.db"
    store.write_bytes(store.read_bytes()[: store.stat().st_size // 2])
    code, output = cli("sync", str(path))
    assert code == 2 and "Traceback" not in output and f"the MLflow store {store} is damaged" in output, output
    store.rename(store.with_suffix(".db.damaged"))  # what the message says to do
    code, output = cli("sync", str(path))
    assert code == 0 and "mlflow +2" in output, output
    code, output = cli("sync", str(path), "--set", "tracking.mlflow.uri=http://bob:S3CRET@127.0.0.1:9/")
    assert code == 2 and "Traceback" not in output and "S3CRET" not in output, output
    assert "the MLflow server http://bob:***@127.0.0.1:9/ does not answer" in output


def test_a_damaged_study_file_is_told_as_a_file_with_the_way_out():
    import sqlite3

    from expander_sweeps.sweep.study import StorageError

    message = str(StorageError.about("sqlite:////runs/a/optuna.db", sqlite3.DatabaseError("database disk image is malformed")))
    assert message.startswith("cannot open the Optuna study file /runs/a/optuna.db")
    assert "mv /runs/a/optuna.db /runs/a/optuna.db.damaged" in message and "server" not in message


@pytest.mark.slow
def test_a_launch_whose_mlflow_server_url_holds_a_password_never_prints_it(tmp_path, mnist_dir):
    import os

    spec = tiny_spec_dict(tmp_path / "run", mnist_dir, masks={"remaining": [1.0, 0.5], "layers": ["W_hh"]},
                          data={"limit_train": 200, "limit_test": 100}, model={"cell": "rnn", "hidden": 8},
                          training={"epochs": 1, "finetune_epochs": 1})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://bob:S3CRET@127.0.0.1:9/"}
    result = subprocess.run([*CLI, "launch", str(path)], capture_output=True, text=True, timeout=300, env=env)
    output = result.stdout + result.stderr
    assert "warning: tracker 'mlflow' failed" in output and "bob:***@127.0.0.1:9" in output, output
    assert "S3CRET" not in output


def test_validate_writes_the_resolved_spec_alone_to_stdout(tmp_path, mnist_dir):
    """`validate SPEC > resolved.yaml` is valid YAML, loads back as the same spec, and long values
    are not wrapped at a pipe's 80 columns; the verdict goes to stderr."""
    from expander_sweeps.spec import load_spec

    spec = tiny_spec_dict(tmp_path / ("a_long_run_folder_name_" * 4), mnist_dir)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = subprocess.run([*CLI, "validate", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "is valid" in result.stderr and "is valid" not in result.stdout
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(result.stdout)
    assert load_spec(resolved).model_dump() == load_spec(path).model_dump()
