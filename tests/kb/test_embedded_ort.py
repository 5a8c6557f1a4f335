"""The embedded model on onnxruntime (core/kb/minilm_ort.py) against the numpy forward pass it replaces: the
same vectors to float rounding, alone and in padded batches, so either runtime may fill the index and the
vector cache; and numpy when onnxruntime is not installed."""

from __future__ import annotations

import os
import zipfile
from typing import Any

import numpy as np
import pytest

from core.kb import minilm, minilm_ort
from core.kb.minilm import MiniLM, shared_model

pytestmark = pytest.mark.skipif(not minilm_ort.available(), reason="onnxruntime is not installed")

# Short and long, so a batch pads most rows (the longest ~100 word pieces: kept short for the numpy pass).
TEXTS = [
    "refund",
    "my parcel never arrived, what now",
    "Do you ship to Germany, and how long does it take to get there?",
    "The kettle leaks from the bottom when it is full: is that covered by the warranty or do I pay for it?",
    "How do I descale the kettle? " * 12,
]


@pytest.fixture(scope="module")
def weights() -> tuple[dict[str, Any], str]:
    from safetensors.numpy import load

    with zipfile.ZipFile(minilm._model_zip()) as zf:
        return load(zf.read("model.safetensors")), zf.read("tokenizer.json").decode("utf-8")


@pytest.fixture(scope="module")
def reference(weights: tuple[dict[str, Any], str]) -> MiniLM:
    return MiniLM(*weights, runtime="numpy")


@pytest.fixture(scope="module")
def ort_model() -> MiniLM:
    model = shared_model()  # what a process uses when onnxruntime is installed
    assert model.runtime == "onnxruntime"
    return model


def _close(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape
    assert float(np.abs(a - b).max()) < 1e-5
    assert float((a * b).sum(axis=1).min()) > 0.99999


def test_onnxruntime_gives_numpys_vectors_in_a_padded_batch(reference: MiniLM, ort_model: MiniLM) -> None:
    batch = ort_model.encode(TEXTS)  # one batch: every row but the longest is padded
    _close(batch, reference.encode(TEXTS))
    # Padding takes no part: each text alone gives its row of the batch.
    _close(np.stack([ort_model.encode([t])[0] for t in TEXTS]), batch)


def test_both_runtimes_match_sentence_transformers(reference: MiniLM, ort_model: MiniLM) -> None:
    # sentence-transformers' all-MiniLM-L6-v2 on its model card's example sentence, first 8 values.
    expected = [0.0676569, 0.0634959, 0.0487131, 0.0793050, 0.0374480, 0.0026528, 0.0393749, -0.0070985]
    for model in (reference, ort_model):
        vector = model.encode(["This is an example sentence"])[0]
        assert np.allclose(vector[:8], expected, atol=2e-5), model.runtime


def test_explicit_padding_and_an_all_padding_row(ort_model: MiniLM, reference: MiniLM) -> None:
    ids = np.array([[101, 7592, 2088, 102, 0, 0], [101, 7592, 102, 0, 0, 0]], dtype=np.int64)
    mask = (ids != 0).astype(np.float32)
    _close(ort_model._forward(ids, mask), reference._forward(ids, mask))
    # A row with no tokens at all (never produced by encode) gives zeros, not NaN, in both.
    empty = np.zeros((1, 4), dtype=np.float32)
    for model in (ort_model, reference):
        assert not np.isnan(model._forward(np.zeros((1, 4), dtype=np.int64), empty)).any()


def test_numpy_when_onnxruntime_is_missing(
    weights: tuple[dict[str, Any], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(minilm_ort, "available", lambda: False)
    assert minilm.default_runtime() == "numpy"
    model = MiniLM(*weights)
    assert model.runtime == "numpy"
    assert "numpy" in minilm.LocalEmbedder().where
    with pytest.raises(ValueError, match="unknown runtime"):
        MiniLM(*weights, runtime="tensorflow")


def test_the_committed_graph_is_what_the_code_writes() -> None:
    """core/kb/minilm.onnx is generated (`make onnx-graph`): a change to minilm_ort.py without rewriting it
    would run the old graph. It holds the structure only: no weight bytes (the session is handed them)."""
    written = minilm.onnx_graph()
    assert minilm_ort.GRAPH.read_bytes() == written, "run `make onnx-graph`"
    assert len(written) < 100_000


def test_the_runtime_starts_with_its_telemetry_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime 1.32's Linux wheels phone home (1DS, mobile.events.data.microsoft.com): every few seconds
    an idle bot resolved that host in new threads. The variable must be set before the runtime starts."""
    monkeypatch.delenv("ORT_DISABLE_TELEMETRY", raising=False)
    ort = minilm_ort._onnxruntime()
    assert ort.__name__ == "onnxruntime"
    assert os.environ["ORT_DISABLE_TELEMETRY"] == "1"
