"""The console in a real headless Chromium, beside the support bot on the fake Slack.

One run: the bot answers and hands off in Slack; the browser is refused without a session, signs in, sees
the overview's charts drawn (pixels read back from each canvas), opens the conversation, resumes the
handoff, and has a CSRF-less POST refused; then the Slack thread is answered again. Screenshots of every
page go to the test's tmp folder (printed at the end).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RuntimeFactory
from tests.console.conftest import PASSWORD, RUNTIME, ServeConsole, base_url, console_settings
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack import FakeSlack
from tests.fakes.slack import requests as rq
from tests.slack.conftest import StartSlack, support_spec

# One browser per run: make test's workers (pytest-xdist --dist loadgroup) keep these tests together.
pytestmark = pytest.mark.xdist_group("chromium")

ROOT = "1700000300.000100"
OTHER = "1700000400.000100"

# Counts the painted pixels of a canvas (alpha > 0): a blank canvas has none.
PAINTED = """
const c = document.getElementById(arguments[0]);
const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let n = 0;
for (let i = 3; i < data.length; i += 4) { if (data[i] > 0) { n++; } }
return n;
"""

CSRF_LESS_POST = """
const done = arguments[arguments.length - 1];
const form = {platform: 'slack', workspace: 'T0001', channel: 'C0GENERAL', thread: arguments[1]};
fetch(arguments[0], {method: 'POST', credentials: 'same-origin', body: new URLSearchParams(form)})
  .then(r => done(r.status), e => done(String(e)));
"""


def _wait(driver: Any, condition: Any, within: float = 10.0) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, within).until(condition)


def _click_through(driver: Any, element: Any) -> None:
    """Click something that loads a new page, and wait until the new page is there."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    old = driver.find_element(By.TAG_NAME, "html")
    element.click()

    def gone(_: Any) -> bool:
        try:
            old.is_enabled()
        except WebDriverException:  # stale, or (Chromium) "does not belong to the document"
            return True
        return False

    _wait(driver, gone)
    _wait(driver, lambda d: d.execute_script("return document.readyState") == "complete")


def _shot(driver: Any, folder: Path, name: str) -> None:
    driver.save_screenshot(str(folder / f"{name}.png"))


def _sign_in_and_look(driver: Any, base: str, shots: Path) -> dict[str, Any]:
    from selenium.webdriver.common.by import By

    seen: dict[str, Any] = {}
    driver.get(f"{base}/login")
    driver.delete_all_cookies()  # the browser is shared with the other tests
    driver.get(f"{base}/overview")
    seen["refused_to"] = driver.current_url
    seen["login_form"] = bool(driver.find_elements(By.ID, "password"))
    _shot(driver, shots, "01-login")
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    _click_through(driver, driver.find_element(By.ID, "sign-in"))
    _wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-charts") == "drawn")
    seen["overview_url"] = driver.current_url
    seen["answers"] = driver.find_element(By.ID, "total-answers").text
    seen["painted"] = {
        c.get_attribute("id"): driver.execute_script(PAINTED, c.get_attribute("id"))
        for c in driver.find_elements(By.CSS_SELECTOR, "canvas[data-chart]")
    }
    seen["workspace_rows"] = driver.find_element(By.ID, "per-workspace").text
    seen["cost"] = driver.find_element(By.ID, "total-cost").text
    _shot(driver, shots, "02-overview")

    _click_through(driver, driver.find_element(By.LINK_TEXT, "Conversations"))
    _shot(driver, shots, "03-conversations")
    links = driver.find_elements(By.CSS_SELECTOR, "a.open-conversation")
    seen["conversations"] = len(links)
    target = next(a for a in links if ROOT in (a.get_attribute("href") or ""))
    _click_through(driver, target)
    seen["transcript"] = driver.find_element(By.ID, "transcript").text
    seen["transcript_page"] = driver.find_element(By.TAG_NAME, "main").text
    _shot(driver, shots, "04-conversation")

    _click_through(driver, driver.find_element(By.PARTIAL_LINK_TEXT, "Inbox"))
    seen["open_before"] = driver.find_element(By.ID, "open-handoffs").text
    _shot(driver, shots, "05-handoffs-open")
    # A POST without the CSRF token, from the signed-in page itself (cookie sent): refused.
    driver.set_script_timeout(10)
    seen["csrf_less_status"] = driver.execute_async_script(CSRF_LESS_POST, f"{base}/handoffs/resume", ROOT)
    _click_through(driver, driver.find_element(By.CSS_SELECTOR, "#open-handoffs button.resume"))
    seen["notice"] = driver.find_element(By.CSS_SELECTOR, "p.notice").text
    seen["open_after"] = driver.find_element(By.ID, "open-handoffs").text
    seen["resumed_after"] = driver.find_element(By.ID, "resumed-handoffs").text
    _shot(driver, shots, "06-handoffs-resumed")
    for page in ("Moderation", "Knowledge and tools", "Settings"):
        _click_through(driver, driver.find_element(By.LINK_TEXT, page))
        _shot(driver, shots, f"07-{page.split()[0].lower()}")
    seen["settings"] = driver.find_element(By.TAG_NAME, "main").text
    return seen


