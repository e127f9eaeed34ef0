"""Using a trained model: generating text and scoring it.

Imports nothing from charlstm.training, so loading a model to sample or score never loads
the training stack. Files in the order a generation or a score runs through them:

    step_choice.py  which way to step a model on this machine: the Stepper or the module
    picking.py      the choice of each next character: temperature, top-k, top-p
    generate.py     generation: primes, stop strings, batches of samples
    batch_step.py   many generations joining and leaving one batch, each with its own picks
    streams.py      a long text read as parallel warmed streams (whole-text scoring, evaluation)
    scoring.py      bits per character of a text, of each line
"""
