"""A :class:`Session`: turns of audio -> transcript -> answer, each one a row of the history.

The audio is saved under ``<home>/audio/`` before any request; the row is written when the
turn starts and updated at every stage (with the upload URL and transcript id as soon as they
are known), so ``resume()`` after a crash re-polls the transcript instead of paying again.
The work itself is done by the private turn pipeline (:mod:`voicenb._turns`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import pandas as pd

from ._config import Settings, resolve
from ._errors import ConfigError, VoicenbError
from ._turns import NO_SPEECH, OnStatus, OnToken, Pipeline, Turn, Work, check_template
from .audio import AudioLike
from .stt.sync import LiveUpload
from .llm import Chat

__all__ = ["Session", "Turn", "NO_SPEECH"]


class Session:
    """A named conversation whose every turn lands in the durable history.

    >>> s = vnb.Session("demo")                     # doctest: +SKIP
    >>> turn = s.ask_audio("question.wav")          # doctest: +SKIP
    >>> s.history                                   # doctest: +SKIP

    Data lives in ``./voicenb-data`` unless ``home=`` or ``VOICENB_HOME`` says otherwise;
    ``history="postgresql://user:password@host/db"`` (or ``VOICENB_HISTORY_URL``) keeps the
    history, and the audio, on a server a team shares.
    ``prompt_template`` turns the transcript into the prompt (``"{transcript}"``).
    ``stt="auto"`` picks the speech-to-text backend from the keys and engines available, and
    the history records the one used. ``speak=True`` (or a speech backend such as
    ``"espeak"``) reads each ``ask_audio`` answer aloud (see :func:`voicenb.speak`).
    """

    def __init__(
        self,
        name: str = "default",
        home: str | None = None,
        stt: str | None = None,
        model: str | None = None,
        system: str | None = None,
        prompt_template: str = "{transcript}",
        *,
        settings: Settings | None = None,
        max_history: int = 20,
        stt_options: dict[str, Any] | None = None,
        speak: bool | str = False,
        history: str | None = None,
    ) -> None:
        if not name or not isinstance(name, str):
            raise ConfigError("A session needs a name, e.g. Session('demo').")
        check_template(prompt_template)
        self.name = name
        self.speak = speak
        self._turns = Pipeline(name, resolve(settings, home=home, stt=stt, model=model,
                                             history_url=history),
                               system=system, prompt_template=prompt_template,
                               max_history=max_history, stt_options=dict(stt_options or {}))
        self.store = self._turns.store

    def __repr__(self) -> str:
        if self.store.shared:
            return f"Session({self.name!r}, history={self.store.key!r})"
        return f"Session({self.name!r}, home={str(self.store.home)!r})"

    @property
    def settings(self) -> Settings:
        """The session's settings (with ``stt="auto"`` replaced by the backend it chose)."""
        return self._turns.settings

    @property
    def system(self) -> str | None:
        return self._turns.system

    @property
    def prompt_template(self) -> str:
        return self._turns.prompt_template

    # -- the conversation and its record ------------------------------------------------------

    @property
    def chat(self) -> Chat:
        """The model conversation, its memory rebuilt from this session's answered turns."""
        return self._turns.chat

    @property
    def history(self) -> pd.DataFrame:
        """This session's turns as a DataFrame (the history schema)."""
        return self.store.dataframe(self.name)

    def turn(self, number: int) -> Turn:
        """Turn ``number`` of this session as it is recorded now."""
        row = self.store.get(self.name, number)
        if row is None:
            raise ConfigError(f"Session {self.name!r} has no turn {number}.")
        saved = self.store.audio_file(row["audio_path"]) if row["audio_sha256"] else None
        if saved is not None:
            row["audio_path"] = str(saved.resolve())  # playable from any working directory
        return Turn.from_row(row)

    # -- widgets ------------------------------------------------------------------------------

    def recorder(self, *, engine: str = "anywidget", show_turns: int = 5,
                 speak: bool | str = False) -> Any:
        """The push-to-talk widget: each recording becomes a turn, the answer streams in.

        >>> s.recorder()                       # doctest: +SKIP

        ``engine="ipywebrtc"`` records with ipywebrtc (compressed by the browser, for long
        recordings) instead of streaming PCM to the kernel. ``speak=True`` (or a speech
        backend such as ``"espeak"``) reads each answer aloud in the page as it streams;
        pressing Record again stops it.
        """
        from .widgets import Recorder, WebRTCRecorder

        if engine not in ("anywidget", "ipywebrtc"):
            raise ConfigError(f"Unknown recorder engine {engine!r}: use 'anywidget' "
                              "(the default) or 'ipywebrtc'.")
        if engine == "ipywebrtc":
            if speak:
                raise ConfigError("speak= works with the anywidget recorder (the default "
                                  "engine); with ipywebrtc use Session(speak=True).")
            return WebRTCRecorder(self, show_turns=show_turns)
        return Recorder(self, show_turns=show_turns, speak=speak)

    def live(self, *, speak: bool | str = False, backend: str = "cascade",
             voice: str | None = None) -> Any:
        """The real-time widget: the transcript forms as you speak, and each end of turn is
        answered (streamed in) and recorded. ``speak=True`` (or a speech backend such as
        ``"espeak"``) also reads each answer aloud in the browser as it streams; speak over
        it to interrupt.

        ``backend``: ``"cascade"`` (streaming speech to text, this session's model, a voice),
        or a speech-to-speech service that hears and answers aloud on one socket:
        ``"openai-realtime"`` (``Settings.realtime_model``) or ``"assemblyai-agent"``
        (its Voice Agent API); ``voice`` is that service's voice (default
        ``Settings.live_voice``). Each turn lands in the history with ``live_backend``.

        >>> s.live(speak=True)                 # doctest: +SKIP
        >>> s.live(backend="openai-realtime")  # doctest: +SKIP
        """
        from .widgets import LiveRecorder

        return LiveRecorder(self, speak=speak, backend=backend, voice=voice)

    # -- running turns ------------------------------------------------------------------------

    def ask_audio(self, audio: AudioLike, *, stream: bool = False,
                  on_token: OnToken | None = None, on_status: OnStatus | None = None,
                  live: LiveUpload | None = None, speak: bool | None = None) -> Turn:
        """Transcribe ``audio``, ask the model, record the turn; return it.

        Raises a :class:`VoicenbError` if the turn failed, after recording it with status
        ``error`` (``retry_failed()`` finishes it later). ``live`` is the upload of this
        clip made while it was recorded (:meth:`live_upload`): its transcript is used, and
        the clip is sent again only if that upload failed. ``speak=False`` does not read
        the answer aloud even when the session does (a widget reading it in the page).

        >>> s.ask_audio("question.wav").answer     # doctest: +SKIP
        """
        number = self._turns.ask(audio, stream=stream, on_token=on_token, on_status=on_status,
                                 live=live)
        turn = self.turn(number)
        if (self.speak if speak is None else speak) and turn.answer:
            if self._say(turn.answer, number):
                turn = self.turn(number)
        return turn

    def live_upload(self) -> LiveUpload | None:
        """An upload to the speech-to-text service (the Sync API) to feed 16 kHz PCM while
        recording (``write(pcm)``, then :meth:`ask_audio` with ``live=``), so that after Stop
        only the last stretch is waited for; None when this session's speech-to-text has none."""
        opener = getattr(self._turns.backend(), "open_live", None)
        return opener(**self._turns.stt_options) if opener else None

    def warm(self) -> None:
        """Open the speech-to-text connection ahead of a clip (Record pressed), if the
        backend can; never raises."""
        try:
            warm = getattr(self._turns.backend(), "warm", None)
            if warm:
                warm()
        except VoicenbError:
            pass  # the turn itself will say what is wrong

    def ask_text(self, text: str, *, audio: AudioLike | None = None, stt_backend: str = "text",
                 stt_s: float | None = None, transcript_id: str | None = None,
                 confidence: float | None = None, speech_model: str | None = None,
                 stream: bool = False, on_token: OnToken | None = None,
                 on_status: OnStatus | None = None, live_backend: str | None = None,
                 reconnects: int | None = None) -> Turn:
        """Ask with a transcript you already have (typed, or heard by real-time streaming:
        ``speech_model`` is then the model that heard it, which prices it) and record the
        turn, with its audio when given (``live_backend``: the live conversation it was
        part of, "cascade" for the live widget's; ``reconnects``: the times its connection
        was made again while it was said).

        >>> s.ask_text("What is the capital of France?")      # doctest: +SKIP
        """
        work, transcript = self._turns.text_turn(text, audio, stt_backend, stt_s=stt_s,
                                                 id=transcript_id, confidence=confidence,
                                                 speech_model=speech_model,
                                                 live_backend=live_backend,
                                                 reconnects=reconnects)
        if on_status:
            on_status(work.turn, "started")
        self._turns.run(work, transcript, stream=stream, on_token=on_token,
                        on_status=on_status)
        return self.turn(work.turn)

    def record_speech(self, turn: int, *, spoken_chars: int, interrupted: bool = False,
                      tts_model: str | None = None, tts_ttfb_s: float | None = None,
                      first_audio_s: float | None = None, tts_backend: str | None = None,
                      tts_voice: str | None = None, words_heard: int | None = None,
                      reconnects: int = 0) -> Turn:
        """Record how turn ``turn``'s answer was read aloud (the live widget does this):
        the characters heard, what spoke them (backend, model, voice), the first audio's
        time to first byte, the end of speech -> first audio time and, with word timings,
        the words heard. ``interrupted``: the person spoke over it, so the turn becomes
        ``barged_in`` and the conversation remembers only what was heard. ``reconnects``:
        speech streams that dropped and were taken up again (added to the turn's count)."""
        self._turns.spoken(turn, spoken_chars=spoken_chars, interrupted=interrupted,
                           tts_model=tts_model, tts_ttfb_s=tts_ttfb_s,
                           first_audio_s=first_audio_s, tts_backend=tts_backend,
                           tts_voice=tts_voice, words_heard=words_heard,
                           reconnects=reconnects)
        return self.turn(turn)

    def ask_many(self, items: Iterable[AudioLike], *, concurrency: int = 32,
                 progress: bool = True) -> list[Turn]:
        """Run a turn for each clip: transcription concurrent, answers in input order.

        Never raises for a bad clip or a failed request: that turn is recorded with status
        ``error`` and the others go on.

        >>> [t.status for t in s.ask_many(["a.wav", "b.wav"])]   # doctest: +SKIP
        """
        works: list[Work] = []
        numbers: list[int] = []
        try:
            for item in items:
                work, error = self._turns.new_turn(item)
                numbers.append(work.turn if work else error[0])
                if work is not None:
                    works.append(work)
        except BaseException as exc:  # Ctrl-C while saving the clips: none is left mid-stage
            for work in works:
                self._turns.fail(work.turn, exc)
            raise
        self._turns.run_many(works, concurrency=concurrency, progress=progress)
        return [self.turn(n) for n in numbers]

    def retry_failed(self, *, concurrency: int = 32, progress: bool = True) -> list[Turn]:
        """Re-run this session's turns with status ``error``, from the stage that failed
        (an uploaded clip is not uploaded again). Returns those turns as they are now."""
        return self._rerun(["error"], concurrency=concurrency, progress=progress)

    def resume(self, *, concurrency: int = 32, progress: bool = True) -> list[Turn]:
        """Finish turns left ``interrupted`` or mid-stage by a process that stopped (a crash,
        a kill, Ctrl-C), re-polling transcripts that were already submitted. A transcript is
        never paid for twice; an upload may be repeated once, which is free (what is
        guaranteed, and the one window left: :mod:`voicenb.stt.assemblyai`)."""
        self.store.mark_interrupted()
        return self._rerun(["interrupted"], concurrency=concurrency, progress=progress)

    def _rerun(self, statuses: list[str], *, concurrency: int, progress: bool) -> list[Turn]:
        numbers, works = self._turns.works_from_rows(statuses)
        self._turns.run_many(works, concurrency=concurrency, progress=progress)
        return [self.turn(n) for n in numbers]

    def _say(self, text: str, turn: int) -> bool:
        """Read the answer aloud and record what read it; False when it could not be."""
        from . import tts

        backend = self.speak if isinstance(self.speak, str) else None
        try:
            cfg = resolve(self.settings, tts=backend)
            chosen = tts.backend_for(cfg)
            tts.play(tts.speak(text, backend=backend, settings=self.settings))
        except VoicenbError as exc:
            warnings.warn(f"The answer is recorded but could not be spoken: {exc}",
                          RuntimeWarning, stacklevel=3)
            return False
        model = {"assemblyai": tts.assemblyai.MODEL, "openai": tts.DEFAULT_MODEL}.get(
            chosen, "espeak")
        voice = cfg.tts_voice or {"assemblyai": tts.assemblyai.DEFAULT_VOICE,
                                  "openai": tts.DEFAULT_VOICE}.get(chosen, "en")
        self.record_speech(turn, spoken_chars=len(text), tts_backend=chosen,
                           tts_model=model, tts_voice=voice)
        return True
