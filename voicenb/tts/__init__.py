"""Text to speech, three backends behind one call: :func:`speak` through AssemblyAI
(:mod:`voicenb.tts.assemblyai`, ``assemblyai-tts-1``), OpenAI's ``audio.speech`` (until its
speech models shut down on 2027-01-06: :data:`SHUTDOWN`), or espeak-ng offline; and
:func:`play`, which plays a clip once in a notebook or through the speakers in a terminal.

>>> clip = vnb.speak("Paris is the capital of France.")              # doctest: +SKIP
>>> clip = vnb.speak("Bonjour.", backend="assemblyai", language="french")  # doctest: +SKIP
>>> clip = vnb.speak("Bonjour.", backend="espeak", voice="fr")       # doctest: +SKIP

:func:`speak_wav` says one sentence of a spoken answer as a WAV file and times its first
audio byte (``voicenb._talkback`` speaks answers sentence by sentence as they stream, or, on
AssemblyAI, token by token through one WebSocket session per conversation).
"""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
import tempfile
import threading
import time
import warnings
import wave
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from .. import _openai
from .._config import Settings, resolve
from .._errors import ConfigError, ModelNotFoundError, ServiceError, VoicenbError
from ..audio import Audio, pcm_to_wav
from . import assemblyai

__all__ = ["speak", "play", "BACKENDS", "DEFAULT_MODEL", "DEFAULT_VOICE", "Speech",
           "backend_for", "speak_wav", "check_model", "SHUTDOWN"]

log = logging.getLogger("voicenb")

BACKENDS = ("assemblyai", "openai", "espeak", "auto")
DEFAULT_MODEL = "gpt-4o-mini-tts"
#: OpenAI's speech models and the day OpenAI shuts them down (its notice of 2026-10-01 on its
#: deprecations page, as AssemblyAI's OpenAI-to-AssemblyAI TTS migration guide of 2026-11-03
#: reports it). Assumption: the dated snapshots of gpt-4o-mini-tts go with it.
SHUTDOWN = {model: date(2027, 1, 6) for model in (
    "tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15",
    "gpt-4o-mini-tts-2025-03-20")}
SWITCH_TO = ("speak with AssemblyAI (backend='assemblyai', VOICENB_TTS=assemblyai, with "
             "ASSEMBLYAI_API_KEY), offline with espeak-ng (backend='espeak'), or with OpenAI's "
             "realtime models, which its audio.speech endpoint does not serve")


def today() -> date:
    """Today in UTC: what the shutdown dates are compared with (tests set the clock here)."""
    return datetime.now(timezone.utc).date()


_shutdown_warned: set[str] = set()


def check_model(model: str) -> None:
    """Refuse an OpenAI speech model from its shutdown day on, with what to switch to; before
    it, warn once per model that the day is coming."""
    day = SHUTDOWN.get(model)
    if day is None:
        return
    if today() >= day:
        raise ConfigError(f"OpenAI shut its speech model {model!r} down on {day}: it no longer "
                          f"answers. Switch: {SWITCH_TO}.")
    if model not in _shutdown_warned:
        _shutdown_warned.add(model)
        warnings.warn(f"OpenAI shuts its speech model {model!r} down on {day}; from then on "
                      f"voicenb refuses it. Before then, {SWITCH_TO}.", FutureWarning,
                      stacklevel=3)
DEFAULT_VOICE = "alloy"
TTS_ENV = "VOICENB_TTS"
#: seconds espeak-ng may take for one text
ESPEAK_TIMEOUT = 60.0


