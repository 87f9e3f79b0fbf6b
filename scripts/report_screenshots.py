"""The README's report pictures: a run's report.html in headless Chromium, one PNG per viewport width.

    .venv/bin/haloc report runs/imagenet_resnet18-demo          # re-render with the current code first
    .venv/bin/python scripts/report_screenshots.py runs/imagenet_resnet18-demo/report.html docs/report

writes docs/report-800.png and docs/report-1400.png (viewports 800 and 1400 px wide, 3000 px tall).
Chromium and its driver are what scripts/setup.sh installs for the browser test.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path


def _driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        sys.exit("error: chromium and chromedriver are not on PATH; run `bash scripts/setup.sh`, which installs them")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                 "--disable-background-networking", f"--user-data-dir={tempfile.mkdtemp()}"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=opts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("html", type=Path, help="a run's report.html")
    p.add_argument("prefix", help="output prefix: PREFIX-<width>.png")
    p.add_argument("--widths", type=int, nargs="+", default=[800, 1400], help="viewport widths (default: 800 1400)")
    p.add_argument("--height", type=int, default=3000, help="viewport height (default: 3000)")
    args = p.parse_args(argv)
    if not args.html.is_file():
        sys.exit(f"error: {args.html}: no such report; give a run's report.html (`haloc report RUN` writes it)")
    url = args.html.resolve().as_uri()
    d = _driver()
    try:
        for w in args.widths:
            d.set_window_size(w, args.height)
            d.get(url)
            # the window's size includes its frame: grow it until the viewport itself is w x height
            inner_w, inner_h = d.execute_script("return [window.innerWidth, window.innerHeight]")
            d.set_window_size(2 * w - inner_w, 2 * args.height - inner_h)
            d.get(url)
            out = f"{args.prefix}-{w}.png"
            d.save_screenshot(out)
            print(f"{out}: viewport {d.execute_script('return window.innerWidth')} px wide, page "
                  f"{d.execute_script('return document.documentElement.scrollWidth')} px wide")
    finally:
        d.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
