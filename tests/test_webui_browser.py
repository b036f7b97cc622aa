"""The web UI in a real browser: ``python webUI.py`` on a free loopback port, driven by headless
Chromium through Playwright (system Chromium at /usr/bin/chromium; installed by scripts/setup.sh
from packages-debian.txt).

Flow: an error shows as a message (convert without a model) → upload the tiny model + config →
load → upload a short stereo 22.05 kHz wav → convert → the result file has the right name and
length and can be downloaded from the page → the score panel and spectrogram appear → screenshot → static mixing of two models →
compression → stop the server by its pid.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import soundfile as sf

from webui_helpers import build_tiny_models, write_song

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SERVER_START_TIMEOUT = 120  # s: importing torch + gradio on a busy 2-core CI machine
STEP_TIMEOUT_MS = 90_000    # per page step (model load, conversion) on the same machine

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="/usr/bin/chromium is not installed (Debian package 'chromium', "
                                       "see packages-debian.txt / scripts/setup.sh)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(proc: subprocess.Popen, url: str, log: Path) -> None:
    """Until the page answers and the launch banner is in the log (Gradio prints it just after the
    server starts answering, so the page alone is not enough: CI once read an empty log)."""
    banner = f"Running on local URL:  {url.rstrip('/')}"
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"webUI.py exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200 and banner in log.read_text():
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"webUI.py did not answer on {url} within {SERVER_START_TIMEOUT} s:\n"
                         f"{log.read_text()[-3000:]}")


@pytest.fixture
def server(tmp_path):
    """``python webUI.py --port <free>`` in ``tmp_path/work`` (results/ and trained/ land there)."""
    models = build_tiny_models(tmp_path / "models")
    work = tmp_path / "work"
    work.mkdir()
    port = _free_port()
    env = dict(os.environ, SVC_PRETRAIN_DIR=str(models.pretrain), GRADIO_ANALYTICS_ENABLED="False",
               OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "webUI.py"), "--port", str(port)], cwd=work, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_for_server(proc, url, log)
        yield url, work, models, log
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def test_convert_a_file_in_the_browser(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, work, models, log = server
    assert f"Running on local URL:  {url.rstrip('/')}" in log.read_text()  # loopback only
    assert "share=True" not in log.read_text()  # webUI.py has --share; Gradio's hint is not shown
    song = write_song(tmp_path / "in" / "take 1.wav", seconds=1.0, sr=22050, stereo=True)
    expect.set_options(timeout=STEP_TIMEOUT_MS)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                          "--disable-background-networking", "--disable-extensions",
                                          "--no-first-run", "--mute-audio"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.goto(url, wait_until="domcontentloaded")
            page.wait_for_selector("#convert_button", timeout=STEP_TIMEOUT_MS)

            # A mistake gives a readable message, and the page keeps working.
            page.click("#convert_button")
            expect(page.locator(".toast-body").first).to_contain_text("no model is loaded")
            page.locator(".toast-body .toast-close").first.click()

            # Load the model through the page.
            page.locator("#model_file input[type=file]").set_input_files(str(models.g))
            page.locator("#config_file input[type=file]").set_input_files(str(models.config))
            expect(page.locator("#model_file a[href$='/G_0.pth']")).to_be_attached()  # uploaded
            expect(page.locator("#config_file a[href$='/config.json']")).to_be_attached()
            page.click("#load_button")
            expect(page.locator("#load_status textarea")).to_have_value(re.compile(r"Speakers: alto, tenor"))
            expect(page.locator("#speaker input")).to_have_value("alto")

            # Upload, convert, wait for the result.
            page.locator("#input_audio input[type=file]").set_input_files(str(song))
            expect(page.locator("#input_audio audio, #input_audio [data-testid=waveform-controls]").first) \
                .to_be_attached()
            page.click("#convert_button")
            expect(page.locator("#convert_status textarea")).to_have_value(re.compile(r"^Success"))
            name = "result_take 1_alto_0key_sovits.wav"
            result = work / "results" / name
            info = sf.info(result)
            assert (info.samplerate, info.channels, info.frames) == (44100, 1, 44100)  # 1 s at 22.05 kHz

            # The page offers the file for download and plays it.
            link = page.locator("#output_file a[href*='result_take']").first
            expect(link).to_be_attached()
            body = page.request.get(link.get_attribute("href")).body()
            assert body == result.read_bytes()
            expect(page.locator("#output_audio audio[src]").first).to_be_attached()  # the player has the audio
            # The result panel (score box ticked by default): scores, or why the random model's output
            # cannot be scored, and the spectrogram of input and output.
            expect(page.locator("#score_panel")).to_contain_text("Scores of the result")
            expect(page.locator("#spectrogram img").first).to_be_attached()
            page.screenshot(path=str(tmp_path / "webui_inference.png"), full_page=True)

            # Tools → static mixing of two models → downloadable output.pth.
            page.get_by_role("tab", name="Tools").click()
            page.locator("#mix_files input[type=file]").set_input_files([str(models.g), str(models.g2)])
            expect(page.locator("#mix_rates textarea")).to_have_value(re.compile(r'"G_0.pth \(2\)": 100'))
            page.click("#mix_button")
            expect(page.locator("#mix_status textarea")).to_have_value(re.compile(r"^Mixed 2 models"))
            assert (work / "results" / "output.pth").stat().st_size > 0
            expect(page.locator("#mix_output a[href*='output.pth']").first).to_be_attached()
            page.screenshot(path=str(tmp_path / "webui_mixing.png"), full_page=True)

            # Tools → model compression → downloadable release model.
            page.get_by_role("tab", name="Model compression").click()
            page.locator("#compress_model input[type=file]").set_input_files(str(models.g))
            page.locator("#compress_config input[type=file]").set_input_files(str(models.config))
            expect(page.locator("#compress_config a[href$='/config.json']")).to_be_attached()
            page.click("#compress_button")
            expect(page.locator("#compress_status textarea")).to_have_value(re.compile(r"^Compressed G_0.pth"))
            assert (work / "results" / "G_0_release.pth").stat().st_size < models.g.stat().st_size
            expect(page.locator("#compress_output a[href*='G_0_release.pth']").first).to_be_attached()
        finally:
            browser.close()
    assert (tmp_path / "webui_inference.png").stat().st_size > 10_000
