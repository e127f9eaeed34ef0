"""From a train request to a finished run (called `training`, not `train`: `charlstm.train`
is the Python API's function that starts one).

Files in the order a run goes through them:

    setup.py        a train request -> corpus, settings, run folder, Trainer
    presets.py      named presets, and how dropout follows the planned passes
    budget.py       fitting the model to --time on this machine, and the refit
    finetune.py     --init-from: the parent's weights and the union vocabulary
    rundir.py       run folders: numbering, which are charlstm's, config.json, metrics.jsonl, the run to resume
    distributed.py  torchrun's process group
    optim.py        AdamW and the learning-rate schedule
    loop.py         Trainer: the loop from the first step to the last save
    step.py         one step: forward, backward, clip, update
    guard.py        the divergence guard: skip, roll back, give up
    clock.py        the run's clock and its limits (time, steps, epochs)
    losses.py       the training-loss sums between reports
    gradients.py    the gradient norms before clipping and the clips, between reports
    evaluation.py   validation loss and milestone samples
    milestones.py   between steps: evaluate, record, save last.pt and best.pt, show a sample
    state.py        a run's state into its checkpoint and back
    callbacks.py    what a run reports: TrainingCallback, StepStats, TrainResult
    plot.py         the loss plot (loss.png), the gradient norm under it
"""
