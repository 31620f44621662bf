"""Names that the exported graphs, the build, the runtime and the TensorRT plugin share.

One place for every string that must be the same on both sides of a file: the
ONNX graphs' files and I/O tensor names (written by :mod:`cotok_edge.export.onnx`,
read by the runtime's backends and the build's parity scoring) and the fused
TokenLearner plugin's identity (written into the ONNX node by
:mod:`cotok_edge.kernels.onnx_plugin`, registered by the C++ library built from
``kernels/csrc``, whose ``tokenlearner_plugin.h`` repeats it in C++, and loaded by
the TensorRT backend).

Pure Python, no imports: the device reads it without torch, onnx or TensorRT.

Graphs (``B`` the batch, ``L`` question tokens, ``A`` answer tokens, ``V`` the
vocabulary, ``N_s`` a stream's feature positions, ``d`` the model width)::

    video_encoder.onnx      s1, s2, s3 uint8 [B, 3, T_s, H_s, W_s] -> v_s1, v_s2, v_s3 [B, N_s, d]
    question_decoder.onnx   v_s* + question_ids int64 [B, L] + question_mask bool [B, L]
                            -> answer_ids int64 [B, A], answer_scores [B], answer_logits [B, A, V]
    question_decoder_explain.onnx   the decoder, plus maps_s* [B, K, S, N_s]
    question_decoder_plugin.onnx    the decoder with one plugin node per TokenLearner call
"""

from __future__ import annotations

__all__ = [
    "ANSWER_IDS",
    "ANSWER_LOGITS",
    "ANSWER_SCORES",
    "GRAPHS",
    "PLUGIN_LIBRARY",
    "PLUGIN_LIBRARY_FILE",
    "PLUGIN_NAME",
    "PLUGIN_NAMESPACE",
    "PLUGIN_ONNX_DOMAIN",
    "PLUGIN_VERSION",
    "QUESTION_DECODER",
    "QUESTION_DECODER_EXPLAIN",
    "QUESTION_DECODER_PLUGIN",
    "QUESTION_IDS",
    "QUESTION_MASK",
    "VIDEO_ENCODER",
    "engine_file",
    "feature_name",
    "is_feature_name",
    "maps_name",
    "onnx_file",
]

# Graphs: the manifest's ``onnx.graphs`` keys; each is ``<key>.onnx`` in the bundle.
VIDEO_ENCODER = "video_encoder"
QUESTION_DECODER = "question_decoder"
QUESTION_DECODER_EXPLAIN = "question_decoder_explain"
QUESTION_DECODER_PLUGIN = "question_decoder_plugin"
GRAPHS = (VIDEO_ENCODER, QUESTION_DECODER, QUESTION_DECODER_EXPLAIN, QUESTION_DECODER_PLUGIN)

# Tensor names of the question decoder (the video encoder's inputs are the stream names).
QUESTION_IDS = "question_ids"
QUESTION_MASK = "question_mask"
ANSWER_IDS = "answer_ids"
ANSWER_SCORES = "answer_scores"
ANSWER_LOGITS = "answer_logits"
_FEATURE_PREFIX = "v_"
_MAPS_PREFIX = "maps_"

# The fused TokenLearner TensorRT plugin (kernels/csrc/tokenlearner_plugin.h says the same).
PLUGIN_NAME = "CoTokTokenLearner"
# "2": the question's bias is added after the LayerNorm ("1" added it before).
PLUGIN_VERSION = "2"
PLUGIN_NAMESPACE = "cotok"
#: Domain of the plugin's ONNX node (its op_type is PLUGIN_NAME).
PLUGIN_ONNX_DOMAIN = "cotok"
#: What CMake builds (kernels/CMakeLists.txt, target cotok_tokenlearner_plugin).
PLUGIN_LIBRARY_FILE = "libcotok_tokenlearner_plugin.so"
#: Where a bundle keeps it, relative to the bundle folder.
PLUGIN_LIBRARY = f"plugins/{PLUGIN_LIBRARY_FILE}"


def feature_name(stream: str) -> str:
    """``"s1"`` -> ``"v_s1"``: the video encoder's output (the decoder's input) for a stream."""
    return f"{_FEATURE_PREFIX}{stream}"


def is_feature_name(name: str) -> bool:
    """Whether a tensor name is a stream's features (``v_<stream>``)."""
    return name.startswith(_FEATURE_PREFIX)


def maps_name(stream: str) -> str:
    """``"s1"`` -> ``"maps_s1"``: the explain decoder's TokenLearner maps of a stream."""
    return f"{_MAPS_PREFIX}{stream}"


def onnx_file(graph: str) -> str:
    """``"video_encoder"`` -> ``"video_encoder.onnx"`` (one of :data:`GRAPHS`)."""
    if graph not in GRAPHS:
        raise ValueError(f"graph: unknown {graph!r}; expected one of {', '.join(GRAPHS)}")
    return f"{graph}.onnx"


def engine_file(graph: str) -> str:
    """``"video_encoder"`` -> ``"video_encoder.engine"``: a graph's TensorRT engine."""
    if graph not in (VIDEO_ENCODER, QUESTION_DECODER):
        raise ValueError(f"graph: no engine for {graph!r}; engines are built for the two graphs")
    return f"{graph}.engine"
