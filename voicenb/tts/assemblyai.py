"""AssemblyAI's text to speech (``assemblyai-tts-1``), through the official SDK.

- :func:`synthesize`: one text over HTTP (``vnb.speak(text, backend="assemblyai")``); a text
  over the service's 5,000 characters is said in pieces cut at sentence ends, and joined.
- :class:`Voice`: one WebSocket session (``assemblyai.TTSSession``) per conversation, kept
  open between answers with ``KeepAlive``: an answer's text goes in as the LLM writes it,
  audio comes back as it is generated, ``Cancel`` stops it without a reconnect, and each
  request's ``WordBoundaries`` say when each of its words is spoken. voicenb's talk back
  (:class:`voicenb._talkback.StreamSpeaker`) reads answers aloud through it.

>>> clip = vnb.speak("Paris is the capital of France.", backend="assemblyai")  # doctest: +SKIP
>>> clip.format, clip.duration                                               # doctest: +SKIP
('wav', 2.1)

The voice and language are settings (``VOICENB_TTS_VOICE``, ``VOICENB_TTS_LANGUAGE``), checked
before anything is sent: one of the eleven built-in voices (or a cloned voice's slug or id,
which only the service can check), one of the six languages.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from .._config import Settings
from .._errors import (AuthenticationError, ConfigError, MissingDependencyError,
                       RateLimitError, ServiceError, VoicenbError, redact)
from ..audio import Audio, pcm_to_wav

__all__ = ["MODEL", "DEFAULT_VOICE", "VOICES", "LANGUAGES", "MAX_CHARS", "SAMPLE_RATE",
           "check_voice", "check_language", "synthesize", "stream_wav", "pieces", "Voice",
           "convert"]

log = logging.getLogger("voicenb")

SERVICE = "AssemblyAI text to speech"
MODEL = "assemblyai-tts-1"
DEFAULT_VOICE = "aai-jane"
#: the built-in voices; each speaks all six languages (SDK 1.8.2, TTSConfig.language)
VOICES = ("aai-jane", "aai-alba", "aai-anna", "aai-charles", "aai-eve", "aai-george",
          "aai-jean", "aai-mary", "aai-michael", "aai-paul", "aai-vera")
LANGUAGES = ("english", "spanish", "german", "french", "italian", "portuguese")
#: characters one HTTP request may carry
MAX_CHARS = 5000
#: the API's default output: raw 16-bit little-endian mono PCM at 24 kHz
SAMPLE_RATE = 24000
#: seconds between KeepAlive frames while a conversation's session waits (the API closes a
#: session after its inactivity_timeout, 120 s by default, with no frame either way)
KEEPALIVE_S = 30.0
#: retries of a refusal the service marks retryable (429, 5xx, a dropped connection)
RETRIES = 3


def check_voice(voice: str | None) -> str:
    """The voice to ask for. A name in the built-in voices' family (``aai-...``) that is not
    one of them is refused here, before anything is paid; another name may be one of the
    account's cloned voices (a slug or an id), which only the service can check."""
    voice = (voice or DEFAULT_VOICE).strip()
    if not voice:
        return DEFAULT_VOICE
    if voice.lower().startswith("aai-") and voice.lower() not in VOICES:
        raise ConfigError(f"AssemblyAI has no built-in voice {voice!r}. Choose one of: "
                          f"{', '.join(VOICES)} (voice=, Settings(tts_voice=...) or "
                          "VOICENB_TTS_VOICE).")
    return voice.lower() if voice.lower() in VOICES else voice


def check_language(language: str | None) -> str | None:
    """The language by its English name (``None``: the voice's own), or a ConfigError."""
    if language is None or not language.strip():
        return None
    name = language.strip().lower()
    if name not in LANGUAGES:
        raise ConfigError(f"AssemblyAI's voices do not speak {language!r}. Choose one of: "
                          f"{', '.join(LANGUAGES)} (language=, Settings(tts_language=...) or "
                          "VOICENB_TTS_LANGUAGE).")
    return name


def _sdk() -> Any:
    try:
        import assemblyai
    except ImportError:  # pragma: no cover - a core dependency
        raise MissingDependencyError("assemblyai", "assemblyai",
                                     "Speaking with AssemblyAI") from None
    return assemblyai


