"""Telling a simulator from a real service, to label figures as simulated: ``GET /sim/about``
on every simulator port, and ``vnb.sim.serves(url)``, which asks loopback hosts only."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

import voicenb as vnb
from voicenb.sim.__main__ import env_from_line

URL_VARS = ("ASSEMBLYAI_BASE_URL", "ASSEMBLYAI_SYNC_URL", "ASSEMBLYAI_STREAMING_URL",
            "OPENAI_BASE_URL")

#: network events seen while a test watches (an audit hook cannot be removed: it stays
#: installed, and records only while ``_watching`` holds a list)
_watching: list[list[str]] = []


def _audit(event: str, args: tuple) -> None:
    if _watching and event in ("socket.connect", "socket.getaddrinfo"):
        _watching[-1].append(f"{event} {args[1:]!r}")


sys.addaudithook(_audit)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sim_process():
    """``python -m voicenb.sim`` in its own process: this one has never heard of it."""
    proc = subprocess.Popen([sys.executable, "-m", "voicenb.sim", "--port", "0", "--no-hear",
                             "--word-error-rate", "0.25"], stdout=subprocess.PIPE, text=True)
    try:
        yield env_from_line(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_every_url_of_a_running_simulator_is_served_by_it(sim):
    env = sim.env()
    assert {name: vnb.sim.serves(env[name]) for name in URL_VARS} == dict.fromkeys(URL_VARS,
                                                                                   True)


def test_a_simulator_in_another_process_is_recognised_by_asking_it(sim_process):
    for name in URL_VARS:
        assert vnb.sim.serves(sim_process[name]), name


@pytest.mark.parametrize("which", ["http", "websocket"])
def test_both_ports_say_who_they_are(sim, which):
    base = sim.url if which == "http" else sim.streaming.url.replace("ws://", "http://")
    sim.word_error_rate = 0.15
    about = requests.get(f"{base}/sim/about", timeout=5).json()
    assert about == {"simulator": "voicenb", "version": vnb.__version__,
                     "word_error_rate": 0.15}


def test_a_real_service_is_not_asked(monkeypatch):
    seen: list[str] = []
    _watching.append(seen)
    try:
        t0 = time.monotonic()
        answers = [vnb.sim.serves(url) for url in (
            "https://api.assemblyai.com", "https://api.openai.com/v1",
            "wss://streaming.assemblyai.com/v3/ws", "http://10.0.0.1:8765",
            "http://sim.invalid:8765/v1", "http://127.0.0.1.nip.io:8765")]
        elapsed = time.monotonic() - t0
    finally:
        _watching.remove(seen)
    assert answers == [False] * 6
    assert seen == []  # not even a DNS lookup
    assert elapsed < 0.05


def test_a_closed_loopback_port_is_not_a_simulator():
    assert vnb.sim.serves(f"http://127.0.0.1:{_closed_port()}/v1") is False
    assert vnb.sim.serves(None) is False


def test_another_local_server_is_not_a_simulator():
    class NotASim(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"simulator": "someone else"}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotASim)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert vnb.sim.serves(f"http://localhost:{server.server_address[1]}") is False
    finally:
        server.shutdown()
        server.server_close()


def test_a_stopped_simulator_is_forgotten():
    with vnb.sim.running() as sim:
        url, ws = sim.url, sim.streaming.url
        assert vnb.sim.serves(url) and vnb.sim.serves(ws)
    assert not vnb.sim.serves(url) and not vnb.sim.serves(ws)
