"""Real engines on this machine: a local Apache Flink 1.20 cluster (a JobManager and a TaskManager) and a
Spark 3.5 standalone cluster (a master and a worker), started from the artifacts that `make engines`
(engines/fetch.sh) cached and checked by hash under .engines/; nothing downloads here.

`flink_cluster()` / `spark_cluster()` start the JVMs in the foreground in one new process group, every
port on 127.0.0.1 and free when picked (other runs on this machine use other ports), wait until the
master sees its worker, yield a `Cluster`, and on exit (a failure, Ctrl-C or SIGTERM included) stop the
group: SIGTERM, then SIGKILL for whatever is left.

`python -m pipeline.engines run flink|spark [toonbeam run flags]` (`make run-flink`, `make run-spark`)
runs a Toonbeam job on such a cluster through Beam's FlinkRunner / SparkRunner. Those need Beam's job
server jar of the same version as apache-beam (engines/artifacts.lock); where Maven Central does not
serve it the command says so in one line before starting anything. `python -m pipeline.engines up
flink|spark` starts a cluster, prints its addresses and waits for Ctrl-C.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent
LOCK = PROJECT_ROOT / "engines" / "artifacts.lock"
FLINK_VERSION = "1.20"


def engines_dir() -> pathlib.Path:
    """The artifact cache (engines/fetch.sh's ENGINES_DIR)."""
    return pathlib.Path(os.environ.get("ENGINES_DIR", PROJECT_ROOT / ".engines"))


def flink_home() -> pathlib.Path:
    return engines_dir() / "flink-1.20.3"


def spark_home() -> pathlib.Path:
    return engines_dir() / "spark-3.5.8"


class EngineUnavailable(RuntimeError):
    """An artifact the engine needs is not in the cache: one line that says which and why."""


def _home(engine: str) -> pathlib.Path:
    home = flink_home() if engine == "flink" else spark_home()
    if not (home / ".complete").exists():
        raise EngineUnavailable(f"{engine}: {home} is missing: run `make engines` (engines/fetch.sh) first")
    return home


def job_server_jar(engine: str) -> pathlib.Path:
    """The cached Beam job-server jar of `engine`, as pinned in engines/artifacts.lock."""
    artifact = "flink-1.20-job-server" if engine == "flink" else "spark-3-job-server"
    for line in LOCK.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) == 4 and fields[0] == "maven" and f":beam-runners-{artifact}:" in fields[1]:
            jar = engines_dir() / "jars" / fields[2]
            if jar.exists():
                return jar
            raise EngineUnavailable(
                f"{engine}: Beam's job server {fields[1]} is not in {jar.parent} (`make engines` fetches it from "
                f"Maven Central, which did not serve it there); pass --{engine}_job_server_jar=PATH to use a copy"
            )
    raise EngineUnavailable(f"{engine}: {LOCK} pins no beam-runners-{artifact} jar")


def free_port() -> int:
    """A port free on 127.0.0.1 now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Cluster:
    """A running local cluster: where to submit, where to look, and its processes' group."""

    engine: str
    master: str  # what Beam's --flink_master / --spark_master_url take
    web_ui: str
    start_seconds: float
    pgid: int
    workdir: pathlib.Path

    def jobs(self) -> list[str]:
        """"ID STATE" of every job the engine has seen (Flink's job ids, Spark's application ids), from its REST API."""
        if self.engine == "flink":
            return [f"{j['jid']} {j['state']}" for j in _get_json(f"{self.web_ui}/jobs/overview")["jobs"]]
        state = _get_json(f"{self.web_ui}/json/")
        return [f"{a['id']} {a['state']}" for a in state["activeapps"] + state["completedapps"]]

    def pids(self) -> list[int]:
        """The cluster's live processes (the JVMs and their launch scripts)."""
        return group_pids(self.pgid)


def group_pids(pgid: int) -> list[int]:
    """The live processes of process group `pgid` (zombies, dead but not yet reaped, left out)."""
    pids = []
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError):
                stat = (entry / "stat").read_text()
                fields = stat[stat.rindex(")") + 2:].split()  # state ppid pgrp ...
                if int(fields[2]) == pgid and fields[0] != "Z":
                    pids.append(int(entry.name))
    return pids


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


