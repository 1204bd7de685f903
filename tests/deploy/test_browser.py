"""Chromium drives the web UI of `setup.sh --local --modsecurity`: admin, Vault panel, users."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.deploy.test_setup_local import ROOT, LocalStack, local_stack  # noqa: F401
from tests.harness.servers import missing_server

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def page() -> Iterator[Page]:
    if not CHROMIUM.exists():
        missing_server("Debian chromium not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            context = browser.new_context(viewport={"width": 1100, "height": 900})
            page = context.new_page()
            page.set_default_timeout(15_000)
            yield page
        finally:
            browser.close()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"ui-{name}.png"), full_page=True)


def sign_in(page: Page, username: str, password: str) -> None:
    page.fill("#login-username", username)
    page.fill("#login-password", password)
    page.click("#login-form button[type=submit]")


def expect_session_expiry_shown(page: Page) -> None:
    """The account card shows the real expiry from the server: 7-day session, 15-min token."""
    expect(page.locator("#me-expiry")).to_have_text(re.compile(r"\(in (6 days 23 h|7 days)\)$"))
    expect(page.locator("#me-access-expiry")).to_have_text(re.compile(r"\(in 1[45] min\)$"))


def test_admin_and_user_journeys_in_chromium(local_stack: LocalStack, page: Page) -> None:  # noqa: F811
    problems: list[str] = []
    page.on("console", lambda m: m.type == "error" and problems.append(m.text))
    page.on("pageerror", lambda e: problems.append(str(e)))
    if not Path("/usr/lib/apache2/modules/mod_security2.so").exists():
        missing_server("ModSecurity not installed (libapache2-mod-security2 modsecurity-crs)")
    # Through ModSecurity + CRS in blocking mode: the UI's own traffic must pass the WAF.
    assert "with ModSecurity" in local_stack.up("--modsecurity")
    admin_password = local_stack.admin_password()

    page.goto(local_stack.url + "/")
    expect(page.locator("#login-view")).to_be_visible()
    shot(page, "1-login")

    sign_in(page, "admin", "wrong-password-123456")
    expect(page.locator("#message")).to_contain_text("Wrong username or password")

    sign_in(page, "admin", admin_password)
    expect(page.locator("#admin-view")).to_be_visible()
    expect(page.locator("#me-role")).to_have_text("admin")
    expect_session_expiry_shown(page)
    vault = page.locator("#vault-status")
    expect(vault).to_contain_text("Secrets come from")
    # The value of that row, not any "vault" on the panel (the address, a cached path's badge).
    labels, values = vault.locator("dt").all_inner_texts(), vault.locator("dd").all_inner_texts()
    rows = dict(zip(labels, values, strict=True))
    assert rows["Secrets come from"].strip() == "vault", rows
    expect(vault).to_contain_text("app/flask")
    expect(page.locator("#users-body tr[data-username=admin]")).to_be_visible()

    page.click("#vault-refresh")
    expect(page.locator("#message")).to_contain_text("Secret cache dropped")

    page.fill("#new-username", "dave")
    page.fill("#new-password", "dave-correct-horse-42")
    page.click("#user-form button[type=submit]")
    expect(page.locator("#users-body tr[data-username=dave]")).to_contain_text("active")
    shot(page, "2-admin")

    # An expired access token (cookie gone): the UI refreshes it once and carries on.
    page.context.clear_cookies(name="access_token_cookie")
    page.reload()
    expect(page.locator("#admin-view")).to_be_visible()
    assert any(c["name"] == "access_token_cookie" for c in page.context.cookies())
    expect_session_expiry_shown(page)

    page.click("#logout")
    expect(page.locator("#login-view")).to_be_visible()
    expect(page.locator("#message")).to_contain_text("signed out")

    sign_in(page, "dave", "dave-correct-horse-42")
    expect(page.locator("#account-view")).to_be_visible()
    expect(page.locator("#me-username")).to_have_text("dave")
    expect(page.locator("#me-role")).to_have_text("user")
    expect(page.locator("#admin-view")).to_be_hidden()
    shot(page, "3-user")

    # The wrong-password 401 is logged by Chromium as a failed resource load; nothing else.
    unexpected = [p for p in problems if "401" not in p]
    assert unexpected == []
