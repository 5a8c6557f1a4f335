"""Knowledge-base test helpers: a small help centre on disk, and ingest/open shortcuts on the test Redis."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from core.kb.embed import Embedder, OpenAIEmbedder
from core.kb.ingest import ingest
from core.kb.model import IngestReport
from core.kb.screen import Screen
from core.kb.settings import KbConfig, load_embedding_settings
from core.kb.sources import Naming
from core.kb.store import KbStore
from core.keys import KeySpace
from core.safety.redact import build_redactor
from tests.conftest import make_settings
from tests.fakes.openai_server import FakeOpenAI

PAGES = {
    "returns/refunds.md": """
        # Refunds
        Refunds go back to the original payment method within 5 working days after the return arrives.

        ## Goodwill
        Support can approve goodwill refunds up to 50 EUR.
        """,
    "shipping/times.md": """
        # Shipping times
        Standard shipping takes 3 to 5 working days within the EU.

        ## Express
        Express delivery costs 12 EUR and takes 1 to 2 working days.
        """,
    "accounts/password.md": """
        # Resetting your password
        Use Forgot password on the sign-in page. The reset link is valid for 1 hour.
        """,
    "billing/payments.md": """
        # Payment methods
        We accept Visa, Mastercard, PayPal and bank transfer. Cards are charged when the order ships.
        """,
}


def write_pages(root: Path, pages: dict[str, str] = PAGES) -> Path:
    for rel, text in pages.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return root


@pytest.fixture
def help_centre(tmp_path: Path) -> Path:
    return write_pages(tmp_path / "bot" / "kb")


def kb_cfg(**overrides: object) -> KbConfig:
    values: dict[str, object] = {"sources": ["kb"], "base_url": "https://example.com/help/"}
    values.update(overrides)
    return KbConfig.model_validate(values)


def fake_embedder(fake: FakeOpenAI) -> Embedder:
    settings = make_settings(openai_base_url=fake.base_url, openai_api_key="test-key")
    return OpenAIEmbedder(
        settings, load_embedding_settings(_env_file=None, embeddings_base_url=fake.base_url)
    )


async def run_ingest(
    client: aioredis.Redis,
    bot_dir: Path,
    targets: Sequence[str] = ("kb",),
    *,
    cfg: KbConfig | None = None,
    embedder: Embedder | None = None,
    bot: str = "testbot",
    redact: bool = True,
    collection: str = "",
) -> IngestReport:
    cfg = cfg or kb_cfg()
    redactor = build_redactor(["email", "phone", "card"], [], source="test") if redact else None
    return await ingest(
        list(targets),
        store=KbStore(client, KeySpace(bot)),
        cfg=cfg,
        naming=Naming(bot_dir, cfg.base_url, collection),
        screen=Screen(redactor, cfg.allow_flagged),
        embedder=embedder,
    )
