"""docker/: the compose file validates, and the image installs the package the way CI does."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parents[1] / "docker"
needs_compose = pytest.mark.skipif(shutil.which("docker-compose") is None,
                                   reason="docker-compose (Debian's 1.29 package) is not installed; .ci/run installs it")


def _compose_config(env: dict) -> subprocess.CompletedProcess:
    """`docker-compose config`: the compose file rendered with env, as Docker would run it."""
    return subprocess.run(["docker-compose", "-f", str(DOCKER / "compose.yaml"), "config"],
                          capture_output=True, text=True, env=env, timeout=60)


@needs_compose
def test_compose_file_validates_and_takes_credentials_from_the_environment():
    env = {**os.environ, "POSTGRES_PASSWORD": "not-a-real-one"}
    ok = _compose_config(env)
    assert ok.returncode == 0, ok.stderr
    for service in ("postgres:", "mlflow:", "dashboard:", "worker:"):
        assert f"  {service}" in ok.stdout
    assert "capabilities:\n            - gpu" in ok.stdout or "- gpu" in ok.stdout
    env.pop("POSTGRES_PASSWORD")
    refused = _compose_config(env)
    assert refused.returncode != 0 and "set POSTGRES_PASSWORD" in refused.stderr


def test_no_credentials_are_written_into_docker_files():
    for path in DOCKER.iterdir():
        text = path.read_text()
        assert "change-me" not in text or path.name == ".env.example"
        assert "password=" not in text.lower().replace("postgres_password=", "")


def test_dockerfile_installs_like_ci():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "-m venv" in dockerfile and "-m venv" in ci
    assert 'pip install ".[postgres]"' in dockerfile and '-e ".[dev]"' in ci


@needs_compose
def test_rendered_commands_hold_no_password_and_every_service_reports_its_health():
    import yaml

    env = {**os.environ, "POSTGRES_PASSWORD": "planted-Pw-8231"}
    config = yaml.safe_load(_compose_config(env).stdout)
    for name, service in config["services"].items():
        assert "planted-Pw-8231" not in json.dumps(service.get("command")), name
        if name != "worker":  # workers are batch jobs; the servers must say when they are up
            assert "healthcheck" in service, name
        assert ":latest" not in service.get("image", "") or name == "worker", name


def test_every_image_runs_as_an_unprivileged_user():
    for dockerfile in DOCKER.glob("*Dockerfile"):
        assert "\nUSER " in dockerfile.read_text(), dockerfile.name
