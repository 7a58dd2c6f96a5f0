#!/usr/bin/env python3
"""Loads the page (web/index.html + web/pkg/) in headless Chromium with WebGPU enabled, waits
for its report, and fails unless every case matched the f64 reference.

Needs: chromium and chromedriver (Debian: apt-get install chromium chromium-driver), selenium
(pip install selenium), and the page built into web/pkg/ (bash web/build.sh; docs/browser.md).
Exit status 0 only when the page reports "pass"; a page that never finishes, an error (no
WebGPU adapter, say) or a mismatch fails with the page's own text.

The page's contract: `<pre id="result">` (inside a collapsed <details>) holds the JSON report,
and its `data-status` attribute goes from "running" to "pass", "fail" or "error" once the
report is written. `--screenshot PATH` saves a PNG of the finished page (the whole report).
"""
import argparse
import functools
import http.server
import json
import os
import re
import sys
import threading

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

WEB = os.path.dirname(os.path.abspath(__file__))
TIMEOUT_S = int(os.environ.get("BROWSER_TEST_TIMEOUT", "300"))
CHROMIUM_ARGS = ["--headless=new", "--enable-unsafe-webgpu", "--no-sandbox",
                 "--disable-dev-shm-usage"]
SCREENSHOT_WIDTH = 1100


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".js": "text/javascript"}

    def log_message(self, *args):
        pass


def fmt(value, spec):
    """`value` formatted as the page does (1.2e-8, not 1.2e-08); "-" when missing."""
    return "-" if value is None else re.sub(r"e([+-])0*(\d)", r"e\1\2", format(value, spec))


def print_report(report):
    """The page's report as text: adapter, then one line per case."""
    if "adapter" in report:
        print(f"adapter: {report['adapter']}; backend: {report.get('backend', '?')}; "
              f"device type: {report.get('device_type', '?')}")
    for r in report.get("results", []):
        print(f"{r.get('case', ''):<48} {r.get('strategy', ''):<7} "
              f"loss {fmt(r.get('loss'), '10.6f')} (ref {fmt(r.get('reference_loss'), '10.6f')}, "
              f"rel err {fmt(r.get('loss_rel_err'), '.1e')} <= {fmt(r.get('loss_tolerance'), '.0e')})  "
              f"grad rel err {fmt(r.get('grad_rel_err'), '.1e')} <= {fmt(r.get('grad_tolerance'), '.0e')}  "
              f"{fmt(r.get('ms_per_call'), '8.1f')} ms  {'pass' if r.get('pass') is True else 'FAIL'}")


def screenshot(driver, path):
    """Saves the finished page as a PNG, the window made tall enough for the whole report."""
    height = driver.execute_script(
        "return Math.ceil(document.documentElement.getBoundingClientRect().height)")
    # The window's outer size includes any browser chrome: add the difference to the viewport.
    chrome = driver.get_window_size()["height"] - driver.execute_script("return window.innerHeight")
    driver.set_window_size(SCREENSHOT_WIDTH, height + chrome + 16)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not driver.save_screenshot(path):
        sys.exit(f"FAIL: could not save the screenshot to {path}")
    print(f"screenshot: {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--screenshot", metavar="PATH",
                        help="save a PNG of the finished page to PATH (docs/img/browser-page.png)")
    args = parser.parse_args()
    if not os.path.exists(os.path.join(WEB, "pkg", "supcon_web.js")):
        sys.exit("web/pkg/supcon_web.js is missing: build the page first (bash web/build.sh)")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=WEB))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/index.html"

    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for arg in CHROMIUM_ARGS + [f"--window-size={SCREENSHOT_WIDTH},900"]:
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
            sys.exit(f"FAIL: the page did not finish within {TIMEOUT_S} s:\n"
                     f"{driver.find_element(By.ID, 'report').text}")
        status = result.get_attribute("data-status")
        # The <pre> sits in a collapsed <details>: its text is not visible, read textContent.
        text = result.get_attribute("textContent")
        try:
            report = json.loads(text)
        except ValueError:
            report = {"error": text}
        print_report(report)
        print(driver.find_element(By.ID, "report").find_element(By.CLASS_NAME, "verdict").text)
        if args.screenshot:
            screenshot(driver, args.screenshot)
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
