"""The support desk in a real headless Chromium (the session's shared browser), beside the support bot on
the fake Slack with its help centre ingested.

In Slack: one customer asks about order A1001, another about horse saddles (not covered by the help
centre), a third asks for a person; a colleague answers in that thread from Slack. In the browser, the agent
``alice`` signs in with her account, finds the order conversation by searching "A1001", opens the handoff
from the inbox, assigns it to herself, adds a note, sets it waiting and replies; the reply is in the Slack
thread (as the bot, signed) and in memory (as a human agent's message), and the bot stays quiet until she
resumes it; the model then sees her words as a human agent's. The unanswered page lists the saddle question.
The viewer ``victor`` sees the conversation without reply or block, and his POSTs are refused.

Screenshots go to the test's tmp folder; with PARLEY_DOCS_IMG=1 the overview and inbox go to docs/img/ (the
README's pictures).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from core.console.accounts import Accounts, Role
from core.kb import setup as kb_setup
from core.kb.ingest import ingest
from core.kb.store import KbStore
from core.keys import KeySpace
from core.memory import decode
from core.prompt import AGENT_ROLE
from core.types import Place
from tests.conftest import RuntimeFactory
from tests.console.conftest import RUNTIME, ServeConsole, base_url, console_settings
from tests.console.test_browser import _click_through, _wait
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack import FakeSlack
from tests.fakes.slack import requests as rq
from tests.slack.conftest import StartSlack, support_spec

# One browser per run: make test's workers (pytest-xdist --dist loadgroup) keep these tests together.
pytestmark = pytest.mark.xdist_group("chromium")

ORDER = "1700000500.000100"
SADDLE = "1700000600.000100"
HUMAN = "1700000700.000100"
ALICE_PASSWORD = "alice's long passphrase"
VICTOR_PASSWORD = "victor's long passphrase"
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"

POST_AS_PAGE = """
const done = arguments[arguments.length - 1];
const form = new URLSearchParams(arguments[1]);
form.set('csrf', document.querySelector('input[name=csrf]').value);
fetch(arguments[0], {method: 'POST', credentials: 'same-origin', body: form, redirect: 'manual'})
  .then(r => done(r.status), e => done(String(e)));
