"""The embedded model's forward pass on onnxruntime: the same BERT encoder as core/kb/minilm.py's numpy pass,
written out as an ONNX graph (``onnx.helper``; nothing is exported or downloaded), then run by onnxruntime's
CPU kernels.

The graph's structure is a small file beside this module (``minilm.onnx``, written by ``make onnx-graph`` and
checked against this code by tests/kb/test_embedded_ort.py); its weights are external references that the
session is handed straight from the packaged safetensors arrays. So a serving process imports neither onnx
(1.2-1.7 s of CPU, most of it ml_dtypes) nor builds a 90 MB protobuf that onnxruntime would copy again.

Why: numpy runs the pass as ~150 separate array operations, each allocating its result, and BERT's exact GELU
(an erf polynomial in numpy) alone is a tenth of it; onnxruntime fuses LayerNorm, GELU and the bias adds into
its matrix products and reuses its buffers. Same arithmetic in float32: vectors agree with numpy's to ~1e-6
(tests/kb/test_embedded_ort.py), so either runtime's vectors may share an index and the vector cache.

One session per process (built with the model: core/kb/minilm.py ``shared_model``), on ONE intra-op and one
inter-op thread, for the same reason as core/kb/blas.py: a question's products have a dozen rows, and on a
busy 2-core machine a second (spinning) thread costs far more CPU than it saves.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
OPSET = 17  # LayerNormalization; onnxruntime >= 1.14 runs it
IR_VERSION = 8  # the IR that goes with opset 17: older runtimes refuse newer IRs


GRAPH = Path(__file__).with_name(
    "minilm.onnx"
)  # the structure, weights left out: `make onnx-graph` writes it


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None and GRAPH.is_file()


class _Arrays:
    """Walks the graph for its weights only (at run time: no onnx import, no protobuf of 90 MB)."""

    def __init__(self) -> None:
        self.arrays: dict[str, F32] = {}

    def const(self, name: str, value: Any) -> str:
        return name

    def external(self, name: str, array: F32) -> str:
        self.arrays[name] = array
        return name

    def op(self, kind: str, inputs: list[str], out: str, **attrs: Any) -> str:
        return out


class _Proto(_Arrays):
    """Writes the graph's structure; its weights are external references that the session is handed."""

    def __init__(self) -> None:
        super().__init__()
        from onnx import helper, numpy_helper  # dev only (`make onnx-graph`, tests/kb)

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list[Any] = []
        self.inits: list[Any] = []

    def const(self, name: str, value: Any) -> str:
        array = np.asarray(value)  # a scalar stays 0-d (ascontiguousarray would make it 1-d)
        self.inits.append(
            self.numpy_helper.from_array(array if array.ndim == 0 else np.ascontiguousarray(array), name)
        )
        return name

    def external(self, name: str, array: F32) -> str:
        from onnx import TensorProto

        tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=array.shape)
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", "weights"), ("offset", "0"), ("length", str(array.nbytes))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        self.inits.append(tensor)
        return super().external(name, array)

    def op(self, kind: str, inputs: list[str], out: str, **attrs: Any) -> str:
        self.nodes.append(self.helper.make_node(kind, inputs, [out], name=out, **attrs))
        return out


