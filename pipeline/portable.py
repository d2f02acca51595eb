"""Beam's portable runner on this machine, with the SDK harness in separate worker processes: the
contract that Flink and Dataflow Runner v2 use for Python (the job goes to a job service through the
Job API; every step runs in SDK worker processes that a worker pool starts, behind the Fn API).

`local_services()` starts, in one child process, a job service and a worker pool, both on free
loopback ports, and yields their endpoints; `configs/portable-local.yaml` points a run at them, and
`python -m pipeline.portable run FLAGS` (`make run-portable`) wraps a `toonbeam run` in them.

Where this differs from Beam's own local pieces, and why:
- Beam's worker pool starts each SDK worker as `python` from PATH: the services get a PATH whose first
  `python` is this interpreter and a PYTHONPATH that starts with this project's code, so that the
  workers run what the driver runs.
- Beam's local job service (`--job_endpoint embed`) runs every stage on one SDK worker, whatever
  --sdk_worker_parallelism or --direct_num_workers say; `ParallelJob` runs each stage on
  --sdk_worker_parallelism workers, as a Flink task manager starts that many.
- Beam's `worker_pool_main` listens on every interface; this pool only on loopback. So do the servers
  a job starts in the services' process (the FnApiRunner's control, data, state and logging servers,
  hard-coded to every interface in Beam): unauthenticated, whoever reaches them can drive the workers.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import grpc
from apache_beam.options.pipeline_options import PortableOptions
from apache_beam.portability.api import beam_fn_api_pb2_grpc, beam_job_api_pb2
from apache_beam.runners.portability import local_job_service
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer
from apache_beam.utils import thread_pool_executor

from pipeline import cli

#: The project's root: what SDK workers need on PYTHONPATH to import `pipeline` and `transforms`.
PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Services:
    """Where a running `local_services()` listens."""

    job_endpoint: str
    worker_pool: str

    def environ(self) -> dict[str, str]:
        """The environment variables that `configs/portable-local.yaml` reads its endpoints from."""
        return {"TOONBEAM_JOB_ENDPOINT": self.job_endpoint, "TOONBEAM_WORKER_POOL": self.worker_pool}


@contextlib.contextmanager
def local_services():
    """A job service and an SDK worker pool in a child process, for the duration of the block.

    The child and every worker it starts share a new process group, which the exit ends (a job that
    failed half-way can leave workers behind otherwise)."""
    env = dict(os.environ, PATH=_path_with_this_python())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.portable", "serve"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True,
    )
    try:
        endpoints = proc.stdout.readline().split()
        if len(endpoints) != 2:
            raise RuntimeError(f"the portable services did not start (exit status {proc.wait()}; see stderr)")
        yield Services(*endpoints)
    finally:
        _stop(proc)


def _path_with_this_python() -> str:
    """PATH with this interpreter's folder first: the worker pool starts each SDK worker as `python`
    from PATH (from elsewhere: `No module named 'apache_beam'`)."""
    folder = os.path.dirname(sys.executable)
    python = shutil.which("python", path=folder)
    if python is None or not os.path.samefile(python, sys.executable):
        raise RuntimeError(
            f"SDK workers start as `python` from PATH, and {folder} has no `python` that is {sys.executable}: "
            "run from a virtual environment"
        )
    return os.pathsep.join([folder, os.environ.get("PATH", "")])


def _stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Closing its stdin stops the services' process; then whatever is left of its group is killed."""
    proc.stdin.close()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


class ParallelJob(local_job_service.BeamJob):
    """A job of Beam's local job service whose stages run on `--sdk_worker_parallelism` SDK workers
    (0: one per core). The FnApiRunner reads a worker count only in `run_pipeline`, from
    --direct_num_workers; a job service runs a pipeline proto, which leaves it at one."""

    def _invoke_runner(self):
        self.set_state(beam_job_api_pb2.JobState.RUNNING)
        options = self.pipeline_options()
        runner = fn_runner.FnApiRunner(provision_info=self._provision_info)
        runner._num_workers = int(options.view_as(PortableOptions).sdk_worker_parallelism) or os.cpu_count()
        return runner.run_via_runner_api(self._pipeline_proto, options)


class _LoopbackServer:
    """A gRPC server whose ports bind loopback, whatever address they are asked for."""

    def __init__(self, server: grpc.Server):
        self._server = server

    def add_insecure_port(self, address: str) -> int:
        return self._server.add_insecure_port(f"localhost:{address.rsplit(':', 1)[1]}")

    def __getattr__(self, name):
        return getattr(self._server, name)


def bind_loopback_only() -> None:
    """Make every gRPC server this process creates from now on listen on loopback only. Beam's
    FnApiRunner opens its control, data, state and logging servers on "[::]:0" with no option to
    change it; the job service and the worker pool already ask for localhost."""
    make_server = grpc.server
    grpc.server = lambda *args, **kwargs: _LoopbackServer(make_server(*args, **kwargs))


def serve() -> None:
    """The services' process: prints "JOB_ENDPOINT WORKER_POOL" on one line, serves until stdin closes."""
    bind_loopback_only()
    job_service = local_job_service.LocalJobServicer(beam_job_type=ParallelJob)
    job_port = job_service.start_grpc_server(0)  # on localhost
    # not BeamFnExternalWorkerPoolServicer.start(), which listens on every interface: whoever reaches a
    # worker pool can make it run code
    pool = grpc.server(thread_pool_executor.shared_unbounded_instance())
    pool_port = pool.add_insecure_port("localhost:0")
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(
        BeamFnExternalWorkerPoolServicer(use_process=True), pool
    )
    pool.start()
    print(f"localhost:{job_port} localhost:{pool_port}", flush=True)
    sys.stdin.read()
    pool.stop(0)
    job_service.stop()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:
        serve()
        return 0
    if argv[:1] != ["run"]:
        print("usage: python -m pipeline.portable run [toonbeam run flags] (with --config configs/portable-local.yaml)",
              file=sys.stderr)
        return 2
    # SDK workers take KERAS_BACKEND from the services' environment: set it from --backend first (a
    # problem with the flag is `toonbeam run`'s to report)
    cli.select_backend(argv[1:])
    with local_services() as services:
        os.environ.update(services.environ())
        return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
