"""The admin portal in a real browser (Debian's chromium, driven by Playwright): the whole
flow a management user follows, and what they see when a password is wrong.

Every check reads what a person reads on the page: a test cannot pass over an error page.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pkcs11 import Attribute
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
from sealkeep.hsm import Hsm
from service_support import ADMIN, ADMIN_PASSWORD, USER_PIN, Domain, Service

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
# As root, and so that the closed network does not stall start-up.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 30_000
WRONG_PIN = "wrong-pin-0000"
LOST_KEYS = ("aes-data", "rsa-sign")
MARKUP_LABEL = '"><b id="injected">never</b>'
expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    fresh = browser.new_context()
    fresh.set_default_timeout(WAIT_MS)
    try:
        yield fresh
    finally:
        fresh.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def at(service: Service, path: str) -> str:
    return service.url.rstrip("/") + path


def log_in(page: Page, service: Service) -> None:
    page.goto(at(service, "/"))
    expect(page).to_have_url(re.compile(r"/login$"))
    page.fill("#user", ADMIN)
    page.fill("#password", ADMIN_PASSWORD)
    page.click("button:has-text('Log in')")
    expect(page).to_have_url(at(service, "/"))
    expect(page.locator("h1")).to_have_text("Dashboard")


def check_page_hygiene(page: Page) -> None:
    """Every form of a logged-in page carries the CSRF token, and no password field comes
    back filled in."""
    forms = page.locator("form")
    assert forms.count() > 0
    for i in range(forms.count()):
        token = forms.nth(i).locator("input[type=hidden][name=csrf]")
        assert token.count() == 1, forms.nth(i).inner_html()
        assert len(token.get_attribute("value") or "") >= 16
    for field in page.locator("input[type=password]").all():
        assert field.input_value() == "", "a password field came back filled in"
    assert USER_PIN not in page.content()
    assert WRONG_PIN not in page.content()


def table_rows(page: Page, table: str) -> list[list[str]]:
    """The cells' text of each body row of ``table`` (the header row left out)."""
    rows = page.locator(f"{table} tr").all()
    return [[c.inner_text().strip() for c in row.locator("td").all()] for row in rows[1:]]


def open_module(page: Page, name: str, heading: str | None = None) -> None:
    page.locator("nav").get_by_role("link", name=name, exact=True).click()
    expect(page.locator("h1")).to_have_text(heading or name)
    check_page_hygiene(page)


def follow_job(page: Page) -> tuple[str, list[str]]:
    """On a job page just opened: wait until the page, following the job's event stream,
    shows it finished; returns the job id and the states the page showed on the way."""
    expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f]+$"))
    job = page.url.rsplit("/", 1)[1]
    seen = [page.locator("#job-state").inner_text()]
    # The page updates #job-state from the stream, then reloads itself once the job ends:
    # only a page rendered after the end says so in data-state.
    expect(page.locator("#job")).to_have_attribute(
        "data-state", re.compile(r"^(done|failed|interrupted)$")
    )
    seen.append(page.locator("#job-state").inner_text())
    return job, seen


