"""deploy/k8s/ against the schemas of a named Kubernetes version (kubernetes-validate, offline,
strict: an unknown field fails), and what the issue asks of it: an Indexed Job of GPU workers,
secrets only from a Secret, nothing as root, probes on the servers."""

from __future__ import annotations

import re

import pytest
import yaml

from conftest import REPO

KUBERNETES = "1.33.0"
FOLDER = REPO / "deploy" / "k8s"
MANIFESTS = sorted(p for p in FOLDER.glob("*.yaml") if p.name != "kustomization.yaml")


def documents():
    return [(path.name, doc) for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def pod_specs():
    for name, doc in documents():
        template = doc.get("spec", {}).get("template")
        if template:
            yield name, doc, template["spec"]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_is_valid_for_the_named_kubernetes_version(path):
    validate = pytest.importorskip("kubernetes_validate")
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:  # raises ValidationError (with the field's path) on anything the schema refuses
            validate.validate(doc, KUBERNETES, strict=True)


def test_the_kustomization_lists_every_manifest():
    listed = yaml.safe_load((FOLDER / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == [p.name for p in MANIFESTS]


def test_a_manifest_that_breaks_the_schema_is_refused():
    validate = pytest.importorskip("kubernetes_validate")
    job = next(doc for _, doc in documents() if doc["kind"] == "Job")
    job["spec"]["completionMode"] = "Indexed"
    job["spec"]["parallelizm"] = 8  # a typo: strict validation must catch it
    with pytest.raises(validate.ValidationError):
        validate.validate(job, KUBERNETES, strict=True)


def test_the_workers_are_an_indexed_job_of_gpu_workers_on_the_shared_study():
    job = next(doc for _, doc in documents() if doc["kind"] == "Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["parallelism"] == spec["completions"] >= 1
    worker = spec["template"]["spec"]["containers"][0]
    assert worker["args"][0] == "worker"
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    storage = next(e for e in worker["env"] if e["name"] == "EXPANDER_SWEEPS_STORAGE")
    assert storage["valueFrom"]["secretKeyRef"]["name"] == "expander-sweeps"
    # Long enough after SIGTERM to fail the trial and enqueue its retry.
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] >= 60


def test_no_secret_is_written_in_a_manifest_or_an_argument():
    for name, doc in documents():
        assert doc["kind"] != "Secret", f"{name}: a Secret's values belong in `kubectl create secret`"
        text = yaml.safe_dump(doc)
        assert not re.search(r"://[^/\s:@]+:[^@\s]+@", text), f"{name}: a URL with a password"
    for name, _, pod in pod_specs():
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            for variable in container.get("env", []):
                if re.search(r"PASSWORD|STORAGE|URI$|TOKEN|KEY", variable["name"]) and "value" in variable:
                    assert "://" not in variable["value"] or "@" not in variable["value"], (name, variable)
                    assert "PASSWORD" not in variable["name"], (name, variable)
            words = " ".join(container.get("command", []) + container.get("args", []))
            assert "@" not in words and "password" not in words.lower(), (name, container["name"])


def test_nothing_runs_as_root_and_the_servers_have_probes():
    for name, doc, pod in pod_specs():
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0, name
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], (name, container["name"])
        if doc["kind"] in ("Deployment", "StatefulSet"):  # the servers
            for container in pod["containers"]:
                assert "readinessProbe" in container and "livenessProbe" in container, (name, container["name"])
