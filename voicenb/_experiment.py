"""What :class:`~voicenb.Experiment` runs on (private): its clips, their references, its
variants, and the runner that turns (clip, variant) pairs into history rows.

Each pair is turn ``clip index + 1`` of the session ``"<experiment>/<variant>"``, so a rerun
finds what is done by position, and a clip that changed under a name is refused rather than
mixed in. Variants whose speech-to-text is the same backend with the same options form one
group: each clip is transcribed once per group, and every variant of the group answers from
that transcript.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ._config import Settings, resolve
from ._errors import AudioError, ConfigError, TranscriptionError, VoicenbError
from ._turns import NO_SPEECH, check_template
from .accuracy import word_errors
from .audio import Audio
from .history import STAGES, HistoryStore, owner_id
from .llm import Chat
from .pricing import Prices
from .stt import get_backend
from .stt.base import Backend, Checkpoint, Transcript, source_name
from .stt.local import auto_backend

#: what a variant may set
VARIANT_KEYS = ("stt", "model", "system", "prompt_template", "stt_options", "live", "voice")
#: the files a folder of clips is read for
AUDIO_SUFFIXES = (".wav", ".webm", ".ogg", ".opus", ".mp3", ".m4a", ".flac", ".aiff", ".aif")


# -- clips and references ---------------------------------------------------------------------

@dataclass
class Clip:
    """One clip of the experiment: turn ``index + 1`` of every variant."""

    index: int
    name: str
    audio: Audio | None  # None when the clip could not be read: ``error`` says why
    reference: str | None = None
    error: AudioError | None = None
    _silent: bool | None = field(default=None, repr=False)

    @property
    def sha256(self) -> str | None:
        return self.audio.sha256 if self.audio is not None else None

    def is_silent(self) -> bool:
        """Checked once, however many speech-to-text groups hear the clip."""
        if self._silent is None:
            self._silent = self.audio.is_silent()
        return self._silent


def clips_of(audio: Any) -> list[Clip]:
    """The clips of ``audio``: a history DataFrame (rows with an audio file), a folder, a
    path, or a list of paths/bytes/:class:`Audio`. A clip that cannot be read is kept, with
    its error, so that it becomes an error row rather than a raise."""
    if isinstance(audio, pd.DataFrame):
        if "audio_path" not in audio.columns:
            raise ConfigError("audio= is a DataFrame without an audio_path column: pass "
                              "vnb.load_history(...) rows, a folder, or a list of paths.")
        items: list[Any] = [p for p in audio["audio_path"] if isinstance(p, str) and p]
    elif isinstance(audio, (str, os.PathLike)) and Path(audio).is_dir():
        items = sorted(p for p in Path(audio).iterdir()
                       if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        if not items:
            raise ConfigError(f"The folder {str(audio)!r} has no audio files "
                              f"({', '.join(AUDIO_SUFFIXES)}).")
    elif isinstance(audio, (str, os.PathLike, bytes, Audio)):
        items = [audio]
    elif isinstance(audio, Iterable):
        items = list(audio)
    else:
        raise ConfigError(f"audio= takes a folder, a list of clips or history rows, not "
                          f"{type(audio).__name__}.")
    if not items:
        raise ConfigError("audio= has no clips: an experiment needs at least one.")
    clips = []
    for i, item in enumerate(items):
        name = Path(item).name if isinstance(item, (str, os.PathLike)) else source_name(item)
        try:
            clips.append(Clip(i, name, Audio(item)))
        except AudioError as exc:
            clips.append(Clip(i, name, None, error=exc))
    return clips


def attach_references(clips: list[Clip], reference: Any, audio: Any) -> None:
    """Set each clip's reference text from ``reference``: a JSON file or a dict of
    ``{path or file name: text}`` (matched by content, then by file name), a list in clip
    order, or the name of a column of the ``audio`` DataFrame."""
    if reference is None:
        return
    if isinstance(reference, pd.Series) or (
            isinstance(reference, str) and isinstance(audio, pd.DataFrame)
            and reference in audio.columns):
        column = audio[reference] if isinstance(reference, str) else reference
        if isinstance(audio, pd.DataFrame):
            column = column[audio["audio_path"].map(lambda p: isinstance(p, str) and bool(p))]
        reference = [None if pd.isna(v) else str(v) for v in column]
    if isinstance(reference, (str, os.PathLike)):
        reference = _read_reference_file(Path(reference))
    if isinstance(reference, Mapping):
        _match(clips, reference)
    elif isinstance(reference, (list, tuple)):
        if len(reference) != len(clips):
            raise ConfigError(f"reference= has {len(reference)} texts for {len(clips)} clips: "
                              "give one per clip, in the same order (None where unknown).")
        for clip, text in zip(clips, reference):
            clip.reference = _reference_text(text)
    else:
        raise ConfigError("reference= takes a JSON file, a {clip: text} dict, a list in clip "
                          f"order or a column name, not {type(reference).__name__}.")


def _reference_text(text: Any) -> str | None:
    """A reference as text; None (unknown) for None and NaN."""
    if text is None or (isinstance(text, float) and text != text) or text is pd.NA:
        return None
    if not isinstance(text, str):
        raise ConfigError(f"A reference must be the text that was said, not "
                          f"{type(text).__name__} {text!r}.")
    return text


def _read_reference_file(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"The reference file {str(path)!r} does not exist.") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"The reference file {str(path)!r} is not JSON ({exc}); write "
                          '{"question.wav": "what was said", ...}.') from None
    if not isinstance(data, dict):
        raise ConfigError(f"The reference file {str(path)!r} must hold one JSON object, "
                          '{"question.wav": "what was said", ...}.')
    return {str(path.parent / name): text for name, text in data.items()}


def _match(clips: list[Clip], reference: Mapping[Any, Any]) -> None:
    """By content (the sha256 of a reference file that exists), else by file name."""
    by_sha: dict[str, str] = {}
    by_name: dict[str, str] = {}
    for key, text in reference.items():
        path = Path(key) if isinstance(key, (str, os.PathLike)) else None
        if path is not None and path.is_file():
            try:
                by_sha[Audio(path).sha256] = text
            except AudioError:
                pass
        by_name[Path(str(key)).name] = text
    for clip in clips:
        if clip.sha256 in by_sha:
            clip.reference = _reference_text(by_sha[clip.sha256])
        else:
            clip.reference = _reference_text(by_name.get(clip.name))


# -- variants -----------------------------------------------------------------------------------

@dataclass
class Variant:
    """One variant: its settings (``stt="auto"`` decided), prompt and speech options."""

    name: str
    session: str
    settings: Settings
    system: str | None
    prompt_template: str
    stt_options: dict[str, Any]
    simulated: str | None = None
    #: a speech-to-speech live backend ("openai-realtime", "assemblyai-agent") whose
    #: conversation each clip is said into at real-time pace, and its voice; None: the
    #: recorded pipeline (speech to text, then the model)
    live: str | None = None
    voice: str | None = None
    _prices: Prices | None = field(default=None, repr=False)

    @property
    def stt(self) -> str:
        return self.settings.stt or "assemblyai"

    def backend(self) -> Backend:
        return get_backend(self.stt, self.settings)

    def prices(self) -> Prices:
        if self._prices is None:
            self._prices = Prices.load(self.settings)
        return self._prices

    def spec(self) -> str:
        """What makes this variant what it is (no keys, no URLs): a rerun under its name
        must have the same, or its rows would mix two settings."""
        s = self.settings
        speech = {"assemblyai": s.speech_models, "whisper": s.whisper_model}.get(self.stt)
        if self.live is not None:
            return json.dumps({"live": self.live, "voice": self.voice, "system": self.system,
                               "model": s.realtime_model if self.live == "openai-realtime"
                               else None}, sort_keys=True, default=str)
        return json.dumps({"stt": self.stt, "speech_models": speech,
                           "stt_options": self.stt_options, "model": s.model,
                           "system": self.system, "prompt_template": self.prompt_template},
                          sort_keys=True, default=str)

    def stt_key(self) -> tuple[str, int, str]:
        """Variants with the same key share each clip's transcript: the same backend client
        (one per configuration) and the same options."""
        try:
            client = id(self.backend())
        except ConfigError:
            client = 0  # no key: each of its turns fails, saying what to set
        return self.stt, client, json.dumps(self.stt_options, sort_keys=True, default=str)


def variants_of(experiment: str, variants: Any, settings: Settings | None,
                home: str | None) -> list[Variant]:
    if not isinstance(variants, Mapping) or not variants:
        raise ConfigError("variants= needs at least one variant, e.g. {'aai + mini': "
                          "dict(stt='assemblyai', model='gpt-4o-mini')}.")
    out = []
    for name, spec in variants.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"A variant needs a name (a non-empty string), not {name!r}.")
        spec = dict(spec or {})
        unknown = sorted(set(spec) - set(VARIANT_KEYS))
        if unknown:
            raise ConfigError(f"Variant {name!r} sets {', '.join(unknown)}: a variant may set "
                              f"{', '.join(VARIANT_KEYS)}.")
        template = spec.get("prompt_template") or "{transcript}"
        check_template(template)
        live = spec.get("live")
        if live is not None:
            from .live.base import BACKENDS

            if live not in BACKENDS:
                raise ConfigError(f"Variant {name!r} sets live={live!r}; choose one of "
                                  f"{', '.join(BACKENDS)}.")
            if live != "cascade" and set(spec) & {"stt", "stt_options", "prompt_template"}:
                raise ConfigError(
                    f"Variant {name!r} is speech to speech ({live}): the service hears the "
                    "audio itself, so stt, stt_options and prompt_template do not apply; "
                    "drop them (model, system and voice do).")
            live = None if live == "cascade" else live
        if live == "openai-realtime":
            cfg = resolve(settings, home=home, realtime_model=spec.get("model"))
        elif live is not None:
            cfg = resolve(settings, home=home)
        else:
            cfg = resolve(settings, home=home, stt=spec.get("stt"), model=spec.get("model"))
        if cfg.stt == "auto":
            try:
                cfg = cfg.replace(stt=auto_backend(cfg))
            except ConfigError:
                pass  # its turns fail at transcription, listing the options
        variant = Variant(name, f"{experiment}/{name}", cfg, spec.get("system"), template,
                          dict(spec.get("stt_options") or {}), live=live,
                          voice=spec.get("voice"))
        variant.prices()  # a bad price file is said now, not after the answers are paid for
        out.append(variant)
    return out


def simulated(variant: Variant) -> str | None:
    """Which of the variant's services a voicenb simulator answers: "stt", "llm", both."""
    from .sim import serves

    s = variant.settings
    if variant.live is not None:
        url = {"openai-realtime": s.openai_base_url,
               "assemblyai-agent": s.assemblyai_agent_url}[variant.live]
        return "stt+llm+tts" if url and serves(url.replace("ws://", "http://", 1)) else None
    urls = {"assemblyai": (s.assemblyai_base_url, s.assemblyai_sync_url),
            "openai": (s.openai_base_url,)}.get(variant.stt, ())
    parts = [name for name, hit in (("stt", any(serves(u) for u in urls if u)),
                                    ("llm", serves(s.openai_base_url))) if hit]
    return "+".join(parts) or None


