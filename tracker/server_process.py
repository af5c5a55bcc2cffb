"""A server binary run as a child process: what the embedded PostgreSQL and Mosquitto launchers share.

:class:`tracker.store.embedded.EmbeddedPostgres` and
:class:`mqtt_bridge.broker.EmbeddedBroker` keep their own specifics (configuration,
initdb, readiness check); the rest is here, once:

* **Who runs it.** PostgreSQL refuses root and Mosquitto warns against it, so when
  we are root the server runs as an unprivileged OS user (:func:`pick_run_user`,
  :class:`RunUser`) that must own its folder. When that user cannot reach the
  requested folder (a parent closed to others, e.g. ``/root`` is mode 700), the
  state lives under :data:`RELOCATED_ROOT` instead (:func:`reachable_dir`).
* **Its own session.** A terminal's Ctrl-C reaches our process only, which stops
  the servers in order (bridge before broker before database).
* **Dies with its owner.** A server in its own session would outlive a ``kill -9``
  of its owner, so it gets a parent-death signal (``PR_SET_PDEATHSIG``): the
  launcher's graceful stop signal, so PostgreSQL does a fast shutdown and Mosquitto
  saves its persistence file. The kernel clears that setting when a process
  changes uid, so it must be set after the switch to the server's user, right
  before ``exec``: we exec through util-linux ``setpriv --pdeathsig`` (Popen's
  ``preexec_fn`` would do it too, but is not safe with other threads running,
  and the bridge's threads run while tests restart servers). Without a usable
  ``setpriv`` the servers start without it, with one warning in the log.
  **The signal fires when the thread that started the server exits**, not the
  process: start servers from a thread that lives as long as they should (the
  main thread, or a dedicated one, as ``serenazgo up`` does). A server
  (re)started from a short-lived worker (``asyncio.to_thread``) stops when that
  worker ends.
* **Start, stop, kill.** The server's output is appended to a log file; start
  returns once the launcher's readiness check holds, and tells a taken port
  (:class:`PortTakenError`, retried on another free port by :func:`start_on_port`)
  from any other early exit (raised with the log tail). Stop is a graceful signal,
  a wait, then escalation; kill is a SIGKILL that waits until the whole process
  group (PostgreSQL's backends) is gone.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import hashlib
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from tracker.errors import EmbeddedServerError

log = logging.getLogger(__name__)

RELOCATED_ROOT = Path("/var/lib/serenazgo")
LOG_TAIL_LINES = 30
# After a SIGKILL, how long the rest of the process group (PostgreSQL's backends) gets to go.
GROUP_EXIT_TIMEOUT_S = 15.0


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


# -- who runs the server -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunUser:
    """The OS user a server runs as; ``uid`` None means ourselves (no user switch)."""

    name: str
    uid: int | None = None
    gid: int | None = None

    @property
    def switches(self) -> bool:
        """True when children run as this user instead of ours."""
        return self.uid is not None

    @property
    def extra_groups(self) -> list[int] | None:
        """``extra_groups`` for ``subprocess``: none when switching (drop root's), else unchanged."""
        return [] if self.switches else None

    def run(self, args: Sequence[str], *, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        """Run a short command as this user, its output captured as text (never raises on exit codes)."""
        return subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            user=self.uid,
            group=self.gid,
            extra_groups=self.extra_groups,
        )

    def can_write(self, path: Path) -> bool:
        """True when this user can enter and write ``path`` (every parent must let it through)."""
        if not self.switches:
            return True
        try:
            return self.run(["test", "-w", str(path), "-a", "-x", str(path)], timeout=10).returncode == 0
        except (OSError, subprocess.SubprocessError):
            return False

    def own(self, *paths: Path) -> None:
        """Hand ``paths`` (those that exist) to this user."""
        if not self.switches:
            return
        for path in paths:
            try:
                os.chown(path, -1 if self.uid is None else self.uid, -1 if self.gid is None else self.gid)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise EmbeddedServerError(f"cannot hand {path} to the {self.name!r} user: {exc}") from exc


def pick_run_user(server: str, candidates: Sequence[str], *, create: str | None = None, hint: str) -> RunUser:
    """Ourselves, or when we are root the first of ``candidates`` that exists (``create`` made if none).

    ``hint`` ends the error when no user can be found or made (what to install or change).
    """
    if os.geteuid() != 0:
        return RunUser(pwd.getpwuid(os.geteuid()).pw_name)
    for name in candidates:
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return RunUser(name, entry.pw_uid, entry.pw_gid)
    wanted = " or ".join(repr(name) for name in candidates)
    if create is None:
        raise EmbeddedServerError(
            f"running as root, and there is no {wanted} user for {server} to run as: {hint}"
        )
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    proc = subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", create],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode not in (0, 9):  # 9: the user appeared meanwhile
        raise EmbeddedServerError(
            f"{server} does not run as root and no {wanted} user exists; creating the {create!r} user "
            f"failed: {proc.stderr.strip()}. {hint}"
        )
    entry = pwd.getpwnam(create)
    return RunUser(create, entry.pw_uid, entry.pw_gid)


def relocated_dir(prefix: str, wanted: Path) -> Path:
    """Where the state asked for in ``wanted`` lives when the server's user cannot reach ``wanted``."""
    digest = hashlib.sha256(str(wanted.resolve()).encode()).hexdigest()[:10]
    return RELOCATED_ROOT / f"{prefix}-{digest}"


def reachable_dir(
    wanted: Path, user: RunUser, *, server: str, prefix: str, previous: Sequence[Path] = ()
) -> Path:
    """``wanted`` (created, handed to ``user``), or a folder under :data:`RELOCATED_ROOT` it can reach.

    The relocated folder is :func:`relocated_dir` of ``wanted``, unless one of
    ``previous`` (where older versions relocated it) already exists.
    """
    try:
        wanted.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EmbeddedServerError(f"cannot create the {server} folder {wanted}: {exc}") from exc
    user.own(wanted)
    if user.can_write(wanted):
        return wanted
    state = next((p for p in previous if p.is_dir()), relocated_dir(prefix, wanted))
    try:
        RELOCATED_ROOT.mkdir(parents=True, exist_ok=True)
        RELOCATED_ROOT.chmod(0o755)
        state.mkdir(exist_ok=True)
    except OSError as exc:
        raise EmbeddedServerError(f"cannot create the {server} folder {state}: {exc}") from exc
    user.own(state)
    if not user.can_write(state):
        raise EmbeddedServerError(
            f"the {user.name!r} user that runs {server} cannot write {wanted} nor {state}: put "
            "SERENAZGO_DATA_DIR where it can (e.g. /var/lib/serenazgo), or open the parents with `chmod o+x`"
        )
    return state


# -- dying with the owner ------------------------------------------------------------------


@functools.cache
def _setpriv() -> str | None:
    """util-linux ``setpriv`` when it is on PATH and can set a parent-death signal (warns once if not)."""
    path = shutil.which("setpriv")
    usable = False
    if path is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            help_text = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=10).stdout
            usable = "--pdeathsig" in help_text
    if not usable:
        log.warning(
            "no util-linux setpriv with --pdeathsig on PATH: embedded servers will outlive a serenazgo "
            "process that is killed with SIGKILL (install util-linux)"
        )
        return None
    return path