@contextlib.contextmanager
def _processes(commands: list[list[str]], env: dict, ready, timeout: float, log_dir: pathlib.Path):
    """Starts `commands` in one new process group (the first leads it), waits until `ready()` is true,
    yields (pgid, seconds it took), and stops the whole group on exit."""
    start = time.monotonic()
    procs: list[subprocess.Popen] = []
    try:
        for i, command in enumerate(commands):
            log = open(log_dir / f"{pathlib.Path(command[0]).name}-{i}.out", "wb")
            group = procs[0].pid if procs else 0  # a new group, led by the first
            procs.append(subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                          process_group=group, preexec_fn=_die_with_parent))
            log.close()
        while not _safe(ready):
            for proc in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args[0]} exited with status {proc.returncode}; see {log_dir}")
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"the cluster was not ready after {timeout:.0f} s; see {log_dir}")
            time.sleep(0.5)
        yield procs[0].pid, time.monotonic() - start
    finally:
        if procs:
            stop_group(procs[0].pid)
            for proc in procs:
                proc.wait()


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when this process dies, even by SIGKILL, where no `finally`
    runs (Linux prctl PR_SET_PDEATHSIG; the launch scripts exec the JVM, which keeps it)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def _safe(ready) -> bool:
    try:
        return bool(ready())
    except (OSError, ValueError):
        return False