class _NoKeys(logging.Filter):
    """The websockets library logs a client's handshake headers at DEBUG, the key among
    them; the SDK's session cannot be given a quieter logger, so its key is masked here."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 2 and str(args[0]).lower() in (
                "authorization", "sec-websocket-protocol"):
            record.args = (args[0], "***")
        elif isinstance(args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in args)
        return True


_no_keys = _NoKeys()


def _settings(cfg: Settings) -> Any:
    """The SDK's settings for ``cfg``: key, host and timeouts (never logged or shown)."""
    aai = _sdk()
    if not cfg.assemblyai_tts_url:
        raise ConfigError(
            "AssemblyAI's text to speech has no host here: ASSEMBLYAI_BASE_URL points away "
            "from AssemblyAI (a simulator or a proxy), so set ASSEMBLYAI_TTS_BASE_URL too "
            "(python -m voicenb.sim prints it), or speak with backend='espeak'.")
    return aai.Settings(api_key=cfg.require("assemblyai_api_key"),
                        tts_base_url=cfg.assemblyai_tts_url.rstrip("/"),
                        tts_http_timeout=cfg.read_timeout, http_timeout=cfg.read_timeout)


def convert(exc: BaseException, what: str = "speech") -> VoicenbError:
    """The VoicenbError for the SDK's ``TTSError`` (or a transport failure)."""
    status = getattr(exc, "status_code", None)
    code = getattr(exc, "error_code", None)
    detail = str(exc)
    param = getattr(exc, "param", None)
    where = f" (request id {exc.request_id})" if getattr(exc, "request_id", None) else ""
    kwargs = dict(service=SERVICE, status_code=status, detail=detail, code=code)
    if status in (401, 403) or code in ("unauthorized", "invalid_api_key"):
        return AuthenticationError(
            f"AssemblyAI refused the key for text to speech ({detail}). Check "
            "ASSEMBLYAI_API_KEY, or speak with backend='espeak'.", **kwargs)
    if status == 429 or code == "rate_limited":
        return RateLimitError(
            f"AssemblyAI's text to speech is rate limited ({detail}){where}. Wait and try "
            "again, or speak with backend='espeak'.",
            retry_after=getattr(exc, "retry_after", None), **kwargs)
    if code == "voice_not_found" or param in ("voice_id", "language"):
        return ConfigError(f"AssemblyAI could not use that {param or 'voice'}: {detail}. "
                           f"Built-in voices: {', '.join(VOICES)}; languages: "
                           f"{', '.join(LANGUAGES)}.")
    return ServiceError(f"AssemblyAI's text to speech failed for the {what} ({detail})"
                        f"{where}. Try again; if it keeps failing, speak with "
                        "backend='espeak'.", **kwargs)


_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*\s+|\n+")


def pieces(text: str, limit: int = MAX_CHARS) -> list[str]:
    """``text`` cut into pieces of at most ``limit`` characters, at sentence ends where it
    can (else at a space), so that a long text is said rather than refused.

    >>> pieces("One. Two. Three.", limit=10)
    ['One. Two. ', 'Three.']
    """
    out: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        ends = [m.end() for m in _SENTENCE_END.finditer(window)]
        cut = ends[-1] if ends else (window.rfind(" ") + 1 or limit)
        out.append(rest[:cut])
        rest = rest[cut:]
    if rest.strip():
        out.append(rest)
    return out


def _config(voice: str | None, language: str | None, **options: Any) -> Any:
    aai = _sdk()
    return aai.TTSConfig(voice_id=check_voice(voice), language=check_language(language),
                         **options)


def _retrying(call: Callable[[], Any]) -> Any:
    """``call()``, again after a refusal the service marks retryable (at the wait it asks)."""
    aai = _sdk()
    for attempt in range(RETRIES + 1):
        try:
            return call()
        except aai.TTSError as exc:
            if not exc.retryable or attempt == RETRIES:
                raise
            time.sleep(min(float(exc.retry_after or 0.5 * 2 ** attempt), 30.0))
    raise AssertionError("unreachable")  # pragma: no cover


def synthesize(text: str, cfg: Settings, voice: str | None = None,
               language: str | None = None) -> Audio:
    """Say ``text`` over HTTP; a WAV clip (24 kHz, 16-bit mono)."""
    aai = _sdk()
    config = _config(voice, language)
    client = aai.Client(settings=_settings(cfg))
    try:
        tts = aai.TextToSpeech(client=client, config=config)
        pcm = b"".join(_retrying(lambda piece=piece: tts.synthesize(piece).audio)
                       for piece in pieces(text))
    except aai.TTSError as exc:
        raise convert(exc) from None
    except Exception as exc:  # httpx transport errors the SDK lets through
        raise ServiceError(f"AssemblyAI's text to speech could not be reached at "
                           f"{cfg.assemblyai_tts_url} ({type(exc).__name__}: {exc}).",
                           service=SERVICE) from None
    finally:
        client.http_client.close()
    if not pcm:
        raise ServiceError("AssemblyAI's text to speech sent no audio. Try again.",
                           service=SERVICE)
    return Audio(pcm_to_wav(pcm, rate=SAMPLE_RATE), name="speech.wav")


