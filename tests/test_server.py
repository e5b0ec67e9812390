"""The real thing: `ivr serve` on loopback, driven by signed HTTP requests."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import AUTH_TOKEN, OPEN_NOW, add_operators

from ivr.emulator import EmulatedCall, HttpTransport
from ivr.tickets import is_valid_ticket_number

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(base: str, process: subprocess.Popen) -> str:
    """Wait until the server answers /healthz; returns its base URL."""
    for _ in range(150):
        try:
            urllib.request.urlopen(base + "/healthz", timeout=1)  # noqa: S310
            return base
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.1)
    process.kill()
    pytest.fail("ivr serve did not start")


@pytest.fixture
def server(tmp_path):
    """`ivr serve` in its own process, with a fresh database and the demo roster."""
    db_path = str(tmp_path / "ivr.sqlite3")
    env = {
        **os.environ,
        "IVR_DB": db_path,
        "IVR_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "IVR_NOW": OPEN_NOW,
    }
    subprocess.run(
        [sys.executable, "-m", "ivr.cli", "init-db"], env=env, check=True, capture_output=True
    )
    add_operators(db_path)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ivr.cli", "serve", "--port", str(port), "--threads", "16"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = wait_for(f"http://127.0.0.1:{port}", process)
    yield {"base": base, "env": env}
    process.terminate()
    process.wait(10)


def calls_json(env) -> list[dict]:
    output = subprocess.run(
        [sys.executable, "-m", "ivr.cli", "calls", "list", "--json", "--limit", "1000"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output)


def test_whole_call_through_ivr_serve(server):
    call = EmulatedCall(HttpTransport(), server["base"], AUTH_TOKEN, from_="+79161234567")
    call.start().press("1").press("4207315890").press("1").press("1").silence()
    assert call.result.ended and call.result.connected_to == "+79990000001"
    [record] = calls_json(server["env"])
    assert record["call_sid"] == call.result.call_sid
    assert record["from"] == "+79161234567" and record["line"] == "domestic"
    assert (record["order_number"], record["category"], record["outcome"]) == (
        "4207315890",
        "delivery",
        "connected",
    )
    assert is_valid_ticket_number(record["ticket_number"])
    assert record["operator_name"] == "Иванова Мария Сергеевна"
    assert record["status"] == "completed" and record["started_at"].startswith("2026-11-26T09:00")


def test_unsigned_request_to_the_server_is_refused(server):
    request = urllib.request.Request(
        server["base"] + "/twilio/voice", data=b"CallSid=CA" + b"0" * 32, method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=5)  # noqa: S310
    assert error.value.code == 403


def test_concurrent_calls_get_distinct_tickets_and_no_lost_rows(server):
    def one_call(index: int) -> EmulatedCall:
        call = EmulatedCall(HttpTransport(), server["base"], AUTH_TOKEN, from_=f"+7916{index:07d}")
        return call.start().press("1").press(f"{4200000000 + index}").press("1").press("2")

    with ThreadPoolExecutor(max_workers=40) as pool:
        finished = list(pool.map(one_call, range(40)))
    assert all(call.result.statuses and set(call.result.statuses) == {200} for call in finished)
    records = calls_json(server["env"])
    assert len(records) == 40
    tickets = [record["ticket_number"] for record in records]
    assert all(tickets) and len(set(tickets)) == 40
    assert all(record["operator_name"] for record in records)