def stop_group(pgid: int, grace: float = 15.0) -> None:
    """SIGTERM to every process of the group (the JVMs shut down cleanly), SIGKILL after `grace` s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while group_pids(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if group_pids(pgid):  # not when all are gone: the group's number could be another's by now
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


@contextlib.contextmanager
def _workdir(workdir):
    if workdir is not None:
        pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
        yield pathlib.Path(workdir)
        return
    with tempfile.TemporaryDirectory(prefix="toonbeam-engine-") as tmp:
        yield pathlib.Path(tmp)


def flink_config(rest_port: int, rpc_port: int, slots: int, workdir: pathlib.Path) -> dict:
    """The local cluster's config.yaml (configs/flink.yaml's cluster side): every address 127.0.0.1,
    every port picked free, memory sized for a 2-core, shared machine."""
    loopback = "127.0.0.1"
    return {
        "jobmanager": {"bind-host": loopback, "rpc": {"address": loopback, "port": rpc_port},
                       "memory": {"process": {"size": "1024m"}}},
        "taskmanager": {"bind-host": loopback, "host": loopback, "numberOfTaskSlots": slots,
                        "rpc": {"port": str(free_port())}, "data": {"port": free_port()},
                        "memory": {"process": {"size": "1536m"}}},
        "rest": {"address": loopback, "bind-address": loopback, "port": rest_port},
        "blob": {"server": {"port": str(free_port())}},
        "parallelism": {"default": slots},
        "io": {"tmp": {"dirs": str(workdir / "tmp")}},
    }


def _merged(base: dict, override: dict) -> dict:
    """`base` with `override`'s keys, nested mappings merged key by key."""
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merged(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


@contextlib.contextmanager
def flink_cluster(slots: int = 2, workdir=None, timeout: float = 180.0):
    """A Flink session cluster (one JobManager, one TaskManager with `slots` slots) for the block."""
    home = _home("flink")
    with _workdir(workdir) as work:
        conf, log = work / "conf", work / "log"
        shutil.copytree(home / "conf", conf, dirs_exist_ok=True)
        (work / "tmp").mkdir(exist_ok=True)
        log.mkdir(exist_ok=True)
        rest_port = free_port()
        import yaml

        # over Flink's own config.yaml, which keeps its Java 17 --add-opens flags (env.java.opts.all)
        config = _merged(yaml.safe_load((conf / "config.yaml").read_text()), flink_config(rest_port, free_port(), slots, work))
        (conf / "config.yaml").write_text(yaml.safe_dump(config))
        env = dict(os.environ, FLINK_CONF_DIR=str(conf), FLINK_LOG_DIR=str(log))
        env.pop("FLINK_HOME", None)
        url = f"http://127.0.0.1:{rest_port}"
        commands = [[str(home / "bin" / "jobmanager.sh"), "start-foreground"],
                    [str(home / "bin" / "taskmanager.sh"), "start-foreground"]]
        ready = lambda: _get_json(f"{url}/overview")["taskmanagers"] >= 1  # noqa: E731
        with _processes(commands, env, ready, timeout, log) as (pgid, seconds):
            yield Cluster("flink", f"localhost:{rest_port}", url, seconds, pgid, work)


@contextlib.contextmanager
def spark_cluster(cores: int = 2, memory: str = "2g", workdir=None, timeout: float = 180.0):
    """A Spark standalone cluster (one master, one worker with `cores` cores) for the block."""
    home = _home("spark")
    with _workdir(workdir) as work:
        log = work / "log"
        log.mkdir(exist_ok=True)
        port, ui_port = free_port(), free_port()
        env = dict(os.environ, SPARK_HOME=str(home), SPARK_LOCAL_IP="127.0.0.1", SPARK_LOG_DIR=str(log),
                   SPARK_WORKER_DIR=str(work / "worker"), SPARK_CONF_DIR=str(work / "conf"))
        spark_class = str(home / "bin" / "spark-class")
        master = f"spark://127.0.0.1:{port}"
        commands = [
            [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
             "--webui-port", str(ui_port)],
            [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--port", str(free_port()),
             "--webui-port", str(free_port()), "--cores", str(cores), "--memory", memory, master],
        ]
        url = f"http://127.0.0.1:{ui_port}"
        ready = lambda: _get_json(f"{url}/json/")["aliveworkers"] >= 1  # noqa: E731
        with _processes(commands, env, ready, timeout, log) as (pgid, seconds):
            yield Cluster("spark", master, url, seconds, pgid, work)


CLUSTERS = {"flink": flink_cluster, "spark": spark_cluster}


def environ(cluster: Cluster, jar: pathlib.Path, worker_pool: str) -> dict[str, str]:
    """The variables that configs/flink.yaml and configs/spark.yaml read: the cluster's master, the
    job-server jar, and the SDK worker pool (of this project's environment) that runs every step."""
    engine = cluster.engine.upper()
    return {f"TOONBEAM_{engine}_MASTER": cluster.master, f"TOONBEAM_{engine}_JOB_SERVER_JAR": str(jar.resolve()),
            "TOONBEAM_WORKER_POOL": worker_pool}


def _jar_from_flags(engine: str, argv: list[str]) -> pathlib.Path | None:
    flag = f"--{engine}_job_server_jar="
    return next((pathlib.Path(a[len(flag):]) for a in argv if a.startswith(flag)), None)


@contextlib.contextmanager
def stop_on_signals():
    """SIGINT, SIGTERM and SIGHUP end the block as Ctrl-C does, so that the clusters' `finally` stops them.
    SIGINT too: a command started in the background by a non-interactive shell inherits SIGINT ignored,
    and Python then never turns it into KeyboardInterrupt (a CI run in the background hung on it)."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    usage = "usage: python -m pipeline.engines run|up flink|spark [toonbeam run flags, with --config configs/ENGINE.yaml]"
    if len(argv) < 2 or argv[0] not in ("run", "up") or argv[1] not in CLUSTERS:
        print(usage, file=sys.stderr)
        return 2
    command, engine, rest = argv[0], argv[1], argv[2:]
    try:
        jar = None
        if command == "run":
            jar = _jar_from_flags(engine, rest) or job_server_jar(engine)
            if not jar.exists():
                raise EngineUnavailable(f"{engine}: no job-server jar at {jar}")
        with stop_on_signals(), CLUSTERS[engine]() as cluster:
            print(f"toonbeam: {engine} cluster up in {cluster.start_seconds:.1f} s: master {cluster.master}, "
                  f"web UI {cluster.web_ui}", flush=True)
            if command == "up":
                signal.pause()
                return 0
            from pipeline import cli, portable

            cli.select_backend(rest)
            with portable.local_services() as services:
                os.environ.update(environ(cluster, jar, services.worker_pool))
                try:
                    return cli.main(["run", *rest])
                finally:
                    for job in cluster.jobs():
                        print(f"toonbeam: {engine} job {job} (web UI {cluster.web_ui})", flush=True)
    except EngineUnavailable as e:
        print(f"toonbeam: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"toonbeam: stopped ({e or 'SIGINT'}); the {engine} cluster was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