# -- the runner ---------------------------------------------------------------------------------

@dataclass
class Cell:
    """One (clip, variant) pair still to do, and the times that make up its row."""

    variant: Variant
    clip: Clip
    seen: str | None = None  # the row's status when planned (None: no row yet)
    t0: float = 0.0
    ready: float = 0.0
    queued: float = 0.0
    setup_s: float = 0.0
    wait_s: float = 0.0

    @property
    def turn(self) -> int:
        return self.clip.index + 1


@dataclass
class Job:
    """A clip to transcribe once for a group of cells (variants sharing speech-to-text)."""

    clip: Clip
    cells: list[Cell]
    backend: Backend | None = None
    options: dict[str, Any] = field(default_factory=dict)
    transcript: Transcript | None = None  # known already (an earlier run)
    checkpoint: Checkpoint = Checkpoint()
    error: VoicenbError | None = None  # why it cannot run at all (unreadable, silent, no key)


class _Stopped(Exception):
    """Raised in a transcription thread once the run was interrupted, to end it."""


#: (home, session, turn) of the pairs runs in this process are working on now: a row of this
#: process left in a stage by anything else (a run that was interrupted) is taken up again
_RUNNING: set[tuple[str, str, int]] = set()
_RUNNING_LOCK = threading.Lock()


