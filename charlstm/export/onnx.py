"""A model as one ONNX graph: characters and state in, logits and state out.

    inputs   ids     int64 (batch, time)          character ids
             h       float32 (layers, batch, H)   the state (zeros to start)
             c       float32 (layers, batch, H)   an LSTM's cell state (LSTM only)
    outputs  logits  float32 (batch, time, V)     the next character's logits after each
             h_out, c_out                         the state after the last character

`time` is free, so the one graph is both the one-character step (time 1: feed back
h_out and c_out with the next character, as a sampler does) and the whole-sequence forward
(time T: a prime, or a text to score, in one call). One graph, not two, so the weights are
stored once. The vocabulary and the architecture ride in the model's metadata
(`metadata_props`: charlstm_format, charlstm_format_version, model_config, vocab, as in the
safetensors export), which onnxruntime reads as
`session.get_modelmeta().custom_metadata_map`.

Built with torch's TorchScript-based exporter (`dynamo=False`), at opset OPSET: it turns
nn.LSTM/GRU/RNN into ONNX's own LSTM/GRU/RNN operators, which onnxruntime runs as fused
kernels (docs/export.md says which versions were checked). Needs the `onnx` package
(charlstm's [onnx] extra) to write the metadata; onnxruntime only to run the result.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import UsageError
from ..model.charrnn import CharRNN
from .safetensors import source_of

try:  # this module is imported only to export to ONNX, which needs the package
    import onnx
except ImportError as exc:
    raise UsageError("--format onnx needs the onnx package: pip install onnx onnxruntime "
                     "(charlstm's [onnx] extra)") from exc

FORMAT = "charlstm-onnx"
FORMAT_VERSION = 1
OPSET = 17
# protobuf writes at most 2 GiB in one message; the weights must fit with room to spare
MAX_WEIGHT_BYTES = 2**31 - 2**26


class SequenceForward(nn.Module):
    """The model as the graph's signature: (ids, h[, c]) -> (logits, h_out[, c_out])."""

    def __init__(self, model: CharRNN):
        super().__init__()
        self.model = model
        self.lstm = model.config.model == "lstm"

    def forward(self, ids: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None = None):
        logits, _, state = self.model(ids, (h, c) if self.lstm else h)  # (B, T, V)
        return (logits, *state) if self.lstm else (logits, state)


def names(lstm: bool) -> tuple[list[str], list[str]]:
    """The graph's input and output names."""
    if lstm:
        return ["ids", "h", "c"], ["logits", "h_out", "c_out"]
    return ["ids", "h"], ["logits", "h_out"]


def build(lm, quantize: str | None = None) -> bytes:
    """The ONNX file of a loaded model (a charlstm.LanguageModel)."""
    model, config = lm.model, lm.config
    weight_bytes = 4 * sum(p.numel() for p in model.parameters())
    if weight_bytes > MAX_WEIGHT_BYTES:
        raise UsageError(f"the model's weights take {weight_bytes / 2**30:.1f} GiB; one "
                         "ONNX file holds under 2 GiB: use --format safetensors")
    lstm = config.model == "lstm"
    inputs, outputs = names(lstm)
    state = torch.zeros(config.num_layers, 1, config.hidden_size)
    example = (torch.zeros(1, 2, dtype=torch.long), state) + ((state,) if lstm else ())
    axes = {"ids": {0: "batch", 1: "time"}, "logits": {0: "batch", 1: "time"}}
    axes.update({name: {1: "batch"} for name in inputs[1:] + outputs[1:]})
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the exporter's deprecation and batch-size notes
        warnings.simplefilter("ignore")
        torch.onnx.export(SequenceForward(model).eval(), example, buffer, dynamo=False,
                          opset_version=OPSET, input_names=inputs, output_names=outputs,
                          dynamic_axes=axes)
    proto = onnx.load_from_string(buffer.getvalue())
    metadata = {"charlstm_format": FORMAT, "charlstm_format_version": str(FORMAT_VERSION),
                "model_config": json.dumps(config.to_dict()),
                "vocab": json.dumps(lm.vocab.to_dict()),
                "source": json.dumps(source_of(lm.checkpoint))}
    onnx.helper.set_model_props(proto, metadata)
    proto.producer_name = "charlstm"
    return proto.SerializeToString()


def is_ours(path: Path) -> bool:
    """Whether `path` is a charlstm ONNX export (one an export may replace)."""
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - anything unreadable is not ours
        return False
    return any(p.key == "charlstm_format" and p.value == FORMAT
               for p in proto.metadata_props)
