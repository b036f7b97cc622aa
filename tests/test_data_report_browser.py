"""The dataset quality report opens offline in headless Chromium (Playwright, system Chromium at
/usr/bin/chromium as in test_webui_browser.py): summary, problem rows, speaker plots that decode,
no network request; screenshot written."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_helpers import make_quality_dataset

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="/usr/bin/chromium is not installed (Debian package 'chromium', "
                                       "see packages-debian.txt / scripts/setup.sh)")


def test_report_renders_offline_in_chromium(tmp_path):
    from playwright.sync_api import sync_playwright

    from preprocessing.quality import check_dataset
    from preprocessing.quality_html import write_html

    expected = make_quality_dataset(tmp_path / "ds")
    report = check_dataset(tmp_path / "ds", num_workers=1, progress=False)
    page_path = tmp_path / "report.html"
    write_html(report, page_path)

    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                          "--disable-background-networking", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_path.as_uri(), wait_until="load")
            assert page.title().startswith("Dataset report")
            rows = page.locator("#problems tr.warning, #problems tr.error")
            assert rows.count() == len(expected)
            problems_text = page.locator("#problems").inner_text()
            for name, kind in expected.items():
                assert name in problems_text and kind in problems_text
            assert page.locator("#problems tr.error").count() == 1  # the 0.2 s clip
            assert page.locator("#speakers h3").all_inner_texts() == ["bad", "clean"]
            assert page.locator("#speakers img").count() == 4
            assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 300)")
            assert page.locator("#files tr").count() == len(report.files) + 1
            page.screenshot(path=str(tmp_path / "dataset_report.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "dataset_report.png").stat().st_size > 10_000
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