"""


def _shot(driver: Any, folder: Path, name: str, docs: str = "") -> None:
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    if docs and os.environ.get("PARLEY_DOCS_IMG"):
        shutil.copyfile(path, DOCS_IMG / docs)


def _sign_in(driver: Any, base: str, account: str, password: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/login")
    driver.delete_all_cookies()  # the browser is shared with the other tests
    driver.get(f"{base}/login")
    driver.find_element(By.ID, "account").send_keys(account)
    driver.find_element(By.ID, "password").send_keys(password)
    _click_through(driver, driver.find_element(By.ID, "sign-in"))


def _conversation_url(base: str, thread: str) -> str:
    return f"{base}/conversation?platform=slack&workspace=T0001&channel=C0GENERAL&thread={thread}"


def _as_agent(driver: Any, base: str, shots: Path) -> dict[str, Any]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    seen: dict[str, Any] = {}
    _sign_in(driver, base, "alice", ALICE_PASSWORD)
    seen["who"] = driver.find_element(By.ID, "signed-in-as").text
    seen["badge"] = driver.find_element(By.ID, "nav-inbox").text

    # Search by an order number said in the conversation.
    box = driver.find_element(By.ID, "search-box")
    box.send_keys("A1001")
    old = driver.find_element(By.TAG_NAME, "html")
    box.submit()
    _wait(driver, lambda d: d.find_element(By.TAG_NAME, "html") != old and d.find_elements(By.ID, "results"))
    seen["summary"] = driver.find_element(By.ID, "search-summary").text
    seen["marks"] = [m.text for m in driver.find_elements(By.CSS_SELECTOR, "#results mark")]
    links = driver.find_elements(By.CSS_SELECTOR, "#results a.open-conversation")
    seen["found"] = [a.get_attribute("href") for a in links]
    _shot(driver, shots, "10-search")
    _click_through(driver, links[0])
    seen["found_transcript"] = driver.find_element(By.ID, "transcript").text

    # The inbox: the handoff is open; work it.
    _click_through(driver, driver.find_element(By.PARTIAL_LINK_TEXT, "Inbox"))
    seen["inbox"] = driver.find_element(By.ID, "open-handoffs").text
    target = next(
        a
        for a in driver.find_elements(By.CSS_SELECTOR, "#open-handoffs a.open-conversation")
        if HUMAN in (a.get_attribute("href") or "")
    )
    _click_through(driver, target)
    seen["human_in_thread"] = [
        li.text for li in driver.find_elements(By.CSS_SELECTOR, "#transcript li.human")
    ]
    _click_through(driver, driver.find_element(By.ID, "assign"))  # to herself (the default)
    seen["assignee"] = driver.find_element(By.ID, "assignee").text
    driver.find_element(By.ID, "note").send_keys("VIP customer: asked twice already")
    _click_through(driver, driver.find_element(By.ID, "add-note"))
    seen["notes"] = driver.find_element(By.ID, "notes").text
    Select(driver.find_element(By.ID, "status-select")).select_by_value("waiting")
    _click_through(driver, driver.find_element(By.ID, "set-status"))
    seen["status"] = driver.find_element(By.ID, "handoff-status").text
    driver.find_element(By.ID, "reply-text").send_keys("Hi! I'm looking at your order now <@U0ALL>.")
    _click_through(driver, driver.find_element(By.ID, "send-reply"))
    seen["done"] = driver.find_element(By.ID, "done").text
    seen["transcript"] = driver.find_element(By.ID, "transcript").text
    _shot(driver, shots, "11-conversation-replied")

    driver.set_window_size(1280, 820)
    _click_through(driver, driver.find_element(By.PARTIAL_LINK_TEXT, "Inbox"))
    seen["inbox_after"] = driver.find_element(By.ID, "open-handoffs").text
    _shot(driver, shots, "12-inbox", docs="console-inbox.png")
    _click_through(driver, driver.find_element(By.LINK_TEXT, "Overview"))
    _wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-charts") == "drawn")
    _shot(driver, shots, "13-overview", docs="console-overview.png")
    driver.set_window_size(1280, 1600)

    _click_through(driver, driver.find_element(By.LINK_TEXT, "Unanswered"))
    seen["unanswered"] = driver.find_element(By.ID, "unanswered").text
    seen["unanswered_page"] = driver.find_element(By.TAG_NAME, "main").text
    _shot(driver, shots, "14-unanswered")
    return seen


def _resume(driver: Any, base: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(_conversation_url(base, HUMAN))
    _click_through(driver, driver.find_element(By.ID, "resume"))


def _as_viewer(driver: Any, base: str, shots: Path) -> dict[str, Any]:
    from selenium.webdriver.common.by import By

    seen: dict[str, Any] = {}
    _sign_in(driver, base, "victor", VICTOR_PASSWORD)
    driver.get(_conversation_url(base, HUMAN))
    seen["read_only"] = bool(driver.find_elements(By.ID, "read-only"))
    seen["reply_form"] = bool(driver.find_elements(By.ID, "reply-form"))
    driver.set_script_timeout(10)
    where = {"platform": "slack", "workspace": "T0001", "channel": "C0GENERAL", "thread": HUMAN}
    seen["reply_status"] = driver.execute_async_script(
        POST_AS_PAGE, f"{base}/handoffs/reply", {**where, "text": "a viewer's words"}
    )
    seen["block_status"] = driver.execute_async_script(
        POST_AS_PAGE,
        f"{base}/moderation/block",
        {"platform": "slack", "workspace": "T0001", "user": "U0CUST", "action": "block"},
    )
    _shot(driver, shots, "15-viewer")
    _click_through(driver, driver.find_element(By.LINK_TEXT, "Moderation"))
    seen["block_buttons"] = len(driver.find_elements(By.CSS_SELECTOR, "#blocked button"))
    return seen


async def _ingest_help_centre(client: aioredis.Redis) -> None:
    spec = support_spec()
    cfg = kb_setup.kb_config(spec)
    assert cfg is not None
    await ingest(
        ["kb"],
        store=KbStore(client, KeySpace(spec.name)),
        cfg=cfg,
        naming=kb_setup.naming(spec, cfg),
        screen=kb_setup.screen(spec, cfg),
        embedder=None,
    )


async def test_support_desk_in_chromium(
    serve_console: ServeConsole,
    runtime_factory: RuntimeFactory,
    start_slack: StartSlack,
    slack: FakeSlack,
    fake_openai: FakeOpenAI,
    redis_client: aioredis.Redis,
    tmp_path: Path,
    chromium: Any,
) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    await _ingest_help_centre(redis_client)
    app = {"console": console_settings()}
    async with runtime_factory(spec=support_spec(), parley_queue=False, app=app, **RUNTIME) as rt:
        accounts = Accounts(rt.redis, rt.keys)
        for name, role, password in (
            ("alice", Role.AGENT, ALICE_PASSWORD),
            ("victor", Role.VIEWER, VICTOR_PASSWORD),
        ):
            await accounts.add(name, role, await asyncio.to_thread(accounts.hash, password))
        served = await serve_console(runtime=rt)
        app = await start_slack(runtime=rt)
        base = base_url(served)

        for text, ts, user in (
            ("where is my order A1001? it is late", ORDER, "U0CUST"),
            ("Do you sell horse saddles?", SADDLE, "U0RIDER"),
            ("can I talk to a human please?", HUMAN, "U0HELP"),
        ):
            await app.sender.event(rq.app_mention(text, ts=ts, user=user))
            await app.settle()
        # A colleague answers in the handed-off thread from Slack itself.
        await app.sender.event(
            rq.message(
                "I'll take this one in a minute", ts="1700000700.000200", thread_ts=HUMAN, user="U0AGENT"
            )
        )
        await app.settle()
        assert len(slack.bot_messages("C0GENERAL", HUMAN)) == 1  # the handoff reply; quiet since

        agent = await asyncio.to_thread(_as_agent, chromium, base, shots)
        posted = [m.text for m in slack.bot_messages("C0GENERAL", HUMAN)]
        place = Place("slack", "T0001", "C0GENERAL", HUMAN)
        stored = [decode(m) for m in await rt.redis.lrange(rt.keys.messages(place), 0, -1)]

        # Paused until Resume: the customer's next words are kept, not answered.
        await app.sender.event(
            rq.message("thank you!", ts="1700000700.000400", thread_ts=HUMAN, user="U0HELP")
        )
        await app.settle()
        quiet = len(slack.bot_messages("C0GENERAL", HUMAN))

        viewer = await asyncio.to_thread(_as_viewer, chromium, base, shots)

        # Alice resumes; the model then sees her words as a human agent's.
        await asyncio.to_thread(_sign_in, chromium, base, "alice", ALICE_PASSWORD)
        await asyncio.to_thread(_resume, chromium, base)
        await app.sender.event(
            rq.message("and when will it arrive?", ts="1700000700.000500", thread_ts=HUMAN, user="U0HELP")
        )
        await app.settle()
        prompt = fake_openai.chat_requests[-1].body["messages"]
        assert rt.safety is not None
        audit = [f for _, f in await rt.redis.xrange(rt.keys.scoped("console", "audit"))]

    assert agent["who"] == "alice (agent)"
    assert agent["badge"] == "1"
    assert "1 conversation with A1001" in agent["summary"].replace("a1001", "A1001")
    assert [m.lower() for m in agent["marks"]] == ["a1001", "a1001"]  # in the customer's line and the bot's
    assert len(agent["found"]) == 1 and ORDER in agent["found"][0]
    assert "where is my order A1001? it is late" in agent["found_transcript"]
    assert HUMAN in agent["inbox"] and "open" in agent["inbox"]
    assert any(
        "I'll take this one in a minute" in t and "person in the thread" in t
        for t in agent["human_in_thread"]
    )
    assert agent["assignee"] == "alice"
    assert "VIP customer: asked twice already" in agent["notes"] and "alice" in agent["notes"]
    assert agent["status"] == "waiting"
    assert "Sent" in agent["done"]
    assert (
        "Hi! I'm looking at your order now" in agent["transcript"] and "support team" in agent["transcript"]
    )
    assert "waiting" in agent["inbox_after"] and "alice" in agent["inbox_after"]
    assert "Do you sell horse saddles?" in agent["unanswered"] and "not covered" in agent["unanswered"]
    assert "can I talk to a human please?" in agent["unanswered"] and "handed off" in agent["unanswered"]
    assert "of the knowledge base's embeddings" in agent["unanswered_page"]  # the embedded model

    # In the Slack thread, as the bot, signed, mentions neutralised; in memory as the agent's message.
    assert len(posted) == 2
    assert "Hi! I'm looking at your order now" in posted[1] and "alice (support team)" in posted[1]
    assert "<@U0ALL>" not in posted[1]
    (mine,) = [m for m in stored if m.role == AGENT_ROLE]
    assert mine.author_name == "alice" and mine.text.startswith("Hi! I'm looking at your order now")
    assert quiet == 2

    assert viewer["read_only"] and not viewer["reply_form"]
    assert viewer["reply_status"] == 403 and viewer["block_status"] == 403
    assert viewer["block_buttons"] == 0

    assert any(
        m["role"] == "assistant" and "[human support agent" in m["content"] and "alice" in m["content"]
        for m in prompt
    )
    actions = [(a["account"], a["action"]) for a in audit]
    for expected in (
        ("alice", "sign_in"),
        ("alice", "assign"),
        ("alice", "note"),
        ("alice", "status"),
        ("alice", "reply"),
        ("victor", "sign_in"),
        ("alice", "resume"),
    ):
        assert expected in actions, expected
    assert ("victor", "reply") not in actions
    names = sorted(p.name for p in shots.iterdir())
    assert len(names) == 6 and all((shots / n).stat().st_size > 1000 for n in names)
    print(f"\ndesk screenshots: {shots}")
