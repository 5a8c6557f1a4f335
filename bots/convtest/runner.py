"""``parley test --bot NAME``: run a bot's conversation tests through the whole engine.

Each run gets a private, throw-away redis-server (nothing of a real deployment is read or changed), the
bot's knowledge base ingested into it when the bot has ``[kb]``, its plugin and MCP tools, and its
moderation. Each case is a fresh conversation from its own user; turns go through ``Engine.reply`` exactly
as a terminal chat's do.

Scripted mode (the default) serves the model's side from each turn's ``model`` steps (no key, no network,
deterministic) and uses the local moderation rules only (the moderation endpoint is a network service).
``--live`` asks the configured model and moderation endpoint instead, ``--runs N`` times per case, and
reports each case's pass rate against ``--min-pass-rate``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import redis.asyncio as aioredis
from pydantic import SecretStr

from bots.convtest.cases import Case, TurnSpec, load_cases
from bots.convtest.check import Failure, TurnOutcome, check_turn
from bots.convtest.model import RecordingModel, ScriptedModel
from core.appsettings import AppSettings
from core.bot import BotSpec
from core.clicks import confirm_call
from core.errors import ConfigError
from core.llm import LLM
from core.redis_server import RedisServer
from core.reply import fold_reply
from core.runtime import Runtime, open_runtime
from core.types import Author, CommandCall, Place, Turn


@dataclass
class CaseResult:
    file: Path
    case: Case
    runs: int = 0
    passed: int = 0
    failures: list[Failure] = field(default_factory=list)  # the first failure of each failed run
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.passed / self.runs if self.runs else 0.0


@asynccontextmanager
async def _private_redis() -> AsyncIterator[tuple[str, aioredis.Redis]]:
    with tempfile.TemporaryDirectory(prefix="parley-test-") as tmp:
        server = RedisServer(Path(tmp) / "redis", appendonly=False)
        await asyncio.to_thread(server.start)
        client = aioredis.from_url(server.url, decode_responses=True)
        try:
            yield server.url, client
        finally:
            await client.aclose()
            await asyncio.to_thread(server.stop)


async def _ingest(spec: BotSpec, app: AppSettings, out: TextIO) -> None:
    """Index the bot's ``[kb]`` sources into the private Redis, as ``parley kb ingest`` would."""
    from bots import kb_cli  # the kb CLI's own path: what a test cites is what an operator's ingest gives

    args = argparse.Namespace(kb_command="ingest", paths=[], rebuild=False, collection="")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        await kb_cli.run(args, app, spec)
    out.write(f"knowledge base: {printed.getvalue().strip().splitlines()[-1]}\n")


async def _run_case(
    rt: Runtime, scripted: ScriptedModel | None, rec: RecordingModel, case: Case, n: int
) -> Failure | None:
    place = Place("console", "test", f"case-{n}", "main")
    author = Author(f"tester-{n}", case.user_name, is_admin=case.admin)
    pending = ""
    for i, spec in enumerate(case.turn, start=1):
        where = f"turn {i}"
        text, command = _input(spec, pending, where)
        if scripted is not None:
            scripted.script(spec.model, where)
        rec.calls.clear()
        fold = await fold_reply(rt.engine.reply(Turn(author=author, place=place, text=text, command=command)))
        if scripted is not None and scripted.exhausted:
            return Failure(where, "model script", scripted.exhausted, fold.text)
        result = fold.outcome()
        pending = result.question.id if result.question is not None else ""
        failure = check_turn(spec.expect, TurnOutcome(result, tuple(rec.calls)), where)
        if failure is not None:
            return failure
    return None


def _input(spec: TurnSpec, pending: str, where: str) -> tuple[str, CommandCall | None]:
    if spec.user is not None:
        return spec.user, None
    if not pending:
        raise ConfigError(f"{where}: confirm = ... but the previous reply asked for no confirmation")
    call = confirm_call(pending, bool(spec.confirm))
    return f"/{call.name} {call.args}", call


async def run_tests(
    spec: BotSpec,
    app: AppSettings,
    *,
    live: bool = False,
    runs: int = 1,
    only: str = "",
    out: TextIO,
) -> list[CaseResult]:
    cases = [(f, c) for f, c in load_cases(spec.folder) if only.lower() in c.name.lower()]
    if not cases:
        raise ConfigError(
            f"{spec.folder / 'tests'}: no conversation tests{' matching ' + repr(only) if only else ''}"
        )
    if live:
        cases = [(f, c) for f, c in cases if c.live]
    scripted = None if live else ScriptedModel()
    async with _private_redis() as (url, client):
        app = app.replace(core=app.core.model_copy(update={"redis_url": SecretStr(url)}))
        if not live:
            app = app.replace(safety=app.safety.model_copy(update={"parley_moderation_endpoint": False}))
        if spec.config.kb is not None:
            await _ingest(spec, app, out)
        inner: LLM | None = scripted
        if inner is None:
            from core.llm import OpenAILLM

            inner = OpenAILLM(app.core)
        rec = RecordingModel(inner)
        results = []
        async with open_runtime(spec, app, llm=rec, redis=client) as rt:
            n = 0
            for file, case in cases:
                result = CaseResult(file, case)
                started = time.perf_counter()
                for _ in range(runs):
                    n += 1
                    failure = await _run_case(rt, scripted, rec, case, n)
                    result.runs += 1
                    if failure is None:
                        result.passed += 1
                    else:
                        result.failures.append(failure)
                result.seconds = time.perf_counter() - started
                results.append(result)
                _print_case(result, spec.folder, out)
    return results


def _print_case(result: CaseResult, folder: Path, out: TextIO) -> None:
    name = f"{result.file.relative_to(folder)}::{result.case.name}"
    if result.runs == 1:
        out.write(f"{'PASS' if result.passed else 'FAIL'}  {name}\n")
    else:
        out.write(f"{result.passed}/{result.runs}  {name}\n")
    if result.failures:
        out.write(result.failures[0].describe(indent="      ") + "\n")


def summarise(results: Sequence[CaseResult], min_rate: float, out: TextIO) -> int:
    """Print the totals; 0 when every case passed at least ``min_rate`` of its runs, else 1."""
    failed = [r for r in results if r.rate < min_rate]
    runs = sum(r.runs for r in results)
    passed = sum(r.passed for r in results)
    out.write(f"\n{len(results) - len(failed)} passed, {len(failed)} failed ({passed}/{runs} runs)\n")
    return 1 if failed else 0


def junit_xml(bot: str, results: Sequence[CaseResult], min_rate: float) -> str:
    """A JUnit XML report (one testcase per case) for CI systems that show test results."""
    import xml.etree.ElementTree as ET

    suite = ET.Element(
        "testsuite",
        name=f"parley.{bot}",
        tests=str(len(results)),
        failures=str(sum(1 for r in results if r.rate < min_rate)),
        time=f"{sum(r.seconds for r in results):.3f}",
    )
    for r in results:
        case = ET.SubElement(
            suite, "testcase", classname=f"{bot}.{r.file.stem}", name=r.case.name, time=f"{r.seconds:.3f}"
        )
        if r.rate < min_rate:
            message = r.failures[0].summary() if r.failures else "below the pass rate"
            fail = ET.SubElement(case, "failure", message=f"{r.passed}/{r.runs} runs passed: {message}")
            fail.text = "\n\n".join(f.describe() for f in r.failures)
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"
