"""The recurrent network, and the fast one-character stepper that mirrors its equations.

Imports nothing from charlstm.data, charlstm.training, charlstm.infer, charlstm.serve or
charlstm.cli: a model is built from a ModelConfig (charlstm.settings) alone.

    charrnn.py         CharRNN: embedding -> fused LSTM/GRU/RNN layers -> output layer
                       (one matrix, or factored through a rank for large vocabularies)
    dropout.py         locked dropout and weight drop that keep the fused kernels
    stepper.py         Stepper: the same equations, one character at a time, as matrix products
    stepper_script.py  the stepper's blocks compiled by TorchScript
"""