async def test_console_in_chromium(
    serve_console: ServeConsole,
    runtime_factory: RuntimeFactory,
    start_slack: StartSlack,
    slack: FakeSlack,
    fake_openai: FakeOpenAI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    chromium: Any,
) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    # The runtime reads the console's settings (the price table) from the environment, as `parley run` does.
    monkeypatch.setenv("PARLEY_CONSOLE_PRICES", '{"fake-model": {"input": 2.5, "output": 10}}')
    app = {"console": console_settings()}
    async with runtime_factory(spec=support_spec(), parley_queue=False, app=app, **RUNTIME) as rt:
        served = await serve_console(runtime=rt)
        app = await start_slack(runtime=rt)
        base = base_url(served)

        await app.sender.event(rq.app_mention("where is my order 123?", ts=OTHER, user="U0CUST"))
        await app.settle()
        (answer,) = slack.bot_messages("C0GENERAL", OTHER)
        turn_id = answer.blocks[-1]["elements"][0]["value"]
        vote = rq.block_action(
            "parley_feedback_up", turn_id, user="U0CUST", message_ts=answer.ts, thread_ts=OTHER
        )
        assert (await app.sender.action(vote)).status == 200
        await app.sender.event(rq.app_mention("can I talk to a human please?", ts=ROOT, user="U0CUST"))
        await app.settle()
        await app.sender.event(
            rq.message("hello? anyone?", ts="1700000300.000200", thread_ts=ROOT, user="U0CUST")
        )
        await app.settle()
        assert len(slack.bot_messages("C0GENERAL", ROOT)) == 1  # paused: quiet in the thread

        started = time.perf_counter()
        seen = await asyncio.to_thread(_sign_in_and_look, chromium, base, shots)
        browsing = time.perf_counter() - started

        # The thread is resumed: the customer's next message is answered by the bot again.
        await app.sender.event(
            rq.message("thanks, one more question", ts="1700000300.000300", thread_ts=ROOT, user="U0CUST")
        )
        await app.settle()
        assert slack.bot_messages("C0GENERAL", ROOT)[-1].shown == "You said: thanks, one more question"
        assert rt.safety is not None
        audit = [f for _, f in await rt.redis.xrange(rt.safety.events.stream) if f.get("source") == "console"]

    assert seen["refused_to"].endswith("/console/login") and seen["login_form"]
    assert seen["overview_url"].endswith("/console/overview")
    assert seen["answers"] == "1"  # the order question (the handoff's reply counts as a handoff)
    assert set(seen["painted"]) == {
        "chart-turns",
        "chart-tokens",
        "chart-cost",
        "chart-feedback",
        "chart-latency",
    }
    for chart, painted in seen["painted"].items():
        assert painted > 500, f"{chart} looks blank ({painted} painted pixels)"
    assert "T0001" in seen["workspace_rows"]
    assert "$0.00" in seen["cost"] and seen["cost"] != "$0.0000"  # priced from the table given above
    assert seen["conversations"] == 2
    assert "can I talk to a human please?" in seen["transcript"]
    assert "hello? anyone?" in seen["transcript"]  # kept while paused
    assert "handed off" in seen["transcript_page"]
    assert "U0CUST" in seen["open_before"] and ROOT in seen["open_before"]
    assert seen["csrf_less_status"] == 403
    assert "Resumed" in seen["notice"]
    assert "Nobody is waiting" in seen["open_after"]
    assert ROOT in seen["resumed_after"] and "operator" in seen["resumed_after"]  # who resumed it
    assert "test-key" not in seen["settings"]
    assert [(a["category"], a["action"]) for a in audit] == [("handoff", "resume")]
    names = sorted(p.name for p in shots.iterdir())
    assert len(names) == 9 and all((shots / n).stat().st_size > 1000 for n in names)
    print(f"\nconsole screenshots: {shots} ({len(names)} pages; browser part {browsing:.1f} s)")
