"""The page in a real browser: Debian's chromium driven by Playwright (never a downloaded browser) draws a
"1" with mouse events; the prediction, the 28x28 input, the feature maps and Grad-CAM appear, and the layers
as the lecture names them (C1 ... output) with shapes, weights, their arithmetic on a click, and the fully
connected layers' activations as bars; screenshots
at desktop and phone width go into the test's own folder. With two models served, the picker shows and
sends to the model picked; the upload button sends the picture itself."""

import shutil
import time

import pytest
from PIL import Image

from cnnzoo.data import load_dataset

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="needs Debian's chromium (apt-get install chromium; scripts/install-system-deps.sh)",
)


@pytest.fixture(scope="module")
def server_url(predictor, serving):
    with serving({"lenet5-mnist": predictor}) as address:
        yield f"http://{address}"


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def expect(locator):
    """Playwright's waiting assertions. Not `page.wait_for_function`: the page's CSP forbids eval, which a
    string predicate needs as soon as it is not true at once (an EvalError then, not a wait)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def wait_until(page, expression: str, timeout: float = 60) -> None:
    """Poll a JavaScript expression (page.evaluate runs it through the debugger protocol, past the CSP)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"never true: {expression}"
        time.sleep(0.05)


def draw(page, points) -> None:
    """A stroke through `points` (fractions of the canvas), with mouse events."""
    box = page.locator("#canvas").bounding_box()
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for x, y in xy[1:]:
        page.mouse.move(x, y, steps=8)
    page.mouse.up()


def test_drawing_a_one_shows_the_prediction_and_what_the_layers_see(browser, server_url, predictor, tmp_path):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.set_default_timeout(60_000)  # generous: the machine may be busy with other tests
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    page.goto(server_url + "/")
    expect(page.locator("#model-label")).to_contain_text("lenet5", timeout=60_000)
    # before the first stroke: empty boxes, not broken images showing their alt text (issue 20)
    assert page.locator("#seen").is_hidden() and page.locator("#gradcam").is_hidden()
    draw(page, [(0.52, 0.15), (0.50, 0.50), (0.48, 0.85)])  # a "1", top to bottom
    expect(page.locator("#prediction")).to_have_text("1", timeout=60_000)
    expect(page.locator("#layers img.fmap")).to_have_count(4, timeout=60_000)
    wait_until(page, "[...document.querySelectorAll('#layers img.fmap, #seen, #gradcam')]"
                     ".every(i => i.complete && i.naturalWidth > 0)")  # fmt: skip
    assert page.locator("#seen").is_visible() and page.locator("#gradcam").is_visible()
    # the layers as the lecture names them, with their shapes and weights (issue 22, part 3)
    rows = page.locator("#layers .layer")
    assert rows.locator(".label").all_inner_texts() == ["C1", "S2", "C3", "S4", "C5", "F6", "output"]
    assert rows.locator(".shape").all_inner_texts() == [
        "6×28×28", "6×14×14", "16×10×10", "16×5×5", "120", "84", "10"
    ]  # fmt: skip
    modules = dict(predictor.model.named_modules())
    names = [rows.nth(i).get_attribute("data-name") for i in range(rows.count())]
    weights = [sum(p.numel() for p in modules[n].parameters()) for n in names]
    assert rows.locator(".params").all_inner_texts() == [f"{w:,} weights" for w in weights]
    assert weights == [156, 0, 2_416, 0, 48_120, 10_164, 850]  # the lecture's table: 61,706 in all
    c1 = rows.nth(0)
    assert c1.locator(".math").is_hidden()
    c1.locator(".head").click()  # a tap opens it
    expect(c1.locator(".math")).to_have_text("C1: 6 x (1x5x5 + 1) = 156")
    rows.nth(4).locator(".head").hover()  # and so does hovering
    expect(rows.nth(4).locator(".math")).to_have_text("C5: 120 x (400 + 1) = 48,120")
    # C5, F6 and the output: their activations as bars, 120, 84 and 10
    assert [rows.nth(i).locator(".acts span").count() for i in range(4, 7)] == [120, 84, 10]
    assert [rows.nth(i).locator(".acts").count() for i in range(4)] == [0, 0, 0, 0]
    assert page.locator("#gradcam-caption").inner_text() == "class 1 at S4"
    assert page.locator("#bars .bar").count() == 5
    assert page.locator("#model").is_hidden()  # one model: no picker
    page.screenshot(path=str(tmp_path / "draw-a-one.png"), full_page=True)

    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert rows.nth(4).locator(".acts").bounding_box()["width"] <= 390  # 120 bars fit
    rows.nth(6).locator(".head").click()  # a tap, at phone width: the output layer's arithmetic
    expect(rows.nth(6).locator(".math")).to_have_text("output: 10 x (84 + 1) = 850")
    page.screenshot(path=str(tmp_path / "draw-a-one-phone.png"), full_page=True)

    page.click("#clear")
    assert page.locator("#prediction").inner_text() == "–"
    assert errors == []
    page.close()


def test_two_models_show_the_picker_and_an_upload_goes_to_the_model_picked(
    browser, predictor, serving, tmp_path
):
    test = load_dataset("mnist").test
    digit = tmp_path / "seven.png"
    Image.fromarray(test.images[0, 0].numpy()).save(digit)  # the test set's first digit, a 7
    assert int(test.labels[0]) == 7
    with serving({"first": predictor, "second": predictor}) as address:
        url = f"http://{address}"
        page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
        page.set_default_timeout(60_000)
        asked = []
        page.on("request", lambda r: asked.append(r.url) if "/explain" in r.url else None)
        page.goto(url + "/")
        expect(page.locator("#model-label")).to_contain_text("first", timeout=60_000)
        assert page.locator("#model").is_visible()
        assert page.locator("#model option").all_inner_texts() == ["first", "second"]
        page.select_option("#model", "second")
        expect(page.locator("#model-label")).to_contain_text("second", timeout=60_000)
        page.set_input_files("#upload", str(digit))
        expect(page.locator("#prediction")).to_have_text("7", timeout=60_000)
        expect(page.locator("#layers img.fmap")).to_have_count(4, timeout=60_000)
        assert asked and all("/v1/models/second/explain" in u for u in asked)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        page.screenshot(path=str(tmp_path / "upload-to-second-phone.png"), full_page=True)
        page.close()
