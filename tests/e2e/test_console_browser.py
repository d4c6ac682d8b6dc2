"""The console in a real headless browser (Debian's Chromium, driven by Playwright): the list, a
timeline, and the operator's retry; screenshots of the list and of a timeline are taken and checked
to show a page, not a blank (``UPDATE_SCREENSHOTS=1`` writes them to docs/ for the README)."""

from __future__ import annotations

import os
import shutil
import struct
import uuid
import zlib
from pathlib import Path

import pytest
import requests

from config.settings import SANDBOX_ADMIN_KEY
from tests.e2e.test_checkout_e2e import card, client_for, make_stack

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PASSWORD = "browser-test-password"
DOCS = Path(__file__).resolve().parents[2] / "docs"
UPDATE = bool(os.environ.get("UPDATE_SCREENSHOTS"))


def colours(png: bytes) -> int:
    """How many distinct pixel rows a PNG has (a blank page has one): a cheap "not blank" check."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, i = b"", 8
    width = height = 0
    while i < len(png):
        size, kind = struct.unpack(">I4s", png[i:i + 8])
        data = png[i + 8:i + 8 + size]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", data[:8])
        elif kind == b"IDAT":
            chunks += data
        i += 12 + size
    raw = zlib.decompress(chunks)
    stride = len(raw) // height
    return len({raw[r * stride + 1:(r + 1) * stride] for r in range(height)})


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (./run.sh test installs Debian's chromium)")
def test_an_operator_finds_a_stuck_checkout_reads_its_timeline_and_retries_it(tmp_path):
    from playwright.sync_api import sync_playwright

    env = dict(CONSOLE_PASSWORD=PASSWORD, STEP_MAX_ATTEMPTS="2")
    with make_stack(tmp_path, **env) as stack:
        api = client_for(stack)
        paid = api.create_checkout(amount=11000, card=card(), merchant_order_reference=f"ui-{uuid.uuid4().hex[:10]}")
        paid = api.wait(paid["id"], {"AWAITING_OTP"}, timeout=30, current=paid)
        api.wait(paid["id"], {"COMPLETED"}, timeout=30, current=api.submit_otp(paid["id"], "123456"))
        admin = {"X-Sandbox-Key": SANDBOX_ADMIN_KEY}
        requests.put(f"{stack.sandbox_url}/sandbox/faults", headers=admin, timeout=5, json={"rules": [
            {"kind": "error", "path": "getCardDetails", "statuses": [503]}]}).raise_for_status()
        stuck = api.create_checkout(amount=12000, card=card(), merchant_order_reference=f"ui-{uuid.uuid4().hex[:10]}")
        stuck = api.wait(stuck["id"], {"NEEDS_ATTENTION"}, timeout=60, current=stuck)
        requests.delete(f"{stack.sandbox_url}/sandbox/faults", headers=admin, timeout=5).raise_for_status()

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            try:
                page = browser.new_context(http_credentials={"username": "operator", "password": PASSWORD},
                                           viewport={"width": 1280, "height": 900}).new_page()
                page.goto(f"{stack.api_url}/console")
                assert page.locator("#checkouts tr").count() == 3  # a header and two checkouts
                assert page.locator("#stuck").get_by_text(stuck["id"]).is_visible()
                shots = DOCS if UPDATE else tmp_path
                shots.mkdir(exist_ok=True)
                shot = page.screenshot(path=str(shots / "console-list.png"), full_page=True)
                assert colours(shot) > 20

                page.locator("#stuck").get_by_text(stuck["id"]).click()
                page.wait_for_url(f"**/console/checkouts/{stuck['id']}")
                timeline = page.locator("#timeline")
                assert timeline.get_by_text("call card_details").first.is_visible()
                assert page.get_by_text("NEEDS_ATTENTION").first.is_visible()
                shot = page.screenshot(path=str(shots / "console-timeline.png"), full_page=True)
                assert colours(shot) > 20

                page.locator("#retry").click()
                page.wait_for_url(f"**/console/checkouts/{stuck['id']}")
                assert timeline.get_by_text("retried by operator (console)").is_visible()
            finally:
                browser.close()
        after = api.get_checkout(stuck["id"])
        assert any(h["source"] == "operator" and h["from"] == "NEEDS_ATTENTION" for h in after["history"])
        assert after["status"] != "NEEDS_ATTENTION"
