"""
The dashboard in a real browser: headless Chromium (Debian's chromium and chromium-driver, which
scripts/test installs) loads /status of a real twistd, traffic goes through the gateway, and the
numbers on the page must follow, and the status-code tile must keep its four figures in view at
any width. Screenshots are left in artifacts/status-dashboard.png (and -360px.png).

Selenium's calls block, and the upstream lives in this test's reactor: they run in a thread
(deferToThread) so that the reactor keeps answering while the browser is asked.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest
import pytest_twisted
import treq
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from twisted.internet.defer import gatherResults
from twisted.internet.threads import deferToThread

from tests.integration.harness import ROOT, free_port, sleep, wait_for_port

CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOT = ROOT / "artifacts" / "status-dashboard.png"
NARROW_SCREENSHOT = ROOT / "artifacts" / "status-dashboard-360px.png"

if not (shutil.which("chromium") and os.path.exists(CHROMEDRIVER)) and not os.environ.get("CI"):
    pytest.skip("needs Debian's chromium and chromium-driver (scripts/test installs them)",
                allow_module_level=True)


CONFIG = """
[gateway]
listen = tcp:{{port}}:interface=127.0.0.1
access_log = off
[status]
listen = tcp:{status_port}:interface=127.0.0.1
[upstream:users]
targets = {users}
[filter:breaker]
use = circuit_breaker
failures = 5
[route:users]
prefix = /users
upstream = users
filters = breaker
[route:orders]
prefix = /orders
upstream = {orders}
[aggregate:both]
path = /both
fetch.people = users /users
fetch.dead = http://127.0.0.1:{dead_port} /nothing
"""


def browser(profile):
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run", "--window-size=1400,1700",
                     "--user-data-dir=%s" % profile):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def text_of(driver, element_id):
    """What the element shows, read in one script: a redraw cannot come between find and read."""
    return driver.execute_script(
        "var el = document.getElementById(arguments[0]); return el ? el.innerText : null;",
        element_id,
    )


def wait_for_text(driver, element_id, wanted, timeout=15.0):
    """Wait until the element shows C{wanted}; returns what it last showed."""
    deadline = time.monotonic() + timeout
    while True:
        shown = text_of(driver, element_id)
        if shown == wanted or time.monotonic() > deadline:
            return shown
        time.sleep(0.1)


def painted_pixels(driver, canvas_id):
    """How many pixels of a chart's canvas are drawn on (not transparent)."""
    return driver.execute_script(
        "var c = document.getElementById(arguments[0]);"
        "var d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data, n = 0;"
        "for (var i = 3; i < d.length; i += 4) { if (d[i]) { n++; } }"
        "return n;",
        canvas_id,
    )


STATUS_FIGURES = ("status-2xx", "status-3xx", "status-4xx", "status-5xx")


def status_figures_at(driver, width):
    """
    Lay the page out C{width} CSS pixels wide, give the status-code tile the nine-digit counts of
    a long-running gateway, and return where its four figures, the tile and the viewport are.
    One script does it all, so the page's own once-a-second update cannot come in between.
    """
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False})
    return driver.execute_script(
        "var ids = arguments[0], counts = ['123,456,789', '2,345,678', '98,765,432', '1,234,567'];"
        "ids.forEach(function (id, i) { document.getElementById(id).textContent = counts[i]; });"
        "function box(el) { var r = el.getBoundingClientRect();"
        "  return {left: r.left, right: r.right, top: r.top, bottom: r.bottom}; }"
        "return {viewport: document.documentElement.clientWidth,"
        "  tile: box(document.getElementById(ids[0]).closest('.tile')),"
        "  figures: ids.map(function (id) { return box(document.getElementById(id)); })};",
        list(STATUS_FIGURES),
    )


def assert_all_figures_visible(layout):
    """Each figure drawn, inside its tile and the viewport, and none overlapping another."""
    tile, viewport = layout["tile"], layout["viewport"]
    assert 0 <= tile["left"] and tile["right"] <= viewport + 0.5, layout
    figures = layout["figures"]
    for figure in figures:
        assert figure["right"] > figure["left"] and figure["bottom"] > figure["top"], layout
        assert tile["left"] <= figure["left"] and figure["right"] <= tile["right"] + 0.5, layout
        assert tile["top"] <= figure["top"] and figure["bottom"] <= tile["bottom"] + 0.5, layout
    for i, a in enumerate(figures):
        for b in figures[i + 1:]:
            apart = (a["right"] <= b["left"] + 0.5 or b["right"] <= a["left"] + 0.5
                     or a["bottom"] <= b["top"] + 0.5 or b["bottom"] <= a["top"] + 0.5)
            assert apart, layout


@pytest_twisted.inlineCallbacks
def traffic(gw, seconds, per_second):
    """GETs through the gateway for a few seconds: users (200) and a path no route takes (404)."""
    sent = {"users": 0, "orders": 0, "nowhere": 0}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        paths = ["/users"] * 3 + ["/orders", "/nowhere"]
        responses = yield gatherResults([treq.get(gw.url(p)) for p in paths])
        yield gatherResults([r.content() for r in responses])
        for p in paths:
            sent[p.strip("/")] += 1
        yield sleep(len(paths) / per_second)
    return sent


