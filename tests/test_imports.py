"""Imports point one way: using a trained model never imports the training stack."""

from __future__ import annotations

import subprocess
import sys

TRAINING_STACK = ("charlstm.training.loop", "charlstm.training.setup", "charlstm.training.budget", "charlstm.training.optim",
                  "charlstm.training.step", "charlstm.training.guard", "charlstm.data.corpus",
                  "charlstm.data.batches")


def test_loading_and_sampling_do_not_import_training(trained_run):
    code = (
        "import sys, charlstm\n"
        f"lm = charlstm.load({str(trained_run)!r})\n"
        "text = lm.sample('the ', length=20, seed=1)\n"
        "assert len(text) == 20, text\n"
        "lm.score('the quick brown fox')\n"
        f"loaded = [m for m in {TRAINING_STACK!r} if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_model_knows_no_corpus():
    code = ("import sys, charlstm.model.charrnn; "
            "assert 'charlstm.data.batches' not in sys.modules and "
            "'charlstm.data.corpus' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