def speak(
    text: str,
    backend: str | None = None,
    voice: str | None = None,
    model: str | None = None,
    settings: Settings | None = None,
    *,
    language: str | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    **options: Any,
) -> Audio:
    """Say ``text``; return the speech as an :class:`Audio` (it is not played: see
    :func:`play`, or ``Session(speak=True)``).

    >>> clip = vnb.speak("Paris is the capital of France.", backend="assemblyai")  # doctest: +SKIP
    >>> clip.format, round(clip.duration, 1)                                 # doctest: +SKIP
    ('wav', 2.3)

    ``backend`` is ``"assemblyai"`` (AssemblyAI's ``assemblyai-tts-1`` over HTTP; ``voice``
    one of :data:`voicenb.tts.assemblyai.VOICES`, default ``aai-jane``; ``language`` one of
    english, spanish, german, french, italian, portuguese; a text over 5,000 characters is
    said in pieces), ``"openai"`` (OpenAI's ``audio.speech``, model ``gpt-4o-mini-tts``,
    voice ``alloy``, until OpenAI shuts it down on 2027-01-06; ``options`` such as
    ``response_format="wav"``, ``speed=`` or ``instructions=`` go to the API), ``"espeak"``
    (espeak-ng on this machine, no network; ``voice`` is an espeak voice such as ``en-us``
    or ``fr``) or ``"auto"`` (the default, or ``VOICENB_TTS``: AssemblyAI when
    ``ASSEMBLYAI_API_KEY`` is set, else OpenAI when ``OPENAI_API_KEY`` is set and its speech
    model has not been shut down, else espeak-ng). ``voice`` and ``language`` default to
    ``VOICENB_TTS_VOICE`` and ``VOICENB_TTS_LANGUAGE``.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("There is no text to speak: pass a non-empty string.")
    cfg = resolve(settings, openai_api_key=api_key, openai_base_url=base_url, tts=backend)
    backend = backend_for(cfg)
    voice = voice or cfg.tts_voice
    if backend == "assemblyai":
        if model not in (None, assemblyai.MODEL) or options:
            raise ConfigError("backend='assemblyai' takes text, voice= and language= (not "
                              f"{'model=' if model else ', '.join(options)}).")
        return assemblyai.synthesize(text, cfg, voice, language or cfg.tts_language)
    if language is not None:
        raise ConfigError(f"language= is for backend='assemblyai'; with {backend!r} choose a "
                          "voice that speaks it (voice=).")
    if backend == "espeak":
        if model is not None or options:
            raise ConfigError("backend='espeak' takes only text and voice= (not model= or "
                              f"{', '.join(options) or 'options'}).")
        return _espeak(text, voice)
    check_model(model or DEFAULT_MODEL)
    return _openai_speech(text, voice or DEFAULT_VOICE, model or DEFAULT_MODEL, cfg, options)


def _openai_speech(text: str, voice: str, model: str, cfg: Settings,
                   options: dict[str, Any]) -> Audio:
    client = _openai.client(cfg)
    try:
        response = client.audio.speech.create(model=model, voice=voice, input=text, **options)
        data = response.read()
    except Exception as exc:
        if not _openai.is_transport_error(exc):
            raise
        raise _speech_error(exc, model, cfg) from None
    fmt = options.get("response_format") or "mp3"
    if fmt == "pcm":  # headerless: wrap it so it is a clip like any other
        data = pcm_to_wav(data, rate=24000)
    try:
        return Audio(data, name=f"speech.{'wav' if fmt == 'pcm' else fmt}")
    except Exception as exc:
        raise ServiceError(f"OpenAI speech sent something that is not audio ({exc}).",
                           service=_openai.SERVICE) from exc


def backend_for(cfg: Settings) -> str:
    """The speech backend ``cfg.tts`` names, ``"auto"`` decided: ``"assemblyai"`` when its key
    (and a text-to-speech host) is set, else ``"openai"`` while its key is set and its speech
    model lives, else ``"espeak"``.

    >>> backend_for(Settings(tts="auto"))      # no key here            # doctest: +SKIP
    'espeak'
    """
    if cfg.tts not in BACKENDS:
        raise ConfigError(f"Unknown speech backend {cfg.tts!r}. Choose one of: "
                          f"{', '.join(BACKENDS)} (backend= argument, Settings(tts=...) or "
                          f"{TTS_ENV}).")
    if cfg.tts == "auto":
        if cfg.assemblyai_api_key and cfg.assemblyai_tts_url:
            return "assemblyai"
        alive = today() < SHUTDOWN[DEFAULT_MODEL]  # OpenAI while its speech model lives
        return "openai" if cfg.openai_api_key and alive else "espeak"
    return cfg.tts


def _speech_error(exc: BaseException, model: str, cfg: Settings) -> VoicenbError:
    error = _openai.convert(exc, model=model, base_url=cfg.openai_base_url, what="speech")
    if isinstance(error, ModelNotFoundError):
        error = ModelNotFoundError(
            f"Speech model {model!r} is not available at {cfg.openai_base_url} "
            f"({error.detail}). Choose another with model=, e.g. {DEFAULT_MODEL!r} or "
            "'tts-1'.", model=model, service=error.service, status_code=error.status_code,
            detail=error.detail, code=error.code)
    return error


# -- one sentence as WAV, timed -----------------------------------------------------------------


@dataclass(frozen=True)
class Speech:
    """One text said as a WAV file: its length in ``seconds``, the ``model`` that said it
    (``"espeak"`` for espeak-ng) and ``ttfb_s``, request -> first audio byte."""

    wav: bytes
    seconds: float
    model: str
    ttfb_s: float


def speak_wav(text: str, backend: str | None = None, voice: str | None = None,
              model: str | None = None, settings: Settings | None = None) -> Speech:
    """Say ``text`` (a sentence) as a WAV file a browser can decode, timing the first byte.

    >>> s = speak_wav("Paris is the capital of France.", backend="espeak")   # doctest: +SKIP
    >>> s.model, round(s.seconds, 1), s.wav[:4]                                # doctest: +SKIP
    ('espeak', 2.1, b'RIFF')

    Backends as :func:`speak`. OpenAI is asked for ``response_format="wav"`` and read as a
    stream, so ``ttfb_s`` is the wait for its first audio byte; espeak-ng writes a file, so
    there ``ttfb_s`` is the whole synthesis. The header is rewritten with the real sizes.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("There is no text to speak: pass a non-empty string.")
    cfg = resolve(settings, tts=backend)
    chosen = backend_for(cfg)
    voice = voice or cfg.tts_voice
    if chosen == "espeak":
        if model is not None:
            raise ConfigError("backend='espeak' takes only text and voice= (not model=).")
        name, started = "espeak", time.monotonic()
        data = _espeak(text, voice).read()
        ttfb = time.monotonic() - started
        source = "espeak-ng"
    elif chosen == "assemblyai":
        name, source = assemblyai.MODEL, assemblyai.SERVICE
        data, ttfb = assemblyai.stream_wav(text, cfg, voice, cfg.tts_language)
    else:
        name = model or DEFAULT_MODEL
        check_model(name)
        data, ttfb = _openai_wav(text, voice or DEFAULT_VOICE, name, cfg)
        source = _openai.SERVICE
    wav, seconds = _clean_wav(data, source)
    return Speech(wav, seconds, name, ttfb)


