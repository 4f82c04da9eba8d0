#!/usr/bin/env python3
"""Screenshots for the README: the leadership report and one agency's starter site.

Run after `make demo` (the lab must be up and the report written):
    .venv/bin/python scripts/screenshots.py [--agency dinkes] [--out docs/img]
Uses Debian's headless Chromium and chromedriver through selenium. The agency's
name is mapped to its lab host's address inside Chromium only; no other traffic.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from provisioner.lab import demo
from provisioner.registry.load import load_inventory

ROOT = Path(__file__).resolve().parent.parent


def browser(width: int, height: int, resolver_rules: str, profile: str) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--ignore-certificate-errors", f"--user-data-dir={profile}",
                 f"--window-size={width},{height}", f"--host-resolver-rules={resolver_rules}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))


def full_page(driver: webdriver.Chrome, url: str, path: Path, width: int) -> None:
    driver.get(url)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(height, 1600))
    driver.save_screenshot(str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inventory", type=Path, default=ROOT / "inventory")
    parser.add_argument("--agency", default="dinkes")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args()
    inventory = load_inventory(args.inventory)
    agency = inventory.agencies[args.agency]
    address = inventory.hosts[agency.host].public_ipv4
    report = demo.default_report_path(inventory)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        driver = browser(1280, 900, f"MAP {agency.fqdn} {address}, EXCLUDE localhost", profile)
        try:
            full_page(driver, report.as_uri(), args.out / "report.png", 1280)
            full_page(driver, f"https://{agency.fqdn}/", args.out / "site-home.png", 1280)
            service = agency.services[0]
            from provisioner.site import render as site
            full_page(driver, f"https://{agency.fqdn}/{site.service_path(service)}",
                      args.out / "site-service.png", 1280)
        finally:
            driver.quit()
    for name in ("report.png", "site-home.png", "site-service.png"):
        print(args.out / name)


if __name__ == "__main__":
    main()
