"""deploy/slurm/ on a real Slurm: a one-node cluster (munged, slurmctld, slurmd, Debian's
slurm-wlm 22.05) started on this machine for the test, a two-task worker array submitted with
deploy/slurm/submit.sh, one task cancelled with `scancel` in the middle of a trial. The study
(a journal file: the storage a cluster without a database server uses) must end with every grid
point done once, and the report job must have run after the array."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from conftest import CLI, REPO, grid_spec, study_trials, wait_for

pytestmark = pytest.mark.slow

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scancel", "squeue")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _find(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None)


@pytest.fixture
def slurm(tmp_path):
    """A one-node Slurm cluster of this test's own (its own munge socket, ports, state); the
    environment its commands need. Skipped with the reason when it cannot start here."""
    missing = [name for name in DAEMONS if _find(name) is None]
    if missing:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)} missing): apt-get install slurm-wlm munge")
    if os.geteuid() != 0:
        pytest.skip("a one-node Slurm cluster needs root here (slurmd runs jobs as their users)")
    home = tmp_path / "slurm"
    for folder in ("munge", "state", "spool", "log"):
        (home / folder).mkdir(parents=True)
    (home / "munge").chmod(0o700)
    key = home / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    socket_path = home / "munge" / "munge.sock"
    host = socket.gethostname()
    conf = home / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=estest", f"SlurmctldHost={host}", "SlurmUser=root",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
        "AuthType=auth/munge", f"AuthInfo=socket={socket_path}", "CredType=cred/munge",
        f"StateSaveLocation={home / 'state'}", f"SlurmdSpoolDir={home / 'spool'}",
        f"SlurmctldPidFile={home / 'slurmctld.pid'}", f"SlurmdPidFile={home / 'slurmd.pid'}",
        f"SlurmctldLogFile={home / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={home / 'log' / 'slurmd.log'}",
        # No cgroups in a container: processes tracked by their parents, no task binding.
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core", "MpiDefault=none",
        "ReturnToService=2", "KillWait=20",
        f"NodeName={host} CPUs={os.cpu_count()} State=UNKNOWN",
        # Two workers and the report job share the node's cores, as several GPU jobs share a node.
        f"PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4",
    ]) + "\n")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    started = []
    try:
        subprocess.run([_find("munged"), "--force", f"--key-file={key}", f"--socket={socket_path}",
                        f"--pid-file={home / 'munge' / 'munged.pid'}", f"--log-file={home / 'munge' / 'munged.log'}",
                        f"--seed-file={home / 'munge' / 'seed'}"], check=True, capture_output=True, timeout=30)
        started.append(home / "munge" / "munged.pid")
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([_find(daemon), "-f", str(conf)], env=env, check=True, capture_output=True, timeout=30)
            started.append(home / f"{daemon}.pid")
        idle = wait_for(lambda: "idle" in subprocess.run([_find("sinfo") or "sinfo", "-h", "-o", "%t"], env=env,
                                                         capture_output=True, text=True).stdout, 30, "the node to be idle")
        assert idle
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, AssertionError) as err:
        _stop(started)
        logs = "".join(p.read_text()[-1500:] for p in (home / "log").glob("*.log"))
        pytest.skip(f"a one-node Slurm cluster did not start here: {err}; {getattr(err, 'stderr', b'')!r} {logs}")
    try:
        yield env
    finally:
        _stop(started)


def _stop(pid_files: list[Path]) -> None:
    for pid_file in reversed(pid_files):
        try:
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
        except (OSError, ValueError):
            pass
    time.sleep(0.5)


def test_a_job_array_with_a_task_cancelled_mid_trial_does_every_point_once(tmp_path, mnist_dir, slurm):
    fractions = [round(1.0 - i * 0.1, 2) for i in range(6)]  # 6 grid points of ~1 s
    journal = tmp_path / "shared" / "study.log"
    spec = grid_spec(tmp_path, mnist_dir, f"journal://{journal}", fractions)
    env = {**slurm, "PATH": f"{Path(CLI[0]).parent}:{slurm['PATH']}",  # the venv's expander-sweeps
           "SBATCH_OPTIONS": "--cpus-per-task=1"}  # worker.sbatch asks for 4; this node may have 2
    env.pop("EXPANDER_SWEEPS_WORKERS", None)
    submitted = subprocess.run([str(REPO / "deploy" / "slurm" / "submit.sh"), str(spec), "2"], cwd=tmp_path,
                               env=env, capture_output=True, text=True, timeout=60)
    assert submitted.returncode == 0, submitted.stderr
    words = submitted.stdout.split()
    array, report = words[words.index("workers:") + 2], words[words.index("report:") + 2]
    victim_log = tmp_path / f"expander-sweeps-{array}_0.out"

    def victim_mid_trial():
        text = victim_log.read_text() if victim_log.exists() else ""
        pids = [line.split()[1] for line in text.splitlines() if line.startswith("worker ") and " on " in line]
        trials = study_trials("tiny", f"journal://{journal}")
        if not pids or not any(t.state == TrialState.COMPLETE for t in trials):
            return None  # past the first trial (the dense model's), as the SIGKILL test waits
        return next((t for t in trials if t.state == TrialState.RUNNING
                     and t.params and t.user_attrs.get("worker", "").endswith(f":{pids[0]}")), None)

    try:
        cancelled = wait_for(victim_mid_trial, 180, "task 0 to be inside a trial")
    except AssertionError:
        queue = subprocess.run([_find("squeue"), "-o", "%i %T %r"], env=env, capture_output=True, text=True).stdout
        logs = "\n".join(p.read_text()[-2000:] for p in tmp_path.glob("expander-sweeps-*.out"))
        raise AssertionError(f"task 0 never ran a trial; squeue:\n{queue}\n{logs}") from None
    # SIGTERM to the task's batch shell (the exec'd worker), as Slurm's preemption and time-limit
    # warnings send it (--signal=B:TERM); then the cancel itself. In one CI run a plain `scancel`
    # alone left the worker running to the end (the job marked CANCELLED, the worker never signalled).
    subprocess.run([_find("scancel"), "--full", "--signal=TERM", f"{array}_0"], env=env, check=True, timeout=30)
    subprocess.run([_find("scancel"), f"{array}_0"], env=env, check=True, timeout=30)

    def everything_ended():
        queue = subprocess.run([_find("squeue"), "-h", "-o", "%i"], env=env, capture_output=True, text=True).stdout
        return not queue.strip()

    wait_for(everything_ended, 300, "the array and the report job to end")
    outputs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(tmp_path.glob("expander-sweeps-*.out")))
    trials = study_trials("tiny", f"journal://{journal}")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["remaining"] for t in complete) == sorted(fractions), outputs  # each point once
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)], outputs
    dead = next(t for t in trials if t.number == cancelled.number)
    # Failed by its own worker on SIGTERM ("interrupted"), or, when Slurm's kill came first, by
    # the other task once its heartbeat was stale: either way failed once and retried once.
    assert dead.state == TrialState.FAIL, outputs
    assert "interrupted" in dead.user_attrs.get("error", "interrupted"), outputs
    retry = [t for t in complete if t.system_attrs.get("failed_trial") == cancelled.number]
    assert len(retry) == 1 and retry[0].params == cancelled.params and "error" not in retry[0].user_attrs
    assert "task 0 of job" in victim_log.read_text() and "task 1 of job" in outputs
    report_log = tmp_path / f"expander-sweeps-report-{report}.out"
    assert report_log.exists(), outputs
    assert (tmp_path / "run" / "report" / "report.md").exists(), report_log.read_text()[-2000:]
