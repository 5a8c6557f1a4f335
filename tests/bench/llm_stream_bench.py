"""The LLM client's CPU per streamed reply, per transport: ``python -m tests.bench.llm_stream_bench``.

The fake OpenAI-compatible server runs in a child process (its CPU is not counted) and streams a 70-token
reply at 60 tokens/s after 300 ms, like ``make bench-load``'s model. This process reads the reply through
:class:`core.llm.OpenAILLM` (the batches, the event parsing, the think filter) and prints its own CPU per
reply and the wall time: over aiohttp with the quiet socket (what an ``http://`` endpoint gets,
core/net/aio.py), over aiohttp with keep-alive connections (``PARLEY_LLM_QUIET_STREAMS=false``) and over the
SDK's httpx transport (what an ``https://`` endpoint gets), back to back. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx2 as httpx

import core.llm
from core.llm import ChatMessage, LLMRequest, OpenAILLM
from core.net.tls import http_client
from core.redis_server import free_port
from tests.conftest import make_settings

SERVER = """
import asyncio, sys
from aiohttp import web
from tests.fakes.openai_server import FakeOpenAI, Reply
TEXT = " ".join(f"word{i}" for i in range(70))
async def main(port):
    fake = FakeOpenAI()
    fake.responder = lambda body: Reply(TEXT, chunk_chars=5, first_delay=0.3, tokens_per_s=60)
    app = web.Application()
    fake.routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main(int(sys.argv[1])))
"""


def _httpx_client(base_url: str | None, **options: Any) -> Any:
    return http_client(base_url, transport=httpx.AsyncHTTPTransport(), **options)


async def _measure(base_url: str, replies: int, quiet: bool) -> tuple[list[float], float]:
    settings = make_settings(openai_base_url=base_url, openai_api_key="bench", parley_llm_quiet_streams=quiet)
    llm = OpenAILLM(settings)
    request = LLMRequest([ChatMessage("system", "You are a bot. " * 50), ChatMessage("user", "hi")], "m")
    try:
        _ = [e async for e in llm.stream(request)]  # warm: connection, imports
        cpu: list[float] = []
        wall = time.perf_counter()
        for _ in range(replies):
            began = time.thread_time()
            _ = [e async for e in llm.stream(request)]
            cpu.append((time.thread_time() - began) * 1000)
        return cpu, (time.perf_counter() - wall) * 1000 / replies
    finally:
        await llm.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replies", type=int, default=20)
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        base_url = f"http://127.0.0.1:{port}/v1"
        print(f"{args.replies} replies of 70 tokens at 60 tokens/s; CPU of this process per reply")
        print(f"{'transport':<28}{'CPU p50 ms':>11}{'mean ms':>9}{'wall ms':>9}")
        rows = (
            ("aiohttp, quiet (http://)", http_client, True),
            ("aiohttp, keep-alive", http_client, False),
            ("httpx (as for https://)", None, False),
        )
        for name, client, quiet in rows:
            core.llm.http_client = client or _httpx_client  # type: ignore[assignment]
            try:
                cpu, wall = asyncio.run(_measure(base_url, args.replies, quiet))
            finally:
                core.llm.http_client = http_client
            print(f"{name:<28}{statistics.median(cpu):>11.1f}{statistics.mean(cpu):>9.1f}{wall:>9.0f}")
    finally:
        server.terminate()
        server.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
