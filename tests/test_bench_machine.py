"""bench/machine.py: the command a benchmark record says it was made by."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import machine  # noqa: E402


def test_the_command_names_the_kernel_variables_it_ran_under(monkeypatch):
    for name in machine.KERNEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "argv", ["/somewhere/bench/sampling_speed.py", "--models",
                                      "gru,rnn", "--note", "two words"])
    plain = "python bench/sampling_speed.py --models gru,rnn --note 'two words'"
    assert machine.this_command() == plain
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    monkeypatch.setenv("UNRELATED", "1")
    command = machine.this_command()
    assert command == f"ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 {plain}"
    assert shlex.split(command)[-4:] == ["--models", "gru,rnn", "--note", "two words"]