def stream_wav(text: str, cfg: Settings, voice: str | None = None,
               language: str | None = None) -> tuple[bytes, float]:
    """Say ``text`` (one sentence) as a streamed HTTP request: (WAV bytes, seconds to its
    first audio byte). A refusal the service marks retryable, or a body cut mid-way, is
    asked for again (:data:`RETRIES`); nothing is returned until all of it is in."""
    aai = _sdk()
    config = _config(voice, language)
    client = aai.Client(settings=_settings(cfg))
    started = time.monotonic()
    chunks: list[bytes] = []
    ttfb: float | None = None

    def said(piece: str) -> list[bytes]:
        nonlocal ttfb
        got: list[bytes] = []  # a body cut mid-way is asked for again, whole
        with tts.stream(piece) as speech:
            for chunk in speech:
                if chunk and ttfb is None:
                    ttfb = time.monotonic() - started
                got.append(chunk)
        return got

    try:
        tts = aai.TextToSpeech(client=client, config=config)
        for piece in pieces(text):
            chunks += _retrying(lambda piece=piece: said(piece))
    except aai.TTSError as exc:
        raise convert(exc) from None
    except Exception as exc:
        raise ServiceError(f"AssemblyAI's text to speech could not be reached at "
                           f"{cfg.assemblyai_tts_url} ({type(exc).__name__}: {exc}).",
                           service=SERVICE) from None
    finally:
        client.http_client.close()
    return (pcm_to_wav(b"".join(chunks), rate=SAMPLE_RATE),
            ttfb if ttfb is not None else time.monotonic() - started)


# -- a conversation's session -------------------------------------------------------------------


