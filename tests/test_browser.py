"""End to end in real headless Chromium (Debian's `chromium`, driven by Playwright): type labels, upload an
image, read the bar chart; search from the keyboard; the page loads in under a second.  Saves screenshots
(to $LOCKTUNE_SCREENSHOTS, or the test's temporary folder)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from test_api import shapes_images, tiny_net
from test_serve import make_index, running_server

CHROMIUM = os.environ.get("LOCKTUNE_CHROMIUM", "/usr/bin/chromium")
# No network, no background services: the test must pass on a machine that reaches nothing.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file() and not shutil.which(CHROMIUM):
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: the browser test needs it. Install it with "
                    "`sudo apt-get install --no-install-recommends chromium` (scripts/install-data.sh does), "
                    "or set LOCKTUNE_CHROMIUM to a Chromium binary")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the Python package 'playwright' is missing: pip install -r requirements.txt")
    profile = tempfile.mkdtemp(prefix="locktune-chromium-")
    with sync_playwright() as p:
        # A persistent context gives Chromium a fresh --user-data-dir of our own.
        context = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                       args=CHROMIUM_ARGS, viewport={"width": 1200, "height": 900})
        yield context
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from locktune.api import LitModel
    from locktune.serve.app import create_app

    tmp = tmp_path_factory.mktemp("browser")
    model = LitModel(tiny_net())
    index = make_index(tmp, model)
    upload = tmp / "upload.png"
    shapes_images()["red"].resize((240, 180)).save(upload)
    with running_server(create_app(model, index)) as url:
        yield url, model, upload


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    """LOCKTUNE_SCREENSHOTS keeps the page's screenshots; otherwise pytest's own temporary folder
    (it keeps the last few runs' and removes older ones)."""
    chosen = os.environ.get("LOCKTUNE_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_classify_an_uploaded_image_against_typed_labels(browser, site, screenshots):
    from locktune.serve.app import TEMPLATES

    url, model, upload = site
    page = browser.new_page()
    page.goto(url + "/")
    page.wait_for_selector("#grid-choose .tile")  # the page has asked the API for the index
    load_ms = page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
    assert 0 < load_ms < 1000, f"page load took {load_ms:.0f} ms"

    labels = ["square", "circle", "tree", "red thing"]
    page.fill("#labels", "\n".join(labels))
    page.set_input_files("#file-classify", str(upload))  # choosing a file classifies it
    page.wait_for_function("document.querySelectorAll('#result-classify .pct').length === 4")
    shown = page.locator("#result-classify .bars > span:not(.pct)").all_inner_texts()
    percents = [float(t.rstrip("%")) for t in page.locator("#result-classify .pct").all_inner_texts()]
    expected = model.classify(upload, labels, TEMPLATES)
    assert shown == [label for label, _ in expected]
    assert percents == pytest.approx([100 * p for _, p in expected], abs=0.051)  # shown to one decimal
    assert sum(percents) == pytest.approx(100, abs=0.3)
    assert "Shares of 100%" in page.inner_text("#scores-meaning")
    assert page.locator("#preview-classify").is_visible()
    # Bars are drawn to scale: the widest is the most likely label.
    widths = page.eval_on_selector_all("#result-classify .bar", "bars => bars.map(b => b.getBoundingClientRect().width)")
    assert widths == sorted(widths, reverse=True) and widths[0] > 0

    # Ctrl+Enter in the label box classifies again, with the new labels.
    page.fill("#labels", "square, circle")
    page.press("#labels", "Control+Enter")
    page.wait_for_function("document.querySelectorAll('#result-classify .pct').length === 2")
    shot = screenshots / "classify.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}; page load {load_ms:.0f} ms")
    assert shot.stat().st_size > 10_000


def test_a_sigmoid_trained_model_s_scores_are_labelled_as_independent(browser, tmp_path):
    """train.loss=sigmoid: the bars show each label's own sigmoid probability, and the page says they need not
    add up to 100%."""
    from locktune.api import LitModel
    from locktune.serve.app import TEMPLATES, create_app
    from test_api import sigmoid_net

    model = LitModel(sigmoid_net())
    upload = tmp_path / "upload.png"
    shapes_images()["red"].resize((240, 180)).save(upload)
    labels = ["square", "circle", "tree"]
    with running_server(create_app(model)) as url:
        page = browser.new_page()
        page.goto(url + "/")
        page.fill("#labels", "\n".join(labels))
        page.set_input_files("#file-classify", str(upload))
        page.wait_for_function("document.querySelectorAll('#result-classify .pct').length === 3")
        percents = [float(t.rstrip("%")) for t in page.locator("#result-classify .pct").all_inner_texts()]
        note = page.inner_text("#scores-meaning")
    expected = model.classify(upload, labels, TEMPLATES)
    assert percents == pytest.approx([100 * p for _, p in expected], abs=0.051)
    assert sum(percents) > 120  # several labels match at once: nothing makes them share 100%
    assert "on its own" in note and "do not add up to 100%" in note


def test_search_and_describe_from_the_keyboard(browser, site, screenshots):
    url, _, _ = site
    page = browser.new_page()
    page.goto(url + "/")
    page.focus("#tab-classify")
    page.keyboard.press("ArrowRight")  # tabs follow the WAI-ARIA pattern
    assert page.get_attribute("#tab-search", "aria-selected") == "true"
    page.keyboard.type("a blue square")  # the search box took focus
    page.keyboard.press("Enter")
    page.wait_for_selector("#grid-search .tile")
    assert page.locator("#grid-search .tile").count() == 4
    # Tab to the first result and open it with Enter: image -> nearest labels.
    page.focus("#grid-search .tile >> nth=0")
    page.keyboard.press("Enter")
    page.wait_for_selector("#result-describe .bars span")
    assert page.get_attribute("#tab-describe", "aria-selected") == "true"
    assert page.locator("#grid-describe .tile").count() >= 1
    page.screenshot(path=str(screenshots / "describe.png"), full_page=True)
    # A bad request shows the server's message instead of failing silently.
    page.click("#tab-classify")
    page.click("#go-classify")
    page.wait_for_selector("#result-classify .error")
    assert "Choose an image first" in page.inner_text("#result-classify .error")
    page.fill("#labels", " , ")
    page.click("#grid-choose .tile >> nth=0")  # picking an indexed image classifies it
    page.wait_for_function("document.querySelector('#result-classify .error').textContent.includes('at least one label')")
