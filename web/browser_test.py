#!/usr/bin/env python3
"""Loads the page (web/index.html + web/pkg/) in headless Chromium with WebGPU enabled, waits
for its report, and fails unless every case matched the f64 reference.

Needs: chromium and chromedriver (Debian: apt-get install chromium chromium-driver), selenium
(pip install selenium), and the page built into web/pkg/ (README.md, "In the browser").
Exit status 0 only when the page reports "pass"; a page that never finishes, an error (no
WebGPU adapter, say) or a mismatch fails with the page's own text.
"""
import functools
import http.server
import json
import os
import sys
import threading

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

WEB = os.path.dirname(os.path.abspath(__file__))
TIMEOUT_S = int(os.environ.get("BROWSER_TEST_TIMEOUT", "300"))


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".js": "text/javascript"}

    def log_message(self, *args):
        pass


def main():
    if not os.path.exists(os.path.join(WEB, "pkg", "supcon_web.js")):
        sys.exit("web/pkg/supcon_web.js is missing: build the page first (README.md, 'In the browser')")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=WEB))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/index.html"

    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for arg in ["--headless=new", "--enable-unsafe-webgpu", "--no-sandbox",
                "--disable-dev-shm-usage"]:
        options.add_argument(arg)
    driver = webdriver.Chrome(
        service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")), options=options)
    try:
        driver.get(url)
        result = driver.find_element(By.ID, "result")
        try:
            WebDriverWait(driver, TIMEOUT_S, poll_frequency=0.5).until(
                lambda _: result.get_attribute("data-status") != "running")
        except Exception:
            sys.exit(f"FAIL: the page did not finish within {TIMEOUT_S} s:\n{result.text}")
        status = result.get_attribute("data-status")
        print(result.text.split("\n{")[0].rstrip())
        report = json.loads(result.get_attribute("data-report") or "{}")
        if status != "pass":
            sys.exit(f"FAIL: the page reports {status!r}: {report.get('error', '')}")
        cases = report.get("results", [])
        if not cases or not all(r.get("pass") is True for r in cases):
            sys.exit("FAIL: the report has no cases or a failing one")
        print(f"browser test: {len(cases)} cases match the reference on {report['adapter']}")
    finally:
        driver.quit()
        server.shutdown()


if __name__ == "__main__":
    main()