def _walk(b: _Arrays, weights: Mapping[str, Any], *, layers: int, heads: int, dims: int, eps: float) -> None:
    """The encoder, node by node: input_ids (batch, width) int64 and mask (batch, width) float32 (1 = token,
    0 = padding) -> "vectors" (batch, dims), unit length (mean over the mask, L2-normalised), as
    MiniLM._forward. Weights (some transposed or concatenated here) are external: the session gets them."""
    const, op = b.const, b.op

    def weight(name: str) -> F32:
        return np.ascontiguousarray(weights[name], dtype=np.float32)

    def layer_norm(x: str, prefix: str, out: str) -> str:
        g = b.external(out + ".g", weight(prefix + ".weight"))
        bias = b.external(out + ".b", weight(prefix + ".bias"))
        return op("LayerNormalization", [x, g, bias], out, axis=-1, epsilon=eps)

    def linear(x: str, w: F32, bias: F32, out: str) -> str:
        y = op("MatMul", [x, b.external(out + ".w", np.ascontiguousarray(w.T))], out + ".mm")
        return op("Add", [y, b.external(out + ".b", bias)], out)

    d = dims // heads
    one = const("one", np.array(1.0, np.float32))
    const("neg", np.array(-1e9, np.float32))  # padding's score before the softmax: no attention
    const("scale", np.array(1 / math.sqrt(d), np.float32))
    const("rsqrt2", np.array(1 / math.sqrt(2), np.float32))
    const("half", np.array(0.5, np.float32))
    const("tiny", np.array(1e-12, np.float32))
    const("heads_shape", np.array([0, 0, 3, heads, d], np.int64))
    const("back_shape", np.array([0, 0, dims], np.int64))
    const("zero_1d", np.array([0], np.int64))
    const("axis1", np.array([1], np.int64))
    const("axes12", np.array([1, 2], np.int64))
    const("axis2", np.array([2], np.int64))
    for i in range(3):
        const(f"i{i}", np.array(i, np.int64))

    # Embeddings: word + position (the first `width` rows) + token type 0, then LayerNorm.
    width = op("Shape", ["input_ids"], "width", start=1, end=2)
    pos_table = b.external("pos_table", weight("embeddings.position_embeddings.weight"))
    pos = op("Slice", [pos_table, "zero_1d", width], "pos")
    word_table = b.external("word_table", weight("embeddings.word_embeddings.weight"))
    x = op("Gather", [word_table, "input_ids"], "words")
    x = op("Add", [x, pos], "emb0")
    x = op("Add", [x, b.external("type0", weight("embeddings.token_type_embeddings.weight")[0])], "emb1")
    x = layer_norm(x, "embeddings.LayerNorm", "emb")
    pad = op("Sub", [one, "mask"], "pad")
    bias = op("Unsqueeze", [op("Mul", [pad, "neg"], "pad_neg"), "axes12"], "att_bias")  # (batch, 1, 1, width)

    for n in range(layers):
        p, a, t = f"encoder.layer.{n}.", f"encoder.layer.{n}.attention.", f"l{n}"
        qkv_w = np.concatenate([weight(f"{a}self.{c}.weight") for c in ("query", "key", "value")])
        qkv_b = np.concatenate([weight(f"{a}self.{c}.bias") for c in ("query", "key", "value")])
        qkv = op("Reshape", [linear(x, qkv_w, qkv_b, t + ".qkv"), "heads_shape"], t + ".qkv5")
        qkv = op("Transpose", [qkv], t + ".qkvT", perm=[2, 0, 3, 1, 4])  # (3, batch, heads, width, d)
        q = op("Gather", [qkv, "i0"], t + ".q", axis=0)
        k = op("Gather", [qkv, "i1"], t + ".k", axis=0)
        v = op("Gather", [qkv, "i2"], t + ".v", axis=0)
        s = op("MatMul", [q, op("Transpose", [k], t + ".kT", perm=[0, 1, 3, 2])], t + ".s")
        s = op("Add", [op("Mul", [s, "scale"], t + ".ss"), bias], t + ".sb")
        s = op("Softmax", [s], t + ".p", axis=-1)
        ctx = op("Transpose", [op("MatMul", [s, v], t + ".c")], t + ".cT", perm=[0, 2, 1, 3])
        ctx = op("Reshape", [ctx, "back_shape"], t + ".ctx")
        o = linear(ctx, weight(a + "output.dense.weight"), weight(a + "output.dense.bias"), t + ".o")
        x = layer_norm(op("Add", [o, x], t + ".r1"), a + "output.LayerNorm", t + ".x1")
        u = linear(
            x, weight(p + "intermediate.dense.weight"), weight(p + "intermediate.dense.bias"), t + ".up"
        )
        # Exact GELU, x * 0.5 * (1 + erf(x / sqrt 2)): the pattern onnxruntime fuses into one kernel.
        g = op("Add", [op("Erf", [op("Mul", [u, "rsqrt2"], t + ".g0")], t + ".g1"), one], t + ".g2")
        g = op("Mul", [op("Mul", [u, g], t + ".g3"), "half"], t + ".gelu")
        dn = linear(g, weight(p + "output.dense.weight"), weight(p + "output.dense.bias"), t + ".dn")
        x = layer_norm(op("Add", [dn, x], t + ".r2"), p + "output.LayerNorm", t + ".x2")

    # Mean over the mask, then L2 normalisation (numpy: the same, with the same floors).
    m3 = op("Unsqueeze", ["mask", "axis2"], "mask3")
    total = op("ReduceSum", [op("Mul", [x, m3], "masked"), "axis1"], "total", keepdims=0)
    count = op("Max", [op("ReduceSum", ["mask", "axis1"], "count0", keepdims=1), one], "count")
    pooled = op("Div", [total, count], "pooled")
    norm = op("Max", [op("ReduceL2", [pooled], "norm0", axes=[1], keepdims=1), "tiny"], "norm")
    op("Div", [pooled, norm], "vectors")


