"""The local Flink and Spark clusters of pipeline/engines.py on this machine: start-up seconds (until the
master sees its worker), each JVM's resident memory when idle, and its peak (VmHWM) over a small job
(tests/engine_jobs: the sum of squares of 1..N on the worker's 2 slots / cores). Needs `make engines`.

    .venv/bin/python bench/engines_bench.py [--n 10000000]

Toonbeam's own throughput on these engines needs Beam's job-server jars, which Maven Central does not
serve here (engines/artifacts.lock): not measured.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from pipeline import engines  # noqa: E402

JOBS = engines.PROJECT_ROOT / "tests" / "engine_jobs"


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of `pid` in MB: resident now, and its peak so far."""
    fields = dict(line.split(":", 1) for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def role(pid: int) -> str:
    cmd = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    for name in ("StandaloneSessionClusterEntrypoint", "TaskManagerRunner", "deploy.master.Master",
                 "deploy.worker.Worker", "CoarseGrainedExecutorBackend"):
        if name in cmd:
            return name.rsplit(".", 1)[-1]
    return "PySpark's Python worker" if "pyspark" in cmd else cmd[:40]


def job_command(cluster: engines.Cluster, work: pathlib.Path, n: int) -> tuple[list[str], dict]:
    if cluster.engine == "flink":
        home = engines.flink_home()
        subprocess.run(["javac", "-d", str(work), "-cp", f"{home}/lib/*", str(JOBS / "SumOfSquares.java")], check=True)
        jar = work / "SumOfSquares.jar"
        subprocess.run(["jar", "cfe", str(jar), "SumOfSquares", "-C", str(work), "SumOfSquares.class"], check=True)
        env = dict(os.environ, FLINK_CONF_DIR=str(cluster.workdir / "conf"), FLINK_LOG_DIR=str(cluster.workdir / "log"))
        return [str(home / "bin" / "flink"), "run", "-m", cluster.master, str(jar), str(n)], env
    home = engines.spark_home()
    env = dict(os.environ, SPARK_HOME=str(home), PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
    return [str(home / "bin" / "spark-submit"), "--master", cluster.master, "--conf", "spark.driver.host=127.0.0.1",
            "--conf", "spark.driver.bindAddress=127.0.0.1", str(JOBS / "sum_of_squares.py"), str(n)], env


def measure(engine: str, n: int) -> list[str]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp, engines.CLUSTERS[engine]() as cluster:
        idle = {pid: memory_mb(pid)[0] for pid in cluster.pids()}
        command, env = job_command(cluster, pathlib.Path(tmp), n)
        start = time.monotonic()
        job = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        peaks: dict[int, float] = {}
        roles: dict[int, str] = {}
        while job.poll() is None:
            for pid in cluster.pids():  # an executor JVM comes and goes with the job
                try:
                    roles.setdefault(pid, role(pid))
                    peaks[pid] = max(peaks.get(pid, 0), memory_mb(pid)[1])
                except (OSError, KeyError):
                    pass
            time.sleep(0.2)
        seconds = time.monotonic() - start
        assert "RESULT" in job.stdout.read(), f"the {engine} job failed"
        rows.append(f"| {engine} | start-up {cluster.start_seconds:.1f} s | job of {n:,} elements: {seconds:.1f} s "
                    f"(client start included) |")
        for pid, peak in sorted(peaks.items()):
            rows.append(f"| {engine} | {roles[pid]} | idle {idle.get(pid, 0):.0f} MB, peak {peak:.0f} MB |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("engines", nargs="*", default=["flink", "spark"])
    args = parser.parse_args()
    cpu = next(line.split(":", 1)[1].strip() for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name"))
    load = os.getloadavg()[0]
    print(f"CPU: {cpu}, {os.cpu_count()} cores; load average {load:.1f} when it started")
    print("| engine | what | value |\n| --- | --- | --- |")
    for engine in args.engines:
        for row in measure(engine, args.n):
            print(row, flush=True)


if __name__ == "__main__":
    main()
