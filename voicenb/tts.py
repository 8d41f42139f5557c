"""Text to speech: :func:`speak` through OpenAI's ``audio.speech``, or espeak-ng offline; and
:func:`play`, which plays a clip once in a notebook or through the speakers in a terminal.

>>> clip = vnb.speak("Paris is the capital of France.")              # doctest: +SKIP
>>> clip = vnb.speak("Bonjour.", backend="espeak", voice="fr")       # doctest: +SKIP
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from . import _openai
from ._config import Settings, resolve
from ._errors import ConfigError, ModelNotFoundError, ServiceError
from .audio import Audio, pcm_to_wav

__all__ = ["speak", "play", "BACKENDS", "DEFAULT_MODEL", "DEFAULT_VOICE"]

log = logging.getLogger("voicenb")

BACKENDS = ("openai", "espeak", "auto")
DEFAULT_MODEL = "gpt-4o-mini-tts"
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
    api_key: str | None = None,
    base_url: str | None = None,
    **options: Any,
) -> Audio:
    """Say ``text``; return the speech as an :class:`Audio` (it is not played: see
    :func:`play`, or ``Session(speak=True)``).

    >>> clip = vnb.speak("Paris is the capital of France.", voice="coral")   # doctest: +SKIP
    >>> clip.format, round(clip.duration, 1)                                 # doctest: +SKIP
    ('mp3', 2.3)

    ``backend`` is ``"openai"`` (default, or ``VOICENB_TTS``: OpenAI's ``audio.speech``, model
    ``gpt-4o-mini-tts``, voice ``alloy``; ``options`` such as ``response_format="wav"``,
    ``speed=`` or ``instructions=`` go to the API), ``"espeak"`` (espeak-ng on this machine,
    no network; ``voice`` is an espeak voice such as ``en-us`` or ``fr``) or ``"auto"``
    (OpenAI when ``OPENAI_API_KEY`` is set, else espeak-ng).
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("There is no text to speak: pass a non-empty string.")
    cfg = resolve(settings, openai_api_key=api_key, openai_base_url=base_url, tts=backend)
    backend = cfg.tts
    if backend not in BACKENDS:
        raise ConfigError(f"Unknown speech backend {backend!r}. Choose one of: "
                          f"{', '.join(BACKENDS)} (backend= argument, Settings(tts=...) or "
                          f"{TTS_ENV}).")
    if backend == "auto":
        backend = "openai" if cfg.openai_api_key else "espeak"
    if backend == "espeak":
        if model is not None or options:
            raise ConfigError("backend='espeak' takes only text and voice= (not model= or "
                              f"{', '.join(options) or 'options'}).")
        return _espeak(text, voice)
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
        error = _openai.convert(exc, model=model, base_url=cfg.openai_base_url, what="speech")
        if isinstance(error, ModelNotFoundError):
            error = ModelNotFoundError(
                f"Speech model {model!r} is not available at {cfg.openai_base_url} "
                f"({error.detail}). Choose another with model=, e.g. {DEFAULT_MODEL!r} or "
                "'tts-1'.", model=model, service=error.service, status_code=error.status_code,
                detail=error.detail, code=error.code)
        raise error from None
    fmt = options.get("response_format") or "mp3"
    if fmt == "pcm":  # headerless: wrap it so it is a clip like any other
        data = pcm_to_wav(data, rate=24000)
    try:
        return Audio(data, name=f"speech.{'wav' if fmt == 'pcm' else fmt}")
    except Exception as exc:
        raise ServiceError(f"OpenAI speech sent something that is not audio ({exc}).",
                           service=_openai.SERVICE) from exc


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
    from ._frontend import in_notebook

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