def graph_weights(
    weights: Mapping[str, Any], *, layers: int, heads: int, dims: int, eps: float
) -> dict[str, F32]:
    """The arrays the graph's external references name, from the packaged weights (numpy only)."""
    walk = _Arrays()
    _walk(walk, weights, layers=layers, heads=heads, dims=dims, eps=eps)
    return walk.arrays


def build_graph(weights: Mapping[str, Any], *, layers: int, heads: int, dims: int, eps: float) -> bytes:
    """The serialized graph without its weights (imports onnx: `make onnx-graph` and the tests only)."""
    from onnx import TensorProto

    proto = _Proto()
    _walk(proto, weights, layers=layers, heads=heads, dims=dims, eps=eps)
    h = proto.helper
    graph = h.make_graph(
        proto.nodes,
        "all-MiniLM-L6-v2",
        [
            h.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "width"]),
            h.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", "width"]),
        ],
        [h.make_tensor_value_info("vectors", TensorProto.FLOAT, ["batch", dims])],
        proto.inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model.SerializeToString()  # type: ignore[no-any-return]


def _onnxruntime() -> Any:
    """onnxruntime, its telemetry off. Since 1.32 its Linux wheels carry Microsoft's 1DS telemetry: every few
    seconds the process resolved ``mobile.events.data.microsoft.com`` in new threads (seen with strace on
    an idle bot), a call home Parley never makes and idle CPU. ``ORT_DISABLE_TELEMETRY`` is read when the
    runtime starts; ``disable_telemetry_events`` covers a runtime another import already started."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime as ort

    ort.disable_telemetry_events()
    return ort


class OrtForward:
    """``forward(ids, mask) -> (batch, dims) unit vectors`` on an onnxruntime session built once."""

    def __init__(self, model: bytes, arrays: Mapping[str, F32], *, threads: int = 1) -> None:
        ort = _onnxruntime()
        options = ort.SessionOptions()
        # The weights are handed over as they are (no copy into a protobuf and back): the graph names them.
        self._values = [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays.values()]
        options.add_external_initializers(list(arrays), self._values)
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Pool threads that spin between operations burn a core a busy host needs elsewhere (blas.py).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: its warnings are about graph rewrites
        self._session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def __call__(self, ids: npt.NDArray[np.int64], mask: F32) -> F32:
        (out,) = self._session.run(["vectors"], {"input_ids": ids, "mask": mask})
        result: F32 = np.asarray(out, dtype=np.float32)
        return result
