"""The page in a real browser: headless Debian Chromium driven by Selenium (its own
chromedriver, nothing downloaded) against ``metaseg app`` started as a user starts it.

Paints masks with mouse strokes on two photos, adapts a 64-px initialisation for a few steps,
waits for the progress bar to finish, checks the review shows a predicted overlay for every
other photo, and that the downloaded zip holds one 0/255 mask per photo at its own size.
Screenshots of the gallery, the painter and the review go to ``$METASEG_APP_SCREENSHOTS``
(how README.md's docs/app_*.png are made), else to the test's temporary folder.
"""
import io
import json
import os
import pathlib
import time
import urllib.request
import zipfile

import numpy as np
import pytest
from PIL import Image

from tests.app.conftest import BROKEN, start_server, stop_server
from tests.conftest import time_limit

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# scikit-image's sample photos, shrunk to (width, height) of a few sizes and aspects
PHOTOS = {"astronaut.jpg": ("astronaut", (112, 112)), "cat.jpg": ("chelsea", (120, 80)),
          "coffee.jpg": ("coffee", (120, 80)), "coins.png": ("coins", (96, 76)),
          "rocket.jpg": ("rocket", (96, 64))}
LABELLED = ("astronaut.jpg", "cat.jpg")  # the first two in the gallery's (sorted) order


def write_photos(directory: pathlib.Path) -> pathlib.Path:
    from skimage import data  # pylint: disable=import-outside-toplevel
    directory.mkdir(parents=True)
    for name, (sample, size) in PHOTOS.items():
        image = Image.fromarray(getattr(data, sample)()).convert("RGB").resize(size,
                                                                               Image.LANCZOS)
        image.save(directory / name, quality=92)
    (directory / BROKEN).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return directory


@pytest.fixture
def browser(tmp_path):
    # pylint: disable=import-outside-toplevel
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    for path in (CHROMIUM, CHROMEDRIVER):
        assert os.path.exists(path), f"{path} missing: apt-get install chromium chromium-driver"
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1280,860", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                           {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    yield driver
    driver.quit()


def until(condition, seconds, what):
    deadline = time.time() + time_limit(seconds)
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def paint(driver, name):
    """Horizontal strokes filling an ellipse in the middle of the open image."""
    # pylint: disable=import-outside-toplevel
    from selenium.webdriver.common.action_chains import ActionChains
    canvas = driver.find_element("id", "paint")
    until(lambda: name in driver.find_element("id", "paint-name").text
          and canvas.get_attribute("data-source"), 60, f"the painter to open {name}")
    width, height = canvas.size["width"], canvas.size["height"]
    for dy in np.linspace(-0.25, 0.25, 9):
        half = 0.22 * np.sqrt(1 - (dy / 0.28) ** 2)
        chain = ActionChains(driver).move_to_element_with_offset(
            canvas, int(-half * width), int(dy * height)).click_and_hold()
        for _ in range(4):
            chain = chain.move_by_offset(int(half * width / 2), 0)
        chain.release().perform()
    until(lambda: int(canvas.get_attribute("data-foreground") or 0) > 0, 10, "painted pixels")


def test_paint_adapt_review_download_in_chromium(browser, init, tmp_path):
    photos = write_photos(tmp_path / "photos")
    shots = pathlib.Path(os.environ.get("METASEG_APP_SCREENSHOTS", tmp_path / "shots"))
    shots.mkdir(parents=True, exist_ok=True)
    process, url = start_server(["--init", init, "--images", photos, "--workdir",
                                 tmp_path / "work", "--port", 0], cwd=tmp_path)
    try:
        driver = browser
        driver.get(url)
        find = lambda css: driver.find_elements("css selector", css)  # noqa: E731
        until(lambda: len(find("#gallery-grid .card")) == len(PHOTOS), 60, "the gallery")
        assert [c.get_attribute("data-name") for c in find("#gallery-grid .card")] == sorted(
            PHOTOS)
        assert BROKEN in driver.find_element("id", "problems").text  # named, not a crash

        find("#gallery-grid .card")[0].click()
        driver.find_element("tag name", "body").send_keys("]" * 9)  # a bigger brush: 24 -> 60
        assert driver.find_element("id", "brush-size-value").text == "60"
        paint(driver, LABELLED[0])
        driver.find_element("tag name", "body").send_keys("s")  # keyboard save
        until(lambda: "saved" in driver.find_element("id", "paint-status").text, 30, "saved")
        driver.find_element("tag name", "body").send_keys("\ue014")  # arrow right: next image
        paint(driver, LABELLED[1])
        driver.save_screenshot(str(shots / "app_paint.png"))
        driver.find_element("id", "save").click()
        until(lambda: "saved" in driver.find_element("id", "paint-status").text, 30, "saved")
        driver.find_element("id", "back").click()
        until(lambda: sorted(c.get_attribute("data-name") for c in
                             find('#gallery-grid .card[data-labelled="1"]')) == list(LABELLED),
              30, "two labelled cards")

        driver.find_element("id", "steps").send_keys("3")
        driver.find_element("id", "adapt").click()
        progress = driver.find_element("id", "progress")
        until(lambda: progress.get_attribute("data-state") in ("done", "failed", "cancelled"),
              600, "the adaptation to end")
        assert progress.get_attribute("data-state") == "done", driver.find_element(
            "id", "message").text
        assert driver.find_element("id", "progress-bar").get_attribute("style") == "width: 100%;"
        assert driver.find_element("id", "progress-text").text.startswith("done: 3 steps")
        until(lambda: len(find('#gallery-grid .card[data-predicted="1"]')) == 3, 30,
              "predicted badges")
        driver.save_screenshot(str(shots / "app_gallery.png"))

        driver.find_element("id", "tab-review").click()
        unlabelled = sorted(set(PHOTOS) - set(LABELLED))
        until(lambda: len(find('#review-grid canvas[data-overlay="loaded"]')) == 3, 60,
              "predicted overlays in the review")
        assert sorted(c.get_attribute("data-name") for c in find("#review-grid .card")) == \
            unlabelled
        assert all("mask confidence" in c.text and "% foreground" in c.text
                   for c in find("#review-grid .card"))
        driver.save_screenshot(str(shots / "app_review.png"))

        driver.find_element("id", "download-masks").click()
        archive = until(lambda: (browser.downloads / "masks.zip").exists() and not list(
            browser.downloads.glob("*.crdownload")) and browser.downloads / "masks.zip", 60,
            "masks.zip")
        with zipfile.ZipFile(archive) as masks:
            assert sorted(masks.namelist()) == sorted(os.path.splitext(n)[0] + ".png"
                                                      for n in PHOTOS)
            for name, (_, (w, h)) in PHOTOS.items():
                mask = np.asarray(Image.open(io.BytesIO(masks.read(
                    os.path.splitext(name)[0] + ".png"))))
                assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}, name
                if name in LABELLED:  # the painted strokes, at the photo's own size
                    assert 0.05 < (mask > 0).mean() < 0.8, name
        with urllib.request.urlopen(url + "api/gallery", timeout=time_limit(30)) as response:
            assert json.loads(response.read())["adaptation"]["support"] == list(LABELLED)
        errors = [entry["message"] for entry in driver.get_log("browser")
                  if entry["level"] == "SEVERE" and "status of 404" not in entry["message"]]
        assert errors == []
    finally:
        stop_server(process)
    for shot in ("app_gallery.png", "app_paint.png", "app_review.png"):
        with Image.open(shots / shot) as image:
            assert image.format == "PNG" and image.size[0] == 1280, (shot, image.size)
