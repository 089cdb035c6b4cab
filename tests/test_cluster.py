"""The launchers in cluster/ and the connection settings a fleet needs. Kubernetes and SLURM cannot run
here: the manifests are loaded and checked as the API server would check the fields they use (kinds,
names, references between objects, the arguments the worker's CLI accepts, connections within the
server's max_connections), and the SLURM script is parsed by bash and its worker step run locally with the
array variables set. The pools are bounded for real on PostgreSQL."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.engine import make_url

from ab.nn import train
from ab.nn.config import Config
from ab.nn.stat import engine as engines, studies
from ab.nn.stat.engine import DatabaseError, PoolSettings
from tests import helpers

REPO = Path(__file__).resolve().parents[1]
KUBERNETES = REPO / "cluster" / "kubernetes"
SLURM = REPO / "cluster" / "slurm" / "train-array.sbatch"
NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")  # DNS-1123 label
VARIABLE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
API = {"Service": "v1", "PersistentVolumeClaim": "v1", "ConfigMap": "v1", "StatefulSet": "apps/v1",
       "Job": "batch/v1"}
SERVER_HEADROOM = 3 + 10  # PostgreSQL's superuser_reserved_connections, and `check`, `copy`, a dashboard


def _kustomization() -> dict:
    return yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())


def _objects() -> dict[tuple[str, str], dict]:
    """Every object `kubectl apply -k cluster/kubernetes` creates, by (kind, name), the generated ConfigMap
    included."""
    kustomization = _kustomization()
    objects = {}
    for resource in kustomization["resources"]:
        for made in yaml.safe_load_all((KUBERNETES / resource).read_text()):
            key = (made["kind"], made["metadata"]["name"])
            assert key not in objects, f"{key} twice"
            objects[key] = made
    for generated in kustomization["configMapGenerator"]:
        data = dict(literal.split("=", 1) for literal in generated["literals"])
        objects[("ConfigMap", generated["name"])] = {"apiVersion": "v1", "kind": "ConfigMap",
                                                     "metadata": {"name": generated["name"]}, "data": data}
    return objects


def _pod(made: dict) -> dict:
    return made["spec"]["template"]["spec"]


def _container_env(container: dict, objects: dict) -> dict[str, str | None]:
    """A container's environment as Kubernetes builds it (ConfigMaps first, then env in order, with $(VAR)
    expanded from what is defined before); secrets are None."""
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        env.update(objects[("ConfigMap", source["configMapRef"]["name"])]["data"])
    for item in container.get("env", []):
        assert ("value" in item) != ("valueFrom" in item), item
        if "valueFrom" in item:
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "ab-nn-postgres" and ref["key"] == "password"  # the one Secret the guide makes
            env[item["name"]] = None
            continue
        for name in VARIABLE.findall(item["value"]):
            assert name in env, f"{item['name']} uses $({name}) before it is defined"
        env[item["name"]] = VARIABLE.sub(lambda m: env[m[1]] or "secret", item["value"])
    return env


def _expand(words: list[str], env: dict) -> list[str]:
    out = []
    for word in words:
        for name in VARIABLE.findall(word):
            assert name in env, f"$({name}) in the command is not in the container's environment"
        out.append(VARIABLE.sub(lambda m: env[m[1]], word))
    return out


def test_manifests_are_objects_of_the_right_kinds_that_refer_to_each_other():
    objects = _objects()
    assert {kind for kind, _ in objects} == set(API)
    for (kind, name), made in objects.items():
        assert made["apiVersion"] == API[kind] and NAME.fullmatch(name), (kind, name)
    service, database = objects[("Service", "ab-nn-postgres")], objects[("StatefulSet", "ab-nn-postgres")]
    pod = _pod(database)
    assert database["spec"]["serviceName"] == "ab-nn-postgres"
    labels = database["spec"]["template"]["metadata"]["labels"]
    assert database["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    [postgres] = pod["containers"]
    assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in postgres["ports"]}
    assert {m["name"] for m in postgres["volumeMounts"]} == {t["metadata"]["name"] for t in
                                                             database["spec"]["volumeClaimTemplates"]}
    env = _container_env(postgres, objects)
    assert env["PGDATA"].startswith(postgres["volumeMounts"][0]["mountPath"] + "/")  # a sub-folder: initdb wants it empty

    job = objects[("Job", "ab-nn-sweep")]
    worker_pod = _pod(job)
    assert worker_pod["restartPolicy"] == "Never"  # a failed worker becomes a new pod, which joins late
    assert job["spec"]["completions"] == job["spec"]["parallelism"] >= 2
    volumes = {v["name"]: v for v in worker_pod["volumes"]}
    for container in worker_pod["initContainers"] + worker_pod["containers"]:
        assert NAME.fullmatch(container["name"]) and container["image"]
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes, mount
    for volume in volumes.values():
        claim = volume.get("persistentVolumeClaim")
        if claim is not None:
            assert ("PersistentVolumeClaim", claim["claimName"]) in objects
            access = objects[("PersistentVolumeClaim", claim["claimName"])]["spec"]["accessModes"]
            assert "ReadWriteMany" in access  # mounted by pods on several nodes
    [wait] = worker_pod["initContainers"]
    assert "ab-nn-postgres" in " ".join(wait["command"])
    images = {image["name"] for image in _kustomization()["images"]}
    assert [c["image"] for c in worker_pod["containers"]] == ["ab-nn-age"] and images == {"ab-nn-age"}

    loader = yaml.safe_load((KUBERNETES / "data-loader.yaml").read_text())  # applied on its own, once
    assert (loader["apiVersion"], loader["kind"]) == ("v1", "Pod")
    [claim] = [v["persistentVolumeClaim"]["claimName"] for v in loader["spec"]["volumes"]]
    assert claim == volumes["data"]["persistentVolumeClaim"]["claimName"]
    assert loader["spec"]["containers"][0]["volumeMounts"][0]["mountPath"] == "/data"


def test_kustomize_renders_the_same_objects_with_the_image_set():
    """What ``kubectl apply -k`` would send, rendered by kubectl's own kustomize (offline), where kubectl
    is installed: the objects the other tests check, and the worker image rewritten to the registry's."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the manifests are checked by the other tests only")
    rendered = subprocess.run([kubectl, "kustomize", str(KUBERNETES)], capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    made = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(rendered.stdout)}
    assert set(made) == set(_objects())
    [image] = _kustomization()["images"]
    [worker] = _pod(made[("Job", "ab-nn-sweep")])["containers"]
    assert worker["image"] == f"{image['newName']}:{image['newTag']}"
    assert made[("ConfigMap", "ab-nn-sweep")]["data"] == _objects()[("ConfigMap", "ab-nn-sweep")]["data"]