def _openai_wav(text: str, voice: str, model: str, cfg: Settings) -> tuple[bytes, float]:
    client = _openai.client(cfg)
    chunks: list[bytes] = []
    ttfb: float | None = None
    started = time.monotonic()
    try:
        # the streaming response: the SDK's plain create() returns only once the whole body
        # is in, which would time the last byte, not the first
        with client.audio.speech.with_streaming_response.create(
                model=model, voice=voice, input=text, response_format="wav") as response:
            for chunk in response.iter_bytes():
                if chunk and ttfb is None:
                    ttfb = time.monotonic() - started
                chunks.append(chunk)
    except Exception as exc:
        if not _openai.is_transport_error(exc):
            raise
        raise _speech_error(exc, model, cfg) from None
    return b"".join(chunks), ttfb if ttfb is not None else time.monotonic() - started


def _clean_wav(data: bytes, source: str) -> tuple[bytes, float]:
    """The WAV rewritten with its real sizes, and its seconds. OpenAI streams WAV with
    0xFFFFFFFF as the sizes (unknown when the header goes out): ``wave`` then reads hours of
    audio, and strict decoders (Safari) refuse the file."""
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            frames = w.readframes(w.getnframes())  # what is there, whatever the header says
    except (wave.Error, EOFError) as exc:
        raise ServiceError(f"{source} sent speech that is not a PCM WAV file ({exc}). Try "
                           "again; if it keeps happening, check that the server supports "
                           "response_format='wav'.", service=source) from None
    frames = frames[: len(frames) - len(frames) % (channels * width)]  # no half frame
    if not frames:
        raise ServiceError(f"{source} sent a WAV file with no audio in it. Try again.",
                           service=source)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(frames)
    return out.getvalue(), len(frames) / (channels * width * rate)


