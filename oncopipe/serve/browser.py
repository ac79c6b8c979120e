"""The app in a real browser: a server in a thread and headless Chromium driven by Selenium.

One place for what the browser tests, the screenshot command (:mod:`.screenshots`) and the
viewer benchmark (``benchmarks/serve_viewer.py``) share: the Chromium flags (nothing in the
background reaches the network), the logs kept (console and network, to check that no
request leaves 127.0.0.1) and the small waits. Needs Debian's ``chromium`` and
``chromium-driver`` (``CHROMIUM_BIN`` / ``CHROMEDRIVER_BIN`` name others) and ``selenium``
(the dev extra).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from oncopipe.serve.app import Settings, create_app

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars")
WAIT_S = 60


def binaries() -> tuple[str | None, str | None]:
    """Chromium and its driver, or ``None`` where not installed."""
    return (os.environ.get("CHROMIUM_BIN") or shutil.which("chromium"),
            os.environ.get("CHROMEDRIVER_BIN") or shutil.which("chromedriver"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(settings: Settings) -> Iterator[str]:
    """The app under uvicorn on a free loopback port, in a thread; yields its URL."""
    import uvicorn

    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                        log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def chromium(profile: Path, width: int = 1400, height: int = 1500) -> Iterator[Any]:
    """Headless Chromium (a Selenium driver) keeping its console and network logs."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = binaries()
    if not (binary and driver_path):
        raise RuntimeError("needs chromium and chromium-driver (apt-get install chromium "
                           "chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*FLAGS, f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: Any, condition: Callable[[Any], Any], what: str, timeout: float = WAIT_S) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition, f"timed out waiting for {what}")


def text_of(driver: Any, css: str) -> str | bool:
    """The element's text once it exists and has some, else ``False`` (for :func:`wait`)."""
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, css)
    return bool(found) and found[0].text


def requested_urls(driver: Any) -> list[str]:
    """Every URL the browser asked for since the last call (from the performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def foreign(urls: list[str]) -> list[str]:
    """The URLs that would leave this machine: anything but 127.0.0.1 and the schemes that
    never touch a network (``data:``, ``blob:``, the browser's own ``chrome:`` pages)."""
    return [u for u in urls if urlsplit(u).scheme not in ("data", "blob", "chrome", "about")
            and urlsplit(u).hostname != "127.0.0.1"]


def run_example(driver: Any, url: str, dataset: str, example: int = 0) -> str:
    """Open the dataset's tab, click "try an example" ``example`` and wait for the answer."""
    from selenium.webdriver.common.by import By

    driver.get(f"{url}/#{dataset}")
    button = wait(driver, lambda d: d.find_elements(By.ID, f"example-{example}"),
                  f"the {dataset} examples")[0]
    button.click()
    return wait(driver, lambda d: text_of(d, "#answer") or text_of(d, "#status.error"),
                f"the {dataset} answer")