def test_the_job_runs_the_train_cli_with_arguments_it_accepts():
    objects = _objects()
    [worker] = _pod(objects[("Job", "ab-nn-sweep")])["containers"]
    env = _container_env(worker, objects)
    command = _expand(worker["command"] + worker["args"], env)
    assert command[:3] == ["python", "-m", "ab.nn.train"]
    args = train.parser().parse_args(command[3:])
    assert args.trials >= 0  # a total per config and data, shared by every pod
    for config in args.config:
        Config.parse(config)
    url = make_url(env["LEMUR_DB"])
    assert url.get_backend_name() == "postgresql" and url.host == "ab-nn-postgres" and url.port == 5432
    assert url.username == "abnn" and url.database == "abnn"
    [postgres] = _pod(objects[("StatefulSet", "ab-nn-postgres")])["containers"]
    server = _container_env(postgres, objects)
    assert (server["POSTGRES_USER"], server["POSTGRES_DB"]) == ("abnn", "abnn")
    mounts = {m["mountPath"]: m for m in worker["volumeMounts"]}
    assert mounts[env["LEMUR_DATA"]].get("readOnly") and env["LEMUR_ROOT"] in mounts
    assert f"{env['LEMUR_ROOT']}/out" in mounts  # exports outlive the pod


def test_every_worker_of_the_job_fits_within_the_servers_max_connections():
    objects = _objects()
    job = objects[("Job", "ab-nn-sweep")]
    [worker] = _pod(job)["containers"]
    pools = PoolSettings.from_environment({k: v for k, v in _container_env(worker, objects).items() if v})
    processes = 1 if "--in-process" in worker["args"] else 2  # the runner and its trial process
    [postgres] = _pod(objects[("StatefulSet", "ab-nn-postgres")])["containers"]
    settings = dict(arg.split("=", 1) for arg in postgres["args"] if "=" in arg)
    need = job["spec"]["parallelism"] * processes * pools.per_process + SERVER_HEADROOM
    assert need <= int(settings["max_connections"]), (need, settings["max_connections"])
    assert int(settings["tcp_keepalives_idle"]) <= 120  # a dead node's connections are freed in minutes


