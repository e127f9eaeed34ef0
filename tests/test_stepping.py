"""Tests for charlstm.model.stepper and stepping_choice: the hand-written step equals the trained
nn module's, and sampling steps the fastest way."""

from __future__ import annotations

import time

import pytest
import torch

from charlstm.infer import step_choice as stepping_choice
from charlstm.infer.step_choice import MODULE, SPLIT, WHOLE
from charlstm.model.charrnn import CharRNN
from charlstm.settings import ModelConfig
from charlstm.infer.generate import generate, sample
from charlstm.model.stepper import Stepper
from charlstm.data.vocab import Vocabulary

VOCAB = 23
KINDS = ("lstm", "gru", "rnn")


def make_model(kind: str, num_layers: int = 2, hidden_size: int = 16,
               seed: int = 0) -> CharRNN:
    """Dropout on, so a step that forgot eval semantics would show; weights spread wider
    than at initialisation, so the gates do not all sit near their middle."""
    torch.manual_seed(seed)
    model = CharRNN(ModelConfig(vocab_size=VOCAB, model=kind, num_layers=num_layers,
                                hidden_size=hidden_size, embed_size=8, dropout=0.3))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(3.0)
    return model.eval()


def as_tuple(state) -> tuple:
    return state if isinstance(state, tuple) else (state,)


def assert_same_state(got, expected) -> None:
    assert isinstance(got, tuple) == isinstance(expected, tuple)
    for g, e in zip(as_tuple(got), as_tuple(expected), strict=True):
        torch.testing.assert_close(g, e)


def step_both(model: CharRNN, stepper: Stepper, ids: torch.Tensor, state=None):
    """Step the module and the stepper through ids (B, T) from `state`, checking each step;
    the final state of the module."""
    module_state, stepper_state = state, state
    for t in range(ids.size(1)):
        expected, _, module_state = model(ids[:, t:t + 1], module_state)
        got, stepper_state = stepper(ids[:, t], stepper_state)
        torch.testing.assert_close(got, expected[:, -1])
        assert_same_state(stepper_state, module_state)
    return module_state


# ------------------------------------------------------------------ the arithmetic


