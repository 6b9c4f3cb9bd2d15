"""What bench/chaos.py runs and breaks: a PostgreSQL cluster and a NATS server of its own (never
the machine's shared ones on 5432 and 4222), and the receiver's processes, each of which can be
SIGKILLed and started again. `Service.poll` tells a process that died on its own from one the
benchmark killed.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import _processes
import _run

from receiver.core import embedded_postgres

NATS_SERVER = ("nats-server", "/usr/sbin/nats-server")


class Postgres:
    """A private cluster made with initdb under `root`, on a free loopback port, TCP only. The
    binaries are the ones the `embedded-postgres` dependency ships, so the bench needs no server
    installed. As root, the cluster runs as the `postgres` user (PostgreSQL refuses root)."""

    def __init__(self, root: Path) -> None:
        self.bin = embedded_postgres.bundled_psql().parent
        self.home = root / "postgres"
        self.data = self.home / "data"
        self.log = self.home / "postgres.log"
        self.port = _processes.free_port()
        self.user = _system_user()
        self.running = False

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        self.home.mkdir(parents=True)
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            # The run's own directory (mkdtemp: 0700) must let the postgres user through.
            self.home.parent.chmod(0o755)
            os.chown(self.home, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "utf8", "--no-instructions")
        settings = (
            f"port = {self.port}\n"
            "listen_addresses = '127.0.0.1'\n"
            "unix_socket_directories = ''\n"
            "max_connections = 200\n"
            "shared_buffers = 128MB\n"
            "log_min_messages = warning\n"
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# bench/chaos.py\n" + settings)

    def start(self) -> None:
        """Start and wait until it accepts connections (crash recovery included)."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "300", "start")
        self.running = True

    def stop_immediate(self) -> None:
        """`pg_ctl stop -m immediate`: every backend quits at once, no checkpoint; the next start
        recovers from the WAL, as after a crash."""
        self.running = False
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        if self.running or (self.data / "postmaster.pid").exists():
            with contextlib.suppress(_run.BenchError):
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
        self.running = False

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            [str(self.bin / program), *args],
            user=self.user,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=330,
            check=False,
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise _run.BenchError(f"{program} {' '.join(args[-1:])} failed: {done.stderr.strip()}\n{log}")


def _system_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise _run.BenchError("running as root, and there is no `postgres` user to run PostgreSQL as") from None
    return "postgres"


def nats_server() -> str | None:
    """The nats-server binary, if this machine has one."""
    for candidate in NATS_SERVER:
        found = shutil.which(candidate)
        if found:
            return found
    return None


class Nats:
    """A private nats-server with JetStream, its store in `root`; restarted on the same port
    and store, so the stream and the consumer's state survive (or not, after a SIGKILL)."""

    def __init__(self, root: Path) -> None:
        binary = nats_server()
        if binary is None:
            raise _run.BenchError("nats-server not found (Debian package nats-server)")
        self.store = root / "nats"
        self.port = _processes.free_port()
        self.argv = [binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)]
        self.log = root / "nats.log"
        self.proc: _processes.Proc | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = _processes.Proc("nats-server", self.argv, _processes.child_env(), self.log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self.proc.check()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(0.05)
        raise _run.BenchError(f"nats-server does not listen on {self.port}:\n{self.proc.tail()}")

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is not None:
            if kill:
                self.proc.kill()
            else:
                self.proc.stop(timeout=30)
            self.proc = None


@dataclass
class Service:
    """`receiver serve` or `receiver publish`, restarted with the same command, port and log.
    `own_exits` lists each time it was found dead without having been killed."""

    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    logfile: Path
    proc: _processes.Proc | None = None
    kills: int = 0
    own_exits: list[str] = field(default_factory=list)

    def start(self) -> None:
        self.proc = _processes.Proc(self.name, self.argv, self.env, self.logfile)

    def kill(self) -> None:
        """SIGKILL (its whole process group); it stays down until `start`."""
        if self.proc is not None:
            self.proc.kill()
            self.proc = None
        self.kills += 1

    def poll(self) -> bool:
        """True when it was found dead on its own (and has been started again)."""
        if self.proc is None or self.proc.alive():
            return False
        code = self.proc.proc.returncode
        self.own_exits.append(f"{self.name} exited with {code} on its own:\n{self.proc.tail(15)}")
        self.proc.stop()
        self.start()
        return True

    def stop(self) -> int | None:
        """SIGTERM, and its exit status (None if it was not running)."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        return proc.stop(timeout=60)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid
