"""``make eval-kb``: retrieval quality of the support bot's sample help centre on its question set.

Prints hit@1, hit@5 and MRR (over the top 5) for lexical-only and hybrid retrieval, and the share of answers
that cite a right source. Hybrid uses the configured embeddings endpoint when ``EMBEDDINGS_BASE_URL`` or
``EMBEDDINGS_MODEL`` is set, else the test suite's fake ``/v1/embeddings`` (hashed bag of words, started
here on loopback). Answers come from the configured LLM with ``--llm``, else from the extractive stand-in
model (tests/kb/extractive.py), which measures the numbering and citation plumbing, not a model.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bots.loader import load_bot
from core.kb import setup as kb_setup
from core.kb.embed import Embedder, OpenAIEmbedder
from core.kb.ingest import ingest
from core.kb.retrieve import KnowledgeBase
from core.kb.settings import load_embedding_settings
from core.kb.store import KbStore
from core.keys import KeySpace
from core.llm import LLMDelta, LLMRequest, OpenAILLM
from core.prompt import build_prompt
from core.redis_server import RedisServer
from core.settings import Settings, load_settings
from core.tokens import TokenCounter
from tests.fakes.openai_server import FakeOpenAI
from tests.kb.extractive import extractive


def _client(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, decode_responses=True)


QUESTIONS = Path(__file__).resolve().parents[2] / "bots" / "support" / "kb-questions.toml"


def _rank(kb_hits: list[Any], page: str) -> int | None:
    for n, hit in enumerate(kb_hits, 1):
        if hit.chunk.source.endswith(page):
            return n
    return None


async def _measure(
    kb: KnowledgeBase, questions: list[dict[str, str]], outside: list[dict[str, str]]
) -> dict[str, float]:
    rejected = 0
    for q in outside:
        rejected += not (await kb.retrieve(q["text"])).covered
    ranks = []
    covered = 0
    for q in questions:
        result = await kb.retrieve(q["text"])
        ranks.append(_rank(list(result.candidates), q["page"]))
        covered += result.covered
    n = len(ranks)
    return {
        "hit@1": sum(1 for r in ranks if r == 1) / n,
        "hit@5": sum(1 for r in ranks if r is not None and r <= 5) / n,
        "mrr": sum(1 / r for r in ranks if r is not None and r <= 5) / n,
        "covered": covered / n,
        "rejected": rejected / max(1, len(outside)),
    }


async def _cite_share(
    kb: KnowledgeBase, questions: list[dict[str, str]], llm: OpenAILLM, model: str
) -> float:
    spec = load_bot("support")
    counter = TokenCounter(model, allow_tiktoken=False)
    right = 0
    for q in questions:
        result = await kb.retrieve(q["text"], persona="agent")
        prompt = build_prompt(
            system=spec.personas["agent"].system_prompt,
            user_text=q["text"],
            user_name="Customer",
            history=[],
            budget=3000,
            counter=counter,
            reference=result.prompt_block(),
        )
        parts = []
        async for event in llm.stream(LLMRequest(prompt.messages, model, 0.0, 300)):
            if isinstance(event, LLMDelta):
                parts.append(event.text)
        cited = result.citations("".join(parts))
        if any(c.url.endswith(q["page"].removesuffix(".md")) for c in cited):
            right += 1
    return right / len(questions)


def _fake_settings(fake: FakeOpenAI) -> Settings:
    return Settings(_env_file=None, openai_base_url=fake.base_url, openai_api_key="x")  # type: ignore[call-arg]


async def main(use_llm: bool) -> int:
    every = tomllib.loads(QUESTIONS.read_text(encoding="utf-8"))["q"]
    questions = [q for q in every if q["page"]]
    outside = [q for q in every if not q["page"]]
    spec = load_bot("support")
    cfg = kb_setup.kb_config(spec)
    assert cfg is not None
    emb = load_embedding_settings()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis", appendonly=False)
        await asyncio.to_thread(server.start)
        client = _client(server.url)
        fake = await FakeOpenAI().start()
        fake.responder = extractive
        try:
            if emb.enabled:
                settings = load_settings()
                embedder: Embedder = OpenAIEmbedder(settings, emb)
                where = f"{emb.model} at {emb.base_url(settings) or 'api.openai.com'}"
            else:
                settings = _fake_settings(fake)
                embedder = OpenAIEmbedder(
                    settings, load_embedding_settings(embeddings_base_url=fake.base_url)
                )
                where = "the fake /v1/embeddings (hashed bag of words)"
            results = {}
            for mode, emb_for_mode in (("lexical-only", None), ("hybrid", embedder)):
                store = KbStore(client, KeySpace(f"eval-{mode.split('-')[0]}"))
                await store.clear()
                await ingest(
                    cfg.sources,
                    store=store,
                    cfg=cfg,
                    naming=kb_setup.naming(spec, cfg),
                    screen=kb_setup.screen(spec, cfg),
                    embedder=emb_for_mode,
                )
                kb = KnowledgeBase(cfg, None, emb_for_mode)
                kb.index = await store.load()
                results[mode] = await _measure(kb, questions, outside)
                if use_llm:
                    llm_settings = load_settings()
                    model = llm_settings.openai_model
                else:
                    llm_settings = _fake_settings(fake)
                    model = "fake-extractive"
                llm = OpenAILLM(llm_settings)
                try:
                    results[mode]["cited"] = await _cite_share(kb, questions, llm, model)
                finally:
                    await llm.aclose()
            await embedder.aclose()
        finally:
            await fake.stop()
            await client.aclose()
            server.stop()
    print(
        f"knowledge-base eval: {len(questions)} questions with an answering page and {len(outside)} out of "
        f"scope, {QUESTIONS.relative_to(Path.cwd())}"
    )
    print(f"hybrid embeddings: {where}")
    print(
        "answers by:",
        "the configured LLM" if use_llm else "the extractive stand-in model (tests/kb/extractive.py)",
    )
    print(
        f"{'mode':<14}{'hit@1':>8}{'hit@5':>8}{'MRR':>8}{'cited right':>13}{'covered':>9}"
        f"{'out-of-scope refused':>22}"
    )
    for mode, r in results.items():
        figures = (
            f"{r['hit@1']:>8.3f}{r['hit@5']:>8.3f}{r['mrr']:>8.3f}{r['cited']:>13.3f}{r['covered']:>9.3f}"
            f"{r['rejected']:>22.3f}"
        )
        print(f"{mode:<14}{figures}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm", action="store_true", help="answer with the configured LLM (OPENAI_*)")
    sys.exit(asyncio.run(main(parser.parse_args().llm)))
