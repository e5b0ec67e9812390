"""The database's files on disk: only the service's own user may read them."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from ivr import db as database
from ivr.web.app import create_app


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def loose_umask():
    """The umask most desktop and server users have: new files 0644, folders 0755."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_a_new_instance_folder_is_0700_and_the_database_files_0600(tmp_path, loose_umask):
    folder = tmp_path / "instance"
    db_path = folder / "ivr.sqlite3"
    create_app({"db_path": str(db_path), "now": None})
    with database.connect(db_path) as db:  # WAL mode: -wal and -shm exist while it is open
        db.execute("CREATE TABLE IF NOT EXISTS touch (x)")
        assert mode(folder) == 0o700
        for suffix in ("", "-wal", "-shm"):
            assert mode(f"{db_path}{suffix}") == 0o600, suffix
    assert mode(folder / "secret-key") == 0o600


def test_database_files_with_looser_modes_are_tightened_and_logged(tmp_path, loose_umask, caplog):
    db_path = tmp_path / "ivr.sqlite3"
    with database.connect(db_path) as db:
        db.execute("CREATE TABLE touch (x)")
        for suffix in ("", "-wal", "-shm"):
            os.chmod(f"{db_path}{suffix}", 0o644)
        with caplog.at_level(logging.WARNING, logger="ivr"):
            again = database.connect(db_path)
        for suffix in ("", "-wal", "-shm"):
            assert mode(f"{db_path}{suffix}") == 0o600, suffix
        again.close()
    tightened = [r for r in caplog.records if "readable by other users" in r.getMessage()]
    assert len(tightened) == 3


def test_in_memory_databases_touch_no_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    database.connect(":memory:").close()
    assert list(tmp_path.iterdir()) == []


def test_making_an_open_database_private_keeps_this_process_s_locks(tmp_path):
    """Closing any descriptor of a file drops every POSIX lock the process holds on it. If
    the check on a database already open here opened one, another process closing its last
    connection would think itself the last user and remove the WAL under our connection
    ("disk I/O error", then "file is not a database")."""
    import sqlite3
    import subprocess
    import sys

    from ivr.db.core import make_private_files

    path = tmp_path / "ivr.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode = WAL")
    holder.execute("PRAGMA wal_autocheckpoint = 0")
    holder.execute("CREATE TABLE t (x)")
    holder.execute("INSERT INTO t VALUES (1)")
    make_private_files(path)  # e.g. another thread here opening its own connection
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
            "c.execute('SELECT count(*) FROM t').fetchone(); c.close()",
            str(path),
        ],
        check=True,
        timeout=30,
    )
    assert Path(f"{path}-wal").exists()  # still ours: the other process was not the last
    assert holder.execute("SELECT count(*) FROM t").fetchone() == (1,)