@pytest_twisted.inlineCallbacks
def test_the_dashboard_numbers_follow_the_traffic(upstreams, gateway, tmp_path):
    users, orders = upstreams("users"), upstreams("orders")
    status_port = free_port()
    gw = gateway(CONFIG.format(status_port=status_port, users=users.url, orders=orders.url,
                               dead_port=free_port()))
    wait_for_port(status_port, process=gw.process)
    driver = yield deferToThread(browser, tmp_path / "profile")
    try:
        yield deferToThread(driver.get, "http://127.0.0.1:%d/status" % status_port)
        first = yield deferToThread(wait_for_text, driver, "total-requests", "0")
        assert first == "0"
        assert (yield deferToThread(text_of, driver, "serving")) == "SERVING"
        # One process: no Workers panel.
        assert (yield deferToThread(driver.execute_script,
                                    "return document.getElementById('workers-panel').hidden"))

        sent = yield traffic(gw, seconds=4, per_second=60)
        total = sum(sent.values())
        shown = yield deferToThread(wait_for_text, driver, "total-requests", f"{total:,}")
        assert shown == f"{total:,}"
        assert (yield deferToThread(text_of, driver, "status-2xx")) == "{:,}".format(
            sent["users"] + sent["orders"])
        assert (yield deferToThread(text_of, driver, "status-4xx")) == "{:,}".format(
            sent["nowhere"])
        rate = yield deferToThread(text_of, driver, "rate-10s")
        assert float(rate.replace(",", "")) > 0
        p99 = yield deferToThread(text_of, driver, "latency-p99")
        assert float(p99.replace(",", "")) > 0
        row = yield deferToThread(text_of, driver, "route-users")
        assert "{:,}".format(sent["users"]) in row.split()
        target = yield deferToThread(text_of, driver, "target-users-" + users.url)
        assert "in pool" in target and "{:,}".format(sent["users"]) in target.split()
        assert (yield deferToThread(text_of, driver, "rss")).endswith("MB")
        breaker = yield deferToThread(text_of, driver, "circuit-breaker")
        assert breaker.split()[:2] == ["breaker", "closed"]
        # An aggregate, and its part that failed, with the reason.
        for _ in range(3):
            response = yield treq.get(gw.url("/both"))
            yield response.content()
        row = yield deferToThread(wait_for_text_in, driver, "aggregate-both", "3")
        assert row.split()[:3] == ["both", "/both", "3"]
        part = yield deferToThread(wait_for_text_in, driver, "aggregate-both-dead", "3")
        assert "unreachable 3" in part
        for chart in ("chart-requests", "chart-latency", "chart-status", "chart-rss"):
            assert (yield deferToThread(painted_pixels, driver, chart)) > 500, chart
        errors = yield deferToThread(driver.get_log, "browser")
        assert [e for e in errors if e["level"] == "SEVERE"] == []

        SCREENSHOT.parent.mkdir(exist_ok=True)
        assert (yield deferToThread(driver.save_screenshot, str(SCREENSHOT)))

        # The status-code tile keeps its four figures whole, wide or phone-narrow.
        for width in (1400, 360):
            assert_all_figures_visible((yield deferToThread(status_figures_at, driver, width)))
        assert (yield deferToThread(driver.save_screenshot, str(NARROW_SCREENSHOT)))
    finally:
        yield deferToThread(driver.quit)


@pytest_twisted.inlineCallbacks
def test_with_workers_the_dashboard_sums_them_and_lists_each(upstreams, gateway, tmp_path):
    users, orders = upstreams("users"), upstreams("orders")
    status_port = free_port()
    ini = CONFIG.format(status_port=status_port, users=users.url, orders=orders.url,
                        dead_port=free_port())
    gw = gateway(ini.replace("access_log = off", "access_log = off\nworkers = 2", 1))
    wait_for_port(status_port, process=gw.process)
    driver = yield deferToThread(browser, tmp_path / "profile")
    try:
        yield deferToThread(driver.get, "http://127.0.0.1:%d/status" % status_port)
        for index in (0, 1):
            row = yield deferToThread(wait_for_text_in, driver, "worker-%d" % index, "serving")
            assert "serving" in row.split(), row
        sent = yield traffic(gw, seconds=1, per_second=60)
        total = sum(sent.values())
        shown = yield deferToThread(wait_for_text, driver, "total-requests", f"{total:,}")
        assert shown == f"{total:,}"
        assert "0 restarted" in (yield deferToThread(text_of, driver, "worker-restarts"))
        errors = yield deferToThread(driver.get_log, "browser")
        assert [e for e in errors if e["level"] == "SEVERE"] == []
    finally:
        yield deferToThread(driver.quit)


def wait_for_text_in(driver, element_id, wanted, timeout=20.0):
    """Wait until the element's text has the word C{wanted}; returns what it last showed."""
    deadline = time.monotonic() + timeout
    while True:
        shown = text_of(driver, element_id) or ""
        if wanted in shown.split() or time.monotonic() > deadline:
            return shown
        time.sleep(0.1)
