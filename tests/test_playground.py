"""The playground in a real browser: Debian's chromium and chromedriver, driven by
selenium, against a real `charlstm serve`. Screenshots are kept in artifacts/ (ignored by
git) for a person to look at. Slow: a browser and a server start."""

from __future__ import annotations

import pytest

from browser import chromium, screenshot, wait_for  # noqa: F401  (used by test_playground_inside)
from serving import Server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("fastapi")
    with chromium() as driver:
        yield driver


@pytest.fixture(scope="module")
def page(browser, trained_run, tmp_path_factory):
    server = Server(str(trained_run), "--max-tokens", "100000",
                    cwd=tmp_path_factory.mktemp("playground"))
    browser.get(server.url + "/")
    browser.charlstm_server = server  # to read its /v1/stats
    yield browser
    server.stop()


def test_typing_a_prime_and_generating_streams_text_in(page):
    from selenium.webdriver.common.by import By

    wait_for(page, lambda b: b.find_element(By.ID, "model").get_attribute("value") == "run")
    wait_for(page, lambda b: "LSTM 1 × 64" in b.find_element(By.ID, "card-facts").text)
    assert page.find_elements(By.CSS_SELECTOR, "#curve svg path")
    page.find_element(By.ID, "prime").send_keys("the quick ")
    length = page.find_element(By.ID, "length")
    length.clear()
    length.send_keys("100000")
    page.find_element(By.ID, "go").click()
    output = page.find_element(By.ID, "output")
    # text arrives while the stream is still open: Stop is enabled and text is partial
    first = wait_for(page, lambda b: len(output.text) > len("the quick ") + 5
                     and b.find_element(By.ID, "stop").is_enabled() and output.text)
    later = wait_for(page, lambda b: len(output.text) > len(first) + 20 and output.text)
    assert later.startswith(first) and first.startswith("the quick ")
    page.find_element(By.ID, "stop").click()
    wait_for(page, lambda b: b.find_element(By.ID, "go").is_enabled())
    stopped = output.text
    assert len(stopped) < len("the quick ") + 100000
    server = page.charlstm_server  # the server noticed and stopped generating
    wait_for(page, lambda b: server.get("/v1/stats")[1]["active_generations"] == 0)
    stats = server.get("/v1/stats")[1]
    assert stats["disconnects"] == 1 and stats["characters_generated"] < 100000
    assert page.find_element(By.ID, "generate-error").text == ""
    screenshot(page, "playground-generate.png")


def test_the_surprise_view_colours_each_character(page):
    from selenium.webdriver.common.by import By

    text = "the quick brown fox jumps over the lazy dgo."
    page.find_element(By.ID, "surprise-text").send_keys(text)
    page.find_element(By.ID, "read").click()
    spans = wait_for(page, lambda b: b.find_elements(By.CSS_SELECTOR, "#surprise-out span"))
    assert "".join(s.text or " " for s in spans) == text
    colours = {s.value_of_css_property("background-color") for s in spans}
    assert len(colours) > 5  # a scale, not one colour
    bits = [float(s.get_attribute("title").rsplit(": ", 1)[1].split()[0]) for s in spans]
    assert bits[text.index("dgo") + 2] > bits[text.index("quick") + 2]  # the typo glows
    page.execute_script("document.getElementById('surprise').scrollIntoView()")
    screenshot(page, "playground-surprise.png")
