"""The playground's "Look inside" view in headless chromium (the browser and server
fixtures of test_playground): text coloured by a unit, the --find ranking, and a hover
showing the value and the five likeliest next characters. Screenshot in artifacts/."""

from __future__ import annotations

import pytest

from test_playground import browser, page, screenshot, wait_for  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow

TEXT = "the quick brown fox jumps over the lazy dog.\na stitch in time saves nine.\n" * 3


def test_look_inside_colours_the_text_by_a_unit_and_hovering_shows_guesses(page):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    wait_for(page, lambda b: b.find_elements(By.CSS_SELECTOR, "#inside-layer option"))
    assert [o.text for o in page.find_elements(By.CSS_SELECTOR, "#inside-state option")] \
        == ["cell", "hidden"]
    page.find_element(By.ID, "inside-text").send_keys(TEXT)
    page.find_element(By.ID, "inside-find").click()
    buttons = wait_for(page, lambda b: b.find_elements(By.CSS_SELECTOR,
                                                       "#inside-ranking button"))
    assert "r=" in buttons[0].text
    spans = wait_for(page, lambda b: b.find_elements(By.CSS_SELECTOR, "#inside-out span"))
    assert "".join(s.get_attribute("textContent") for s in spans) == TEXT
    colours = {s.value_of_css_property("background-color") for s in spans}
    assert len(colours) > 5  # a scale, not one colour
    best = buttons[0].text.split()[0]  # the best unit of the first property, chosen
    assert page.find_element(By.ID, "inside-unit").get_attribute("value") == best.split(":")[1]

    page.execute_script("document.getElementById('inside').scrollIntoView()")
    ActionChains(page).move_to_element(spans[4]).perform()  # the 'q' of quick
    hover = wait_for(page, lambda b: "next:" in b.find_element(By.ID, "inside-hover").text
                     and b.find_element(By.ID, "inside-hover").text)
    assert hover.startswith('"q"') and f"unit {best}" in hover
    assert len(hover.split("next:")[1].split("%")) - 1 == 5  # five guesses
    screenshot(page, "playground-inside.png")

    buttons[-1].click()  # another unit from the ranking recolours the text
    wait_for(page, lambda b: b.find_element(By.ID, "inside-unit").get_attribute("value")
             == buttons[-1].text.split()[0].split(":")[1])
