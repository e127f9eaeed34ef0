"""The factored output layer (ModelConfig.head_rank, `train --head-rank`): the same full
softmax as one matrix, chosen for large vocabularies unless given, kept for a run's life
and by its fine-tuning children, and stored as one matrix by every export."""

from __future__ import annotations

import json

import pytest
import torch

import charlstm
from charlstm import checkpoint
from charlstm.data.vocab import Vocabulary
from charlstm.export.exporting import export
from charlstm.infer.generate import generate
from charlstm.model.charrnn import CharRNN, FactoredHead
from charlstm.settings import (Layer, ModelConfig, SettingError, auto_head_rank, resolve,
                               saved_layer)
from charlstm.training import finetune

from conftest import TINY_SETTINGS, TINY_TEXT, invoke
from exporting import TEXT, logits_of, save_random_model


def _model(cell: str = "lstm", vocab: int = 300, rank: int = 16) -> CharRNN:
    torch.manual_seed(0)
    return CharRNN(ModelConfig(vocab_size=vocab, model=cell, num_layers=2, hidden_size=32,
                               embed_size=8, dropout=0.0, head_rank=rank)).eval()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_a_factored_head_is_the_one_matrix_it_makes(cell):
    model = _model(cell)
    assert isinstance(model.head, FactoredHead)
    plain = model.with_plain_head()
    assert plain.config.head_rank == 0 and isinstance(plain.head, torch.nn.Linear)
    assert model.config.head_rank == 16  # the model itself is left as it was
    ids = torch.randint(300, (3, 20))
    with torch.no_grad():
        factored, _, _ = model(ids)
        whole, _, _ = plain(ids)
    assert torch.allclose(factored, whole, atol=1e-5)
    # 16 * (32 + 300) weights in the head instead of 32 * 300
    assert plain.num_parameters() - model.num_parameters() == 32 * 300 - 16 * (32 + 300)


def test_sampling_steps_the_factored_head_as_the_module_reads_it():
    model = _model(vocab=50, rank=8)
    vocab = Vocabulary.from_text("".join(chr(0x4E00 + i) for i in range(50)))
    with torch.no_grad():  # logits far apart, so that greedy picks are not near-ties
        model.head.out.weight.mul_(4)
    texts = ["".join(c[0] for c in generate(m, vocab, prime=vocab.chars[:5], length=200,
                                            temperature=0.0, fast=fast))
             for m, fast in ((model, True), (model, False), (model.with_plain_head(), True))]
    assert texts[0] == texts[1] == texts[2]
    assert len(texts[0]) == 200


