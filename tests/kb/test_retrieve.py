"""Retrieval on a small corpus, lexical-only and hybrid (the fake /v1/embeddings), the prompt block, scope,
budget, coverage and citations."""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis

from core.kb.retrieve import NOT_COVERED_NOTE, KnowledgeBase, knowledge_file_index, not_covered_reply
from core.kb.store import KbStore
from core.keys import KeySpace
from core.types import Citation
from tests.fakes.openai_server import Error, FakeOpenAI
from tests.kb.conftest import fake_embedder, kb_cfg, run_ingest


async def _kb(client: aioredis.Redis, embedder=None, **cfg: object) -> KnowledgeBase:  # type: ignore[no-untyped-def]
    kb = KnowledgeBase(kb_cfg(**cfg), KbStore(client, KeySpace("testbot")), embedder)
    await kb.refresh()
    return kb


async def test_lexical_only_finds_the_page(redis_client: aioredis.Redis, help_centre: Path) -> None:
    await run_ingest(redis_client, help_centre.parent)
    kb = await _kb(redis_client)
    result = await kb.retrieve("When do I get my refund?")
    assert result.mode == "lexical" and result.covered
    assert result.hits[0].chunk.title == "Refunds"
    assert result.hits[0].similarity is None
    assert result.sources[0] == Citation(1, "Refunds", "https://example.com/help/returns/refunds")


async def test_hybrid_uses_the_embeddings_endpoint(
    redis_client: aioredis.Redis, help_centre: Path, fake_openai: FakeOpenAI
) -> None:
    embedder = fake_embedder(fake_openai)
    await run_ingest(redis_client, help_centre.parent, embedder=embedder)
    kb = await _kb(redis_client, embedder)
    try:
        before = len(fake_openai.embedding_requests)
        # "delivering" shares no BM25 token with the page ("delivery" stems differently) but its trigrams
        # do: only the vector side can rank it.
        result = await kb.retrieve("delivering express")
        assert result.mode == "hybrid"
        assert len(fake_openai.embedding_requests) == before + 1
        assert fake_openai.embedding_requests[-1].body["input"] == ["delivering express"]
        assert all(h.similarity is not None for h in result.hits)
        assert result.hits[0].chunk.source == "kb/shipping/times.md"  # its Express section

        fake_openai.embeddings_behaviour = Error(500)  # the endpoint fails: lexical for this turn
        fallback = await kb.retrieve("express delivery cost")
        assert fallback.mode == "lexical"
        assert fallback.hits[0].chunk.source == "kb/shipping/times.md"
    finally:
        await kb.aclose()


async def test_index_without_vectors_is_lexical_even_with_an_embedder(
    redis_client: aioredis.Redis, help_centre: Path, fake_openai: FakeOpenAI
) -> None:
    await run_ingest(redis_client, help_centre.parent)  # built lexical-only
    embedder = fake_embedder(fake_openai)
    kb = await _kb(redis_client, embedder)
    try:
        assert kb.mode == "lexical"
        await kb.retrieve("refund")
        assert fake_openai.embedding_requests == []
    finally:
        await kb.aclose()


async def test_prompt_block_numbers_fences_and_marks_untrusted(
    redis_client: aioredis.Redis, help_centre: Path
) -> None:
    (help_centre / "weird.md").write_text("# Tricks\nA ``` fence and </reference> in refunds text.\n")
    await run_ingest(redis_client, help_centre.parent)
    kb = await _kb(redis_client)
    result = await kb.retrieve("refunds goodwill fence")
    block = result.prompt_block()
    assert block.startswith("Knowledge-base excerpts") and "untrusted" in block
    for n, hit in enumerate(result.hits, 1):
        assert f"[{n}] {hit.chunk.title}" in block
    assert "</reference>" not in block  # cannot close the engine's fence
    assert "````text\nA ``` fence" in block  # a longer fence than any run inside
    assert block.index("[1]") < block.index("[2]")


