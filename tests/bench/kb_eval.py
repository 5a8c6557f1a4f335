"""``make eval-kb``: retrieval quality of the support bot's sample help centre on its two question sets.

The project's own set (bots/support/kb-questions.toml) and the customer-worded set
(bots/support/kb-questions-customers.toml: questions in customers' words, sharing few content words with the
answering page; the mean overlap is printed). For each, lexical-only, vector-only and hybrid retrieval with
the embedded model (all-MiniLM-L6-v2 in process, nothing to start) or, when ``EMBEDDINGS_*`` is set, that
server: hit@1, hit@5 and MRR (over the top 5), answered (the answering page in the top 5 *and* judged
covered) and, for out-of-scope questions, refused (judged not covered), over all of them and over the
original ones alone (questions marked ``added`` came later, to make the share less coarse).

``--sweep`` also prints hybrid figures for other fusion weights, sentence-vector shares (with the customer set
in a development and a held-out half), fixed coverage lines and calibration quantiles (how the defaults were
chosen, and what any single line can reach). ``--cite`` adds the share of answers citing a right page
(extractive stand-in model, or the configured LLM with ``--llm``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from bots.loader import load_bot
from core.kb import calibrate, minilm, vectors
from core.kb import setup as kb_setup
from core.kb.embed import Embedder, make_embedder
from core.kb.index import KbIndex
from core.kb.ingest import ingest
from core.kb.lexical import tokenize
from core.kb.retrieve import KnowledgeBase
from core.kb.settings import KbConfig, load_embedding_settings
from core.kb.store import KbStore
from core.keys import KeySpace
from core.llm import LLMDelta, LLMRequest, OpenAILLM
from core.prompt import build_prompt
from core.redis_server import RedisServer
from core.settings import Settings, load_settings
from core.tokens import TokenCounter
from tests.fakes.openai_server import FakeOpenAI
from tests.kb.extractive import extractive

SUPPORT = Path(__file__).resolve().parents[2] / "bots" / "support"
SETS = {"project": SUPPORT / "kb-questions.toml", "customers": SUPPORT / "kb-questions-customers.toml"}


@dataclass
class QuestionSet:
    name: str
    answerable: list[dict[str, str]]
    outside: list[dict[str, str]]


def load_sets() -> list[QuestionSet]:
    out = []
    for name, path in SETS.items():
        every = tomllib.loads(path.read_text(encoding="utf-8"))["q"]
        out.append(QuestionSet(name, [q for q in every if q["page"]], [q for q in every if not q["page"]]))
    return out


def overlap(questions: list[dict[str, str]]) -> float:
    """Mean share of a question's distinct content words (stemmed, stop words out) found in its page."""
    shares = []
    for q in questions:
        words = set(tokenize(q["text"]))
        page = set(tokenize((SUPPORT / "kb" / q["page"]).read_text(encoding="utf-8")))
        shares.append(len(words & page) / max(1, len(words)))
    return float(np.mean(shares))


def _rank(hits: list[Any], page: str) -> int | None:
    for n, hit in enumerate(hits, 1):
        if hit.chunk.source.endswith(page):
            return n
    return None


async def measure(kb: KnowledgeBase, qs: QuestionSet, vector_only: bool = False) -> dict[str, float]:
    def covered(result: Any) -> bool:
        if not vector_only:
            return bool(result.covered)
        line = kb.min_similarity(kb.index) if kb.index is not None else 1.0
        return any(h.similarity is not None and h.similarity >= line for h in result.candidates)

    refused = refused_original = 0
    for q in qs.outside:
        no = not covered(await kb.retrieve(q["text"]))
        refused += no
        refused_original += no and "added" not in q
    ranks, answered = [], 0
    for q in qs.answerable:
        result = await kb.retrieve(q["text"])
        rank = _rank(list(result.candidates), q["page"])
        ranks.append(rank)
        answered += rank is not None and rank <= 5 and covered(result)
    n = len(ranks)
    return {
        "hit@1": sum(1 for r in ranks if r == 1) / n,
        "hit@5": sum(1 for r in ranks if r is not None and r <= 5) / n,
        "mrr": sum(1 / r for r in ranks if r is not None and r <= 5) / n,
        "answered": answered / n,
        "refused": refused / max(1, len(qs.outside)),
        "refused0": refused_original / max(1, sum("added" not in q for q in qs.outside)),
    }


