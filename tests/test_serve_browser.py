"""``oncopipe serve`` in a real browser, used as a person uses it: headless Debian Chromium
uploads a demo image and reads the answer, drags the CT viewer's slider, scrolls, presses
arrow keys, types a point and sees the marker, changes window/level and the heat map's
opacity, runs every dataset's example, and never logs an error or asks anything of a host
other than 127.0.0.1.

One server and one browser per module. The small test project (serve_project.py) has the
uploads; the examples run on this repository's own demo run (``dvc repro``, which CI runs
before the tests). Skipped (with the reason) only where Chromium or its driver is missing;
``.ci/run`` installs both. ``CHROMIUM_BIN`` / ``CHROMEDRIVER_BIN`` name other binaries.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from serve_project import build

from oncopipe import datasets, predict
from oncopipe.serve import browser as web
from oncopipe.serve.app import Settings

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, DRIVER = web.binaries()
# Chromium logs every 4xx answer as an error; a refused upload is one, shown on the page
REFUSED = re.compile(r"the server responded with a status of 4\d\d")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM and DRIVER),
                       reason="needs Debian's chromium and chromium-driver "
                              "(apt-get install chromium chromium-driver; .ci/run does)"),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return build(tmp_path_factory.mktemp("serve-browser"))


@pytest.fixture(scope="module")
def server(project):
    with web.server(Settings(root=project.root)) as url:
        yield url


@pytest.fixture(scope="module")
def demo_server():
    with web.server(Settings(root=ROOT)) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    pytest.importorskip("selenium.webdriver", reason="selenium (dev extra) missing")
    with web.chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


@pytest.fixture
def clean(browser):
    """After the test: no console error, no request to any host but 127.0.0.1."""
    browser.get_log("browser")
    web.requested_urls(browser)
    yield browser
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"
              and not REFUSED.search(e["message"])]
    assert severe == []  # no blocked resource, no script error, no CSP violation
    urls = web.requested_urls(browser)
    assert urls and web.foreign(urls) == []


def _by():
    from selenium.webdriver.common.by import By

    return By


def _slice(driver, plane: str = "axial", viewer: str = "scan") -> int:
    return int(driver.find_element(_by().ID, f"{viewer}-{plane}").get_attribute("data-slice"))


def test_upload_a_demo_image_and_see_the_answer_in_words(project, server, clean):
    browser, By = clean, _by()
    expected = predict.predict_file("pcam", project.pcam_image, project.root / "models/pcam",
                                    params=project.params)
    top = max(expected["probabilities"], key=expected["probabilities"].get)
    words = f"{100 * expected['probabilities'][top]:.1f}% {top}"

    browser.get(f"{server}/#pcam")
    web.wait(browser, lambda d: d.find_elements(By.ID, "file"), "the upload form")
    browser.find_element(By.ID, "file").send_keys(str(project.pcam_image))  # uploads at once
    web.wait(browser, lambda d: "ready" in (web.text_of(d, "#status") or ""), "the upload")
    browser.find_element(By.ID, "run").click()
    answer = web.wait(browser, lambda d: web.text_of(d, "#answer"), "the answer")
    assert answer == words
    assert re.fullmatch(r"Answered in \d+ ms\.", browser.find_element(By.ID, "status").text)
    meaning = browser.find_element(By.ID, "answer-meaning").text
    assert meaning == datasets.spec("pcam").class_descriptions[top]
    assert "not where disease is" in browser.find_element(By.ID, "heatmap-help").text
    # read aloud: enabled only with a voice to speak; otherwise off, with the reason shown
    speak = browser.find_element(By.ID, "speak")
    voices = browser.execute_script("return speechSynthesis.getVoices().length")
    if voices:
        browser.execute_script("window.spoken = []; window.speechSynthesis.speak = "
                               "(u) => window.spoken.push(u.text);")
        speak.click()
        assert words.replace("%", " percent") in browser.execute_script("return window.spoken")[0]
    else:
        assert not speak.is_enabled()
        assert "no speech voice" in browser.find_element(By.ID, "speak-reason").text
    # the heat map's opacity is the user's: moving its slider redraws the overlay
    canvas = browser.find_element(By.ID, "model-axial")
    before = canvas.screenshot_as_png
    slider = browser.find_element(By.ID, "model-opacity")
    browser.execute_script("arguments[0].value = 100; arguments[0].dispatchEvent("
                           "new Event('input'))", slider)
    web.wait(browser, lambda d: canvas.screenshot_as_png != before, "the overlay to change")
    assert browser.find_element(By.CSS_SELECTOR, "canvas.colourbar").is_displayed()
    bars = browser.find_element(By.ID, "probabilities").text
    assert "negative" in bars and "positive" in bars
    # plots open enlarged on click, and close again
    web.wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "button.enlarge"), "the plots")
    browser.find_element(By.CSS_SELECTOR, "button.enlarge").click()
    dialog = browser.find_element(By.ID, "enlarged")
    assert dialog.is_displayed()
    web.wait(browser, lambda d: d.execute_script(
        "const i = document.querySelector('#enlarged img'); return i.complete && "
        "i.naturalWidth > 0 && i.getBoundingClientRect().width > 1000"), "the enlarged plot")
    browser.find_element(By.ID, "close-enlarged").click()
    assert not dialog.is_displayed()
    body = browser.find_element(By.ID, "pipeline-body").text
    assert "Test metrics" in body and "small n" in body
    assert "raw data: demo" in browser.find_element(By.ID, "provenance").text

    # a file that does not belong: the one-line refusal appears, the page keeps working
    wrong = project.root / "photo.jpg"
    wrong.write_bytes(b"\xff\xd8\xff\xe0" + bytes(64))
    browser.find_element(By.ID, "file").send_keys(str(wrong))
    status = web.wait(browser, lambda d: web.text_of(d, "#status.error"), "the error")
    assert "expected a 96x96 TIFF patch" in status and "photo.jpg" in status


def test_the_ct_viewer_drags_scrolls_keeps_focus_and_marks_the_point(project, server, clean):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    browser, By = clean, _by()
    browser.get(f"{server}/#lidc")
    web.wait(browser, lambda d: d.find_elements(By.ID, "file"), "the LIDC form")
    browser.find_element(By.ID, "file").send_keys(str(project.lidc_zip))
    web.wait(browser, lambda d: d.find_elements(By.ID, "scan-axial-slider"), "the viewer")
    n = int(browser.find_element(By.ID, "scan-axial-slider").get_attribute("max")) + 1
    assert n == 16  # every slice of the series

    # drag the slider from its left end to 80% of its width: the slice follows the pointer
    slider = browser.find_element(By.ID, "scan-axial-slider")
    width = slider.size["width"]
    chain = ActionChains(browser).move_to_element_with_offset(slider, -width // 2 + 2, 0)
    chain.click_and_hold()
    for _ in range(8):
        chain.move_by_offset(int((0.8 * width - 4) / 8), 0)
    chain.release().perform()
    web.wait(browser, lambda d: abs(_slice(d) - 0.8 * (n - 1)) <= 1.01, "the dragged slice")
    assert int(slider.get_attribute("value")) == _slice(browser)

    # arrow keys on the image move one slice each and keep the focus there
    canvas = browser.find_element(By.ID, "scan-axial")
    canvas.click()
    start = _slice(browser)
    canvas.send_keys(Keys.ARROW_DOWN, Keys.ARROW_DOWN, Keys.ARROW_DOWN)
    web.wait(browser, lambda d: _slice(d) == start - 3, "three slices down")
    assert browser.switch_to.active_element == canvas
    # the scroll wheel too
    ActionChains(browser).scroll_from_origin(ScrollOrigin.from_element(canvas), 0, 120).perform()
    web.wait(browser, lambda d: _slice(d) == start - 2, "one slice by the wheel")
    assert browser.find_element(By.ID, "scan-coronal-slider")  # the other planes
    assert browser.find_element(By.ID, "scan-sagittal-slider")

    # window/level: a preset, then a drag on the image
    Select(browser.find_element(By.ID, "scan-preset")).select_by_value("bone")
    assert browser.find_element(By.ID, "scan-wl").text == "L 300, W 1500 HU"
    ActionChains(browser).move_to_element(canvas).click_and_hold().move_by_offset(40, 20) \
        .release().perform()
    assert browser.find_element(By.ID, "scan-wl").text != "L 300, W 1500 HU"

    # a typed point: the view jumps to its slice and the marker is drawn there
    x, y, z = project.lidc_point
    for axis, value in zip("xyz", (x, y, z), strict=True):
        box = browser.find_element(By.ID, f"point-{axis}")
        box.clear()
        box.send_keys(f"{value:.2f}")
    browser.find_element(By.ID, "go-point").click()
    label = web.wait(browser, lambda d: web.text_of(d, "#scan-axial-label"), "the slice label")
    assert f"z {z:.1f} mm" in label
    marker = browser.find_element(By.ID, "scan-axial").get_attribute("data-marker")
    assert float(marker.split(",")[0]) == _slice(browser)
    red = browser.execute_script(
        "const c = document.getElementById('scan-axial'); const [k, r, col] = "
        "c.dataset.marker.split(',').map(Number); const sx = c.width / 64, sy = c.height / 64;"
        "const p = c.getContext('2d').getImageData(Math.round((col + 0.5) * sx + 9),"
        " Math.round((r + 0.5) * sy), 1, 1).data; return [p[0], p[1], p[2]];")
    assert red[0] > 200 and red[1] < 120 and red[2] < 120  # the red ring of the marker

    # a click on the image sets the point there, on the slice shown
    ActionChains(browser).move_to_element(canvas).click().perform()  # the image's centre
    px, py, pz = (float(browser.find_element(By.ID, f"point-{a}").get_attribute("value"))
                  for a in "xyz")
    assert abs(px - x) < 3 and abs(py - y) < 3 and abs(pz - z) < 0.1
    browser.find_element(By.ID, "run").click()
    answer = web.wait(browser, lambda d: web.text_of(d, "#answer"), "the LIDC answer")
    assert re.fullmatch(r"\d+\.\d% (nodule|small_nodule|non_nodule)", answer)
    assert f"point {px:g}" in browser.find_element(By.ID, "result").text.replace(".0,", ",")
    assert browser.find_element(By.ID, "model-opacity").is_displayed()


_PIXEL = ("const c = document.getElementById('scan-axial'); const sx = c.width / arguments[2],"
          " sy = c.height / arguments[3]; const p = c.getContext('2d').getImageData("
          "Math.round((arguments[1] + 0.5) * sx), Math.round((arguments[0] + 0.5) * sy), 1, 1)"
          ".data; return [p[0], p[1], p[2]];")


def _spread(rgb: list[int]) -> int:
    """0 for a grey pixel (the CT slice), large where the colour map is blended in."""
    return max(rgb) - min(rgb)


def test_an_lidc_heat_map_is_drawn_on_the_scan_where_the_crop_lies(project, server, clean):
    from selenium.webdriver.support.ui import Select

    browser, By = clean, _by()
    browser.get("about:blank")  # a fresh page: the same file chosen again fires no change
    browser.get(f"{server}/#lidc")
    web.wait(browser, lambda d: d.find_elements(By.ID, "file"), "the LIDC form")
    browser.find_element(By.ID, "file").send_keys(str(project.lidc_zip))
    web.wait(browser, lambda d: d.find_elements(By.ID, "scan-axial-slider"), "the viewer")
    assert browser.find_element(By.ID, "scan-wl").text == "L -600, W 1500 HU"  # lung
    x, y, z = project.lidc_point
    for axis, value in zip("xyz", (x, y, z), strict=True):
        box = browser.find_element(By.ID, f"point-{axis}")
        box.clear()
        box.send_keys(f"{value:.2f}")
    browser.find_element(By.ID, "go-point").click()  # the marker, as an example sets it
    browser.find_element(By.ID, "run").click()
    web.wait(browser, lambda d: web.text_of(d, "#answer"), "the LIDC answer")
    canvas = web.wait(browser, lambda d: d.find_element(By.ID, "scan-axial").get_attribute(
        "data-heatmap") == "shown" and d.find_element(By.ID, "scan-axial"), "the map on the scan")

    # where it must be: the crop (size_2d x mm_per_px) centred on the point's pixel
    cfg = datasets.load_config("lidc", project.params)
    _, g = datasets.spec("lidc").view(cfg, project.lidc_folder)
    rows, cols = g["shape_yx"]
    r = (round(y, 2) - g["origin_xy"][1]) / g["spacing_xy"][1]
    c = (round(x, 2) - g["origin_xy"][0]) / g["spacing_xy"][0]
    extent = cfg.prepare.crops.size_2d * cfg.prepare.crops.mm_per_px
    half_r, half_c = extent / 2 / g["spacing_xy"][1], extent / 2 / g["spacing_xy"][0]
    assert 1.4 * max(half_r, half_c) < min(r, c, rows - r, cols - c)  # all points on the slice
    marker = [float(v) for v in canvas.get_attribute("data-marker").split(",")]
    assert marker[1:] == pytest.approx([r, c], abs=0.01)

    def pixel(dr: float, dc: float) -> list[int]:
        return browser.execute_script(_PIXEL, r + dr * half_r, c + dc * half_c, cols, rows)

    inside = [(-0.6, -0.6), (0.6, 0.6), (-0.6, 0.9), (0.9, -0.6)]
    outside = [(-1.3, -1.3), (1.3, 1.3), (-0.6, 1.15), (1.15, -0.6)]
    assert all(_spread(pixel(*p)) > 30 for p in inside)  # the colour map over the slice
    assert all(_spread(pixel(*p)) <= 2 for p in outside)  # grey: nothing drawn there

    # the opacity slider: none at 0, the colour map alone at 100
    slider = browser.find_element(By.ID, "scan-opacity")
    assert browser.find_element(By.CSS_SELECTOR, "#scan .colourbar").is_displayed()
    at_45 = pixel(-0.6, -0.6)
    browser.execute_script("arguments[0].value = 0; arguments[0].dispatchEvent("
                           "new Event('input'))", slider)
    web.wait(browser, lambda d: _spread(pixel(-0.6, -0.6)) <= 2, "the map to fade out")
    browser.execute_script("arguments[0].value = 100; arguments[0].dispatchEvent("
                           "new Event('input'))", slider)
    web.wait(browser, lambda d: _spread(pixel(-0.6, -0.6)) > _spread(at_45), "a full map")
    # drawn above the windowed slice: a new window changes the slice, not the map at 100%
    opaque, grey = pixel(-0.6, -0.6), pixel(-1.3, -1.3)
    Select(browser.find_element(By.ID, "scan-preset")).select_by_value("bone")
    web.wait(browser, lambda d: pixel(-1.3, -1.3) != grey, "the new window")
    assert pixel(-0.6, -0.6) == opaque
    # on its slice only: one slice further it is gone, and the caption says where it is
    k = _slice(browser)
    browser.execute_script("arguments[0].value = arguments[1]; arguments[0].dispatchEvent("
                           "new Event('input'))", browser.find_element(By.ID, "scan-axial-slider"),
                           k + 1 if k + 1 < len(g["zs"]) else k - 1)
    web.wait(browser, lambda d: canvas.get_attribute("data-heatmap") == "", "another slice")
    assert _spread(pixel(-0.6, -0.6)) <= 2
    assert f"heat map on slice {k + 1}" in browser.find_element(By.ID, "scan-axial-label").text
    # the model's own view stays
    assert browser.find_element(By.ID, "model-axial").is_displayed()


def test_every_dataset_runs_its_example_in_one_click(demo_server, clean):
    browser, By = clean, _by()
    ready = [n for n in datasets.NAMES
             if (ROOT / "models" / n / "model.pt").is_file()
             and (ROOT / "data" / "prepared" / n / "manifest.parquet").is_file()]
    if not ready:
        pytest.skip("no demo run in this checkout (`dvc repro` makes one; CI runs it)")
    for name in ready:
        answer = web.run_example(browser, demo_server, name)
        classes = "|".join(datasets.spec(name).class_names[
            datasets.load_config(name, ROOT / "params.yaml").task])
        assert re.fullmatch(rf"[<>]?\d+(\.\d)?% ({classes})", answer), (name, answer)
        if datasets.spec(name).view is not None:  # the series or study is on the viewer
            assert _slice(browser) >= 0
        if name == "mosmed":  # its heat map covers the whole study: drawn over the scan too
            assert browser.find_element(By.ID, "scan-opacity").is_displayed()
    # LIDC: the example's point is marked and the prepared table's lesions are listed
    if "lidc" in ready:
        web.run_example(browser, demo_server, "lidc")
        assert browser.find_element(By.ID, "scan-axial").get_attribute("data-marker")
        assert browser.find_elements(By.CSS_SELECTOR, "#lesions button.lesion")
        # its heat map is drawn on the scan, on the slice of the example's point
        assert browser.find_element(By.ID, "scan-axial").get_attribute("data-heatmap") == "shown"


def test_readable_and_keyboard_reachable_at_420_pixels(project, server, clean):
    browser, By = clean, _by()
    browser.set_window_size(420, 900)
    try:
        browser.get(f"{server}/#pcam")
        web.wait(browser, lambda d: d.find_elements(By.ID, "example-0"), "the examples")
        web.wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#pipeline-body table"),
                 "the pipeline panel")
        clipped = browser.execute_script(
            "return [...document.querySelectorAll('.card')].filter((c) => "
            "c.getBoundingClientRect().right > window.innerWidth + 0.5 "
            "|| c.scrollWidth > c.clientWidth + 1).map((c) => c.id);")
        assert clipped == []
        assert browser.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth")
        # every control has a name a screen reader says
        unnamed = browser.execute_script(
            "return [...document.querySelectorAll('input, select, button')].filter((e) => "
            "!(e.labels && e.labels.length) && !e.getAttribute('aria-label') "
            "&& !e.textContent.trim()).map((e) => e.outerHTML);")
        assert unnamed == []
        # the tab key reaches the example buttons and the file input
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        reached = set()
        browser.find_element(By.TAG_NAME, "h1").click()
        for _ in range(20):
            ActionChains(browser).send_keys(Keys.TAB).perform()
            reached.add(browser.switch_to.active_element.get_attribute("id"))
        assert {"example-0", "file", "tab-pcam"} <= reached
    finally:
        browser.set_window_size(1400, 1500)


def test_the_viewer_benchmark_runs_and_reaches_every_slice(tmp_path):
    """benchmarks/serve_viewer.py at a tiny size (its figures are not checked: speed is not
    tested here), writing its table into a copy of docs/serve.md."""
    from benchmarks import serve_viewer

    doc = tmp_path / "serve.md"
    doc.write_text((ROOT / "docs" / "serve.md").read_text(encoding="utf-8"), encoding="utf-8")
    serve_viewer.main(["--slices", "20", "--rows", "64", "--write", str(doc)])
    block = doc.read_text(encoding="utf-8").split(serve_viewer.MARK_BEGIN)[1]
    block = block.split(serve_viewer.MARK_END)[0]
    assert "| slices reachable (slider positions) | 20 of 20 |" in block
    assert re.search(r"press to last slice shown \| [\d.]+ s, \d+ distinct slices drawn", block)
