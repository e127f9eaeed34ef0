"""charlstm export --format web: the page, opened from disk in headless chromium, writes
what `charlstm sample` writes. Slow: a browser starts."""

from __future__ import annotations

from pathlib import Path

import pytest

import charlstm
from charlstm.export import web
from charlstm.export.exporting import export

from browser import chromium, screenshot, wait_for
from conftest import invoke
from exporting import save_random_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser():
    with chromium() as driver:
        yield driver


def open_page(browser, path: Path) -> None:
    browser.get(path.resolve().as_uri())  # file://: no server, no network
    wait_for(browser, lambda b: b.execute_script("return !!window.charlstmPage"))


def run_in_page(browser, **options) -> str:
    """The page's sampler's text for these options (CharLSTM.generate's)."""
    return browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "window.charlstmPage.run(arguments[0]).then(r => done(r.text));", options)


def greedy_sample(model: Path, prime: str, length: int = 500) -> str:
    result = invoke("sample", model, "-t", "0", "-p", prime, "-n", length, "--no-echo")
    assert result.exit_code == 0, result.stderr
    return result.stdout[:length]


def test_the_page_writes_what_charlstm_samples_at_temperature_0(browser, trained_run,
                                                                tmp_path):
    from selenium.webdriver.common.by import By

    page = export(trained_run, "web", tmp_path / "tiny.html")
    open_page(browser, page)
    browser.find_element(By.ID, "prime").send_keys("all that ")
    for field, value in (("temperature", "0"), ("length", "500")):
        browser.find_element(By.ID, field).clear()
        browser.find_element(By.ID, field).send_keys(value)
    browser.find_element(By.ID, "generate").click()
    wait_for(browser, lambda b: b.find_element(By.ID, "output")
             .get_attribute("data-state") == "done")
    screenshot(browser, "export-web.png")
    written = browser.find_element(By.ID, "generated").get_attribute("textContent")
    assert written == greedy_sample(trained_run, "all that ")
    assert "characters in" in browser.find_element(By.ID, "status").text


@pytest.mark.parametrize("model", ["lstm", "gru", "rnn"])
def test_every_cell_of_two_layers_matches_at_temperature_0(browser, tmp_path, model):
    source = save_random_model(tmp_path, model, num_layers=2, hidden_size=32)
    open_page(browser, export(source, "web"))
    written = run_in_page(browser, prime="the quick", temperature=0, length=500)
    assert written == greedy_sample(source, "the quick")


def test_a_seeded_sample_is_the_same_every_time(browser, trained_run, tmp_path):
    page = export(trained_run, "web", tmp_path / "tiny.html")
    open_page(browser, page)
    options = dict(prime="the ", temperature=1.2, topP=0.95, length=300)
    first = run_in_page(browser, seed=7, **options)
    assert run_in_page(browser, seed=7, **options) == first
    assert run_in_page(browser, seed=8, **options) != first
    open_page(browser, page)  # a fresh page: the same seed, the same text
    assert run_in_page(browser, seed=7, **options) == first
    no_prime = run_in_page(browser, prime="", temperature=1.0, seed=3, length=50)
    assert len(no_prime) == 50 and set(no_prime) <= set(charlstm.load(trained_run).vocab.chars)


@pytest.mark.parametrize("quantize", ["float16", "int8"])
def test_a_quantized_page_computes_with_the_dequantized_weights(browser, tmp_path, quantize):
    source = save_random_model(tmp_path, "lstm", num_layers=2, hidden_size=32)
    page = export(source, "web", tmp_path / f"{quantize}.html", quantize=quantize)
    assert page.stat().st_size < export(source, "web").stat().st_size
    lm = charlstm.load(source)
    lm.model.load_state_dict(web.dequantized(lm.model.state_dict(), quantize))
    expected = lm.sample("the quick", length=300, temperature=0)
    open_page(browser, page)
    assert run_in_page(browser, prime="the quick", temperature=0, length=300) == expected


def test_an_unknown_prime_character_is_said_in_the_page(browser, trained_run, tmp_path):
    from selenium.webdriver.common.by import By

    open_page(browser, export(trained_run, "web", tmp_path / "tiny.html"))
    run_in_page(browser, prime="the ☃", temperature=0, length=10)
    assert "never saw" in browser.find_element(By.ID, "status").text
    run_in_page(browser, prime="the ", temperature=-1, length=10)
    assert "temperature must be 0 or more" in browser.find_element(By.ID, "status").text
    run_in_page(browser, prime="the ", temperature=1, topP=0, length=10)
    assert "top-p must be in (0, 1]" in browser.find_element(By.ID, "status").text
