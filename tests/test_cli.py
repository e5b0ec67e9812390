"""The `ivr` command, run through click's runner against a real database file."""

import json

import pytest
from click.testing import CliRunner

from ivr import cli
from ivr import db as database
from ivr.db import operators as roster_store


@pytest.fixture
def run(db_path, monkeypatch):
    monkeypatch.setenv("IVR_DB", db_path)

    def invoke(*args):
        return CliRunner().invoke(cli.main, list(args), catch_exceptions=False)

    return invoke


def _all_commands(group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if hasattr(command, "commands"):
            yield from _all_commands(command, (*prefix, name))


@pytest.mark.parametrize("path, command", list(_all_commands(cli.main)))
def test_every_command_has_help(path, command, run):
    assert command.help, f"{' '.join(path)} has no help text"
    result = run(*path, "--help")
    assert result.exit_code == 0 and "Usage" in result.output


def test_init_db_is_idempotent_and_seeds_demo_roster_once(run, db_path):
    assert run("init-db", "--demo").exit_code == 0
    result = run("init-db", "--demo")
    assert result.exit_code == 0 and "demo operators" not in result.output
    with database.connect(db_path) as db:
        assert len(roster_store.list_operators(db)) == 3
        assert database.schema_version(db) == len(database.MIGRATIONS)


def test_operators_add_list_deactivate(run):
    added = run(
        "operators",
        "add",
        "Кузнецова Анна Павловна",
        "--endpoint",
        "+79991112233",
        "--languages",
        "ru,en",
        "--shift",
        "10:00-19:00",
        "--login",
        "kuznetsova",
    )
    assert added.exit_code == 0, added.output
    listed = json.loads(run("operators", "list", "--json").output)
    assert listed[0]["full_name"] == "Кузнецова Анна Павловна"
    assert (listed[0]["shift_start"], listed[0]["languages"]) == ("10:00", "ru,en")
    assert "password_hash" not in listed[0]
    assert run("operators", "deactivate", "kuznetsova").exit_code == 0
    assert json.loads(run("operators", "list", "--json").output)[0]["active"] == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--endpoint", "not-a-number"], "endpoint must be"),
        (["--endpoint", "+79990000001", "--languages", "de"], "languages must be"),
        (["--endpoint", "+79990000001", "--shift", "8-20"], "shift must look like"),
    ],
)
def test_operators_add_refuses_bad_input_with_one_line(run, db_path, args, message):
    result = run("operators", "add", "Имя", *args)
    assert result.exit_code != 0
    assert message in result.output and result.output.count("\n") == 1
    with database.connect(db_path) as db:
        database.migrate(db)
        assert roster_store.list_operators(db) == []


def test_deactivate_unknown_operator_fails(run):
    result = run("operators", "deactivate", "nobody")
    assert result.exit_code == 1 and "no operator" in result.output


def test_calls_list_json_empty(run):
    result = run("calls", "list", "--json")
    assert result.exit_code == 0 and json.loads(result.output) == []


def test_tickets_set_status_validates(run):
    bad = run("tickets", "set-status", "123456789", "resolved")
    assert bad.exit_code == 1 and "not a valid ticket number" in bad.output
    missing = run("tickets", "set-status", "123456784", "resolved")
    assert missing.exit_code == 1 and "no ticket" in missing.output


def test_bad_setting_is_a_one_line_error(run, monkeypatch):
    monkeypatch.setenv("IVR_NOW", "tomorrow")
    result = run("calls", "list")
    assert result.exit_code == 1 and "IVR_NOW" in result.output


def test_dev_token_is_created_once(run, tmp_path):
    path = str(tmp_path / "token")
    first = run("dev-token", "--file", path).output.strip().splitlines()[-1]
    second = run("dev-token", "--file", path).output.strip()
    assert first == second and len(first) == 32