def with_death_signal(args: Sequence[str], sig: signal.Signals) -> list[str]:
    """``args`` run so that the process gets ``sig`` when the thread that started it exits.

    Unchanged (no death signal) when ``setpriv`` cannot do it.
    """
    setpriv = _setpriv()
    if setpriv is None:
        return list(args)
    return [setpriv, "--pdeathsig", sig.name.removeprefix("SIG"), "--", *args]


# -- the process ---------------------------------------------------------------------------


class PortTakenError(Exception):
    """The server exited because its port was taken (retry on another)."""


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of the log file ``path`` (for error messages)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return f"--- last lines of {path} ---\n" + "\n".join(text.splitlines()[-lines:])


def _read_from(path: Path, offset: int) -> str:
    """What was appended to ``path`` since ``offset``."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _wait_group_gone(pgid: int, timeout: float) -> None:
    """Wait until no process of group ``pgid`` is left; SIGKILL the stragglers after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class ServerProcess:
    """One server binary run as a child, in its own session, with a parent-death signal and a log file.

    ``name`` is how messages call it ("PostgreSQL"); ``death_signal`` is what it
    gets when the thread that launched it exits (its graceful stop signal).
    """

    def __init__(self, name: str, *, death_signal: signal.Signals) -> None:
        self.name = name
        self.death_signal = death_signal
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """Pid of the running server, or None."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def running(self) -> bool:
        """True while the server we launched is alive."""
        return self.pid is not None

    def launch(
        self,
        args: Sequence[str],
        *,
        port: int,
        user: RunUser,
        log_path: Path,
        ready: Callable[[str], bool],
        timeout: float,
        env: Mapping[str, str] | None = None,
        port_taken: Sequence[str] = ("Address already in use",),
        exit_hints: Mapping[str, str] | None = None,
        slow_hint: str = "",
    ) -> None:
        """Start ``args`` as ``user`` and return once ``ready(log written since the start)`` holds.

        Raises :class:`PortTakenError` when it exits with one of ``port_taken`` in
        its log, else :class:`EmbeddedServerError` with the log tail (plus the
        ``exit_hints`` whose key is in the log); after ``timeout`` s it is killed.
        """
        with open(log_path, "ab") as out:
            out.write(f"\n=== serenazgo: starting {args[0]} on port {port} ===\n".encode())
            out.flush()
            with contextlib.suppress(EmbeddedServerError):  # it writes through our descriptor anyway
                user.own(log_path)
            offset = out.tell()
            try:
                self._proc = subprocess.Popen(
                    with_death_signal(args, self.death_signal),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=None if env is None else dict(env),
                    # Own session (and process group): see the module docstring.
                    start_new_session=True,
                    user=user.uid,
                    group=user.gid,
                    extra_groups=user.extra_groups,
                )
            except OSError as exc:
                raise EmbeddedServerError(f"cannot run {args[0]}: {exc}") from exc
        proc = self._proc
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            code = proc.poll()
            if code is not None:
                self._proc = None
                new_log = _read_from(log_path, offset)
                if any(marker in new_log for marker in port_taken):
                    raise PortTakenError
                hints = "".join(f" {hint}" for key, hint in (exit_hints or {}).items() if key in new_log)
                raise EmbeddedServerError(
                    f"{self.name} exited with code {code} while starting on port {port}.{hints}\n"
                    f"{log_tail(log_path)}"
                )
            if ready(_read_from(log_path, offset)):
                return
            if time.monotonic() > deadline:
                self.kill()
                why = f" ({slow_hint})" if slow_hint else ""
                raise EmbeddedServerError(
                    f"{self.name} did not accept connections within {timeout:.0f} s on port {port}{why}.\n"
                    f"{log_tail(log_path)}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)

    def stop(
        self, sig: signal.Signals, timeout: float, *, escalate: Sequence[tuple[signal.Signals, float]] = ()
    ) -> bool:
        """Send ``sig`` and wait ``timeout`` s, then each ``(signal, wait)`` of ``escalate``, SIGKILL last.

        True when the server exited before it came to SIGKILL.
        """
        proc = self._proc
        if proc is None:
            return True
        for signum, wait_s in ((sig, timeout), *escalate):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(wait_s)
        if proc.poll() is None:
            self.kill()
            return False
        self._proc = None
        return True

    def kill(self) -> None:
        """SIGKILL the server (a crash) and wait until every process of its group is gone."""
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
        self._proc = None
        # PostgreSQL's orphaned backends notice the postmaster's death and exit; a new
        # postmaster refuses to start while they still hold the old shared memory.
        _wait_group_gone(proc.pid, GROUP_EXIT_TIMEOUT_S)


class EmbeddedServer(abc.ABC):
    """What every embedded server launcher offers around its own start and stop."""

    @property
    @abc.abstractmethod
    def log_path(self) -> Path:
        """The server's log file."""

    @abc.abstractmethod
    def start(self) -> None:
        """Start the server and return once it accepts connections."""

    @abc.abstractmethod
    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server gracefully."""

    def restart(self) -> None:
        """Stop (gracefully) and start again on the same state folder and port."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the server log (for error messages)."""
        return log_tail(self.log_path, lines)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_on_port(
    name: str,
    preferred: int | None,
    launch: Callable[[int], None],
    *,
    hint: str,
    tail: Callable[[], str],
    attempts: int = 3,
) -> int:
    """Run ``launch(port)`` on ``preferred``, else on a free port (retried); return the port it runs on.

    A free port can be taken by another process between our probe and the
    server's bind: that is retried on another one, ``attempts`` times in all.
    ``hint`` says what to do when the ``preferred`` port is taken.
    """
    tries = 1 if preferred else attempts
    for attempt in range(tries):
        port = preferred or free_port()
        try:
            launch(port)
        except PortTakenError:
            if attempt < tries - 1:
                continue
            advice = hint if preferred else "Retried with other free ports; the machine may be out of ports."
            raise EmbeddedServerError(
                f"{name} could not listen on 127.0.0.1:{port}: address in use. {advice}\n{tail()}"
            ) from None
        return port
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


__all__ = [
    "GROUP_EXIT_TIMEOUT_S",
    "RELOCATED_ROOT",
    "EmbeddedServer",
    "PortTakenError",
    "RunUser",
    "ServerProcess",
    "free_port",
    "log_tail",
    "pick_run_user",
    "reachable_dir",
    "relocated_dir",
    "start_on_port",
    "with_death_signal",
]
