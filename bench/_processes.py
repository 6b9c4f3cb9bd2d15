"""The child processes a benchmark starts: servers and workers that run while it measures
(`Proc`, `Procs`), command-line steps run to completion (`run_cli`), and load generators run
to completion while the CPU is sampled (`run_child`). Every one is registered until it has
stopped, so that `kill_all` leaves nothing behind on Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import _databases
import _run


class Proc:
    """A child process in its own session (so a Ctrl-C reaches only us), output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logfile: Path) -> None:
        self.name, self.argv, self.env, self.logfile = name, argv, env, logfile
        with logfile.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        _procs.add(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def pids(self) -> set[int]:
        return {self.proc.pid}

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check(self) -> None:
        if not self.alive():
            raise _run.BenchError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")

    def stop(self, timeout: float = 40.0, *, signalled: bool = False) -> int | None:
        """SIGTERM (once: a second one makes some programs stop hard), wait, then SIGKILL."""
        _procs.discard(self)
        if self.proc.poll() is None:
            if not signalled:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL to its whole process group (its session), so uvicorn's workers go with it."""
        _procs.discard(self)
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait()

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.logfile.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("    | " + line for line in text[-lines:])

    def errors(self) -> str:
        """Warning/error lines it logged (not expected in a clean run)."""
        try:
            text = self.logfile.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        bad = [line for line in text if re.search(r"Traceback|\bERROR\b|\bWARNING\b|\bCRITICAL\b", line)]
        return "\n".join("    | " + line for line in bad[:10])


class Procs:
    """Several processes of one kind (procrastinate workers), handled as one."""

    def __init__(self, procs: list[Proc]) -> None:
        self.procs = procs
        self.name = procs[0].name + (f" x{len(procs)}" if len(procs) > 1 else "")

    @property
    def pids(self) -> set[int]:
        return {p.pid for p in self.procs}

    def check(self) -> None:
        for p in self.procs:
            p.check()

    def stop(self, timeout: float = 40.0) -> int | None:
        for p in self.procs:
            if p.alive():
                p.proc.send_signal(signal.SIGTERM)
        codes = [p.stop(timeout, signalled=True) for p in self.procs]
        return next((c for c in codes if c not in (0, None)), codes[0])

    def tail(self, lines: int = 30) -> str:
        return "\n".join(p.tail(lines) for p in self.procs)

    def errors(self) -> str:
        return "\n".join(e for e in (p.errors() for p in self.procs) if e)


_procs: set[Proc] = set()
_children: set[subprocess.Popen[str]] = set()


def kill_all() -> None:
    """Kill every child still running (the scripts' cleanup, whatever happened)."""
    for child in list(_children):
        with contextlib.suppress(OSError):
            child.kill()
    for proc in list(_procs):
        proc.kill()


def run_cli(argv: list[str], env: dict[str, str], what: str, timeout: float = 600) -> str:
    proc = subprocess.Popen(
        argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if proc.returncode != 0:
        raise _run.BenchError(f"{what} failed ({proc.returncode}):\n{output}")
    return output


During = Callable[[int], None]


def run_child(
    argv: list[str], what: str, *, timeout: float, during: During | None = None, env: dict[str, str] | None = None
) -> str:
    """Run a load generator to completion and return its output; killed if we are interrupted.
    `during(pid)` runs while it does (the CPU probe)."""
    proc = subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    _children.add(proc)
    try:
        if during is not None:
            during(proc.pid)
        output, _ = proc.communicate(timeout=timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        _children.discard(proc)
    if proc.returncode != 0:
        raise _run.BenchError(f"{what} exited with {proc.returncode}:\n{output}")
    return output


def wait_http(port: int, path: str, proc: Proc, timeout: float = 60.0) -> None:
    """Until GET `path` answers 200; _run.BenchError if `proc` exits first or it takes too long."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        proc.check()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path)
            response = conn.getresponse()
            last = f"{response.status} {response.read()[:200]!r}"
            conn.close()
            if response.status == 200:
                return
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise _run.BenchError(f"{proc.name} not ready after {timeout:.0f} s (last: {last}):\n{proc.tail()}")


def wait_sql(url: str, statement: str, proc: Proc | Procs, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.check()
        if _databases.query_one(url, statement):
            return
        time.sleep(0.1)
    raise _run.BenchError(f"{proc.name}: {what} not seen after {timeout:.0f} s:\n{proc.tail()}")


def child_env(**extra: str) -> dict[str, str]:
    """This environment without anything that would configure a child behind our back."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RECEIVER_", "DOITONG_", "PROMETHEUS_", "BENCH_", "OTEL_")) and k != "DATABASE_URL"
    }
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
