"""Using a trained model: generating text, scoring it, and looking inside it.

Imports nothing from charlstm.training, so loading a model to sample or score never loads
the training stack. Files in the order a generation or a score runs through them:

    step_choice.py  which way to step a model on this machine: the Stepper or the module
    picking.py      the choice of each next character: temperature, top-k, top-p
    penalties.py    loop control settings: repetition, frequency, presence, no-repeat
    penalty_state.py  those penalties applied to a batch's logits, window by window
    novelty.py      copies of the training text: the report, and the --max-copy guard
    generate.py     generation: primes, stop strings, batches of samples
    beam.py         beam search: the likeliest continuations, deterministic
    batch_step.py   many generations joining and leaving one batch, each with its own picks
    precision.py    scoring's precision: bf16 where measured faster, once per model and device
    streams.py      a long text read as parallel warmed streams (whole-text scoring, evaluation)
    scoring.py      bits per character of a text, of each line
    char_probs.py   each character's log-probability, and the likeliest alternatives

and looking inside a model as it reads a text (`charlstm inspect`):

    states.py           the walk: every layer's states, gates and guesses per character
    properties.py       properties of a text from the text alone (bracket depth, ...)
    inspect.py          units against properties (correlations), gate saturation
    dump.py             the walk's states to a .npz file as they are computed
    saturation_plot.py  the gate saturation plot (matplotlib)
"""
