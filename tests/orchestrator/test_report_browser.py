"""report.html of a big run (4 hardware x 8 configs, generated numbers through build_report) in headless
Chromium: it loads without console errors, the page never scrolls sideways at laptop width (a wide
table scrolls inside its own wrapper), and its plots are there with their titles and axis labels as text.

Needs /usr/bin/chromium, /usr/bin/chromedriver (Debian: chromium chromium-driver; scripts/setup.sh
installs them as root) and selenium (the test extras); skips naming what is missing.
"""
from __future__ import annotations

import os
import shutil

import pytest

from orchestrator.stages.report import render_html
from tests.orchestrator.report_data import big_report

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} is not installed (Debian: apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


def _fontconfig_without_dejavu(folder):
    """A fontconfig file whose only fonts are matplotlib's STIX serif files (wider than DejaVu Sans)."""
    from pathlib import Path

    import matplotlib

    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    fonts = folder / "only"
    fonts.mkdir()
    for f in ttf.glob("STIXGeneral*.ttf"):
        (fonts / f.name).symlink_to(f)
    conf = folder / "fonts.conf"
    conf.write_text(f"<?xml version='1.0'?><!DOCTYPE fontconfig SYSTEM 'fonts.dtd'><fontconfig><dir>{fonts}</dir>"
                    f"<cachedir>{folder / 'cache'}</cachedir></fontconfig>")
    return conf


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    reason = _missing()
    if reason:
        pytest.skip(f"report browser test: {reason}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tmp_path_factory.mktemp("chromium-profile")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # the driver named explicitly: Selenium Manager would try to download one. The browser sees no
    # DejaVu Sans of the system's (a fontconfig of one wide serif font): as on a viewer's machine that
    # lacks it, the plots' texts must still be drawn as matplotlib laid them out.
    env = dict(os.environ, FONTCONFIG_FILE=str(_fontconfig_without_dejavu(tmp_path_factory.mktemp("fonts"))))
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER, env=env), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    report = big_report()
    assert len(report["results"]) == 8 and len(report["hardware"]) == 4
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(render_html(report))
    return report, path


@pytest.mark.parametrize("width", [1280, 800])
def test_report_reads_in_a_browser(browser, page, width):
    report, path = page
    browser.set_window_size(width, 900)
    browser.get(path.as_uri())
    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == []
    inner = browser.execute_script("return window.innerWidth")
    scroll = browser.execute_script("return document.documentElement.scrollWidth")
    assert scroll <= inner, f"the page scrolls sideways at {width} px: {scroll} > {inner}"
    # whatever is wider than the page is a table inside a wrapper that scrolls on its own
    too_wide = browser.execute_script("""
        const out = [];
        for (const el of document.body.querySelectorAll('*')) {
            const r = el.getBoundingClientRect();
            if (r.right > window.innerWidth + 1 && !el.closest('.wrap') && !el.closest('details'))
                out.push(el.tagName + '.' + el.className);
        }
        return out;""")
    assert too_wide == []
    wraps = browser.execute_script(
        "return [...document.querySelectorAll('.wrap')].map(w => getComputedStyle(w).overflowX)")
    assert wraps and set(wraps) == {"auto"}
    svgs = browser.find_elements("css selector", "figure.plot svg")
    hw = len(report["hardware"])
    # per hardware: accuracy, calibration, speedup and three search panels; then ranks and fine-tune
    assert len(svgs) == 6 * hw + 2
    assert all(s.size["width"] > 100 and s.size["height"] > 100 for s in svgs)  # drawn, not collapsed
    # the plots' texts are drawn as glyph outlines (one group per text, as matplotlib laid it out), and the
    # same texts lie over them transparent: searchable and selectable, whatever the browser's fonts
    drawn = browser.execute_script("""
        return [...document.querySelectorAll('figure.plot svg')].map(svg =>
            [...svg.querySelectorAll('g[id^="text_"]')].map(g => [
                [...g.childNodes].filter(n => n.nodeType === Node.COMMENT_NODE).map(n => n.data.trim()),
                g.querySelectorAll('use').length]));""")
    overlay = browser.execute_script("""
        return [...document.querySelectorAll('figure.plot svg')].map(svg =>
            [...svg.querySelectorAll('text')].map(t => [t.textContent, getComputedStyle(t).fillOpacity]));""")
    for groups, texts in zip(drawn, overlay):
        assert sorted(line for lines, _ in groups for line in lines) == sorted(t.strip() for t, _ in texts)
        assert all(uses > 0 for lines, uses in groups if "".join(lines).strip())  # outlines, not text
        assert {opacity for _, opacity in texts} == {"0"}
    # no two drawn texts of a plot on each other (a budget label over the points, tick labels into an axis
    # label, titles of side-by-side panels)
    overlaps = browser.execute_script("""
        const out = [];
        for (const svg of document.querySelectorAll('figure.plot svg')) {
            const boxes = [...svg.querySelectorAll('g[id^="text_"]')].map(g => [
                [...g.childNodes].filter(n => n.nodeType === Node.COMMENT_NODE).map(n => n.data.trim()).join(' '),
                g.getBoundingClientRect()]).filter(([t]) => t);
            for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
                const [ta, a] = boxes[i], [tb, b] = boxes[j];
                const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
                const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
                if (w > 1 && h > 1) out.push(ta + ' | ' + tb);
            }
        }
        return out;""")
    assert overlaps == [], f"overlapping plot texts at {width} px: {overlaps[:10]}"
    texts = browser.execute_script("return [...document.querySelectorAll('svg text')].map(t => t.textContent)")
    for label in ("cpu: top-1 vs measured latency", "asic (simulated): top-1 vs measured latency",
                  "top-1 accuracy", "sum of the layers' LUT latencies (ms)", "jetson: LUT calibration",
                  "per-layer ranks, as a fraction of each layer's max rank", "search epoch",
                  "fine-tune: validation top-1 per epoch", "measured speedup", "whole"):
        assert any(label in t for t in texts), f"no plot text {label!r}"
    legend = browser.find_elements("css selector", "#legend .chip")
    assert len(legend) == len(report["results"])  # one entry per config, once for every plot
    verdict = browser.find_element("id", "verdict").text
    assert "Which model to ship" in verdict and "asic (simulated)" in verdict