class CachedEmbedder:
    """The eval asks the same questions many times: embed each once."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.model = inner.model
        self.where = inner.where
        self._cache: dict[str, list[float]] = {}

    async def embed(self, texts: Any, *, keep: bool = True) -> list[list[float]]:
        missing = [t for t in texts if t not in self._cache]
        if missing:
            self._cache.update(zip(missing, await self.inner.embed(missing), strict=True))
        return [self._cache[t] for t in texts]

    async def aclose(self) -> None:
        await self.inner.aclose()


def _kb(cfg: KbConfig, index: KbIndex, embedder: Any, **changes: Any) -> KnowledgeBase:
    # A generous deadline: the eval measures quality, not latency (make bench-kb does that).
    kb = KnowledgeBase(cfg.model_copy(update={"retrieve_deadline": 30.0, **changes}), None, embedder)
    kb.index = index
    return kb


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


async def build_index(cfg: KbConfig, embedder: Embedder | None) -> KbIndex:
    spec = load_bot("support")
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis", appendonly=False)
        await asyncio.to_thread(server.start)
        client = aioredis.Redis.from_url(server.url, decode_responses=True)
        try:
            store = KbStore(client, KeySpace("eval"))
            await ingest(
                cfg.sources,
                store=store,
                cfg=cfg,
                naming=kb_setup.naming(spec, cfg),
                screen=kb_setup.screen(spec, cfg),
                embedder=embedder,
            )
            index = await store.load()
        finally:
            await client.aclose()
            server.stop()
    assert index is not None
    return index


def _row(label: str, r: dict[str, float]) -> str:
    return (
        f"  {label:<13}{r['hit@1']:>7.3f}{r['hit@5']:>7.3f}{r['mrr']:>7.3f}{r['answered']:>10.3f}"
        f"{r['refused']:>9.3f}{r['refused0']:>11.3f}"
    )


async def main(args: argparse.Namespace) -> int:
    spec = load_bot("support")
    cfg = kb_setup.kb_config(spec)
    assert cfg is not None
    emb = load_embedding_settings()
    settings = load_settings()
    raw = make_embedder(settings, emb)
    if raw is None:
        print(f"no embeddings: {minilm.INSTALL_HINT}", file=sys.stderr)
        return 2
    embedder = CachedEmbedder(raw)
    sets = load_sets()
    try:
        index = await build_index(cfg, raw)
        print(f"knowledge-base eval: support help centre, {index.size} chunks")
        print(f"embeddings: {raw.model} ({raw.where})")
        print(
            f"coverage line: cosine {kb_setup_line(cfg, index):.3f} "
            f"({'[kb] min_similarity' if cfg.min_similarity is not None else 'calibrated at ingest'}), "
            f"fusion: convex, vector weight {cfg.vector_weight}"
        )
        for qs in sets:
            added = sum("added" in q for q in qs.outside)
            print(
                f"\n{qs.name} set: {len(qs.answerable)} questions, {len(qs.outside)} out of scope "
                f"({len(qs.outside) - added} original + {added} added in session 3), "
                f"mean content-word overlap with the answering page {overlap(qs.answerable):.2f}"
            )
            print(
                f"  {'mode':<13}{'hit@1':>7}{'hit@5':>7}{'MRR':>7}{'answered':>10}{'refused':>9}"
                f"{'(original)':>11}"
            )
            print(_row("lexical", await measure(_kb(cfg, index, None), qs)))
            print(_row("vector-only", await measure(_kb(cfg, index, embedder, vector_weight=1.0), qs, True)))
            print(_row("hybrid", await measure(_kb(cfg, index, embedder), qs)))
        if args.sweep:
            await sweep(cfg, index, embedder, sets)
        if args.cite:
            await cite(cfg, index, embedder, sets, args.llm)
    finally:
        await raw.aclose()
    return 0


def kb_setup_line(cfg: KbConfig, index: KbIndex) -> float:
    return _kb(cfg, index, None).min_similarity(index)


async def sweep(cfg: KbConfig, index: KbIndex, embedder: Any, sets: list[QuestionSet]) -> None:
    assert index.vectors is not None
    print("\nsweep (hybrid): fusion weight w and BM25 saturation K -> per set hit@1 hit@5")
    for weight in (0.6, 0.7, 0.8, 0.9):
        for saturation in (2.0, 5.0, 10.0):
            cells = []
            for qs in sets:
                kb = _kb(cfg, index, embedder, vector_weight=weight, lexical_saturation=saturation)
                r = await measure(kb, qs)
                cells.append(f"{qs.name} {r['hit@1']:.3f} {r['hit@5']:.3f}")
            print(f"  w={weight:.1f} K={saturation:<4g}: " + " | ".join(cells))
    await sentence_sweep(cfg, index, embedder, sets)
    await line_sweep(cfg, index, embedder, sets)
    print("sweep (hybrid): calibration quantile -> per set answered refused (refused, original questions)")
    for quantile in (0.02, 0.05, 0.1, 0.25, 0.5):
        calibrate.QUANTILE = quantile
        line = calibrate.calibrate(index.chunks, index.vectors)["min_similarity"]
        cells = []
        for qs in sets:
            r = await measure(_kb(cfg, index, embedder, min_similarity=line), qs)
            cells.append(f"{qs.name} {r['answered']:.3f} {r['refused']:.3f} ({r['refused0']:.3f})")
        print(f"  q={quantile:.2f} (cos {line:.3f}): " + " | ".join(cells))


def _halves(qs: QuestionSet) -> tuple[QuestionSet, QuestionSet]:
    """Every other question: a development half to choose on and a held-out half to check the choice."""
    dev = QuestionSet(f"{qs.name}-dev", qs.answerable[::2], qs.outside[::2])
    held = QuestionSet(f"{qs.name}-held-out", qs.answerable[1::2], qs.outside[1::2])
    return dev, held


async def sentence_sweep(cfg: KbConfig, index: KbIndex, embedder: Any, sets: list[QuestionSet]) -> None:
    """The sentence vectors' share in a candidate's score (0: chunk vectors only), each with its own
    calibrated line; the customer set in halves (choose on one, check on the other)."""
    assert index.vectors is not None
    print("sweep (hybrid): sentence share -> line; per set hit@1 hit@5 answered refused")
    saved = vectors.SENTENCE_SHARE
    parts = [sets[0], *_halves(sets[1])]
    try:
        for share in (0.0, 0.25, 0.5, 0.75, 1.0):
            vectors.SENTENCE_SHARE = share
            line = calibrate.calibrate(index.chunks, index.vectors)["min_similarity"]
            cells = []
            for qs in parts:
                r = await measure(_kb(cfg, index, embedder, min_similarity=line), qs)
                cells.append(
                    f"{qs.name} {r['hit@1']:.3f} {r['hit@5']:.3f} {r['answered']:.3f} {r['refused']:.3f}"
                    f" ({r['refused0']:.3f})"
                )
            print(f"  share={share:.2f} (line {line:.3f}): " + " | ".join(cells))
    finally:
        vectors.SENTENCE_SHARE = saved


async def line_sweep(cfg: KbConfig, index: KbIndex, embedder: Any, sets: list[QuestionSet]) -> None:
    """Every fixed line, not only calibrated ones: what any threshold on the best similarity can reach."""
    print("sweep (hybrid): fixed coverage line -> per set answered refused (refused, original questions)")
    for line in np.arange(0.30, 0.505, 0.02):
        cells = []
        for qs in sets:
            r = await measure(_kb(cfg, index, embedder, min_similarity=float(line)), qs)
            cells.append(f"{qs.name} {r['answered']:.3f} {r['refused']:.3f} ({r['refused0']:.3f})")
        print(f"  line {line:.2f}: " + " | ".join(cells))


async def cite(cfg: KbConfig, index: KbIndex, embedder: Any, sets: list[QuestionSet], use_llm: bool) -> None:
    fake = await FakeOpenAI().start()
    fake.responder = extractive
    try:
        if use_llm:
            llm_settings, model = load_settings(), load_settings().openai_model
        else:
            llm_settings = Settings(_env_file=None, openai_base_url=fake.base_url, openai_api_key="x")  # type: ignore[call-arg]
            model = "fake-extractive"
        llm = OpenAILLM(llm_settings)
        try:
            for qs in sets:
                share = await _cite_share(_kb(cfg, index, embedder), qs.answerable, llm, model)
                print(f"{qs.name}: answers citing a right page (hybrid): {share:.3f}")
        finally:
            await llm.aclose()
    finally:
        await fake.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true", help="also try other fusion weights and quantiles")
    parser.add_argument("--cite", action="store_true", help="also measure cited sources")
    parser.add_argument("--llm", action="store_true", help="with --cite: answer with the configured LLM")
    sys.exit(asyncio.run(main(parser.parse_args())))
