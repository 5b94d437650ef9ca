"""The inspector page in a real headless Chromium (Debian's chromium, driven by playwright): a typed
prompt and a clicked position show the probabilities the API's logits give, to display precision; the
attention heatmap is drawn from the API's weights; generation streams into the page; a malformed
request leaves the server serving the page.

The test saves a screenshot. The one docs/inspector.md shows was made by it from real checkpoints:

    INSPECTOR_CKPTS=out-inspect/modern/best.pt:out-inspect/vanilla/best.pt \\
    INSPECTOR_SCREENSHOT=docs/inspector.png uv run pytest tests/test_inspector_browser.py
"""

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from test_inspector_server import call, softmax64

from inspect_model import DEFAULT_TOP_N

CHROMIUM = Path("/usr/bin/chromium")
PROMPT = "ROMEO:\nBut soft, what light through yonder window breaks?"
LOOKED_AT = PROMPT.index(" window")  # the space before "window": what does the model expect there?
STEP_TIMEOUT_MS = 60_000

pytestmark = pytest.mark.slow  # a browser and inspect_model.py running as a process


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        message = f"the browser test needs Debian's chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; .ci/run installs it")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(request, start_inspector):
    """The inspector serving $INSPECTOR_CKPTS (paths joined by os.pathsep), or two small trained checkpoints."""
    paths = os.environ.get("INSPECTOR_CKPTS")
    if paths:
        return start_inspector([Path(path) for path in paths.split(os.pathsep)])
    return start_inspector(request.getfixturevalue("small_checkpoints"))


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(STEP_TIMEOUT_MS)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.url)
    page.wait_for_selector("#tokens .token")  # the default prompt has been analysed
    yield page
    page.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def type_prompt(page, text: str, token_count: int) -> None:
    """Type text into the prompt box, key by key, and wait until the page shows its tokens."""
    page.fill("#prompt", "")
    page.locator("#prompt").press_sequentially(text)
    page.wait_for_function(f"document.querySelectorAll('#tokens .token').length === {token_count}")