def test_the_image_installs_the_project_as_setup_does():
    dockerfile = (REPO / "cluster" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M)  # setup.cfg: Python 3.11
    assert re.search(r"^RUN bash scripts/setup\.sh", dockerfile, re.M)
    assert "PATH=/app/.venv/bin:$PATH" in dockerfile
    ignored = (REPO / "cluster" / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", ".git", "db", "data", "out", "stat"} <= set(ignored)  # nothing of this machine goes in


def _sbatch_options() -> dict[str, str]:
    lines = [line[len("#SBATCH "):] for line in SLURM.read_text().splitlines() if line.startswith("#SBATCH ")]
    return dict(line.lstrip("-").split("=", 1) for line in lines)


def test_the_slurm_script_parses_and_refuses_to_start_without_a_database():
    assert subprocess.run(["bash", "-n", str(SLURM)]).returncode == 0
    options = _sbatch_options()
    assert re.fullmatch(r"0-\d+(%\d+)?", options["array"]) and options["signal"].startswith("B:TERM@")
    env = {k: v for k, v in os.environ.items() if k != "LEMUR_DB"}
    done = subprocess.run(["bash", str(SLURM)], env={**env, "SLURM_ARRAY_TASK_ID": "0"}, capture_output=True,
                          text=True)
    assert done.returncode != 0 and "set LEMUR_DB to the shared database URL" in done.stderr


def test_a_slurm_array_task_runs_one_worker(tmp_path, tiny_model, utk_dir):
    db = tmp_path / "shared.db"
    workspace = tmp_path / "ws" / "ab-nn-4242-3"
    helpers.write_model(workspace, tiny_model, helpers.TINY_MODEL)  # a workspace model reaches the task's root
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_JOB_ID": "4242", "LEMUR_DB": f"sqlite:///{db}",
           "LEMUR_DATA": str(utk_dir), "AB_NN_PYTHON": sys.executable, "AB_NN_WORKSPACES": str(tmp_path / "ws"),
           "AB_NN_CONFIG": f"age-regression_utkface_mae_{tiny_model}", "AB_NN_TRIALS": "2", "AB_NN_EPOCHS": "1",
           "AB_NN_TRAIN_ARGS": "-f norm_64 -w 0 --pretrained 0 --export none --in-process --unsafe"}
    done = subprocess.run(["bash", str(SLURM)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"ab.nn worker 3 of job 4242 on {os.uname().nodename}: workspace {workspace}" in done.stdout
    assert "this run trained 2" in done.stdout
    assert (workspace / "stat" / "train").is_dir()  # its own workspace; the statistics in the shared database
    import sqlite3
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT count(*) FROM trial WHERE status = 'complete'").fetchone()[0] == 2


# -- the pools ----------------------------------------------------------------------------------------
def test_pool_settings_come_from_the_environment_with_one_line_errors():
    assert PoolSettings.from_environment({}) == PoolSettings()
    made = PoolSettings.from_environment({"LEMUR_DB_POOL_SIZE": "3", "LEMUR_DB_MAX_OVERFLOW": "0",
                                          "LEMUR_DB_POOL_TIMEOUT": "2.5", "LEMUR_DB_CONNECT_TIMEOUT": "4"})
    assert (made.size, made.overflow, made.timeout, made.connect_timeout) == (3, 0, 2.5, 4)
    assert made.per_process == 2 * 3
    for variable, value in (("LEMUR_DB_POOL_SIZE", "0"), ("LEMUR_DB_MAX_OVERFLOW", "-1"),
                            ("LEMUR_DB_POOL_SIZE", "two"), ("LEMUR_DB_POOL_TIMEOUT", "0")):
        with pytest.raises(DatabaseError, match=rf"^\${variable} must be a .* of at least \d, got '{value}'$"):
            PoolSettings.from_environment({variable: value})


def test_server_engines_are_pre_pinged_bounded_and_named(monkeypatch):
    monkeypatch.setenv("LEMUR_DB_POOL_SIZE", "3")
    monkeypatch.setenv("LEMUR_DB_MAX_OVERFLOW", "1")
    kwargs = engines.engine_kwargs("postgresql+psycopg://u@db.example.org/abnn?application_name=mine")
    assert kwargs["pool_pre_ping"] and (kwargs["pool_size"], kwargs["max_overflow"]) == (3, 1)
    assert "application_name" not in kwargs["connect_args"]  # the URL's own parameter wins
    assert kwargs["connect_args"]["connect_timeout"] == 10 and kwargs["connect_args"]["keepalives"] == 1
    assert engines.engine_kwargs("sqlite:///x.db") == {"connect_args": {"timeout": engines.BUSY_TIMEOUT_S}}


@pytest.mark.postgres
def test_a_process_never_holds_more_connections_than_its_pools_allow(postgres_url, monkeypatch):
    """One pool per URL per process for ours (readers and writers alike) and one for Optuna's, each
    bounded (a thread that finds them all in use waits, then fails with a storage error, instead of asking
    the server for more) and pre-pinged (a connection the server dropped is replaced, not used)."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import TimeoutError as PoolTimeout
    from sqlalchemy.pool import NullPool

    monkeypatch.setenv("LEMUR_DB_POOL_SIZE", "1")
    monkeypatch.setenv("LEMUR_DB_MAX_OVERFLOW", "1")
    monkeypatch.setenv("LEMUR_DB_POOL_TIMEOUT", "1")
    engines.dispose_all()
    admin = create_engine(postgres_url, poolclass=NullPool)
    try:
        ours = engines.engine(postgres_url, writer=True)
        assert engines.engine(postgres_url, writer=False) is ours
        assert studies.storage(postgres_url) is studies.storage(postgres_url)
        for made in (ours, studies.storage(postgres_url).engine):
            held = [made.connect(), made.connect()]
            with pytest.raises(PoolTimeout) as refused:
                made.connect()
            assert engines.is_storage_error(refused.value)
            name = held[0].execute(text("SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()"))
            assert name.scalar() == f"ab.nn@{os.uname().nodename}"
            pids = [c.execute(text("SELECT pg_backend_pid()")).scalar() for c in held]
            for connection in held:
                connection.close()  # back to the pool (one is kept open), then dropped by the server
            with admin.connect() as connection:
                connection.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = ANY(:p)"),
                                   {"p": pids})
            with made.connect() as connection:
                assert connection.execute(text("SELECT pg_backend_pid()")).scalar() not in pids
    finally:
        admin.dispose()
        engines.dispose_all()


# -- the total trial cap ------------------------------------------------------------------------------
RESERVER = """
import sys
import time
from ab.nn.config import Config
from ab.nn.stat.store import StatStore

url, total = sys.argv[1], int(sys.argv[2])
store, config = StatStore(url), Config.parse("age-regression_utkface_mae_Fake")
store.count_results(config, 1)  # connected
print("ready", flush=True)
sys.stdin.readline()  # every process is ready: reserve together
taken = 0
while True:
    ids = store.reserve_trials(config, 1, total, data_key="k" * 12, count=2)
    if not ids:
        break
    taken += len(ids)
    time.sleep(0.02)  # a worker trains between reservations
print(taken)
"""


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_the_total_cap_holds_however_many_processes_reserve_at_once(backend, request, tmp_path):
    """``-t N`` is a total per config, data key and epoch count, shared by every worker on every host:
    processes racing to reserve (2 slots at a time) together take exactly what is left of N. Trials that
    trained (or are running) count; failed and interrupted ones do not, so their slots are run again;
    another epoch count is another total."""
    from ab.nn.stat.states import COMPLETE, FAILED, INTERRUPTED, PRUNED
    from tests import helpers

    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else f"sqlite:///{tmp_path / 'ab.nn.db'}"
    store, config = helpers.new_store(url), Config.parse("age-regression_utkface_mae_Fake")
    before = store.reserve_trials(config, 1, None, data_key="k" * 12, count=6)
    for trial_id, status in zip(before, (COMPLETE, COMPLETE, PRUNED, FAILED, INTERRUPTED)):
        assert store.finish_trial(trial_id, status)  # the sixth stays running: it holds its slot
    other_epochs = store.reserve_trials(config, 2, None, data_key="k" * 12, count=4)
    total, processes = 30, 4
    racers = [subprocess.Popen([sys.executable, "-c", RESERVER, url, str(total)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    assert [racer.stdout.readline() for racer in racers] == ["ready\n"] * processes
    for racer in racers:
        racer.stdin.write("go\n")
        racer.stdin.flush()
    taken = [int(racer.communicate(timeout=120)[0]) for racer in racers]
    assert all(racer.returncode == 0 for racer in racers)
    assert sum(taken) == total - 4  # 3 results and 1 running were there; the failed and interrupted do not count
    assert sum(1 for t in taken if t) >= 2  # a real race: more than one process got slots
    from sqlalchemy import create_engine, func, select
    from ab.nn.stat.schema import Trial
    from ab.nn.stat.states import RESULT_STATES, RUNNING

    engine = create_engine(url)
    with engine.connect() as connection:
        held = connection.scalar(select(func.count()).select_from(Trial).where(
            Trial.epoch_max == 1, Trial.status.in_(RESULT_STATES + (RUNNING,))))
    engine.dispose()
    assert held == total and len(other_epochs) == 4
