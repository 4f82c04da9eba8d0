"""The starter site in a real browser: headless Chromium against a local nginx.

nginx serves one agency's rendered site with its rendered vhost (plain HTTP, as
before the certificate exists) on PROVISIONER_TEST_NET.40; Chromium (driven by
Debian's chromedriver) takes phone and desktop screenshots and runs axe-core.
"""

from __future__ import annotations

import base64
import struct
from pathlib import Path

import httpx
import pytest
import selenium_axe_python
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from provisioner.registry.load import load_inventory
from provisioner.site import render as site

from .conftest import SAMPLE_INVENTORY, TEST_NET
from .nginx_sandbox import RunningNginx, sandbox_host, write_main_conf

INVENTORY = load_inventory(SAMPLE_INVENTORY, Path("/nonexistent/provisioner-state"))
AGENCY = INVENTORY.agencies["disdukcapil"]  # publishes management components too
SERVICE_PAGE = site.service_path(AGENCY.services[0])
PAGES = ["index.html", SERVICE_PAGE, "maklumat.html", "pengaduan.html"]
WIDTHS = {"phone": 375, "desktop": 1280}
AXE_JS = Path(selenium_axe_python.__file__).with_name("axe-core") / "axe.min.js"  # axe-core 4.9
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars")


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    """The agency's site served by a real nginx from its rendered vhost; stopped at the end."""
    root = tmp_path_factory.mktemp("browser-nginx")
    host = sandbox_host(INVENTORY.hosts[AGENCY.host], root, f"{TEST_NET}.40")
    site.write_files(site.render_site(AGENCY), site.site_dir(AGENCY, host))
    site.vhost_path(AGENCY, host).write_bytes(
        site.render_vhost(AGENCY, host, INVENTORY.settings, tls_ready=False))
    write_main_conf(host)
    nginx = RunningNginx(host)
    try:
        yield f"http://{host.public_ipv4}/"
    finally:
        nginx.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver, url: str, width: int) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600})
    driver.get(url)


def full_page_png(driver, width: int) -> bytes:
    """The whole page at ``width`` CSS pixels, however tall it is."""
    height = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]["height"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
    return base64.b64decode(shot["data"])


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_the_served_site_sends_security_headers_and_hides_the_manifest(base_url):
    home = httpx.get(base_url, timeout=10)
    assert home.status_code == 200 and "text/html" in home.headers["content-type"]
    for header in ("x-content-type-options", "referrer-policy", "x-frame-options",
                   "content-security-policy"):
        assert header in home.headers, header
    assert "server" not in home.headers or "/" not in home.headers["server"]
    assert httpx.get(base_url + site.MANIFEST_PATH, timeout=10).status_code == 404
    data = httpx.get(base_url + site.DATA_PATH, timeout=10)
    assert data.headers["content-type"].startswith("application/json")
    assert data.json()["slug"] == AGENCY.slug
    missing = httpx.get(base_url + "tidak-ada.html", timeout=10)
    assert missing.status_code == 404 and "Halaman tidak ditemukan" in missing.text


@pytest.mark.parametrize("width", WIDTHS, ids=str)
@pytest.mark.parametrize("page", PAGES)
def test_page_renders_styled_without_errors_and_fits_the_screen(
        base_url, browser, page, width, tmp_path_factory):
    open_page(browser, base_url + page, WIDTHS[width])
    header_colour = browser.execute_script(
        "return getComputedStyle(document.querySelector('header')).backgroundColor")
    assert header_colour == "rgb(11, 58, 102)", "the local stylesheet was not applied"
    page_width = browser.execute_script("return document.documentElement.scrollWidth")
    assert page_width <= WIDTHS[width], f"{page_width}px: wider than the {width} screen"
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors  # CSP violations and missing files are logged as SEVERE
    png = full_page_png(browser, WIDTHS[width])
    shot = tmp_path_factory.getbasetemp() / "screenshots" / f"{width}-{page.replace('/', '-')}.png"
    shot.parent.mkdir(exist_ok=True)
    shot.write_bytes(png)
    png_width, png_height = png_size(png)
    assert png_width == WIDTHS[width] and png_height >= 600
    assert len(png) > 20_000, "a near-empty screenshot"


@pytest.mark.parametrize("page", PAGES)
def test_axe_finds_no_serious_or_critical_violation(base_url, browser, page):
    open_page(browser, base_url + page, WIDTHS["desktop"])
    browser.execute_script(AXE_JS.read_text(encoding="utf-8"))
    results = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document).then(done, e => done({error: String(e)}));")
    assert "error" not in results, results.get("error")
    assert results["testEngine"]["version"].startswith("4."), results["testEngine"]
    assert results["passes"], "axe ran no check"
    serious = [f"{v['id']} ({v['impact']}): {v['help']} at "
               f"{[n['target'] for n in v['nodes']]}"
               for v in results["violations"] if v["impact"] in ("serious", "critical")]
    assert not serious, "\n".join(serious)


def test_sample_banner_is_visible(base_url, browser):
    open_page(browser, base_url, WIDTHS["phone"])
    banner = browser.find_element("css selector", "div.contoh")
    assert banner.is_displayed() and banner.text.startswith("Contoh.")