def test_the_page_shows_what_the_api_computes_and_streams_generation(page, server, tmp_path):
    status, api = call(server.url, "/api/trace", {"text": PROMPT, "logits": True})
    assert status == 200
    token_count = len(api["tokens"])
    type_prompt(page, PROMPT, token_count)
    assert page.eval_on_selector_all("#tokens .token", "boxes => boxes.length") == token_count

    # The next token at a clicked position: the bars are the softmax of the API's logits.
    page.click(f"#tokens .token[data-pos='{LOOKED_AT}']")
    page.wait_for_function(f"document.getElementById('next-summary').textContent.includes('(position {LOOKED_AT})')")
    shown = page.eval_on_selector_all("#next-bars .bar-row", "rows => rows.map(row => "
                                      "[Number(row.dataset.tokenId), row.querySelector('.bar-value').textContent])")
    probs = softmax64(api["logits"][LOOKED_AT])
    assert [token_id for token_id, _ in shown] == np.argsort(-probs, kind="stable")[:len(shown)].tolist()
    assert len(shown) == DEFAULT_TOP_N
    for token_id, text in shown:
        assert text.endswith("%")
        assert abs(float(text[:-1]) - 100 * probs[token_id]) <= 0.05 + 1e-9, (token_id, text)
    following = api["tokens"][LOOKED_AT + 1]["id"]
    rank = 1 + int((probs > probs[following]).sum())
    assert f"is ranked {rank} with" in page.text_content("#next-summary")

    # The attention heatmap of layer 0, head 0, drawn cell by cell from the API's weights.
    status, attention = call(server.url, "/api/attention", {"text": PROMPT, "layer": 0})
    weights = attention["heads"][0]
    pixels = page.evaluate("""(T) => {
        const canvas = document.getElementById('heatmap');
        const cell = Number(canvas.dataset.cell);
        const context = canvas.getContext('2d');
        const middle = (i) => i * cell + (cell >> 1);
        const at = (q, k) => Array.from(context.getImageData(middle(k), middle(q), 1, 1).data);
        return {cell, width: canvas.width, first: at(0, 0), masked: at(0, T - 1),
                lastRow: Array.from({length: T}, (_, k) => at(T - 1, k))};
    }""", token_count)
    assert pixels["width"] == token_count * pixels["cell"]
    brightness = [sum(p[:3]) for p in pixels["lastRow"]]
    assert sum(pixels["first"][:3]) < min(brightness)  # position 0 can only read itself: weight 1, darkest
    assert pixels["masked"][0] == pixels["masked"][1] == pixels["masked"][2] != 255  # the future: grey
    strongest, weakest = int(np.argmax(weights[-1])), int(np.argmin(weights[-1]))
    assert weights[-1][strongest] - weights[-1][weakest] > 0.02
    assert brightness[strongest] < brightness[weakest]
    n_head = len(attention["heads"])
    assert page.eval_on_selector_all("#heads canvas", "canvases => canvases.length") == n_head
    assert page.eval_on_selector_all("#lens-table tr", "rows => rows.length") == 1 + len(api["lens"]["layers"])

    # Generation streams: tokens appear while the generation is still running.
    page.fill("#max-new-tokens", "1000")
    page.fill("#temperature", "1")
    page.click("#generate")
    # Stop pressed in the same moment the page is seen still running (a separate click could come after
    # a fast CPU had already generated all 1,000 tokens).
    page.wait_for_function("""() => {
        const stop = document.getElementById('stop');
        if (document.querySelectorAll('#generated .step').length < 10 || stop.disabled) return false;
        stop.click();
        return true;
    }""")
    assert page.text_content("#generate-status").startswith("stopped after")
    assert page.is_enabled("#generate")

    # A sampled generation with a seed is exactly the API's, and each step shows its distributions.
    settings = {"max_new_tokens": 100, "temperature": 0.8, "top_k": 20, "seed": 1}
    status, lines = call(server.url, "/api/generate", {"text": PROMPT, **settings})
    for name, value in settings.items():
        page.fill(f"#{name.replace('_', '-')}", str(value))
    page.click("#generate")
    page.wait_for_function("document.getElementById('generate-status').textContent.startsWith('done: 100 tokens')")
    steps = [line for line in lines if line["type"] == "token"]
    assert page.eval_on_selector_all("#generated .step", "s => s.map(e => e.textContent).join('')") == \
        "".join(step["text"] for step in steps)
    sampled = page.eval_on_selector("#step-bars .bar-row.sampled", "row => Number(row.dataset.tokenId)")
    assert sampled == steps[-1]["id"]

    if page.is_visible("#compare"):  # two checkpoints: their losses side by side
        shown_losses = page.eval_on_selector_all("#compare-rows [data-mean-loss]",
                                                 "ps => ps.map(p => Number(p.dataset.meanLoss))")
        second = call(server.url, "/api/trace", {"model": 1, "text": PROMPT})[1]
        assert shown_losses == pytest.approx([api["loss"]["mean"], second["loss"]["mean"]])

    screenshot = Path(os.environ.get("INSPECTOR_SCREENSHOT") or tmp_path / "inspector.png")
    page.screenshot(path=screenshot, full_page=True)
    assert screenshot.stat().st_size > 10_000


def test_a_malformed_request_leaves_the_server_serving_the_page(page, server):
    address = urlsplit(server.url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        connection.sendall(b"\x00\x01 garbage\r\n\r\n")
        assert b"400" in connection.makefile("rb").readline()
    assert call(server.url, "/api/trace", data=b"{not json")[0] == 400
    assert call(server.url, "/api/trace", {"text": "x" * 100_000})[0] == 413

    # The page still works, and shows the server's refusals in words.
    type_prompt(page, "Roméo", page.eval_on_selector_all("#tokens .token", "boxes => boxes.length"))
    page.wait_for_selector("#error:not([hidden])")
    assert "'é'" in page.text_content("#error")
    type_prompt(page, "ROMEO", 5)
    assert page.is_hidden("#error")
