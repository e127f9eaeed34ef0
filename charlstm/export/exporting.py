"""`export`: a trained model written in another format, to a path it may write.

Every format goes the same way: the checks that need no model (the format, --quantize),
the model read through `charlstm.load` (a factored head folded into the one matrix it
makes), the output path checked (a file charlstm did not write is never replaced), the
format's bytes built in memory (refused there if the model has something the format
cannot carry), and then written atomically, so a failure at any point leaves nothing
half-written at the output path.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType

from ..data.files import write_atomically
from ..errors import CheckpointError, UsageError

log = logging.getLogger(__name__)

# each format: its file name suffix, and the quantizations it takes
FORMATS = {"safetensors": (".safetensors", ()), "onnx": (".onnx", ()),
           "web": (".html", ("float16", "int8"))}
QUANTIZE = ("float16", "int8")


def check_request(fmt: str, quantize: str | None) -> None:
    """A UsageError unless the format is known and takes the quantization asked for."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}: choose one of "
                         f"{', '.join(FORMATS)}")
    if quantize is not None:
        if quantize not in QUANTIZE:
            raise UsageError(f"unknown quantization {quantize!r}: choose "
                             f"{' or '.join(QUANTIZE)}")
        if quantize not in FORMATS[fmt][1]:
            raise UsageError(f"the {fmt} format keeps full-precision weights and takes no "
                             "quantization; --quantize is for --format web")


def format_module(fmt: str) -> ModuleType:
    """The module that builds `fmt` (imported only when used: onnx needs its extra)."""
    if fmt == "onnx":
        from . import onnx as module
    elif fmt == "web":
        from . import web as module
    else:
        from . import safetensors as module
    return module


def check_target(path: Path, module: ModuleType, fmt: str) -> None:
    """A UsageError unless `path` is new, or an export of this format charlstm wrote."""
    if path.is_dir():
        raise UsageError(f"the output path {path} is a folder; give a file name")
    if path.exists() and not module.is_ours(path):
        raise UsageError(f"{path} exists and is not a charlstm {fmt} export; charlstm "
                         "never overwrites a file it did not write: choose another -o")


def export(source: str | Path, fmt: str, output: str | Path | None = None,
           quantize: str | None = None) -> Path:
    """Write the model at `source` (a checkpoint, run folder or safetensors export) as
    `fmt` to `output` (default: beside the checkpoint), and return the path written."""
    from .. import checkpoint
    from ..api import load

    check_request(fmt, quantize)
    checkpoint_path = checkpoint.find(Path(source))
    target = (Path(output).expanduser() if output
              else checkpoint_path.with_suffix(FORMATS[fmt][0]))
    if target.resolve() == checkpoint_path.resolve():
        raise UsageError(f"the output path {target} is the model being exported")
    module = format_module(fmt)
    check_target(target, module, fmt)
    lm = load(checkpoint_path, device="cpu")
    lm.model = lm.model.with_plain_head()  # a factored head as the one matrix it makes
    data = module.build(lm, quantize=quantize)
    try:
        write_atomically(target, data)
    except OSError as exc:
        raise CheckpointError(f"could not write {target}: {exc.strerror or exc}") from exc
    log.info("wrote %s (%s bytes)", target, f"{len(data):,}")
    return target