class Voice:
    """One AssemblyAI text-to-speech session for a conversation: opened as it starts (or at
    its first answer), kept alive between answers (``KeepAlive`` every :data:`KEEPALIVE_S`),
    reopened after the service ends it (its hour is up, a dropped connection) and ended with
    :meth:`close` (the conversation stopped).

    >>> voice = Voice(settings)                                    # doctest: +SKIP
    >>> voice.listen(listener)   # Audio, FlushDone, WordBoundaries... go to it  # doctest: +SKIP
    >>> voice.generate("Paris is "); voice.generate("the capital."); voice.flush()  # doctest: +SKIP

    Events go to the one listener attached (the answer being read): an object with
    ``on_audio(flush_id, pcm)``, ``on_flush_done(flush_id, ms)``,
    ``on_words(flush_id, audio_start_ms, words)`` and ``on_error(message, retryable)``,
    called on the SDK's reader thread (never for a session already replaced). Sending never
    blocks on synthesis. After a retryable error :meth:`open` connects a new session, whose
    flush ids start again from 0: the listener says again what was not yet spoken.
    """

    def __init__(self, cfg: Settings, voice: str | None = None,
                 language: str | None = None) -> None:
        self.voice = check_voice(voice if voice is not None else cfg.tts_voice)
        self.language = check_language(language if language is not None
                                       else cfg.tts_language)
        self._cfg = cfg
        self._session: Any = None
        self._listener: Any = None
        self._lock = threading.RLock()
        self._lost = False  # the service ended the session: the next answer reconnects
        self._keeper: threading.Timer | None = None
        #: sessions opened (1 unless the service ended one), and cancels sent
        self.connects = 0
        self.cancels = 0

    def __repr__(self) -> str:
        state = "open" if self._session is not None else "idle"
        return f"Voice({MODEL}, voice={self.voice!r}, {state})"

    @property
    def model(self) -> str:
        return MODEL

    def listen(self, listener: Any) -> None:
        """Send the session's events to ``listener`` from now on (None: to nobody)."""
        with self._lock:
            self._listener = listener

    def _session_open(self) -> Any:
        """The open session, connecting (again) when there is none (the lock is held)."""
        session = self._session
        if session is not None and not self._lost and session.error is None and \
                session.termination is None:
            return session
        if session is not None:
            session.close()
        aai = _sdk()
        logger = logging.getLogger("websockets.client")
        if _no_keys not in logger.filters:
            logger.addFilter(_no_keys)
        config = aai.TTSConfig(voice_id=self.voice, language=self.language)
        client = aai.Client(settings=_settings(self._cfg))
        session = aai.TTSSession(config=config, client=client, word_boundaries=True,
                                 connect_timeout=self._cfg.connect_timeout)
        client.http_client.close()  # the session copied its settings; it sends no HTTP
        for event, handler in (("Audio", self._audio), ("FlushDone", self._done),
                               ("WordBoundaries", self._words), ("Error", self._error)):
            session.on(event, self._from(session, handler))
        try:
            session.connect()
        except aai.TTSError as exc:
            raise convert(exc, "session") from None
        except Exception as exc:
            raise ServiceError(f"AssemblyAI's text to speech could not be reached at "
                               f"{self._cfg.assemblyai_tts_url} ({type(exc).__name__}: "
                               f"{exc}).", service=SERVICE) from None
        self._session, self._lost = session, False
        self.connects += 1
        self._keep_alive()
        return session

    def open(self) -> None:
        """Connect now (a conversation does it as it starts, so that its first answer does
        not wait for the handshake)."""
        with self._lock:
            self._session_open()

    def generate(self, text: str, *, first: bool = False) -> None:
        """Append ``text`` to the request being written (opening the session if needed).
        ``first``: nothing of the answer was sent yet, so a session found gone (closed while
        idle) is replaced and the text sent again; later, what it took is lost, and the
        error says so."""
        if not text:
            return
        with self._lock:
            try:
                self._generate(text)
            except ServiceError:
                if not first:
                    raise
                self._generate(text)  # on a new session: _lost is set

    def _generate(self, text: str) -> None:
        session = self._session_open()
        limit = 2000  # one Generate frame's limit (Begin may report another)
        for start in range(0, len(text), limit):
            self._call(session.generate, text[start:start + limit])

    def flush(self) -> int:
        """Conclude the request; its flush id."""
        with self._lock:
            return self._call(self._session_open().flush)

    def cancel(self) -> None:
        """Barge-in: stop the request in flight and drop the queued ones (no reconnect)."""
        with self._lock:
            if self._session is None or self._session.error is not None:
                return
            self.cancels += 1
            try:
                self._session.cancel()
            except Exception:  # the session is gone: nothing is being said anyway
                log.debug("voicenb: cancelling speech failed", exc_info=True)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        aai = _sdk()
        try:
            return fn(*args)
        except aai.TTSError as exc:
            self._lost = True
            raise convert(exc, "session") from None
        except (ValueError, RuntimeError) as exc:
            raise ServiceError(f"AssemblyAI's text to speech session failed ({exc}).",
                               service=SERVICE) from None
        except Exception as exc:  # the socket closed under us
            self._lost = True
            raise ServiceError(f"AssemblyAI's text to speech session was lost "
                               f"({type(exc).__name__}: {exc}).", service=SERVICE) from None

    def _keep_alive(self) -> None:
        with self._lock:
            if self._keeper is not None:
                self._keeper.cancel()
            if self._session is None:
                return
            self._keeper = threading.Timer(KEEPALIVE_S, self._tick)
            self._keeper.daemon = True
            self._keeper.start()

    def _tick(self) -> None:
        with self._lock:
            session = self._session
            if session is None or session.error is not None:
                return
            try:
                session.keep_alive()
            except Exception:  # closed by the service: the next answer reconnects
                return
        self._keep_alive()

    def close(self) -> None:
        """End the session (``Terminate``) and stop keeping it alive; the next answer opens
        a new one."""
        with self._lock:
            if self._keeper is not None:
                self._keeper.cancel()
            session, self._session = self._session, None
        if session is not None:
            try:
                session.terminate()
            except Exception:
                session.close()

    # -- events, on the SDK's reader thread -------------------------------------------------

    def _from(self, session: Any, handler: Callable[[Any], None]) -> Callable[[Any], None]:
        """``handler`` for ``session``'s events while it is the open one: a frame of a
        session already replaced (its flush ids start again from 0 on the next) would be
        taken for one of the new session's."""

        def handle(event: Any) -> None:
            if self._session is session:
                handler(event)

        return handle

    def _to_listener(self, name: str, *args: Any) -> None:
        listener = self._listener
        if listener is not None:
            try:
                getattr(listener, name)(*args)
            except Exception:
                log.exception("voicenb: the speech listener failed")

    def _audio(self, event: Any) -> None:
        self._to_listener("on_audio", event.flush_id, event.audio)

    def _done(self, event: Any) -> None:
        self._to_listener("on_flush_done", event.flush_id, event.audio_duration_ms)

    def _words(self, event: Any) -> None:
        self._to_listener("on_words", event.flush_id, event.audio_start_ms,
                          [(w.word, w.start, w.end) for w in event.words])

    def _error(self, error: Any) -> None:
        """The session ended on an error: ``on_error(message, retryable)``; retryable
        (a dropped connection, close 1011, a restart, an expired session) means that a new
        session can carry on where this one stopped."""
        self._lost = True
        self._to_listener("on_error", str(convert(error, "session")),
                          bool(getattr(error, "retryable", False)))
