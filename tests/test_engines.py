"""Real engines on this machine (pipeline/engines.py): a local Flink 1.20 cluster and a Spark 3.5
standalone cluster from the artifacts that `make engines` caches and checks by hash. Each comes up on
loopback only, runs a job, and leaves no process behind, whether its block ends normally, by an
exception, by a JVM of its own dying, or by Ctrl-C / SIGTERM / SIGKILL to the command that holds it. A Toonbeam job
through Beam's FlinkRunner / SparkRunner needs Beam's job-server jar, which Maven Central does not serve
here: that test skips, naming the jar, until one is pinned in engines/artifacts.lock and cached."""
import ipaddress
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from pipeline import app, engines
from tests.conftest import ROOT, communicate_or_fail

JOBS = ROOT / "tests" / "engine_jobs"
SUM_OF_SQUARES_1000 = sum(x * x for x in range(1, 1001))


def _require(engine: str) -> None:
    """Skip where `make engines` has not run; in CI (.ci/run runs it first) fail instead."""
    home = engines.flink_home() if engine == "flink" else engines.spark_home()
    if not (home / ".complete").exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{home} is missing in CI: .ci/run must run `make engines` before `make test`")
        pytest.skip(f"{home} is missing: run `make engines`")


def _listening(pids: list[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket that `pids` listen on (from /proc: no `ss` needed)."""
    inodes = set()
    for pid in pids:
        for fd in pathlib.Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd) if fd.is_symlink() else ""
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in pathlib.Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                address, port = fields[1].split(":")
                raw = bytes.fromhex(address)  # /proc prints each 32-bit word in host (little-endian) order
                ip = ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)))
                host = str(getattr(ip, "ipv4_mapped", None) or ip)
                found.add((host, int(port, 16)))
    return found


def _alive(pids) -> list[int]:
    return [pid for pid in pids if pathlib.Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)]


def _state(pid: int) -> str:
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "Z"
    return stat[stat.rindex(")") + 2]


def _cmdline(pid: int) -> str:
    return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def _assert_on_loopback(cluster: engines.Cluster) -> None:
    addresses = _listening(cluster.pids())
    assert addresses, "the cluster listens nowhere"
    assert {host for host, _ in addresses} == {"127.0.0.1"}, addresses
    assert int(cluster.web_ui.rsplit(":", 1)[1]) in {port for _, port in addresses}


@pytest.mark.slow
def test_flink_cluster_on_loopback_runs_a_job_and_leaves_no_process(tmp_path):
    _require("flink")
    home = engines.flink_home()
    classes = tmp_path / "classes"
    subprocess.run(["javac", "-d", str(classes), "-cp", f"{home}/lib/*", str(JOBS / "SumOfSquares.java")], check=True)
    jar = tmp_path / "SumOfSquares.jar"
    subprocess.run(["jar", "cfe", str(jar), "SumOfSquares", "-C", str(classes), "SumOfSquares.class"], check=True)

    with engines.flink_cluster(slots=2, workdir=tmp_path / "cluster") as cluster:
        overview = engines._get_json(f"{cluster.web_ui}/overview")
        assert (overview["flink-version"], overview["taskmanagers"], overview["slots-total"]) == ("1.20.3", 1, 2)
        _assert_on_loopback(cluster)
        env = dict(os.environ, FLINK_CONF_DIR=str(cluster.workdir / "conf"), FLINK_LOG_DIR=str(cluster.workdir / "log"))
        job = subprocess.run([str(home / "bin" / "flink"), "run", "-m", cluster.master, str(jar), "1000"],
                             env=env, capture_output=True, text=True, timeout=300)
        assert job.returncode == 0, job.stderr[-3000:]
        assert f"RESULT {SUM_OF_SQUARES_1000}" in job.stdout
        job_id = job.stdout.split("JobID ")[1].split()[0]
        assert cluster.jobs() == [f"{job_id} FINISHED"]
        pids = cluster.pids()
        taskmanager, = [pid for pid in pids if "TaskManagerRunner" in _cmdline(pid)]
        os.kill(taskmanager, signal.SIGKILL)  # a JVM that dies on its own: the rest is still stopped
    assert pids and not _alive(pids) and not engines.group_pids(cluster.pgid)


@pytest.mark.slow
def test_spark_cluster_on_loopback_runs_a_job_and_an_exception_stops_it(tmp_path):
    _require("spark")
    home = engines.spark_home()
    with pytest.raises(RuntimeError, match="a failure after the job"):
        with engines.spark_cluster(cores=2, workdir=tmp_path / "cluster") as cluster:
            state = engines._get_json(f"{cluster.web_ui}/json/")
            assert (state["aliveworkers"], state["cores"]) == (1, 2)
            _assert_on_loopback(cluster)
            env = dict(os.environ, SPARK_HOME=str(home), PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
            job = subprocess.run(
                [str(home / "bin" / "spark-submit"), "--master", cluster.master,
                 "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.driver.bindAddress=127.0.0.1",
                 str(JOBS / "sum_of_squares.py"), "1000"],
                env=env, capture_output=True, text=True, timeout=300,
            )
            assert job.returncode == 0, job.stderr[-3000:]
            assert f"RESULT {SUM_OF_SQUARES_1000}" in job.stdout
            apps = cluster.jobs()
            assert len(apps) == 1 and apps[0].startswith("app-") and apps[0].endswith(" FINISHED")
            pids = cluster.pids()
            raise RuntimeError("a failure after the job")
    assert pids and not _alive(pids) and not engines.group_pids(cluster.pgid)


@pytest.mark.slow
@pytest.mark.parametrize("engine, signum", [("flink", signal.SIGINT), ("spark", signal.SIGTERM), ("spark", signal.SIGKILL)],
                         ids=["flink-SIGINT", "spark-SIGTERM", "spark-SIGKILL"])
def test_a_signal_to_the_command_that_holds_a_cluster_stops_it(engine, signum):
    _require(engine)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.engines", "up", engine], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()
        assert f"toonbeam: {engine} cluster up in " in line and "web UI http://127.0.0.1:" in line, proc.stderr.read()
        children = [int(p.name) for p in pathlib.Path("/proc").iterdir()
                    if p.name.isdigit() and _ppid(int(p.name)) == proc.pid]
        assert len(children) == 2 and all("java" in _cmdline(pid) for pid in children)
        proc.send_signal(signum)
        _, err = communicate_or_fail(proc, 60, f"engines up {engine} after {signum.name}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    if signum == signal.SIGKILL:  # no `finally` ran: the JVMs die with their parent (PR_SET_PDEATHSIG)
        assert proc.returncode == -signal.SIGKILL
        deadline = time.monotonic() + 10
        while _alive(children) and time.monotonic() < deadline:
            time.sleep(0.2)
    else:
        assert proc.returncode == 130 and f"the {engine} cluster was stopped" in err
    assert not _alive(children)


def _ppid(pid: int) -> int | None:
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[1])


def test_a_run_without_the_job_server_jar_says_so_in_one_line_and_starts_nothing(tmp_path):
    env = dict(os.environ, ENGINES_DIR=str(tmp_path))
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pipeline.engines", "run", "flink", "--config", "configs/flink.yaml"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "org.apache.beam:beam-runners-flink-1.20-job-server:2.77.0" in lines[0], proc.stderr
    assert time.monotonic() - start < 60 and not (tmp_path / "flink-1.20.3").exists()


def _engine_jvms() -> list[int]:
    """Live processes started from this checkout's .engines/ (other checkouts have their own)."""
    home = str(engines.engines_dir())
    return [int(p.name) for p in pathlib.Path("/proc").iterdir()
            if p.name.isdigit() and home in _cmdline_or_empty(int(p.name)) and _state(int(p.name)) != "Z"]


def _cmdline_or_empty(pid: int) -> str:
    try:
        return _cmdline(pid)
    except OSError:
        return ""


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["flink", "spark"])
def test_run_hands_the_cluster_and_java_17_flags_to_beams_job_server_and_stops_all_when_it_fails(engine, tmp_path):
    """`make run-flink` / `make run-spark` up to Beam's job server, with a stand-in jar that records how
    Beam started it and fails: the master is the local cluster's, Java 17's --add-opens flags are there,
    the run fails with a short message, and the cluster and the worker pool are gone."""
    _require(engine)
    subprocess.run(["javac", "-d", str(tmp_path), str(JOBS / "FakeJobServer.java")], check=True)
    jar = tmp_path / "fake-job-server.jar"
    subprocess.run(["jar", "cfe", str(jar), "FakeJobServer", "-C", str(tmp_path), "FakeJobServer.class"], check=True)
    (tmp_path / "in").mkdir()
    photo = sorted((ROOT / "samples" / "content").iterdir())[0]
    (tmp_path / "in" / photo.name).write_bytes(photo.read_bytes())
    recorded = tmp_path / "job-server-command.txt"
    env = dict(os.environ, TOONBEAM_FAKE_JOB_SERVER_OUT=str(recorded))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.engines", "run", engine, "--config", f"configs/{engine}.yaml",
         "--content", str(tmp_path / "in"), "--method", "classical", "--output", str(tmp_path / "out"),
         f"--{engine}_job_server_jar={jar}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    out, err = communicate_or_fail(proc, 300, f"engines run {engine} with a failing job server")
    assert proc.returncode == 1, err[-3000:]
    master = out.split(" master ", 1)[1].split(",", 1)[0]
    assert err.strip().splitlines()[-1].startswith("toonbeam: "), err[-3000:]
    flags, args = recorded.read_text().split("\n--\n")
    args = args.split()
    if engine == "flink":
        assert args[args.index("--flink-master") + 1] == f"http://{master}" and master.startswith("localhost:")
        assert "--add-opens=java.base/java.lang=ALL-UNNAMED" in flags.splitlines()
    else:
        assert args[args.index("--spark-master-url") + 1] == master and master.startswith("spark://127.0.0.1:")
        assert "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED" in flags.splitlines()  # SparkRunner's own
    assert not _engine_jvms()


def _fetch(tmp_path, lock_lines: list[str]) -> subprocess.CompletedProcess:
    lock = tmp_path / "artifacts.lock"
    lock.write_text("\n".join(lock_lines) + "\n")
    env = dict(os.environ, ENGINES_DIR=str(tmp_path / "cache"), ENGINES_LOCK=str(lock), PYTHON=sys.executable)
    return subprocess.run(["bash", str(ROOT / "engines" / "fetch.sh")], env=env, capture_output=True, text=True, timeout=60)


def test_fetch_refuses_a_cached_file_whose_hash_is_not_the_pinned_one(tmp_path):
    (tmp_path / "cache" / "dl").mkdir(parents=True)
    cached = tmp_path / "cache" / "dl" / "pyspark-3.5.8.tar.gz"
    cached.write_bytes(b"not the pinned artifact")  # already there: nothing is downloaded
    proc = _fetch(tmp_path, ["pypi\tpyspark==3.5.8\tpyspark-3.5.8.tar.gz\t" + "0" * 64])
    assert proc.returncode == 1 and "but" in proc.stderr and "0" * 64 in proc.stderr, proc.stderr
    assert not cached.exists()  # removed, so that the next run downloads it again
    assert not (tmp_path / "cache" / "spark-3.5.8").exists()


def test_fetch_refuses_a_file_that_has_no_pinned_hash(tmp_path):
    (tmp_path / "cache" / "jars").mkdir(parents=True)
    (tmp_path / "cache" / "jars" / "x-1.jar").write_bytes(b"a jar from somewhere")
    proc = _fetch(tmp_path, ["maven\torg.example:x:1\tx-1.jar\t-"])
    assert proc.returncode == 1 and "has no pinned hash" in proc.stderr, proc.stderr


# --- A Toonbeam job through Beam's FlinkRunner / SparkRunner on the local cluster --------------------

def _job_server_jar_or_skip(engine: str) -> pathlib.Path:
    try:
        return engines.job_server_jar(engine)
    except engines.EngineUnavailable as e:
        # not a CI failure: Maven Central does not serve Beam's job-server jars to this project
        pytest.skip(str(e))


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["flink", "spark"])
def test_a_job_on_the_engine_equals_the_direct_runners(engine, tmp_path, portable_services):
    """Classical + NST (random weights, tiny) on the local cluster: the same report rows and statuses
    as the DirectRunner, classical images byte-identical, dead letters equal, Beam counters back through
    the runner's result, the extractor loaded once per SDK worker process."""
    _require(engine)
    jar = _job_server_jar_or_skip(engine)
    from tests import test_portable as same  # Keras and TensorFlow: after the skip

    (tmp_path / "in").mkdir()
    argv = same._job(tmp_path / "in")
    _, direct = app.run([*argv, "--output", str(tmp_path / "direct")])
    with getattr(engines, f"{engine}_cluster")() as cluster, pytest.MonkeyPatch.context() as env:
        for name, value in engines.environ(cluster, jar, portable_services.worker_pool).items():
            env.setenv(name, value)
        _, result = app.run([*argv, "--config", str(ROOT / "configs" / f"{engine}.yaml"),
                             "--output", str(tmp_path / engine)])
        assert [job.split()[1] for job in cluster.jobs()] == ["FINISHED"]
    expected = same._rows(tmp_path / "direct")
    same._assert_same(same._rows(tmp_path / engine), expected, approx=same.LOSSES)
    for row in expected:
        if row["status"] == "ok" and row["method"] == "classical":
            assert (tmp_path / engine / row["image"]).read_bytes() == (tmp_path / "direct" / row["image"]).read_bytes()
    assert same._json_lines(tmp_path / engine, "errors") == same._json_lines(tmp_path / "direct", "errors")
    counters, _ = same._metrics(result)
    direct_counters, _ = same._metrics(direct)
    workers = {w for w in same.read_report(str(tmp_path / engine)).column("worker").to_pylist() if w}
    assert counters.pop("extractor_loads") == len(workers)
    direct_counters.pop("extractor_loads")
    assert counters == direct_counters