def test_seed_flow_backup_restore_dashboard_audit_logout(
    serve: Any, domain: Domain, hsm: Hsm, page: Page, context: BrowserContext, browser: Browser
) -> None:
    service: Service = serve("--drives", domain.drives)
    streams: list[str] = []
    page.on("request", lambda r: streams.append(r.url) if r.url.endswith("/events") else None)
    log_in(page, service)
    check_page_hygiene(page)

    # The dashboard: the slot with its backup domain, three reachable drives, no set yet.
    slot_rows = {row[1]: row for row in table_rows(page, "#slots")}
    assert slot_rows["source"][4] != "-", "the source slot shows no backup domain"
    drives = table_rows(page, "#drives")
    assert len(drives) == 3 and all(row[6] == "yes" for row in drives), drives
    expect(page.locator("#sets")).to_contain_text("No sets yet.")

    # Backup: slot, SO ID and password, label -> preview.
    open_module(page, "Backup")
    page.select_option("#slot", str(domain.slot_id))
    page.fill("#so_id", "so-17")
    page.fill("#password", USER_PIN)
    page.fill("#label", "portal-nightly")
    page.click("button:has-text('Preview')")
    expect(page.locator("h1")).to_have_text(f"Backup of source (slot {domain.slot_id})")
    check_page_hygiene(page)
    expect(page.locator("#will-count")).to_have_text("6")
    will = {row[2] for row in table_rows(page, "#will")}
    assert {"aes-data", "rsa-sign", "ec-sign"} <= will and "aes-local" not in will
    left_out = table_rows(page, "#will-not")
    assert [row[2] for row in left_out] == ["aes-local"]
    assert "extractable" in left_out[0][4].lower(), left_out

    # Start -> the live job page follows the stream to "done" and shows the set.
    page.click("#start")
    backup_job, seen = follow_job(page)
    expect(page.locator("#job-state")).to_have_text("done")
    set_id = page.locator("#set-id").inner_text()
    assert re.fullmatch(r"[0-9a-f]{16,}", set_id), set_id
    assert seen[0] == "done" or any(f"/jobs/{backup_job}/events" in u for u in streams), (
        "a running job's page did not follow the event stream"
    )
    verified = table_rows(page, "#result-drives")
    assert len(verified) == 3 and all(row[4] == "yes" for row in verified), verified
    check_page_hygiene(page)

    # Without JavaScript, the same page shows the job's state as it stands.
    still = browser.new_context(java_script_enabled=False)
    try:
        still.add_cookies(context.cookies())
        plain = still.new_page()
        plain.goto(page.url)
        expect(plain.locator("#job-state")).to_have_text("done")
        expect(plain.locator("#set-id")).to_have_text(set_id)
    finally:
        still.close()

    # Two keys are lost from the slot.
    with hsm.open(domain.slot_id, USER_PIN) as session:
        for obj in list(session.session.get_objects()):
            if obj[Attribute.LABEL] in LOST_KEYS:
                obj.destroy()

    # Restore those two from the set just written.
    open_module(page, "Restore")
    page.select_option("#set_id", set_id)
    page.select_option("#slot", str(domain.slot_id))
    page.fill("#so_id", "so-17")
    page.fill("#password", USER_PIN)
    page.fill("#keys", ", ".join(LOST_KEYS))
    page.click("button:has-text('Restore')")
    restore_job, _ = follow_job(page)
    expect(page.locator("#job-state")).to_have_text("done")
    keys = table_rows(page, "#result-keys")
    assert {row[1] for row in keys} == set(LOST_KEYS), keys
    for row in keys:
        assert row[3] == "restored", row
        assert row[4] not in ("", "-"), f"{row[1]} ({row[0]}) shows no proof"
    expect(page.locator("#restore-summary")).to_contain_text(
        f"{len(keys)} restored and proven, 0 already present, 0 present but different, 0 failed"
    )
    with hsm.open(domain.slot_id, USER_PIN) as session:
        labels = {obj[Attribute.LABEL] for obj in session.session.get_objects()}
    assert set(LOST_KEYS) <= labels

    # Both jobs on the dashboard, and in the audit log.
    page.locator("nav").get_by_role("link", name="Dashboard").click()
    jobs = {row[0]: row for row in table_rows(page, "#jobs")}
    assert jobs[backup_job][1:3] == ["backup", "done"], jobs
    assert jobs[restore_job][1:3] == ["restore", "done"], jobs
    expect(page.locator("#sets")).to_contain_text(set_id[:16])
    expect(page.locator("#sets")).to_contain_text("portal-nightly")

    open_module(page, "Audit", "Audit log")
    audit = table_rows(page, "#audit")
    done = {(row[4], row[6]) for row in audit if row[2] == ADMIN}
    for action in ("login", "backup.start", "backup", "restore.start", "restore"):
        assert (action, "ok") in done, (action, audit)
    assert any(set_id[:16] in row[5] for row in audit if row[4] == "restore"), audit

    # Log out: back to the login page, and the old session cookie opens nothing.
    session_cookies = context.cookies()
    assert session_cookies, "no session cookie was set"
    page.click("button:has-text('Log out')")
    expect(page).to_have_url(re.compile(r"/login$"))
    context.add_cookies(session_cookies)
    page.goto(at(service, "/"))
    expect(page).to_have_url(re.compile(r"/login$"))
    jar = {c["name"]: c["value"] for c in session_cookies}
    with httpx.Client(base_url=service.url, cookies=jar) as replay:
        assert replay.get("/api/v1/slots").status_code == 401


def test_a_wrong_password_on_the_login_page_says_so(serve: Any, page: Page) -> None:
    service: Service = serve()
    page.goto(at(service, "/login"))
    page.fill("#user", ADMIN)
    page.fill("#password", "not the password at all")
    page.click("button:has-text('Log in')")
    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.locator("#error")).to_be_visible()
    message = page.locator("#error").inner_text().lower()
    assert "password" in message or "log in" in message, message
    assert page.locator("#password").input_value() == ""
    assert "not the password at all" not in page.content()
    page.goto(at(service, "/"))
    expect(page).to_have_url(re.compile(r"/login$"))


def test_a_wrong_so_password_shows_on_the_backup_form_and_starts_nothing(
    serve: Any, tokens: dict[str, Any], page: Page
) -> None:
    service: Service = serve()
    log_in(page, service)
    open_module(page, "Backup")
    page.select_option("#slot", str(tokens["source"].slot_id))
    page.fill("#so_id", "so-17")
    page.fill("#password", WRONG_PIN)
    page.fill("#label", MARKUP_LABEL)
    page.click("button:has-text('Preview')")
    expect(page.locator("h1")).to_have_text("Backup")
    expect(page.locator("#error")).to_contain_text("SO password")
    # The form comes back with what was typed, except the password; typed markup stays text.
    expect(page.locator("#so_id")).to_have_value("so-17")
    expect(page.locator("#label")).to_have_value(MARKUP_LABEL)
    assert page.locator("#injected").count() == 0
    check_page_hygiene(page)
    page.locator("nav").get_by_role("link", name="Jobs").click()
    expect(page.locator("#jobs")).to_contain_text("No jobs yet.")
