"""`ivr calls purge`: a period's or a caller's calls go with everything recorded about them."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from click.testing import CliRunner
from conftest import AUTH_TOKEN

from ivr import cli
from ivr import db as database
from ivr.db import audit as audit_store
from ivr.db import core
from ivr.db import tickets as ticket_store
from ivr.emulator import EmulatedCall, FlaskTransport
from ivr.speech.recordings import recording_path

OLD_CALLER = "+79035557316"
NEW_CALLER = "+79161234567"
CALL_TABLES = ("calls", "events", "recordings", "recognitions", "tickets", "webhook_responses")


@pytest.fixture
def recordings_dir(tmp_path):
    return tmp_path / "recordings"


@pytest.fixture
def run(db_path, recordings_dir, monkeypatch):
    monkeypatch.setenv("IVR_DB", db_path)
    monkeypatch.setenv("IVR_RECORDINGS_DIR", str(recordings_dir))

    def invoke(*args):
        return CliRunner().invoke(cli.main, ["calls", "purge", *args])

    return invoke


def ticket_call(app, db, caller: str, started_at: str, recordings_dir) -> dict:
    """A whole call with a ticket, a note, a recording file and its recognition."""
    transport = FlaskTransport(app.test_client())
    call = EmulatedCall(transport, "http://localhost", AUTH_TOKEN, from_=caller).start()
    call.press("1").press("4207315890").press("1").press("1").silence()
    sid = call.result.call_sid
    ticket = ticket_store.ticket_for_call(db, sid)["number"]
    recording_sid = "RE" + sid[2:]
    path = recording_path(recordings_dir, sid, recording_sid)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"RIFF....WAVE")
    with database.write_transaction(db):
        db.execute("UPDATE calls SET started_at = ? WHERE call_sid = ?", [started_at, sid])
        ticket_store.add_ticket_note(
            db, ticket, None, f"called from {caller}", datetime.fromisoformat(started_at)
        )
        core.insert(
            db,
            "recordings",
            {
                "sid": recording_sid,
                "call_sid": sid,
                "purpose": "description",
                "status": "stored",
                "local_path": str(path),
                "created_at": started_at,
                "updated_at": started_at,
            },
        )
        core.insert(
            db,
            "recognitions",
            {
                "call_sid": sid,
                "recording_sid": recording_sid,
                "purpose": "description",
                "language": "ru",
                "text": "курьер не приехал",
                "created_at": started_at,
            },
        )
    return {"sid": sid, "ticket": ticket, "file": path}


def rows_about(db, sid: str) -> dict[str, int]:
    return {
        table: db.execute(
            f"SELECT count(*) FROM {table} WHERE call_sid = ?",  # noqa: S608 - our table names
            [sid],
        ).fetchone()[0]
        for table in CALL_TABLES
    }


@pytest.fixture
def two_calls(app, db, recordings_dir):
    old = ticket_call(app, db, OLD_CALLER, "2026-03-01T09:00:00.000+00:00", recordings_dir)
    new = ticket_call(app, db, NEW_CALLER, "2026-11-26T09:00:00.000+00:00", recordings_dir)
    return old, new


def test_purge_before_a_date_deletes_old_calls_with_everything_about_them(run, db, two_calls):
    old, new = two_calls
    result = run("--before", "2026-06-01", "--yes")
    assert result.exit_code == 0, result.output
    assert rows_about(db, old["sid"]) == dict.fromkeys(CALL_TABLES, 0)
    assert ticket_store.ticket_notes(db, old["ticket"]) == []
    assert not old["file"].exists() and not old["file"].parent.exists()
    assert all(rows_about(db, new["sid"])[table] for table in ("calls", "events", "tickets"))
    assert new["file"].exists() and ticket_store.ticket_notes(db, new["ticket"])
    assert "calls: 1" in result.output and "files: 1" in result.output


def test_the_audit_trail_keeps_that_a_purge_happened_not_what_it_deleted(run, db, two_calls):
    old, _ = two_calls
    run("--caller", OLD_CALLER, "--yes")
    [row] = [r for r in audit_store.list_audit(db) if r["action"] == "calls_purge"]
    assert row["operator_id"] is None and row["target"] is None
    assert row["detail"]["before"] is None and row["detail"]["by_caller"] is True
    assert row["detail"]["calls"] == 1 and row["detail"]["recordings"] == 1
    trail = json.dumps(audit_store.list_audit(db, limit=1000), ensure_ascii=False)
    for secret in (OLD_CALLER, OLD_CALLER[-4:], old["sid"], old["ticket"], "курьер"):
        assert secret not in trail


def test_purge_by_caller_keeps_other_callers(run, db, two_calls):
    old, new = two_calls
    assert run("--caller", "+7 (903) 555-73-16", "--yes").exit_code == 0
    assert rows_about(db, old["sid"])["calls"] == 0 and not old["file"].exists()
    assert rows_about(db, new["sid"])["calls"] == 1 and new["file"].exists()


def test_a_purge_that_fails_deletes_nothing_not_even_files(run, db, two_calls, monkeypatch):
    old, _ = two_calls

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(audit_store, "add_audit", broken)
    result = run("--before", "2026-06-01", "--yes")
    assert result.exit_code != 0
    assert rows_about(db, old["sid"])["calls"] == 1 and old["file"].exists()


def test_purge_asks_before_deleting(run, db, two_calls):
    old, _ = two_calls
    result = CliRunner().invoke(cli.main, ["calls", "purge", "--before", "2026-06-01"], input="n\n")
    assert result.exit_code == 1 and "***7316" not in result.output
    assert rows_about(db, old["sid"])["calls"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give --before DATE, --caller NUMBER or both"),
        (("--before", "2026-13-01"), "--before wants a date like 2026-01-31, got '2026-13-01'"),
        (("--before", "last week"), "--before wants a date like 2026-01-31, got 'last week'"),
        (("--before", "２０２６-01-01"), "--before wants a date like 2026-01-31"),
        (("--before", "2999-01-01"), "--before 2999-01-01 is in the future"),
        (("--caller", "12345"), "--caller wants a number like +79161234567, got '12345'"),
        (("--caller", "+7916123456７"), "--caller wants a number like +79161234567"),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_exit(run, args, message):
    result = run(*args, "--yes")
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1
    assert result.output.startswith(f"Error: {message}")
