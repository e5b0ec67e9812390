"""The console in a real headless Chromium (Debian's build, driven by Playwright for Python).

The app runs on waitress on loopback (LocalServer) and the calls come from the Twilio
emulator over real HTTP, as in production. Select with `-m browser`; `make quick` skips them.
"""

from __future__ import annotations

import os
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ivr import db as database
from ivr.db import tickets as ticket_store
from ivr.demo import read_demo_accounts, seed_demo_roster
from ivr.devserver import LocalServer
from ivr.emulator import EmulatedCall, HttpTransport
from ivr.hours import Clock

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("IVR_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CALLER = "+79161234567"
ORDER = "4207315890"
OPEN_AT = "2026-11-26T12:00:00+03:00"  # the line is open then, whatever the real time
TIMEOUT_MS = 15_000


def _missing(reason: str):
    """CI must run these tests; a developer's machine without a browser skips them."""
    if os.environ.get("CI"):
        pytest.fail(f"browser tests cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install playwright)")
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        _missing(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def server(tmp_path):
    """The app with the demo roster; demo passwords written as `ivr init-db --demo` does."""
    with LocalServer() as local:
        accounts = tmp_path / "demo-accounts.txt"
        with database.connect(local.db_path) as db:
            seed_demo_roster(db, accounts)
        local.passwords = {
            line.split("\t")[0]: line.split("\t")[1] for line in read_demo_accounts(accounts)
        }
        yield local


@pytest.fixture
def page(browser):
    context = browser.new_context(locale="ru-RU")
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    # Console errors include Content-Security-Policy violations and failed loads.
    tab.on("console", lambda message: message.type == "error" and errors.append(message.text))
    yield tab
    context.close()
    assert errors == [], f"errors in the browser: {errors}"


def emulated_call(server, **kwargs) -> EmulatedCall:
    return EmulatedCall(
        HttpTransport(), server.base_url, server.auth_token, from_=CALLER, at=OPEN_AT, **kwargs
    ).start()


def sign_in(page, server, login="ivanova"):
    page.goto(server.base_url + "/console/")
    assert "/console/login" in page.url
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", server.passwords[login])
    page.click("form button[type=submit]:has-text('Войти')")
    page.wait_for_url(re.compile(r"/console/$"))


def test_find_a_call_see_its_timeline_and_change_its_ticket(server, page):
    call = emulated_call(server).press("1").press(ORDER).press("1").press("1").silence()
    assert call.result.ended and call.result.connected_to
    with database.connect(server.db_path) as db:
        ticket = ticket_store.ticket_for_call(db, call.result.call_sid)["number"]

    sign_in(page, server)
    assert page.locator("h1").inner_text().startswith("Сводка за сегодня")

    page.click("nav >> text=Журнал звонков")
    page.fill("input[name=q]", ORDER)
    page.click("#call-filters button[type=submit]")
    rows = page.locator("#call-log tbody tr")
    assert rows.count() == 1
    assert ORDER in rows.first.inner_text() and "***4567" in rows.first.inner_text()
    assert CALLER not in page.content()

    rows.first.locator("a.call-link").click()
    page.wait_for_url(re.compile(r"/console/calls/CA"))
    timeline = page.locator("#timeline")
    assert "главное меню" in timeline.inner_text()
    assert "Здравствуйте" in timeline.inner_text()
    assert f"нажал: {ORDER}" in timeline.inner_text()
    assert page.locator("#order-number").inner_text() == ORDER

    page.click("#ticket-link")
    page.wait_for_url(re.compile(rf"/console/tickets/{ticket}$"))
    assert page.locator("#ticket-status").inner_text() == "открыто"
    page.click("button[data-status=in_progress]")
    page.wait_for_url(re.compile(rf"/console/tickets/{ticket}$"))
    assert page.locator("#ticket-status").inner_text() == "в работе"

    status_call = emulated_call(server).press("2").press(ticket + "#")
    assert "Статус: в работе" in status_call.result.transcript


def test_live_view_refreshes_by_itself(server, page):
    sign_in(page, server, "petrov")
    page.goto(server.base_url + "/console/live")
    assert page.locator("#live-calls tbody tr").count() == 0
    assert page.locator("#live-empty").is_visible()
    call = EmulatedCall(HttpTransport(), server.base_url, server.auth_token, from_=CALLER)
    call.start().press("1")  # in the menu, not hung up: a live call
    row = page.locator(f"#live-calls tbody tr[data-call-sid='{call.result.call_sid}']")
    row.wait_for()  # appears without reloading the page
    assert "***4567" in row.inner_text()
    assert not page.locator("#live-empty").is_visible()
    call.hang_up()
    row.wait_for(state="detached")


def test_english_toggle_and_sign_out(server, page):
    sign_in(page, server, "petrov")
    page.click("#language-switch")
    page.wait_for_selector("text=Today at a glance")
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.locator("nav >> text=Operators").count() == 0  # not an admin
    page.click("button:has-text('Sign out')")
    page.wait_for_url(re.compile(r"/console/login"))
    page.goto(server.base_url + "/console/calls")
    assert "/console/login" in page.url


def test_a_cookie_kept_from_before_sign_out_opens_nothing(server, browser, page):
    sign_in(page, server, "petrov")
    kept = page.context.cookies()
    assert any(cookie["name"] == "ivr_console" for cookie in kept)
    page.click("button:has-text('Выйти')")
    page.wait_for_url(re.compile(r"/console/login"))
    replay = browser.new_context(locale="ru-RU")
    try:
        replay.add_cookies(kept)  # what someone who copied the cookie would send
        tab = replay.new_page()
        tab.goto(server.base_url + "/console/calls")
        assert "/console/login" in tab.url
        assert tab.locator("input[name=password]").is_visible()
    finally:
        replay.close()


def test_a_session_ends_twelve_hours_after_sign_in_even_in_use(server, page):
    later = {"by": timedelta(0)}
    server.app.extensions["ivr.wall_clock"] = Clock(source=lambda: datetime.now(UTC) + later["by"])
    sign_in(page, server, "petrov")
    for step in range(1, 16):  # a page every 45 minutes (the idle limit is 60) for 11¼ hours
        later["by"] = timedelta(minutes=45 * step)
        page.goto(server.base_url + "/console/calls")
        assert "/console/login" not in page.url, later["by"]
    later["by"] = timedelta(hours=12, minutes=1)
    page.goto(server.base_url + "/console/calls")
    assert "/console/login" in page.url
    assert page.locator("input[name=password]").is_visible()


def test_an_unused_session_ends_after_the_idle_limit(server, page):
    later = {"by": timedelta(0)}
    server.app.extensions["ivr.wall_clock"] = Clock(source=lambda: datetime.now(UTC) + later["by"])
    sign_in(page, server, "petrov")
    later["by"] = timedelta(minutes=server.app.extensions["ivr.settings"].session_idle_minutes + 1)
    page.reload()
    assert "/console/login" in page.url