def _espeak(text: str, voice: str | None) -> Audio:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise ConfigError(
            "Speaking offline (backend='espeak') needs the espeak-ng program, which is not "
            "installed (not found on PATH). Install it: `sudo apt-get install espeak-ng` "
            "(Debian/Ubuntu), `brew install espeak-ng` (macOS) or `conda install -c "
            "conda-forge espeak-ng`; or use backend='openai'.")
    with tempfile.TemporaryDirectory(prefix="voicenb-espeak-") as tmp:
        out = Path(tmp) / "speech.wav"
        cmd = [exe, "-w", str(out), "--stdin"] + (["-v", voice] if voice else [])
        try:
            done = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True,
                                  timeout=ESPEAK_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise ServiceError(f"espeak-ng did not finish within {ESPEAK_TIMEOUT:.0f} s.",
                               service="espeak-ng") from None
        error = done.stderr.decode("utf-8", "replace").strip()
        if done.returncode != 0 or not out.is_file() or out.stat().st_size <= 44:
            hint = " List the voices with `espeak-ng --voices`." if voice else ""
            raise ConfigError(f"espeak-ng could not speak the text (exit {done.returncode}: "
                              f"{error or 'no audio written'}).{hint}")
        return Audio(out.read_bytes(), name="speech.wav")


# -- playing ----------------------------------------------------------------------------------

_warned = False
_warn_lock = threading.Lock()


def play(audio: Audio, *, blocking: bool = True) -> str:
    """Play ``audio`` once. Returns how: ``"notebook"``, ``"speaker"`` or ``"none"``.

    In a notebook it is shown as an audio element that starts by itself; once the clip has
    had time to play it is replaced by one that does not, so reopening the notebook does not
    play it again. Run headless, the element is just displayed. In a terminal it plays
    through the speakers with ``sounddevice`` (``pip install 'voicenb[speak]'``); without it
    nothing plays and a warning says so, once.
    """
    from .._frontend import in_notebook

    if in_notebook():
        _play_in_notebook(audio)
        return "notebook"
    player = _sounddevice()
    if player is None:
        _warn_once("Answers are not played aloud: install sounddevice and PortAudio "
                   "(pip install 'voicenb[speak]'; on Debian/Ubuntu also apt-get install "
                   "libportaudio2).")
        return "none"
    import numpy as np

    samples = np.frombuffer(audio.pcm16k(), dtype="<i2")
    try:
        player.play(samples, 16000)
        if blocking:
            player.wait()
    except Exception as exc:  # no output device, device busy...
        _warn_once(f"Answers are not played aloud: the speakers cannot be used ({exc}).")
        return "none"
    return "speaker"


def _play_in_notebook(audio: Audio) -> None:
    from IPython.display import Audio as AudioElement
    from IPython.display import display

    data = audio.read()
    handle = display(AudioElement(data=data, autoplay=True), display_id=True)
    if handle is None:
        return
    # Leave a plain player behind, so the saved notebook does not play it on reopening.
    timer = threading.Timer(audio.duration + 2.0,
                            lambda: handle.update(AudioElement(data=data, autoplay=False)))
    timer.daemon = True
    timer.start()


def _sounddevice() -> Any:
    try:
        import sounddevice
    except (ImportError, OSError):  # not installed, or PortAudio missing
        return None
    return sounddevice


def _warn_once(message: str) -> None:
    global _warned
    with _warn_lock:
        if _warned:
            return
        _warned = True
    log.warning("voicenb: %s", message)
