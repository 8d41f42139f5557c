"""A real JupyterLab / Notebook 7 server and headless Debian Chromium, for the browser tests."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Jupyter:
    def __init__(self, root: Path, env: dict[str, str], log: Path) -> None:
        self.root, self.log = root, log
        self.port = free_port()
        self.token = secrets.token_hex(16)
        jupyter = Path(sys.executable).with_name("jupyter")
        self.proc = subprocess.Popen(
            [str(jupyter), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
             "--allow-root", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False"],
            stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env, cwd=root)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}",
                                            timeout=2) as r:
                    json.load(r)
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Jupyter did not start; see {log}")
                time.sleep(0.3)

    def lab(self, notebook: str) -> str:
        return f"{self.url}/lab/tree/{notebook}?token={self.token}&reset"

    def notebook7(self, notebook: str) -> str:
        return f"{self.url}/notebooks/{notebook}?token={self.token}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def run_all(page) -> None:
    """Run All Cells of the notebook open in ``page`` (JupyterLab), once its kernel is up."""
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
    time.sleep(2)  # let the kernel connect
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()


def start_live(page, jupyter: Jupyter, notebook: str) -> None:
    """Open ``notebook`` in JupyterLab, run its first cell (which shows a live widget) and
    press Start listening: from then on the fake microphone is heard."""
    page.goto(jupyter.lab(notebook))
    page.wait_for_selector(".jp-Cell .jp-InputArea-editor", timeout=90_000)
    time.sleep(2)  # let the kernel connect
    page.click(".jp-Cell .jp-InputArea-editor")
    page.keyboard.press("Shift+Enter")
    page.wait_for_selector(".voicenb-live-button", timeout=90_000)
    page.click(".voicenb-live-button")


@contextmanager
def notebook_run(root: Path, env: dict[str, str], notebook: str, name: str, *,
                 width: int = 1400, height: int = 1000) -> Iterator:
    """JupyterLab serving ``root`` with ``env``, ``notebook`` open in Chromium and Run All
    clicked; yields the page. On a failure a full-page screenshot and the server's log go to
    test-artifacts/``name``-failed.png and ``name``-jupyter.log."""
    import shutil

    artifacts = Path(__file__).resolve().parents[2] / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    log = root.parent / f"{name}-jupyter.log"
    jupyter = Jupyter(root, env, log)
    try:
        with chromium(Path(__file__).resolve().parents[1] / "data" / "question.wav") as browser:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(jupyter.lab(notebook))
            run_all(page)
            try:
                yield page
            except Exception:
                page.screenshot(path=str(artifacts / f"{name}-failed.png"), full_page=True)
                shutil.copy(log, artifacts / log.name)
                raise
    finally:
        jupyter.stop()


@contextmanager
def live_page(root: Path, home: Path, cells: list[str], microphone: Path, name: str, *,
              width: int = 1100, height: int = 800) -> Iterator:
    """``cells`` as ``name``.ipynb under ``root``, opened in JupyterLab (VOICENB_HOME
    ``home``) in Chromium whose microphone plays ``microphone``; its first cell run and
    Start listening pressed (:func:`start_live`); yields the page. On a failure a
    full-page screenshot and the server's log go to test-artifacts/``name``-failure.png
    and ``name``-jupyter.log."""
    import os
    import shutil

    artifacts = Path(__file__).resolve().parents[2] / "test-artifacts"
    write_notebook(root / f"{name}.ipynb", cells)
    log = root / f"{name}-jupyter.log"
    jupyter = Jupyter(root, {**os.environ, "VOICENB_HOME": str(home)}, log)
    try:
        with chromium(microphone) as browser:
            page = browser.new_page(viewport={"width": width, "height": height})
            try:
                start_live(page, jupyter, f"{name}.ipynb")
                yield page
            except Exception as exc:
                artifacts.mkdir(exist_ok=True)
                shot = artifacts / f"{name}-failure.png"
                page.screenshot(path=str(shot), full_page=True)
                shutil.copy(log, artifacts / log.name)
                raise AssertionError(f"{exc}\nscreenshot: {shot}\nserver log: "
                                     f"{artifacts / log.name}") from exc
    finally:
        jupyter.stop()


def play_first_audio(page, selector: str = ".vnb-turns audio") -> list[float]:
    """Play the first ``selector`` player for 0.6 s: [its currentTime, its duration]."""
    return page.evaluate("""async (selector) => {
        const a = document.querySelector(selector);
        await a.play();
        await new Promise(r => setTimeout(r, 600));
        return [a.currentTime, a.duration];
    }""", selector)


def write_notebook(path: Path, cells: list[str]) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)


@contextmanager
def chromium(fake_audio: Path, *, allow_microphone: bool = True) -> Iterator:
    """Chromium whose microphone plays ``fake_audio``; with ``allow_microphone=False`` the
    page asks and is refused, as when a person clicks Block."""
    from playwright.sync_api import sync_playwright

    flags = FLAGS if allow_microphone else [
        f for f in FLAGS if f != "--use-fake-ui-for-media-stream"] + [
        "--deny-permission-prompts"]
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=[*flags, f"--use-file-for-fake-audio-capture={fake_audio}"])
        try:
            yield browser
        finally:
            browser.close()
