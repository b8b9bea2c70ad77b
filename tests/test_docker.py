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
    assert 'pip install ".[postgres,redis]"' in dockerfile and '-e ".[dev]"' in ci


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


@needs_compose
@pytest.mark.parametrize("service, variable", [("mlflow", "MLFLOW_BACKEND_STORE_URI"), ("dashboard", "STUDY_STORAGE")])
def test_the_servers_get_the_database_password_in_their_environment_never_their_command_line(service, variable):
    """Each server's rendered command run by a real shell, with the server swapped for a probe
    that reports its own command line and environment, as the server would see them."""
    import sys

    import yaml

    env = {**os.environ, "POSTGRES_PASSWORD": "planted-Pw-8231"}
    config = yaml.safe_load(_compose_config(env).stdout)["services"][service]
    shell, flag, script = config["command"]
    script = script.replace("$$", "$")  # compose hands the container one $
    probe = (f"exec {sys.executable} -c 'import json, os, sys; "
             f"print(json.dumps([sys.argv, os.environ.get(\"{variable}\"), \"POSTGRES_PASSWORD\" in os.environ]))'")
    script = script[: script.index("exec ")] + probe
    seen = subprocess.run([shell, flag, script], capture_output=True, text=True, env={**config["environment"]},
                          timeout=30)
    argv, url, password_left = json.loads(seen.stdout)
    assert "planted-Pw-8231" not in json.dumps(argv) and "planted-Pw-8231" not in script
    assert url.startswith("postgresql") and ":planted-Pw-8231@postgres:5432/" in url and not password_left


@needs_compose
def test_servers_listen_on_loopback_by_default_and_come_back_after_a_crash():
    import yaml

    config = yaml.safe_load(_compose_config({**os.environ, "POSTGRES_PASSWORD": "x"}).stdout)["services"]
    for name in ("mlflow", "dashboard"):
        assert all(str(p).startswith("127.0.0.1:") for p in config[name]["ports"]), config[name]["ports"]
    assert {name: config[name].get("restart") for name in config} == {
        "postgres": "unless-stopped", "mlflow": "unless-stopped", "dashboard": "unless-stopped", "worker": "on-failure"}
    exposed = yaml.safe_load(_compose_config({**os.environ, "POSTGRES_PASSWORD": "x", "BIND_ADDRESS": "0.0.0.0"}).stdout)
    assert str(exposed["services"]["mlflow"]["ports"][0]).startswith("0.0.0.0:")


def test_build_contexts_leave_out_the_venv_and_the_credentials():
    root = DOCKER.parent
    ignored = [line.strip() for line in (root / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert ignored[0] == "*"  # everything out, then the few things the image copies
    copied = {line.removeprefix("!").rstrip("/") for line in ignored if line.startswith("!")}
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert copied >= {"pyproject.toml", "README.md", "src", "sweeps"} and ".venv" not in copied
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            assert all(part.rstrip("/") in copied for part in line.split()[1:-1]), line
    assert ".env" in (DOCKER / ".dockerignore").read_text().splitlines()
