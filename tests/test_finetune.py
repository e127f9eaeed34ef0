"""Fine-tuning (`train --init-from`): the union vocabulary, the child's step-0
probabilities, the parent's architecture kept, the parent recorded, and a real run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import charlstm
from charlstm import checkpoint
from charlstm.training import finetune
from charlstm.model.charrnn import CharRNN
from charlstm.training.setup import make_trainer
from charlstm.settings import FINE_TUNE_LR_RATIO, FINE_TUNE_WARMUP_STEPS, ModelConfig
from charlstm.data.vocab import Vocabulary
from charlstm.data.files import file_sha256

from conftest import TINY_SETTINGS, invoke, isolate_cli, one_line_error, run_cli

# new text: some of the parent's characters, and some it never saw (ASCII and not)
NEW_TEXT = "Zoë's quick fox: 42 ≠ 41!\nthe dog sleeps.\n" * 120
# the tiny settings without the architecture (the parent's) and the learning rate and
# warm-up (the fine-tuning defaults)
SMALL = {k: v for k, v in TINY_SETTINGS.items()
         if k not in ("num_layers", "hidden_size", "embed_size", "lr", "warmup_steps")}


def test_union_vocabulary_keeps_old_adds_new_in_code_point_order():
    parent = Vocabulary.from_text("banana split")
    text = Vocabulary.from_text("ÿzab ≠")
    union = parent.union(text)
    assert union.chars == "".join(sorted(set("banana split") | set("ÿzab ≠")))
    assert set(parent.chars) <= set(union.chars)  # characters the new text lacks stay
    assert union.counts[union.encode("≠")[0]] == 1  # counts are the new text's
    assert union.counts[union.encode("n")[0]] == 0  # the parent's own: none in the text
    assert union.chars.index(" ") < union.chars.index("z") < union.chars.index("ÿ")
    assert parent.union(parent).chars == parent.chars


def _probabilities(model: CharRNN, ids: list[int]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        logits, _, _ = model(torch.tensor([ids]))
    return logits.float().softmax(-1)[0]  # (T, V)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_child_gives_old_characters_the_parents_probabilities(cell):
    """The new rows take at most NEW_MASS of the probability, whatever the state: so
    each old character's probability is the parent's times a factor in [1-NEW_MASS, 1]
    (plus float32 rounding, about 1e-7 relative)."""
    torch.manual_seed(0)
    old = Vocabulary.from_text("abcdefgh xyz.")
    parent = CharRNN(ModelConfig(len(old), cell, 2, 32, 8, 0.0))
    with torch.no_grad():  # a parent with large output weights: a hard case for the bound
        parent.head.weight.mul_(20)
        parent.head.bias.normal_(0, 3)
    new = old.union(Vocabulary.from_text("A~éß€ abc"))
    child = CharRNN(ModelConfig(len(new), cell, 2, 32, 8, 0.0))
    child.load_state_dict(finetune.child_weights(parent.state_dict(), old, new))
    text = "abc xyz. hgfedcba zyx " * 5
    before = _probabilities(parent, old.encode(text))
    after = _probabilities(child, new.encode(text))
    old_ids = [new.encode(c)[0] for c in old.chars]
    ratio = after[:, old_ids] / before
    assert ratio.max().item() <= 1 + 1e-5
    assert ratio.min().item() >= 1 - finetune.NEW_MASS - 1e-5
    new_mass = 1 - after[:, old_ids].sum(-1)
    assert new_mass.max().item() <= finetune.NEW_MASS + 1e-6


def _parent(root: Path, text: str) -> Path:
    corpus = root / "parent.txt"
    corpus.write_text(text, encoding="utf-8")
    result = charlstm.train(str(corpus), out=root / "parent", corpora_dir=root / "corpora",
                            checkpoints_dir=root / "checkpoints", **TINY_SETTINGS)
    return result.run_dir


@pytest.fixture(scope="module")
def parent_run(tmp_path_factory) -> Path:
    from conftest import TINY_TEXT
    return _parent(tmp_path_factory.mktemp("parent"), TINY_TEXT)


def test_fine_tune_starts_from_the_parent_with_the_union_vocabulary(parent_run, tmp_path):
    new_corpus = tmp_path / "new.txt"
    new_corpus.write_text(NEW_TEXT, encoding="utf-8")
    trainer = make_trainer(str(new_corpus), out=tmp_path / "child", settings=SMALL,
                           corpora_dir=tmp_path / "corpora", init_from=parent_run)
    record = checkpoint.read(parent_run / "best.pt")
    old = record.vocabulary()
    vocab = trainer.corpus.vocab
    assert vocab.chars == "".join(sorted(set(old.chars) | set(NEW_TEXT)))
    # the corpus is read with the union's ids
    assert vocab.decode(trainer.corpus.tokens[:200].tolist()) == NEW_TEXT[:200]
    # fresh optimizer and schedule, the measured fine-tuning defaults, the parent's shape
    assert trainer.step == 0 and not trainer.optimizer.state
    assert trainer.config.lr == pytest.approx(record.train_config["lr"] * FINE_TUNE_LR_RATIO)
    assert trainer.config.warmup_steps == FINE_TUNE_WARMUP_STEPS
    assert trainer.model_config.hidden_size == record.model_config["hidden_size"]
    parent = CharRNN(record.model_settings())
    parent.load_state_dict(record.model)
    text = "the dog sleeps. a stitch in time"
    before = _probabilities(parent, old.encode(text))
    after = _probabilities(trainer.model.cpu(), vocab.encode(text))
    old_ids = [vocab.encode(c)[0] for c in old.chars]
    torch.testing.assert_close(after[:, old_ids], before, rtol=1e-5 + finetune.NEW_MASS,
                               atol=1e-7)
    # explicit options win over the fine-tuning defaults
    again = make_trainer(str(new_corpus), out=tmp_path / "other",
                         settings={**SMALL, "lr": 0.02, "warmup_steps": 7},
                         corpora_dir=tmp_path / "corpora", init_from=parent_run)
    assert (again.config.lr, again.config.warmup_steps) == (0.02, 7)
    assert again.corpus.tokens.tolist() == trainer.corpus.tokens.tolist()  # cache reused


@pytest.mark.parametrize("args, named", [
    (["--hidden-size", "32"], "--hidden-size"),
    (["--num-layers", "2"], "--num-layers"),
    (["--embed-size", "8"], "--embed-size"),
    (["--model", "gru"], "--model"),
    (["--preset", "medium"], "preset 'medium'"),
])
def test_size_options_contradicting_the_parent_are_usage_errors(parent_run, tmp_path,
                                                                monkeypatch, args, named):
    isolate_cli(tmp_path, monkeypatch)
    (tmp_path / "new.txt").write_text(NEW_TEXT, encoding="utf-8")
    done = invoke("train", "new.txt", "--init-from", parent_run, *args, "--max-steps", "5")
    assert done.exit_code == 2
    assert named in one_line_error(done.stderr)
    assert not (tmp_path / "checkpoints").exists()


def test_a_fine_tune_run_through_the_cli_trains_records_and_shows_its_parent(
        parent_run, tmp_path, monkeypatch):
    isolate_cli(tmp_path, monkeypatch)
    (tmp_path / "new.txt").write_text(NEW_TEXT, encoding="utf-8")
    common = ["--batch-size", "8", "--seq-len", "16", "--eval-every", "20",
              "--sample-length", "0", "--precision", "fp32", "--device", "cpu", "-q"]
    done = run_cli("train", "new.txt", "--init-from", str(parent_run), "--out", "child",
                   "--max-steps", "60", *common, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr.decode()
    history = [json.loads(line) for line in (tmp_path / "child/metrics.jsonl").open()]
    assert history[-1]["val_loss"] < history[0]["val_loss"]  # it learns the new text
    parent_file = parent_run / "best.pt"
    summary = json.loads(invoke("info", "child", "--json").stdout)
    assert summary["parent"] == {"path": str(parent_file.resolve()),
                                 "sha256": file_sha256(parent_file),
                                 "step": checkpoint.read(parent_file).step}
    assert summary["step"] == 60
    shown = invoke("info", "child").stdout
    assert f"fine-tuned from  {parent_file.resolve()}" in shown
    # the same command with --resume continues it, with its parent and its vocabulary
    resumed = invoke("train", "new.txt", "--init-from", parent_run, "--out", "child",
                     "--resume", "--max-steps", "80", *common)
    assert resumed.exit_code == 0, resumed.stderr
    record = checkpoint.read(tmp_path / "child/last.pt")
    assert record.step == 80 and record.parent == summary["parent"]
    # ... but not as the fine-tuning of another model
    other = invoke("train", "new.txt", "--init-from", "child/best.pt", "--out", "child",
                   "--resume", "--max-steps", "90", *common)
    assert other.exit_code == 2
    assert "not a fine-tuning of" in one_line_error(other.stderr)


def test_a_checkpoint_without_a_parent_still_loads(trained_run):
    record = checkpoint.read(trained_run / "last.pt")
    assert record.parent is None
    assert record.summary(trained_run / "last.pt")["parent"] is None


def test_remap_to_a_larger_vocabulary_in_pieces_and_cached(tmp_path, monkeypatch):
    """Ids move to the union's, the dtype widens past 256 characters, the file is written
    in pieces (a piece here is 1,000 ids) and a complete file is reused as it is."""
    from charlstm.data import encoding

    old = Vocabulary("".join(map(chr, range(0x20, 0x20 + 200))))
    new = old.union(Vocabulary("".join(map(chr, range(0x100, 0x100 + 100)))))
    assert (old.dtype, new.dtype) == (np.uint8, np.uint16)
    tokens = np.random.default_rng(0).integers(0, len(old), 5_500).astype(np.uint8)
    monkeypatch.setattr(encoding, "CHUNK_BYTES", 1_000)
    target = tmp_path / "cache" / "remapped.tokens"
    remapped = encoding.remap(tokens, old, new, target)
    assert remapped.dtype == np.uint16
    assert new.decode(remapped.tolist()) == old.decode(tokens.tolist())
    assert np.array_equal(encoding.remap(tokens, old, new, None), remapped)
    written = target.stat().st_mtime_ns
    assert np.array_equal(encoding.remap(tokens, old, new, target), remapped)
    assert target.stat().st_mtime_ns == written
