"""A completion's choices with OpenAI's extras: logprobs, echo, best_of; and novelty.

Once a completion has generated `best_of` candidates for each prompt, `finish` scores
each (the prompt and its text read exactly, as `score --per-char` does: a character's
log-probability under the model, the sampling options aside), keeps the `n` with the
highest log-likelihood per character (OpenAI's rule; in generation order on ties), and
writes each choice's `logprobs` the way OpenAI's legacy completions do, with characters
as tokens: `tokens`, `token_logprobs` (natural logs), `top_logprobs` (the `logprobs`
likeliest characters at each place) and `text_offset` (from the start of the prompt).
With `echo` the prompt leads the text and its characters lead the lists (the first
one's log-probability is that of the corpus's character frequencies, so the list sums
to minus the text's score in nats). `novelty` adds the copy report of each choice's
generated text. These need the whole text, so they are refused with `stream`.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from ..api import LanguageModel
from ..errors import CharlstmError
from .completion import Completion
from .errors import APIError
from .options import ServeOptions
from .requests import LOGPROBS, CompletionRequest
from ..infer.novelty import check_min_length
from ..ranges import SAMPLES


def check_extras(body: CompletionRequest, prompts: list[str], options: ServeOptions) -> int:
    """The candidates to generate per prompt (best_of, else n), once the extras are
    within their limits."""
    best_of = body.best_of if body.best_of is not None else body.n
    for field, value, allowed in (("best_of", body.best_of, SAMPLES),
                                  ("logprobs", body.logprobs, LOGPROBS)):
        if value is not None and value not in allowed:
            raise APIError(400, allowed.refusal(f"'{field}'", value), field)
    if best_of < body.n:
        raise APIError(400, f"best_of ({best_of}) must be at least n ({body.n})", "best_of")
    if body.novelty_min is not None:
        check_min_length(body.novelty_min)
    if body.stream:
        for field, used in (("best_of", best_of > body.n), ("logprobs", body.logprobs is not None),
                            ("echo", body.echo), ("novelty", body.novelty)):
            if used:
                raise APIError(400, f"'{field}' needs the whole text, so it cannot be "
                               "streamed; drop 'stream' or it", field)
    samples = best_of * len(prompts)
    if samples > options.max_samples:
        raise APIError(400, f"{len(prompts)} prompt(s) x best_of={best_of} is {samples} "
                       f"samples, more than this server's limit of {options.max_samples} per "
                       "request (charlstm serve --max-n)", "best_of", "limit_exceeded")
    return best_of


async def open_copy_index(lm: LanguageModel, body: CompletionRequest) -> None:
    """Open (or build, the first time) the training text's copy index in a worker
    thread; a model whose corpus cannot be found is a 400 naming the field."""
    try:
        await run_in_threadpool(lm.copy_index)
    except CharlstmError as error:
        raise APIError(400, str(error), "max_copy" if body.max_copy is not None
                       else "novelty", "corpus_unavailable") from None




def needs_finishing(body: CompletionRequest, best_of: int) -> bool:
    return body.logprobs is not None or body.echo or body.novelty or best_of > body.n


def finish(lm: LanguageModel, completion: Completion, prompts: list[str],
           body: CompletionRequest, best_of: int) -> list[dict]:
    """The choices, n per prompt, with their extras (see the module docstring)."""
    scoring = body.logprobs is not None or best_of > body.n
    choices = []
    for p, prompt in enumerate(prompts):
        candidates = []
        for i in range(p * best_of, (p + 1) * best_of):
            text = completion.texts[i]
            found = lm.char_log_probs(prompt + text, body.logprobs or 0) if scoring else None
            mean = (float(found.nats[len(prompt):].mean()) if found is not None and text
                    else 0.0)
            candidates.append((mean, i, found))
        if best_of > body.n:
            candidates = sorted(candidates, key=lambda c: (-c[0], c[1]))[:body.n]
        for _, i, found in candidates:
            choices.append(_choice(lm, body, prompt, completion, i, found, len(choices)))
    return choices


def _choice(lm: LanguageModel, body: CompletionRequest, prompt: str, completion: Completion,
            i: int, found, index: int) -> dict:
    text = completion.texts[i]
    choice = {"text": (prompt if body.echo else "") + text, "index": index,
              "logprobs": None, "finish_reason": completion.finish_reasons[i]}
    if body.logprobs is not None:
        start, whole = (0 if body.echo else len(prompt)), prompt + text
        choice["logprobs"] = {
            "tokens": list(whole[start:]),
            "token_logprobs": found.nats[start:].tolist(),
            "top_logprobs": [dict(zip(chars, nats)) for chars, nats in
                             zip(found.top_chars[start:], found.top_nats[start:].tolist())],
            "text_offset": list(range(start, len(whole)))}
    if body.novelty:
        choice["novelty"] = lm.novelty(text, body.novelty_min) if body.novelty_min else \
            lm.novelty(text)
    return choice