@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("kind", KINDS)
def test_steps_equal_the_module(kind, num_layers):
    model = make_model(kind, num_layers)
    ids = torch.randint(VOCAB, (4, 50), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        step_both(model, Stepper(model), ids)


@pytest.mark.parametrize("kind", KINDS)
def test_steps_from_a_primed_state(kind):
    model = make_model(kind, num_layers=2, seed=2)
    generator = torch.Generator().manual_seed(3)
    prime = torch.randint(VOCAB, (3, 30), generator=generator)
    ids = torch.randint(VOCAB, (3, 40), generator=generator)
    with torch.inference_mode():
        _, _, state = model(prime)
        step_both(model, Stepper(model), ids, state)


@pytest.mark.parametrize("kind", KINDS)
def test_state_layout_is_the_modules(kind):
    model = make_model(kind, num_layers=3, hidden_size=8)
    with torch.inference_mode():
        _, state = Stepper(model)(torch.tensor([1, 2]), None)
    expected = model.initial_state(2)
    assert isinstance(state, tuple) == isinstance(expected, tuple)
    assert [s.shape for s in as_tuple(state)] == [e.shape for e in as_tuple(expected)]
    assert all(s.shape == (3, 2, 8) for s in as_tuple(state))


def test_a_state_from_elsewhere_is_copied_in_not_changed():
    """Only the stepper's own state steps in place; a state it did not return is read."""
    model = make_model("lstm")
    stepper = Stepper(model)
    ids = torch.tensor([4, 5])
    with torch.inference_mode():
        _, _, primed = model(torch.tensor([[1, 2, 3], [3, 2, 1]]))
        kept = tuple(s.clone() for s in primed)
        first, _ = stepper(ids, primed)
        first = first.clone()
        stepper(ids, stepper(ids, primed)[1])  # steps on from its own state
        again, _ = stepper(ids, primed)  # back to the primed state
        assert_same_state(primed, kept)
        torch.testing.assert_close(again, first)


@pytest.mark.parametrize("split_inputs", [False, True])
def test_batch_size_may_change_between_calls(split_inputs):
    model = make_model("gru")
    stepper = Stepper(model, split_inputs=split_inputs)
    with torch.inference_mode():
        for batch in (1, 5, 2, 1):
            ids = torch.randint(VOCAB, (batch, 10), generator=torch.Generator().manual_seed(batch))
            step_both(model, stepper, ids)
            assert stepper.parts == (2 if split_inputs and batch == 1 else 1)


def test_zero_state_is_reset_each_time():
    model = make_model("rnn")
    stepper = Stepper(model)
    ids = torch.tensor([7])
    with torch.inference_mode():
        first = stepper(ids, None)[0].clone()
        stepper(ids, stepper(ids, None)[1])
        torch.testing.assert_close(stepper(ids, None)[0], first)


def test_other_dtypes():
    model = make_model("lstm").double()
    ids = torch.randint(VOCAB, (2, 20), generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        stepper = Stepper(model)
        step_both(model, stepper, ids)
        assert stepper(ids[:, 0], None)[0].dtype == torch.float64


@pytest.mark.parametrize("kind", KINDS)
def test_a_new_stepper_sees_changed_weights_and_an_old_one_keeps_its_copy(kind):
    """The weights are copied into the stepper's layout: each generation builds its own,
    so milestone samples during training use the weights of the moment."""
    model = make_model(kind, num_layers=2)
    ids = torch.randint(VOCAB, (2, 6), generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        old = Stepper(model)
        before = old(ids[:, 0], None)[0].clone()
        for parameter in model.parameters():
            parameter.mul_(0.5)
        torch.testing.assert_close(old(ids[:, 0], None)[0], before)
        step_both(model, Stepper(model), ids)


def test_works_outside_inference_mode_with_weights_that_need_grad():
    model = make_model("gru", num_layers=2)
    ids = torch.randint(VOCAB, (2, 5), generator=torch.Generator().manual_seed(5))
    stepper = Stepper(model)
    with torch.no_grad():
        _, _, expected = model(ids)
    state = None
    for t in range(ids.size(1)):
        logits, state = stepper(ids[:, t], state)
    assert not logits.requires_grad
    assert_same_state(state, expected)


def run_both(model: CharRNN, stepper: Stepper, batch_size: int, seed: int) -> None:
    """Stepper.run from a primed state against the module's picks, argmax(noise +
    logits), and steps, one by one."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(12, batch_size, VOCAB, generator=generator) * 3  # (K, N, V)
    first_logits = torch.randn(batch_size, VOCAB, generator=generator)
    with torch.inference_mode():
        _, _, state = model(torch.randint(VOCAB, (batch_size, 6), generator=generator))
        ids = stepper.run(noise.clone(), first_logits, state)
        logits, expected = first_logits, []
        for t in range(noise.size(0)):
            expected.append((noise[t] + logits).argmax(-1))
            out, _, state = model(expected[-1][:, None], state)
            logits = out[:, -1]
    assert torch.equal(ids, torch.stack(expected))
    torch.testing.assert_close(stepper.logits, logits)
    assert_same_state(stepper.state, state)


@pytest.mark.parametrize("scripted", [True, False])
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("kind", KINDS)
def test_a_run_of_picks_and_steps_equals_the_module(kind, num_layers, scripted):
    """Stepper.run (TorchScript, or Python when scripted is off) picks argmax(noise +
    logits) and steps on it, as the module does step by step."""
    model = make_model(kind, num_layers, seed=4)
    stepper = Stepper(model)
    stepper.scripted = scripted
    run_both(model, stepper, 3, seed=9)


@pytest.mark.parametrize("scripted", [True, False])
@pytest.mark.parametrize("kind, num_layers, hidden_size, parts",
                         [("lstm", 2, 16, 2), ("gru", 2, 16, 2), ("rnn", 2, 16, 2),
                          ("gru", 3, 16, 2), ("rnn", 3, 7, 1)])  # 7 gate columns: whole
def test_input_products_in_halves_at_batch_1_equal_the_module(kind, num_layers,
                                                               hidden_size, parts, scripted):
    """With split_inputs, a batch of 1 makes each input product above the first layer
    as the two halves of its columns (when they are even); single steps and runs still
    equal the module."""
    model = make_model(kind, num_layers, hidden_size, seed=10)
    stepper = Stepper(model, split_inputs=True)
    stepper.scripted = scripted
    ids = torch.randint(VOCAB, (1, 12), generator=torch.Generator().manual_seed(11))
    with torch.inference_mode():
        step_both(model, stepper, ids)
    assert stepper.parts == parts
    run_both(model, stepper, 1, seed=12)


@pytest.mark.parametrize("kind", KINDS)
def test_a_run_goes_on_from_its_own_state(kind):
    """Two blocks give the ids one block gives: the second starts from the logits and
    state the first left, as generation's blocks do."""
    model = make_model(kind, seed=5)
    noise = torch.randn(10, 2, VOCAB, generator=torch.Generator().manual_seed(3))
    whole, halves = Stepper(model), Stepper(model)
    with torch.inference_mode():
        start = torch.zeros(2, VOCAB)
        expected = whole.run(noise.clone(), start, None)
        first = halves.run(noise[:4].clone(), start, None)
        second = halves.run(noise[4:].clone(), halves.logits, halves.state)
    assert torch.equal(torch.cat([first, second]), expected)


@pytest.mark.parametrize("scripted", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_runs_and_single_steps_mixed_equal_the_module(kind, scripted):
    """A run, a single step, then a run: each takes up the state (and the batched
    product of it that the one before ended on) where the last left it, as the module
    does step by step."""
    model = make_model(kind, seed=6)
    generator = torch.Generator().manual_seed(8)
    noise = torch.randn(7, 2, VOCAB, generator=generator) * 3  # (K, N, V)
    start = torch.randn(2, VOCAB, generator=generator)
    single = torch.tensor([3, 4])
    stepper = Stepper(model)
    stepper.scripted = scripted
    with torch.inference_mode():
        first = stepper.run(noise[:3].clone(), start, None)
        logits, _ = stepper(single, stepper.state)
        second = stepper.run(noise[3:].clone(), logits, stepper.state)
        expected, state, logits = [], None, start
        for t in range(noise.size(0)):
            if t == 3:  # the single step
                out, _, state = model(single[:, None], state)
                logits = out[:, -1]
            expected.append((noise[t] + logits).argmax(-1))
            out, _, state = model(expected[-1][:, None], state)
            logits = out[:, -1]
    assert torch.equal(torch.cat([first, second]), torch.stack(expected))
    torch.testing.assert_close(stepper.logits, logits)
    assert_same_state(stepper.state, state)


# -------------------------------------------------------------- generation uses it

TEXT = "the quick brown fox jumps over the lazy dog. 0123456789!"


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return Vocabulary.from_text(TEXT)


def text_model(vocab: Vocabulary, kind: str) -> CharRNN:
    torch.manual_seed(0)
    return CharRNN(ModelConfig(vocab_size=len(vocab), model=kind, num_layers=2,
                               hidden_size=32, embed_size=8, dropout=0.1)).eval()


@pytest.mark.parametrize("kind", KINDS)
def test_generate_gives_the_same_text_either_way(vocab, kind):
    model = text_model(vocab, kind)
    for prime, options in [("the ", {}), ("", dict(top_k=5, temperature=0.7)),
                           ("fox", dict(top_p=0.9, num_samples=3))]:
        fast, plain = (sample(model, vocab, prime, 80, fast=fast,
                              generator=torch.Generator().manual_seed(6), **options)
                       for fast in (True, False))
        assert fast == plain


def test_greedy_fast_generation_is_deterministic_and_equals_the_modules(vocab):
    model = text_model(vocab, "lstm")
    runs = [sample(model, vocab, "the qu", 60, temperature=0, num_samples=2, fast=True,
                   generator=torch.Generator().manual_seed(seed)) for seed in (0, 1)]
    assert runs[0] == runs[1]
    assert runs[0] == sample(model, vocab, "the qu", 60, temperature=0, fast=False) * 2


def test_one_prime_per_sample_on_the_fast_path(vocab):
    model = text_model(vocab, "gru")
    primes = ["the quick", "", "lazy dog. the lazy"]
    fast, plain = ([""] * 3, [""] * 3)
    for texts, use in ((fast, True), (plain, False)):
        for chars in generate(model, vocab, primes, 40, fast=use,
                              generator=torch.Generator().manual_seed(2)):
            for n, char in enumerate(chars):
                texts[n] += char
    assert fast == plain


def test_cpu_sampling_measures_the_faster_step_once_per_batch_size(vocab, monkeypatch):
    """Milestone samples during training call sample() and so get the choice too."""
    measured = []

    ways_to_time = stepping_choice._ways_to_time

    def ways_for(model, stepper, batch_size):
        measured.append(batch_size)
        return ways_to_time(model, stepper, batch_size)

    monkeypatch.setattr(stepping_choice, "_ways_to_time", ways_for)
    monkeypatch.setattr(stepping_choice, "_fastest", lambda ways: choice)
    options = dict(temperature=0.8, num_samples=2)
    texts = []
    for choice in ("module", "stepper"):
        model = text_model(vocab, "lstm")  # a model of its own: nothing measured yet
        texts.append(sample(model, vocab, "the", 30, **options,
                            generator=torch.Generator().manual_seed(1)))
        sample(model, vocab, "the", 30, **options)  # the same batch size: measured before
        sample(model, vocab, "the", 30, temperature=0.8)  # batch 1: measured anew
    assert measured == [2, 1, 2, 1]
    assert texts[0] == texts[1] == sample(model, vocab, "the", 30, **options, fast=False,
                                          generator=torch.Generator().manual_seed(1))


def test_the_measurement_picks_the_faster_way():
    def slow() -> int:
        time.sleep(0.005)
        return 1

    def quick() -> int:
        return 1

    def slow_but_many_steps() -> int:  # 0.2 ms a step
        time.sleep(0.01)
        return 50

    assert stepping_choice._fastest({"a": slow, "b": quick}) == "b"
    assert stepping_choice._fastest({"a": quick, "b": slow}) == "a"
    assert stepping_choice._fastest({"a": slow, "b": slow}, margin=0.5) == "a"  # a tie: the first
    assert stepping_choice._fastest({"a": slow, "b": slow_but_many_steps}) == "b"  # per step


def test_a_way_twice_as_slow_in_the_first_round_is_timed_no_more():
    calls = {"quick": 0, "slow": 0}

    def way(name: str, seconds: float):
        def call() -> int:
            calls[name] += 1
            time.sleep(seconds)
            return 1
        return call

    # 30 ms against 1: a loaded machine would have to stretch the quick sleep fifteenfold
    # before the slow way stopped looking twice as slow
    ways = {"slow": way("slow", 0.03), "quick": way("quick", 0.001)}
    assert stepping_choice._fastest(ways) == "quick"
    assert calls == {"slow": 2, "quick": 1 + stepping_choice.MEASURE_ROUNDS}  # a warm-up, a round


def test_the_timed_ways_go_on_from_their_own_state():
    """Each timing goes on from where the last left off, as generation runs once under
    way; from a new state a run makes one batched product more than it has steps."""
    model = make_model("gru")
    stepper = Stepper(model)
    with torch.inference_mode():
        ways = stepping_choice._ways_to_time(model, {WHOLE: stepper}, 1)
        steps = stepping_choice.MEASURE_STREAM_STEPS  # made once when the ways were set up
        steps += ways[WHOLE]() + ways[WHOLE]()
        assert ways[MODULE]() + ways[MODULE]() == 2 * stepping_choice.MEASURE_STEPS
        logits, state = torch.zeros(1, VOCAB), None  # greedy from the zero state
        for _ in range(steps):
            out, _, state = model(logits.argmax(-1)[:, None], state)
            logits = out[:, -1]
    assert_same_state(stepper.state, state)
    torch.testing.assert_close(stepper.logits, logits)


def test_at_batch_1_the_measurement_also_times_input_products_in_halves(monkeypatch):
    timed = []

    def fastest(ways):
        timed.append(list(ways))
        return SPLIT if SPLIT in ways else WHOLE

    monkeypatch.setattr(stepping_choice, "_fastest", fastest)
    model, single_layer = make_model("gru"), make_model("gru", num_layers=1)
    with torch.inference_mode():
        step = stepping_choice.fastest_step(model, 1)
        step_both(model, step, torch.tensor([[3, 1, 4, 1, 5]]))
        assert step.parts == 2
        stepping_choice.fastest_step(model, 3)
        stepping_choice.fastest_step(single_layer, 1)  # nothing to split
    assert timed == [[SPLIT, WHOLE, MODULE], [WHOLE, MODULE], [WHOLE, MODULE]]
    assert stepping_choice.chosen_step(model, 1) == SPLIT
    assert not stepping_choice.fastest_step(model, 3).split_inputs


@pytest.mark.parametrize("kind", KINDS)
def test_the_chosen_step_equals_the_module(kind):
    model = make_model(kind)
    ids = torch.randint(VOCAB, (3, 8), generator=torch.Generator().manual_seed(8))
    with torch.inference_mode():
        step_both(model, stepping_choice.fastest_step(model, 3), ids)


def test_a_state_for_another_batch_size_is_refused():
    model = make_model("lstm", num_layers=2, hidden_size=8)
    with torch.inference_mode(), pytest.raises(ValueError, match="shape"):
        Stepper(model)(torch.tensor([1, 2, 3]), model.initial_state(1))
