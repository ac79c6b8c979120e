"""``oncopipe serve`` in a real browser: headless Debian Chromium loads the page, uploads a demo
image, sees the answer appear, picks a point on a CT slice with a click.

Skipped (with the reason) only where Chromium or its driver is not installed; ``.ci/run``
installs both, so CI runs it. ``CHROMIUM_BIN`` / ``CHROMEDRIVER_BIN`` name other binaries.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from serve_project import build

from oncopipe import predict
from oncopipe.serve.app import Settings, create_app

CHROMIUM = os.environ.get("CHROMIUM_BIN") or shutil.which("chromium")
DRIVER = os.environ.get("CHROMEDRIVER_BIN") or shutil.which("chromedriver")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM and DRIVER),
                       reason="needs Debian's chromium and chromium-driver "
                              "(apt-get install chromium chromium-driver; .ci/run does)"),
]
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1500")
WAIT_S = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return build(tmp_path_factory.mktemp("serve-browser"))


@pytest.fixture(scope="module")
def server(project):
    import uvicorn

    port = _free_port()
    config = uvicorn.Config(create_app(Settings(root=project.root)), host="127.0.0.1",
                            port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (dev extra) missing")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def _wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S).until(condition, f"timed out waiting for {what}")


def _loaded(driver, css: str) -> bool:
    return driver.execute_script(
        "const i = document.querySelector(arguments[0]);"
        "return !!i && i.complete && i.naturalWidth > 0;", css)


def test_upload_a_demo_image_and_see_the_answer(project, server, browser):
    from selenium.webdriver.common.by import By

    expected = predict.predict_file("pcam", project.pcam_image, project.root / "models/pcam",
                                    params=project.params)
    top = max(expected["probabilities"], key=expected["probabilities"].get)
    words = f"{100 * expected['probabilities'][top]:.1f}% {top}"

    browser.get(f"{server}/#pcam")
    _wait(browser, lambda d: d.find_elements(By.ID, "file"), "the upload form")
    browser.find_element(By.ID, "file").send_keys(str(project.pcam_image))
    browser.find_element(By.ID, "run").click()
    answer = _wait(browser, lambda d: d.find_element(By.ID, "answer").text
                   if d.find_elements(By.ID, "answer") else False, "the answer")
    assert answer == words
    assert re.fullmatch(r"Answered in \d+ ms\.", browser.find_element(By.ID, "status").text)
    assert browser.find_element(By.ID, "speak").is_enabled()
    # "Read aloud" hands the answer to the browser's own speech synthesis (recorded, not played)
    browser.execute_script("window.spoken = []; window.speechSynthesis.speak = "
                           "(u) => window.spoken.push(u.text);")
    browser.find_element(By.ID, "speak").click()
    spoken = browser.execute_script("return window.spoken;")
    assert len(spoken) == 1 and words.replace("%", " percent") in spoken[0]
    bars = browser.find_element(By.ID, "probabilities").text
    assert "negative" in bars and "positive" in bars
    _wait(browser, lambda d: _loaded(d, "img[alt^='saliency']"), "the saliency map")
    _wait(browser, lambda d: _loaded(d, "img[alt='pcam contact sheet']"), "the contact sheet")
    _wait(browser, lambda d: _loaded(d, "img[alt='pcam training curves']"), "the curves")
    body = browser.find_element(By.ID, "pipeline-body").text
    assert "Test metrics" in body
    assert "small n" in body  # the tiny test split's figures are flagged
    assert "raw data: demo" in browser.find_element(By.ID, "provenance").text
    assert "chosen on val" in browser.find_element(By.ID, "operating-point").text

    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []  # no blocked resource, no script error, no CSP violation
    _screenshot(browser, project, "serve.png")

    # a file that does not belong: the one-line refusal appears, the page keeps working
    wrong = project.root / "photo.jpg"
    wrong.write_bytes(b"\xff\xd8\xff\xe0" + bytes(64))
    browser.find_element(By.ID, "file").send_keys(str(wrong))
    browser.find_element(By.ID, "run").click()
    status = _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#status.error").text
                   if d.find_elements(By.CSS_SELECTOR, "#status.error") else False, "the error")
    assert "expected a 96x96 TIFF patch" in status and "photo.jpg" in status


def _screenshot(browser, project, name: str) -> None:
    """Into ``ONCOPIPE_SCREENSHOTS`` when set (docs/serve.png is made so), else the project."""
    folder = Path(os.environ.get("ONCOPIPE_SCREENSHOTS") or project.root)
    browser.save_screenshot(str(folder / name))
    assert (folder / name).stat().st_size > 10_000


def test_click_a_point_on_the_ct_slice_and_predict(project, server, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    browser.get(f"{server}/#lidc")
    _wait(browser, lambda d: d.find_elements(By.ID, "show-scan"), "the LIDC form")
    browser.find_element(By.ID, "file").send_keys(str(project.lidc_zip))
    browser.find_element(By.ID, "show-scan").click()
    _wait(browser, lambda d: _loaded(d, "#scan-image"), "the CT slice")
    image = browser.find_element(By.ID, "scan-image")
    ActionChains(browser).move_to_element(image).click().perform()  # the slice's centre
    x, y, z = (float(browser.find_element(By.ID, f"point-{a}").get_attribute("value"))
               for a in "xyz")
    px, py, pz = project.lidc_point  # the centre of the scan's extent, on the middle slice
    assert abs(x - px) < 3 and abs(y - py) < 3 and abs(z - pz) < 0.1
    browser.find_element(By.ID, "run").click()
    answer = _wait(browser, lambda d: d.find_element(By.ID, "answer").text
                   if d.find_elements(By.ID, "answer") else False, "the LIDC answer")
    assert re.fullmatch(r"\d+\.\d% (nodule|small_nodule|non_nodule)", answer)
    _wait(browser, lambda d: _loaded(d, "img[alt^='saliency']"), "the LIDC saliency map")
    _screenshot(browser, project, "serve-lidc.png")
    assert f"point {x:g}" in browser.find_element(By.ID, "result").text.replace(".0,", ",")