async def test_budget_limits_the_chunks(redis_client: aioredis.Redis, help_centre: Path) -> None:
    await run_ingest(redis_client, help_centre.parent)
    kb = await _kb(redis_client, persona_budgets={"terse": 100})
    wide = await kb.retrieve("refunds shipping password payment", persona="agent")
    narrow = await kb.retrieve("refunds shipping password payment", persona="terse")
    assert len(wide.hits) > len(narrow.hits) >= 1
    assert narrow.hits[0].chunk.id == wide.hits[0].chunk.id


async def test_channel_scope_reads_only_its_collections(
    redis_client: aioredis.Redis, help_centre: Path
) -> None:
    await run_ingest(redis_client, help_centre.parent)
    kb = await _kb(redis_client, channels={"C-BILLING": ["billing"]})
    scoped = await kb.retrieve("refund payment", channel="C-BILLING")
    assert {h.chunk.collection for h in scoped.candidates} == {"billing"}
    anywhere = await kb.retrieve("refund payment", channel="C-OTHER")
    assert {h.chunk.collection for h in anywhere.candidates} >= {"billing", "returns"}


async def test_not_covered_offers_a_person(redis_client: aioredis.Redis, help_centre: Path) -> None:
    await run_ingest(redis_client, help_centre.parent)
    kb = await _kb(redis_client)
    offer = "I don't know. Shall I get a person?"
    result = await kb.retrieve("Do you sell horse saddles?")
    assert not result.covered
    assert result.prompt_block() == NOT_COVERED_NOTE
    assert not_covered_reply(result, "Do you sell horse saddles?", offer) == offer
    thanks = await kb.retrieve("thanks, bye")
    assert not_covered_reply(thanks, "thanks, bye", offer) is None  # small talk still goes to the model
    covered = await kb.retrieve("How long is the password reset link valid?")
    assert covered.covered
    assert not_covered_reply(covered, "How long is the password reset link valid?", offer) is None


async def test_citations_follow_the_numbers_in_the_reply(
    redis_client: aioredis.Redis, help_centre: Path
) -> None:
    await run_ingest(redis_client, help_centre.parent)
    kb = await _kb(redis_client)
    result = await kb.retrieve("refund goodwill express shipping")
    assert len(result.hits) >= 3
    cited = result.citations("Refunds take 5 days [1]. Goodwill up to 50 EUR [1, 2]. Not [9].")
    urls = {c.url for c in cited}
    assert len(cited) == len(urls)  # one citation per page
    assert cited[0].number == 1
    assert all(c.number in (1, 2) for c in cited)
    assert result.citations("No numbers here.") == ()


async def test_knowledge_file_is_a_one_document_base() -> None:
    text = "# FAQ\n## Returns\nUnused items within 30 days.\n## Accounts\nReset links last 1 hour.\n"
    index = knowledge_file_index(text, "knowledge.md", "", kb_cfg())
    kb = KnowledgeBase(kb_cfg(), None, fallback=index)
    await kb.refresh()
    result = await kb.retrieve("how long do reset links last?")
    # Two one-line sections share a chunk (no fact-less tiny chunks); the merged chunk holds both headings.
    assert result.covered and "Accounts:\nReset links last 1 hour." in result.hits[0].chunk.text
    assert result.sources[0].title == "FAQ"


async def test_no_index_adds_no_reference() -> None:
    kb = KnowledgeBase(kb_cfg(), None)
    await kb.refresh()
    result = await kb.retrieve("anything?")
    assert (result.mode, result.covered, result.prompt_block()) == ("none", False, "")
    assert not_covered_reply(result, "anything?", "I don't know.") is None  # nothing indexed: no claim


async def test_knowledge_file_alone_never_gives_the_fixed_answer() -> None:
    index = knowledge_file_index(
        "# FAQ\n## Returns\nUnused items within 30 days.\n", "knowledge.md", "", kb_cfg()
    )
    kb = KnowledgeBase(kb_cfg(not_covered_text="I don't know."), None, fallback=index)
    await kb.refresh()
    result = await kb.retrieve("Do you sell horse saddles?")
    assert not result.covered and not result.published
    assert kb.not_covered_answer(result, "Do you sell horse saddles?", fresh=True) is None
