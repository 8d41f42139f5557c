"""``session.live()``: talk, and see the transcript form while you speak.

An anywidget whose front end (``static/live.js``) captures the microphone with an AudioWorklet
as 16 kHz mono PCM and sends ~100 ms chunks to the kernel; the kernel streams them to
AssemblyAI's Universal-Streaming v3 (:class:`~voicenb.stt.streaming.RealtimeTranscriber`).
The partial transcript shows live; at each end of turn the model is asked and the answer
streams in, and the turn lands in the session's history (``stt_backend`` is
``assemblyai-streaming``, ``stt_s`` the time from the end of speech to the final transcript).

With ``speak=True`` the answer is also read aloud in the browser as it streams: each sentence
is synthesised as soon as it is complete (:mod:`voicenb._talkback`) and played gapless by
``static/speaker.js``. The microphone stays open; when the person speaks over the answer (the
service's ``SpeechStarted``, or the page's own voice check) playback stops, nothing more is
synthesised, and the turn is recorded ``barged_in`` with the characters that were heard.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import anywidget
import traitlets

from .._errors import VoicenbError
from ._worker import Streamed, Worker
from .recorder import TurnsMixin, bundle

if TYPE_CHECKING:  # pragma: no cover
    from ..session import Session
    from ..stt.streaming import TurnEvent

class LiveRecorder(TurnsMixin, anywidget.AnyWidget):
    """The live widget of a :class:`~voicenb.Session` (use ``session.live()``).

    Without a browser, :meth:`feed` streams PCM from Python exactly as the microphone would;
    :meth:`stop` ends the stream and :meth:`wait` waits for the last answer.
    """

    _esm = bundle("capture.js", "speaker.js", "turns.js", "live.js")
    #: read answers aloud in the browser (set at creation: session.live(speak=True))
    speak = traitlets.Bool(False).tag(sync=True)
    status = traitlets.Unicode("Press Start and speak; a pause ends your turn.").tag(sync=True)
    state = traitlets.Unicode("idle").tag(sync=True)
    partial = traitlets.Unicode("").tag(sync=True)
    transcript = traitlets.Unicode("").tag(sync=True)
    answer = traitlets.Unicode("").tag(sync=True)
    turns = traitlets.List(traitlets.Dict()).tag(sync=True)

    def __init__(self, session: Session, *, show_turns: int = 5, idle_timeout: float = 60.0,
                 speak: bool | str = False, **kwargs: Any) -> None:
        super().__init__(speak=bool(speak), **kwargs)
        #: the speech backend ("espeak", "openai"...; None: Settings.tts)
        self.voice = speak if isinstance(speak, str) else None
        self._front = False  # no page has shown the widget yet: nothing could be played
        self._speaker: Any = None  # the answer being read aloud now, and its id
        self._answer_id = 0
        self._barge_at: float | None = None
        #: seconds from the person starting to speak over an answer to its playback stopped
        self.barge_stops: list[float] = []
        self.session = session
        self.show_turns = show_turns
        self._heard = 0  # final turns heard in the current stream
        self._rt: Any = None
        # start/feed/stop come from the browser's messages and from Python threads at once
        self._rt_lock = threading.Lock()
        self._worker = Worker(self._answer_turn, name="voicenb-live",
                              idle_timeout=idle_timeout)
        self.on_msg(self._on_msg)
        self._show_turns()

    def __repr__(self) -> str:
        return f"LiveRecorder(session={self.session.name!r}, state={self.state!r})"

    # -- from the browser, or from Python -------------------------------------------------

    def _on_msg(self, _widget: Any, content: dict[str, Any], buffers: list[Any]) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        try:
            if kind == "start":
                self.start()
            elif kind == "audio":
                for buffer in buffers:
                    self.feed(bytes(buffer))
            elif kind == "play":
                self._play(content.get("turn", 0))
            elif kind == "stop":
                threading.Thread(target=self.stop, name="voicenb-live-stop",
                                 daemon=True).start()
            elif kind == "error":
                self._show("error", f"No microphone: {content.get('message')}.")
            elif kind in ("playing", "ended", "hushed"):
                self._from_player(kind, content)
            elif kind == "front":
                self._front = True  # a page shows the widget: it can play answers
        except VoicenbError as exc:
            self._show("error", str(exc))

    def start(self) -> None:
        """Open a streaming session (the browser's Start button does this)."""
        with self._rt_lock:
            if self._rt is None:
                self._open()
        self._show("listening", "listening: speak, then pause to end your turn")

    def _open(self) -> None:
        from ..stt.streaming import RealtimeTranscriber

        self.session.chat  # connect to the model now, not after the first turn
        self._heard = 0
        self._rt = RealtimeTranscriber(on_partial=self._on_partial, on_turn=self._on_turn,
                                       on_speech_started=self._on_speech_started,
                                       settings=self.session.settings).start()

    def feed(self, pcm: bytes) -> None:
        """Stream 16 kHz mono 16-bit PCM (starting the session if needed)."""
        with self._rt_lock:
            opened = self._rt is None
            if opened:
                self._open()
            self._rt.send(pcm)  # only queues: the lock is held for no time
        if opened:
            self._show("listening", "listening: speak, then pause to end your turn")

    def stop(self) -> None:
        """Flush, end the session with Terminate, and wait for the service to confirm."""
        with self._rt_lock:
            rt, self._rt = self._rt, None
        if rt is None:
            return
        try:
            rt.close()
            if self.state == "listening":
                self._show("idle", "stopped: no speech was heard" if not self._heard else
                           f"stopped after {self._heard} turn{'s' * (self._heard > 1)}")
        except VoicenbError as exc:
            self._show("error", str(exc))

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every finished turn has been answered; False on timeout."""
        return self._worker.wait(timeout)

    # -- turns ------------------------------------------------------------------------------

    def _on_partial(self, event: TurnEvent) -> None:
        self.partial = event.text

    def _on_turn(self, event: TurnEvent) -> None:
        self._heard += 1
        self._worker.submit(event)

    def _answer_turn(self, event: TurnEvent) -> None:
        from ..stt.streaming import BACKEND

        try:
            self.partial = ""
            self.transcript, self.answer = event.text, ""
            self._show("answering", "thinking")
            shown = Streamed(lambda text: setattr(self, "answer", text))
            speaker = self._new_speaker() if self.speak and self._front else None
            turn = self.session.ask_text(
                event.text, audio=event.audio, stt_backend=BACKEND, stt_s=event.stt_s,
                transcript_id=f"{event.session_id or 'live'}:{event.turn_order}",
                on_token=shown if speaker is None else _both(shown, speaker.feed))
            self.answer = turn.answer or ""
            if speaker is not None:
                self._show("speaking", "reading the answer aloud")
                # the end of the person's speech, on this clock: where voice to voice starts
                spoken_at = event.received - (event.stt_s or 0.0)
                turn = self._spoken(turn, speaker, spoken_at)
            self._show("listening" if self._rt else "idle",
                       f"turn {turn.turn}: done ({turn.total_s:.1f} s)")
        except VoicenbError as exc:
            self._show("error", str(exc))
        except Exception as exc:  # keep the widget alive; say what broke
            self._show("error", f"{type(exc).__name__}: {exc}")
        finally:
            self._show_turns()

    def _show(self, state: str, status: str) -> None:
        self.state, self.status = state, status

    # -- reading answers aloud --------------------------------------------------------------

    def _new_speaker(self) -> Any:
        from .._talkback import Speaker

        self._answer_id += 1
        answer = self._answer_id
        speaker = Speaker(
            lambda seq, wav: self.send({"type": "say", "answer": answer, "seq": seq},
                                       buffers=[wav]),
            on_all_sent=lambda count: self.send({"type": "said", "answer": answer,
                                             "count": count}),
            backend=self.voice, settings=self.session.settings)
        self._speaker = speaker
        return speaker

    def _spoken(self, turn: Any, speaker: Any, spoken_at: float) -> Any:
        """Wait until the answer was read out (or spoken over), then record how."""
        speaker.finish()
        spoken = speaker.result(timeout=PLAYER_TIMEOUT_S)
        self._speaker = None
        first = spoken.first_audio_at - spoken_at if spoken.first_audio_at else None
        return self.session.record_speech(
            turn.turn, spoken_chars=spoken.spoken_chars, interrupted=spoken.interrupted,
            tts_model=spoken.tts_model, tts_ttfb_s=spoken.tts_ttfb_s, first_audio_s=first)

    def _on_speech_started(self, _start_s: float) -> None:
        """The person started speaking: if an answer is being read aloud, stop it."""
        speaker = self._speaker
        if speaker is not None:
            self._barge_at = time.monotonic()
            speaker.cancel()
            self.send({"type": "hush", "answer": self._answer_id})

    def _from_player(self, kind: str, content: dict[str, Any]) -> None:
        speaker = self._speaker
        if speaker is None or content.get("answer") != self._answer_id:
            return  # about an answer already recorded
        if kind == "playing":
            speaker.playing(int(content.get("seq") or 0))
        elif kind == "ended":
            speaker.ended()
        else:  # hushed: by the kernel (above), or by the page hearing the person
            if content.get("reason") == "voice":
                speaker.cancel()
            if self._barge_at is not None:
                self.barge_stops.append(time.monotonic() - self._barge_at)
                self._barge_at = None
            speaker.hushed({int(k): float(v) for k, v in (content.get("played") or {}).items()})


#: how long a turn waits for the browser to say its answer was played (no browser attached:
#: the sentences sent count as heard)
PLAYER_TIMEOUT_S = 120.0


def _both(first: Any, second: Any) -> Any:
    def both(piece: str) -> None:
        first(piece)
        second(piece)
    return both
