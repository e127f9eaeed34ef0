"""A trained model carried out of charlstm: safetensors, ONNX, and one web page.

Imports charlstm.model and charlstm.data (and the top-level api and checkpoint to read a
model), never charlstm.training, charlstm.infer, charlstm.serve or charlstm.cli.
`charlstm.checkpoint` imports `safetensors.py` to read an export back (the one place model
files are read). Files in the order an export runs through them:

    exporting.py   export(): the checks every format shares, the path, the atomic write
    safetensors.py weights + architecture and vocabulary as metadata; read back by charlstm
    onnx.py        one ONNX graph: characters and state in, logits and state out
    web.py         one self-contained HTML page with the weights inside (float32/16, int8)
    page.html      that page's template: the form, the streaming loop
    sampler.js     the page's sampler in plain JavaScript: the LSTM/GRU/RNN step, picking
"""

from .exporting import export

__all__ = ["export"]
