"""``train`` on a real two-node Ray cluster, as a team scales it: ``ray start --head`` plus a
``ray start --address=...`` worker node (one CPU each), ``mlflow run . -e train -P ray_address=...``
against a real ``mlflow server`` (Postgres backend), then a worker node lost mid-search.

Token authentication is on, as on a real cluster: a fresh 256-bit token in a mode-600 file, and
``RAY_AUTH_MODE=token`` plus ``RAY_AUTH_TOKEN_PATH`` in the environment of both nodes and of the
driver (Ray 2.60's ``ray start --head`` turns token authentication on by itself only when it
finds a token at ``~/.ray/auth_token``, which any earlier local ``ray.init()`` leaves behind; the
other nodes and the driver then fail with ``InvalidAuthToken`` unless they carry the token). The
token never reaches a command line, a log or MLflow. The worker node runs from an empty folder
without ``PYTHONPATH``: the project's code reaches it only through the job's ``py_modules``.
The cluster runs in a temporary folder of its own and is stopped even when a test fails;
``ray stop`` is not used because it kills every Ray process of the machine, other clusters
included.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient

from steps.core import config, tracking
from steps.core.config import PROJECT_ROOT
from steps.training import search

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).parent / "ray")
TRIALS = 6
# More trials than CPUs, each long enough (LightGBM: seconds; a logistic regression trial took
# about 1 s, and in one CI run the head finished all 6 before the worker node's first actor, whose
# runtime_env carries the project's code, had started) that both nodes get trials.
FAMILY = "lightgbm"
SPREAD_TRIALS = 10
START_ATTEMPTS = 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RayCluster:
    """A running local Ray cluster: its folder, head address and the driver's environment."""

    directory: Path
    address: str
    env: dict[str, str]
    worker_node_manager_port: int

    @property
    def token(self) -> str:
        return Path(self.env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()

    def processes(self) -> list[psutil.Process]:
        """Every process of this cluster: those naming its folder or head, and their children."""
        # The head's folder, or its GCS port under whichever IP address Ray chose to name it.
        port = self.address.rsplit(":", 1)[1]
        mark = re.compile(rf"{re.escape(str(self.directory))}|address=[0-9.]+:{port}\b")
        roots = []
        for process in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(process.info["cmdline"] or [])
            if process.pid != os.getpid() and mark.search(cmdline):
                roots.append(process)
        found = {p.pid: p for p in roots}
        for process in roots:
            with contextlib.suppress(psutil.NoSuchProcess):
                found.update({child.pid: child for child in process.children(recursive=True)})
        return list(found.values())

    def raylets(self) -> dict[str, psutil.Process]:
        """The raylet of each node, by node id (from its command line)."""
        nodes = {}
        for process in self.processes():
            try:
                cmdline = process.cmdline()
            except psutil.NoSuchProcess:
                continue
            if cmdline and cmdline[0].endswith("raylet"):
                args = dict(a.lstrip("-").split("=", 1) for a in cmdline[1:] if "=" in a)
                nodes[args["node_id"]] = process
        return nodes

    def worker_raylet(self) -> psutil.Process:
        port = f"--node_manager_port={self.worker_node_manager_port}"
        (raylet,) = [r for r in self.raylets().values() if port in r.cmdline()]
        return raylet

    def kill(self) -> None:
        """SIGKILL every process of the cluster."""
        for process in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(self.processes(), timeout=20)


def _ray_start(cluster: RayCluster, arguments: list[str], env: dict[str, str], cwd: Path) -> None:
    """``ray start`` with retries: under load a raylet may miss Ray's fixed 15 s agent wait."""
    for attempt in range(1, START_ATTEMPTS + 1):
        done = subprocess.run(
            [RAY, "start", *arguments], env=env, cwd=cwd, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        if done.returncode == 0:
            return
        if attempt == START_ATTEMPTS:
            raise RuntimeError(f"ray start {arguments[0]} failed:\n{done.stderr[-3000:]}")
        if "--head" in arguments:
            cluster.kill()
        else:
            _kill_worker_node(cluster)
        time.sleep(2)


def _kill_worker_node(cluster: RayCluster) -> None:
    port = f"--node_manager_port={cluster.worker_node_manager_port}"
    for raylet in cluster.raylets().values():
        if port in raylet.cmdline():
            for process in [*raylet.children(recursive=True), raylet]:
                process.kill()


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    """A head node and one worker node with one CPU each, token authentication on."""
    # Short path: Ray's Unix sockets live under it (108-byte limit).
    directory = Path(tempfile.mkdtemp(prefix="hp-ray-", dir="/tmp"))
    home, cwd = directory / "home", directory / "cwd"
    home.mkdir()
    cwd.mkdir()
    token_path = directory / "auth_token"
    token_path.touch(mode=0o600)
    token_path.write_text(secrets.token_hex(32))
    port = _free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    base.pop("PYTHONPATH", None)
    base.update(
        HOME=str(home),  # the user's own ~/.ray is neither read nor written
        RAY_USAGE_STATS_ENABLED="0",
        # Notice a lost node within seconds (defaults: 3 s x 5 misses).
        RAY_health_check_period_ms="1000",
        RAY_health_check_failure_threshold="3",
    )
    cluster = RayCluster(
        directory=directory,
        address=f"127.0.0.1:{port}",
        env={
            **base,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(token_path),
        },
        worker_node_manager_port=_free_port(),
    )
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    try:
        _ray_start(
            cluster,
            ["--head", f"--port={port}", f"--temp-dir={directory / 'ray'}",
             "--include-dashboard=false", f"--dashboard-port={_free_port()}",
             f"--ray-client-server-port={_free_port()}", *common],
            cluster.env,
            cwd,
        )  # fmt: skip
        _ray_start(
            cluster,
            [f"--address={cluster.address}",
             f"--node-manager-port={cluster.worker_node_manager_port}", *common],
            cluster.env,
            cwd,
        )  # fmt: skip
        assert len(cluster.raylets()) == 2
        yield cluster
    finally:
        cluster.kill()
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class TrainOnCluster:
    """One ``mlflow run . -e train`` on the cluster: its output, duration and MLflow runs."""

    returncode: int
    output: str
    seconds: float
    training_run_id: str | None
    trials: list
    family_best: list


def _mlflow_run_train(
    cluster: RayCluster, tracking_uri: str, data_uri: str, trials: int, on_started=None
) -> TrainOnCluster:
    env = {
        **cluster.env,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "HEALTH_PREDICT_DATA_URI": data_uri,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
    }
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(name, None)  # the test session's own; they clash with --experiment-name
    command = [
        str(Path(sys.executable).parent / "mlflow"), "run", str(PROJECT_ROOT), "-e", "train",
        "--env-manager", "local", "--experiment-name", config.TRAINING_EXPERIMENT,
        "-P", f"ray_address={cluster.address}", "-P", f"families={FAMILY}",
        "-P", f"trials_per_family={trials}", "-P", "time_budget_s=600",
        "-P", f"data_uri={data_uri}",
    ]  # fmt: skip
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            command, env=env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, text=True
        )
        try:
            if on_started is not None:
                on_started(process)
            returncode = process.wait(timeout=900)
        finally:
            if process.poll() is None:
                process.kill()
        log.seek(0)
        output = log.read()
    seconds = time.monotonic() - started
    marker = "training run: "
    run_ids = [line.split(marker, 1)[1].strip() for line in output.splitlines() if marker in line]
    run_id = run_ids[-1] if run_ids else None
    trials_found, best = [], []
    if run_id:
        client = MlflowClient(tracking_uri=tracking_uri)
        experiment = client.get_experiment_by_name(config.TRAINING_EXPERIMENT)
        children = client.search_runs(
            [experiment.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'"
        )
        best = [r for r in children if r.data.tags.get(tracking.ROLE_TAG) == "family_best"]
        for parent in children:
            if parent.data.tags.get(tracking.ROLE_TAG) == "family_parent":
                trials_found += client.search_runs(
                    [experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
                )
    return TrainOnCluster(returncode, output, seconds, run_id, trials_found, best)


def test_trials_run_on_both_nodes_and_every_trial_is_logged(
    ray_cluster: RayCluster, mlflow_server_uri: str, processed_data_uri: str
):
    nodes = set(ray_cluster.raylets())
    result = _mlflow_run_train(ray_cluster, mlflow_server_uri, processed_data_uri, SPREAD_TRIALS)
    print(f"\ntrain on the 2-node cluster ({SPREAD_TRIALS} trials): {result.seconds:.1f} s")
    assert result.returncode == 0, result.output[-5000:]
    assert len(result.trials) == SPREAD_TRIALS, result.output[-3000:]
    assert {t.info.status for t in result.trials} == {"FINISHED"}
    parent = MlflowClient(tracking_uri=mlflow_server_uri).get_run(result.training_run_id)
    assert parent.data.metrics["hpo_cpus"] == 2.0, "the search saw one node only"
    placement = sorted(
        (t.info.start_time, t.data.tags[search.RAY_NODE_TAG][:8],
         t.info.end_time - t.info.start_time)
        for t in result.trials
    )  # fmt: skip
    print(f"trials (start ms, node, duration ms): {placement}")
    trial_nodes = {t.data.tags[search.RAY_NODE_TAG] for t in result.trials}
    assert trial_nodes <= nodes
    assert len(trial_nodes) == 2, f"trials ran on one node only: {placement}"
    (best,) = result.family_best
    assert best.data.tags[tracking.MODEL_URI_TAG]

    assert parent.data.params["ray_address"] == ray_cluster.address
    # The token is in no parameter, tag and no line of the run's output.
    token = ray_cluster.token
    for run in (parent, best, *result.trials):
        assert token not in str(run.data.params) + str(run.data.tags)
    assert token not in result.output


# A driver of its own that takes the head node's only CPU with one actor pinned there, prints
# "held" once the actor runs, and keeps the CPU until its stdin closes.
HOLD_HEAD_CPU = """
import sys, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
ray.init(address=sys.argv[1], log_to_driver=False)
@ray.remote(num_cpus=1)
class Hold:
    def ready(self):
        return True
hold = Hold.options(
    scheduling_strategy=NodeAffinitySchedulingStrategy(sys.argv[2], soft=False)
).remote()
ray.get(hold.ready.remote(), timeout=300)
print("held", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def _head_cpu_held(cluster: RayCluster) -> Iterator[subprocess.Popen]:
    """Hold the head node's CPU so the search's first trials can only start on the worker node;
    ``process.terminate()`` (or leaving the block) gives it back."""
    worker = cluster.worker_raylet().pid
    (head_id,) = [node for node, raylet in cluster.raylets().items() if raylet.pid != worker]
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_HEAD_CPU, cluster.address, head_id],
        env=cluster.env, cwd=cluster.directory / "cwd", stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert process.stdout.readline().strip() == "held", "could not hold the head node's CPU"
        yield process
    finally:
        process.terminate()
        process.wait(timeout=60)


def _on_first_worker_trial(cluster: RayCluster, action) -> Callable:
    """Return a callback that calls ``action(worker_raylet)`` once a trial runs on the worker
    node (and records when, in ``on_started.done``)."""

    def on_started(process: subprocess.Popen) -> None:
        raylet = cluster.worker_raylet()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and process.poll() is None:
            for child in raylet.children(recursive=True):
                try:
                    title = " ".join(child.cmdline())
                except psutil.NoSuchProcess:
                    continue
                if title.startswith("ray::ImplicitFunc.train"):
                    action(raylet)
                    on_started.done = time.monotonic()
                    return
            time.sleep(0.05)

    on_started.done = None
    return on_started


def test_search_survives_losing_a_worker_node(
    ray_cluster: RayCluster, mlflow_server_uri: str, processed_data_uri: str
):
    # With the head node's CPU held, the first trial can only run on the worker node (left to
    # itself, the head may run every trial before the worker's first actor has started).
    with _head_cpu_held(ray_cluster) as holder:

        def kill_then_release_head(raylet: psutil.Process) -> None:
            os.kill(raylet.pid, signal.SIGKILL)
            holder.terminate()

        on_started = _on_first_worker_trial(ray_cluster, kill_then_release_head)
        result = _mlflow_run_train(
            ray_cluster, mlflow_server_uri, processed_data_uri, TRIALS, on_started=on_started
        )
    print(f"\ntrain with the worker node killed mid-trial: {result.seconds:.1f} s")
    assert on_started.done, "no trial ever ran on the worker node"
    assert len(ray_cluster.raylets()) == 1, "the worker node's raylet is still alive"
    assert result.returncode == 0, result.output[-5000:]
    # The trial that was running on the lost node was started again on the head node: every
    # trial is logged and finished, and the family's best model is still there.
    assert len(result.trials) == TRIALS
    assert {t.info.status for t in result.trials} == {"FINISHED"}, [
        (t.info.run_name, t.info.status) for t in result.trials
    ]
    (head,) = ray_cluster.raylets()
    assert {t.data.tags[search.RAY_NODE_TAG] for t in result.trials} >= {head}
    (best,) = result.family_best
    assert best.data.tags[tracking.MODEL_URI_TAG]
