"""Headless Chromium for tests that look at pages as a person would (Debian's chromium).

:func:`chromium` returns a Selenium driver of Debian's ``chromium`` through its
``chromium-driver``; where they are missing it installs both with apt-get when running as
root (as CI does), and otherwise skips the test with the reason.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,1600")


def ensure_chromium() -> None:
    """Install Debian's chromium and chromium-driver where missing (root only) or skip."""
    if shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("Debian's chromium and chromium-driver are not installed and this user "
                    "cannot install them (not root, or no apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            pytest.skip(f"could not install chromium: {' '.join(command)} exited "
                        f"{done.returncode}: {done.stderr.strip()[-300:]}")


def chromium(user_data_dir):
    """A headless Chromium driver with a fresh profile in ``user_data_dir``."""
    ensure_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={user_data_dir}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def broken_images(driver) -> list[str]:
    """The ``src`` of every <img> of the page that did not load (each scrolled into view, so
    lazy images load too)."""
    return driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const images = Array.from(document.images);
        images.forEach(img => { img.loading = "eager"; img.scrollIntoView(); });
        const settle = img => img.complete ? Promise.resolve() :
            new Promise(r => { img.onload = r; img.onerror = r; });
        Promise.all(images.map(settle)).then(() => done(
            images.filter(img => !(img.complete && img.naturalWidth > 0)).map(img => img.src)));
    """)