class Runner:
    """One :meth:`Experiment.run`: a thread per speech-to-text group transcribes its clips
    through the backend's ``transcribe_many``; each transcript, as it arrives, is answered
    by every variant of the group on a pool of ``llm_concurrency`` threads."""

    def __init__(self, store: HistoryStore, name: str, clips: list[Clip],
                 variants: list[Variant], *, concurrency: int, llm_concurrency: int,
                 progress: bool, with_reference: bool = True, live_concurrency: int = 4
                 ) -> None:
        if concurrency < 1 or llm_concurrency < 1 or live_concurrency < 1:
            raise ConfigError("concurrency, llm_concurrency and live_concurrency must be at "
                              "least 1.")
        self.live_concurrency = live_concurrency
        #: (clip, variant) pairs of speech-to-speech variants still to do
        self.live_cells: list[Cell] = []
        self.store, self.name, self.clips, self.variants = store, name, clips, variants
        self.concurrency, self.llm_concurrency, self.progress = (concurrency, llm_concurrency,
                                                                 progress)
        #: False when the experiment was given no reference: rows keep the ones they have
        self.with_reference = with_reference
        self.cond = threading.Condition()
        self.pending: set[int] = set()  # id() of the cells not finished yet
        self.stop = threading.Event()
        self.local = threading.local()  # a Chat per variant per answering thread
        self.pool: ThreadPoolExecutor | None = None
        self.bar: Any = None
        #: why some costs are unknown (no price for a model), each said once
        self.unpriced: dict[str, None] = {}

    # -- planning: which pairs are done, which clips each group must transcribe ------------

    def plan(self) -> list[Job]:
        for v in self.variants:
            first = self.store.variant_spec(self.name, v.name, v.spec())
            if first != v.spec():
                raise ConfigError(
                    f"Variant {v.name!r} of experiment {self.name!r} already ran as {first}; "
                    f"it is now {v.spec()}. Give the changed variant a new name (its rows "
                    "would mix two settings), or the experiment a new name.")
        self.store.mark_interrupted()  # rows still in a stage belong to a live process
        rows = {v.name: {r["turn"]: r for r in self.store.rows(v.session)}
                for v in self.variants}
        groups: dict[tuple, list[Variant]] = {}
        self.live_cells = []
        for v in self.variants:
            if v.live is not None:
                for clip in self.clips:
                    job = self._job(clip, [v], rows)
                    self.live_cells += job.cells if job is not None else []
                continue
            groups.setdefault(v.stt_key(), []).append(v)
        jobs = []
        for members in groups.values():
            for clip in self.clips:
                job = self._job(clip, members, rows)
                if job is not None:
                    jobs.append(job)
        return jobs

    def _job(self, clip: Clip, members: list[Variant],
             rows: dict[str, dict[int, dict[str, Any]]]) -> Job | None:
        job = Job(clip, [], options=members[0].stt_options)
        for v in members:
            row = rows[v.name].get(clip.index + 1)
            if row is not None and clip.sha256 and row["audio_sha256"] not in (None,
                                                                               clip.sha256):
                raise ConfigError(
                    f"Experiment {self.name!r} already has a different clip {clip.index + 1} "
                    f"for variant {v.name!r} (it is now {clip.name!r}). Keep the clips in "
                    "the same order to finish a run, or give the experiment a new name.")
            if row is not None:
                if (row["transcript"] or "").strip() and row["stt_s"] is not None:
                    job.transcript = Transcript.from_row(row)
                if row.get("upload_url") or row["transcript_id"]:
                    job.checkpoint = Checkpoint(row.get("upload_url"), row["transcript_id"])
                if row["status"] == "ok":
                    self._refresh_reference(v, clip, row)
                    continue
                if row["status"] in STAGES and not self._stale(v, clip, row):
                    continue  # another process is running this pair now
            job.cells.append(Cell(v, clip, seen=row["status"] if row else None))
        return job if job.cells else None

    def _stale(self, v: Variant, clip: Clip, row: dict[str, Any]) -> bool:
        """A row of this process in a stage that no run here is working on."""
        with _RUNNING_LOCK:
            running = (self.store.key, v.session, clip.index + 1) in _RUNNING
        return row.get("owner") == owner_id() and not running

    def _refresh_reference(self, v: Variant, clip: Clip, row: dict[str, Any]) -> None:
        """A finished pair whose reference changed gets the new one and its WER (no call)."""
        if self.with_reference and row["reference"] != clip.reference:
            self.store.update(v.session, clip.index + 1, reference=clip.reference,
                              wer=_wer(clip.reference, row["transcript"]))

    # -- running ----------------------------------------------------------------------------

    def run(self) -> int:
        """Run every pair still to do; return how many there were."""
        from tqdm.auto import tqdm

        jobs = [job for job in self.plan() if self._open(job)]
        live = [cell for cell in self.live_cells if self._open_live(cell)]
        cells = [c for job in jobs for c in job.cells] + live
        if not cells:
            return 0
        keys = {(self.store.key, c.variant.session, c.turn) for c in cells}
        self.pending = {id(c) for c in cells}
        self.bar = tqdm(total=len(cells), desc=self.name, unit="turn",
                        disable=not self.progress)
        self.pool = ThreadPoolExecutor(self.llm_concurrency, thread_name_prefix="voicenb-llm")
        threads: list[threading.Thread] = []
        try:
            threads = self._start(jobs) + self._start_live(live)
            with self.cond:
                while self.pending:
                    self.cond.wait(0.2)  # wakes for Ctrl-C too
        except BaseException as exc:
            with self.cond:  # no stage is written after this without being undone below
                self.stop.set()
            self.pool.shutdown(wait=False, cancel_futures=True)
            for cell in cells:
                if id(cell) in self.pending:
                    self._fail(cell, exc)
            raise
        finally:
            self.bar.close()
            with _RUNNING_LOCK:
                _RUNNING.difference_update(keys)
        for thread in threads:
            thread.join()
        self.pool.shutdown()
        return len(cells)

    def _start(self, jobs: list[Job]) -> list[threading.Thread]:
        """Fail what cannot run, answer what was heard already, and start a transcription
        thread per group; groups on one service share its ``concurrency``."""
        groups: dict[tuple, list[Job]] = {}
        for job in jobs:
            if job.error is not None:
                for cell in job.cells:
                    self._fail(cell, job.error)
            elif job.transcript is not None:
                self._heard(job, job.transcript)
            else:
                groups.setdefault(job.cells[0].variant.stt_key(), []).append(job)
        per_service: dict[tuple, int] = {}
        for key in groups:
            per_service[key[:2]] = per_service.get(key[:2], 0) + 1
        threads = []
        for key, group in groups.items():
            share = max(1, self.concurrency // per_service[key[:2]])
            thread = threading.Thread(target=self._transcribe, args=(group, share),
                                      daemon=True, name="voicenb-stt")
            thread.start()
            threads.append(thread)
        return threads

    def _open(self, job: Job) -> bool:
        """Claim the job's rows (before any request); False when other processes have
        claimed them all."""
        clip = job.clip
        saved = self.store.save_audio(clip.audio) if clip.audio is not None else None
        job.error = clip.error
        if job.error is None:
            try:
                job.backend = job.cells[0].variant.backend()
            except ConfigError as exc:
                job.error = exc
        if job.error is None and job.transcript is None and job.checkpoint == Checkpoint() \
                and clip.is_silent():
            job.error = AudioError(NO_SPEECH.format(why="the recording is silent"),
                                   source=clip.name)
        job.cells = [cell for cell in job.cells if self._claim(job, cell, saved)]
        return bool(job.cells)

    def _claim(self, job: Job, cell: Cell, saved: Path | None) -> bool:
        v, clip = cell.variant, job.clip
        status = ("answering" if job.transcript is not None else "uploading"
                  if job.backend is not None and job.error is None
                  and job.checkpoint.upload_url is None
                  and job.backend.uploads_clip(clip.audio, job.options) else "transcribing")
        fields: dict[str, Any] = dict(
            status=status, error=None, stt_backend=v.stt, llm_model=v.settings.model,
            experiment=self.name, variant=v.name, simulated=v.simulated)
        if self.with_reference:
            fields["reference"] = clip.reference
        if job.transcript is None:
            fields["upload_s"] = None  # an earlier attempt's upload is not in this stt_s
        if saved is not None:
            fields.update(audio_path=str(saved.relative_to(self.store.home)),
                          audio_s=clip.audio.duration, audio_sha256=clip.sha256)
        else:
            fields.update(audio_path=clip.name)
        if not self.store.claim(v.session, cell.turn, cell.seen, **fields):
            return False  # another process took this pair up first
        with _RUNNING_LOCK:
            _RUNNING.add((self.store.key, v.session, cell.turn))
        cell.ready = time.monotonic()
        cell.t0 = cell.ready - ((job.transcript.stt_s or 0.0) if job.transcript else 0.0)
        return True

    # -- speech-to-speech variants: each clip said into a conversation of its own ----------

    def _open_live(self, cell: Cell) -> bool:
        clip, v = cell.clip, cell.variant
        job = Job(clip, [cell], error=clip.error)
        saved = self.store.save_audio(clip.audio) if clip.audio is not None else None
        if not self._claim(job, cell, saved):
            return False
        self.store.update(v.session, cell.turn, stt_backend=v.live, live_backend=v.live,
                          status="transcribing")
        return True  # an unreadable clip fails in _live, once the run counts it

    def _start_live(self, cells: list[Cell]) -> list[threading.Thread]:
        """A pool per service, ``live_concurrency`` conversations at once."""
        by_backend: dict[str, list[Cell]] = {}
        for cell in cells:
            by_backend.setdefault(cell.variant.live or "", []).append(cell)
        threads = []
        for group in by_backend.values():
            def run(group: list[Cell] = group) -> None:
                with ThreadPoolExecutor(self.live_concurrency,
                                        thread_name_prefix="voicenb-live") as pool:
                    for cell in group:
                        pool.submit(self._live, cell)
            thread = threading.Thread(target=run, daemon=True, name="voicenb-live-group")
            thread.start()
            threads.append(thread)
        return threads

    def _live(self, cell: Cell) -> None:
        from ._turns import live_fields
        from .live._driver import Driver, talk

        if self.stop.is_set():
            return
        v, clip = cell.variant, cell.clip
        # the turn starts when its clip is said: waiting for a free conversation before that
        # is the experiment's pacing, not the turn's (a person never waits for it)
        recorded: list[int] = []

        def record(*, heard: Any, reply: Any, spoken: Any, recorded_at: float | None,
                   reconnects: int = 0) -> int:
            if recorded:  # the service heard the clip as two turns: the first is the row
                return cell.turn
            fields = live_fields(backend=v.live or "", model=driver.conversation.model,
                                 heard=heard, reply=reply, spoken=spoken,
                                 recorded_at=recorded_at)
            fields["reconnects"] = reconnects
            if heard is not None:
                fields.update(transcript=heard.text, prompt=heard.text,
                              transcript_id=heard.id, transcribe_s=heard.stt_s,
                              speech_model=heard.speech_model,
                              wer=_wer(clip.reference, heard.text))
            row = {**(self.store.get(v.session, cell.turn) or {}), **fields}
            fields["cost_usd"] = self._price(cell, row)
            self.store.update(v.session, cell.turn, **fields)
            recorded.append(cell.turn)
            return cell.turn

        try:
            if clip.error is not None:
                raise clip.error
            driver = Driver(None, v.live or "", settings=v.settings, system=v.system,
                            voice=v.voice, record=record)
            driver.start()
            try:
                talk(None, v.live or "", [clip.audio], driver=driver)  # type: ignore[arg-type]
            finally:
                driver.stop()
                driver.wait(60)
            if not recorded:
                raise driver.error or TranscriptionError(
                    f"{v.live} never answered clip {clip.name!r} (no turn was heard); check "
                    "that the clip has speech, then run() again.")
        except BaseException as exc:
            self._fail(cell, exc)
            return
        self._finished(cell)

    def _transcribe(self, jobs: list[Job], concurrency: int) -> None:
        delivered: set[int] = set()

        def on_stage(k: int, stage: str, value: Any) -> None:
            now = time.monotonic()
            job = jobs[k]
            with self.cond:  # against Ctrl-C: a stage is written before, or kept only after
                stopping = self.stop.is_set()
                self._stage(job, stage, value, now, keep_only=stopping)
            if stopping:
                raise _Stopped
            if stage == "done":
                delivered.add(k)
                try:
                    self._heard(job, value)
                except BaseException as exc:
                    for cell in job.cells:
                        self._fail(cell, exc)

        try:
            jobs[0].backend.transcribe_many(
                [job.clip.audio for job in jobs], concurrency=concurrency, progress=False,
                on_stage=on_stage, resume=[job.checkpoint for job in jobs], **jobs[0].options)
        except _Stopped:
            pass
        except BaseException as exc:  # a bug, or the backend refused the options
            for k, job in enumerate(jobs):
                if k not in delivered:
                    for cell in job.cells:
                        self._fail(cell, exc)

    def _stage(self, job: Job, stage: str, value: Any, now: float,
               keep_only: bool = False) -> None:
        """Write down what the backend just did for every pair sharing the clip; once the
        run is interrupted, only what a rerun can reuse (an upload, a transcript)."""
        for cell in job.cells:
            session, turn = cell.variant.session, cell.turn
            if stage == "started" and not keep_only:
                cell.wait_s += max(0.0, now - cell.ready)  # waited for a free slot
            elif stage == "uploaded":
                extra = {} if keep_only else dict(status="transcribing",
                                                  upload_s=now - cell.t0)
                self.store.update(session, turn, upload_url=value, **extra)
            elif stage == "submitted":
                extra = {} if keep_only else dict(status="transcribing")
                self.store.update(session, turn, transcript_id=value, **extra)
            elif stage == "done" and keep_only and value.ok:
                self.store.update(session, turn, **self._heard_row(job, value))

    def _heard_row(self, job: Job, transcript: Transcript) -> dict[str, Any]:
        row = transcript.to_row()
        if row.get("upload_s") is None:
            row.pop("upload_s")  # keep the time measured when it was uploaded
        if not transcript.ok:
            return {k: row[k] for k in ("transcript_id", "polls", "stt_s") if row.get(k)}
        row["wer"] = _wer(job.clip.reference, transcript.text)
        return row

    def _heard(self, job: Job, transcript: Transcript) -> None:
        """A clip's transcript is in: record it on every pair, then queue their answers."""
        from ._turns import outcome

        result = outcome(transcript)
        row = self._heard_row(job, transcript)
        for cell in job.cells:
            self.store.update(cell.variant.session, cell.turn, **row)
        if isinstance(result, VoicenbError) or not transcript.text.strip():
            error = result if isinstance(result, VoicenbError) else TranscriptionError(
                NO_SPEECH.format(why="the transcript is empty"), transcript_id=transcript.id)
            for cell in job.cells:
                self._fail(cell, error)
            return
        for cell in job.cells:
            cell.queued = time.monotonic()
            try:
                self.pool.submit(self._answer, cell, transcript)
            except RuntimeError:  # the pool was shut down: the run was interrupted
                return

    def _answer(self, cell: Cell, transcript: Transcript) -> None:
        if self.stop.is_set():
            return
        v, start = cell.variant, time.monotonic()
        cell.wait_s += start - cell.queued  # for a free answering slot
        try:
            chat = self._chat(cell)
            prompt = v.prompt_template.format(transcript=transcript.text.strip())
            self.store.update(v.session, cell.turn, status="answering", prompt=prompt)
            answer = chat.ask(prompt)
            # priced from what is in hand: one write finishes the row
            cost = self._price(cell, {**transcript.to_row(), **answer.to_row()})
            total = time.monotonic() - cell.t0
            named = (transcript.stt_s or 0.0) + (answer.llm_s or 0.0) + cell.setup_s \
                + cell.wait_s
            self.store.update(v.session, cell.turn, status="ok", error=None, total_s=total,
                              setup_s=cell.setup_s, wait_s=cell.wait_s, cost_usd=cost,
                              overhead_s=max(0.0, total - named), **answer.to_row())
        except BaseException as exc:
            self._fail(cell, exc)
            return
        self._finished(cell)

    def _chat(self, cell: Cell) -> Chat:
        """This thread's conversation for the variant: one question at a time, no memory,
        so every clip is answered on its own whatever order the clips finish in."""
        chats = self.local.__dict__.setdefault("chats", {})
        chat = chats.get(cell.variant.name)
        if chat is None:
            t = time.monotonic()
            v = cell.variant
            chat = chats[v.name] = Chat(v.settings.model, v.system, max_history=0,
                                        settings=v.settings)
            cell.setup_s += time.monotonic() - t
        return chat

    def _cost(self, cell: Cell) -> None:
        """Price the row as it stands (a failed pair: what it was billed before failing)."""
        row = self.store.get(cell.variant.session, cell.turn)
        if row is not None:
            self.store.update(cell.variant.session, cell.turn,
                              cost_usd=self._price(cell, row))

    def _price(self, cell: Cell, row: dict[str, Any]) -> float | None:
        """The row's cost; never raises (the prices were loaded when the experiment was
        made): an unknown price is a None, and said once."""
        prices = cell.variant.prices()
        why = prices.explain(row)
        if why:
            with self.cond:
                self.unpriced.setdefault(why, None)
        return prices.turn_cost(row)

    def _fail(self, cell: Cell, exc: BaseException) -> None:
        if isinstance(exc, VoicenbError):
            status, error = "error", str(exc)
        elif isinstance(exc, Exception):  # a bug, or an option the backend does not take
            status = "error"
            error = (f"{type(exc).__name__}: {exc}. An option this variant's backend does "
                     "not take (check its stt_options), or a bug in voicenb; run() again "
                     "retries it.")
        else:  # Ctrl-C: a rerun finishes it
            status = "interrupted"
            error = f"Interrupted ({type(exc).__name__}); Experiment.run() again finishes it."
        try:
            self.store.update(cell.variant.session, cell.turn, status=status, error=error)
            self._cost(cell)  # what was billed before it failed (the transcript, say)
        finally:
            self._finished(cell)

    def _finished(self, cell: Cell) -> None:
        with self.cond:
            if id(cell) in self.pending:
                self.pending.discard(id(cell))
                self.bar.update(1)
                self.cond.notify_all()


def _wer(reference: str | None, transcript: str | None) -> float | None:
    if reference is None or transcript is None:
        return None
    return word_errors(reference, transcript).wer