def test_new_runs_get_a_rank_by_their_vocabulary_unless_told():
    def head_rank(vocab_size, explicit=None, preset=None, saved=None):
        model, _ = resolve(Layer(preset or {}, {}), Layer(explicit or {}, {"max_steps": 1}),
                           saved=saved, vocab_size=vocab_size)
        return model.head_rank

    # the default 512 units: half of them past 256 characters, else one matrix
    assert head_rank(2000) == head_rank(257) == auto_head_rank(257, 512) == 256
    assert head_rank(256) == head_rank(96) == head_rank(2) == 0
    assert head_rank(2000, {"hidden_size": 64}) == head_rank(33, {"hidden_size": 64}) == 32
    assert head_rank(32, {"hidden_size": 64}) == 0
    assert auto_head_rank(5, 1) == 1  # never 0 for a large vocabulary
    assert head_rank(2000, {"head_rank": 0}) == 0
    assert head_rank(30, {"head_rank": 7}) == 7
    # a fine-tuning run's first layer carries its parent's architecture
    assert head_rank(2000, preset={"head_rank": 0}) == 0
    # a resumed run keeps its own, including one saved before the setting existed
    old = saved_layer({"vocab_size": 2000, "model": "lstm", "num_layers": 1,
                       "hidden_size": 512, "embed_size": 64}, {"max_steps": 1})
    assert head_rank(None, saved=old) == 0
    with pytest.raises(SettingError, match="head_rank 64 differs"):
        head_rank(None, {"head_rank": 64}, saved=old)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_factored_parent_gives_old_characters_their_probabilities(cell):
    torch.manual_seed(0)
    old = Vocabulary.from_text("abcdefgh xyz.")
    parent = CharRNN(ModelConfig(len(old), cell, 1, 32, 8, 0.0, head_rank=6)).eval()
    with torch.no_grad():  # large output weights: a hard case for the new characters' bound
        parent.head.out.weight.mul_(20)
        parent.head.out.bias.normal_(0, 3)
    new = old.union(Vocabulary.from_text("A~éß€ abc"))
    child = CharRNN(ModelConfig(len(new), cell, 1, 32, 8, 0.0, head_rank=6)).eval()
    child.load_state_dict(finetune.child_weights(parent.state_dict(), old, new))
    text = "abc xyz. hgfedcba zyx " * 5
    with torch.no_grad():
        before = parent(torch.tensor([old.encode(text)]))[0].softmax(-1)[0]
        after = child(torch.tensor([new.encode(text)]))[0].softmax(-1)[0]
    old_ids = [new.encode(c)[0] for c in old.chars]
    assert (after[:, old_ids] / before).min().item() >= 1 - finetune.NEW_MASS - 1e-5
    assert (1 - after[:, old_ids].sum(-1)).max().item() <= finetune.NEW_MASS + 1e-6


def test_exports_store_one_matrix(tmp_path):
    from safetensors import safe_open

    source = save_random_model(tmp_path, "lstm", num_layers=1, head_rank=4)
    assert "head.down.weight" in checkpoint.load(source)["model"]
    path = export(source, "safetensors")
    with safe_open(str(path), "np") as file:
        assert {"head.weight", "head.bias"} <= set(file.keys())
        assert not any(name.startswith(("head.down", "head.out")) for name in file.keys())
        assert json.loads(file.metadata()["model_config"])["head_rank"] == 0
    original, exported = charlstm.load(source), charlstm.load(path)
    assert torch.allclose(logits_of(exported, TEXT), logits_of(original, TEXT), atol=1e-5)
    assert exported.sample("the ", length=60, seed=3) == original.sample("the ", length=60,
                                                                         seed=3)


def test_the_command_trains_shows_and_resumes_a_factored_head(tmp_path, monkeypatch):
    from conftest import isolate_cli

    isolate_cli(tmp_path, monkeypatch)
    (tmp_path / "tiny.txt").write_text(TINY_TEXT, encoding="utf-8")  # 29 characters
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in
             {**TINY_SETTINGS, "hidden_size": 24, "max_steps": 150}.items()]
    trained = invoke("train", "tiny.txt", "--out", "run", *flags)
    assert trained.exit_code == 0, trained.stderr
    assert "vocabulary 29 (output layer of rank 12)" in trained.stderr
    saved = checkpoint.load(tmp_path / "run" / "last.pt")
    assert saved["model_config"]["head_rank"] == 12 and "head.out.weight" in saved["model"]
    info = invoke("info", "run")
    assert info.exit_code == 0 and "output layer of rank 12" in info.stdout
    lm = charlstm.load(tmp_path / "run")
    assert lm.score(TINY_TEXT[:300])["bits_per_char"] < 1.0  # it learnt through the factors
    more = invoke("train", "tiny.txt", "--out", "run", "--resume", "--max-steps", "160")
    assert more.exit_code == 0, more.stderr
    assert checkpoint.load(tmp_path / "run" / "last.pt")["model_config"]["head_rank"] == 12
    refused = invoke("train", "tiny.txt", "--out", "run", "--resume", "--head-rank", "0",
                     "--max-steps", "170")
    assert refused.exit_code == 2 and "--head-rank 0 differs" in refused.stderr
