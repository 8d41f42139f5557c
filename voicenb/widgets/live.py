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

from .._errors import ConfigError, VoicenbError
from ._hearing import LOADING, preload_for, while_loading
from ._speaking import SpeaksMixin, both
from ._worker import Streamed, Worker
from .recorder import TurnsMixin, bundle

if TYPE_CHECKING:  # pragma: no cover
    from ..session import Session
    from ..stt.streaming import TurnEvent

LISTENING = "listening: speak, then pause to end your turn"
#: microphone audio the page sends within this long after its Stop is the capture's last
#: message still in flight, not speech that should open a new (billed) stream
AFTER_STOP_S = 1.0


class LiveRecorder(SpeaksMixin, TurnsMixin, anywidget.AnyWidget):
    """The live widget of a :class:`~voicenb.Session` (use ``session.live()``).

    Without a browser, :meth:`feed` streams PCM from Python exactly as the microphone would;
    :meth:`stop` ends the stream and :meth:`wait` waits for the last answer.
    """

    _esm = bundle("capture.js", "speaker.js", "turns.js", "live.js")
    status = traitlets.Unicode("Press Start and speak; a pause ends your turn.").tag(sync=True)
    state = traitlets.Unicode("idle").tag(sync=True)
    partial = traitlets.Unicode("").tag(sync=True)
    transcript = traitlets.Unicode("").tag(sync=True)
    answer = traitlets.Unicode("").tag(sync=True)
    turns = traitlets.List(traitlets.Dict()).tag(sync=True)

    #: the live backend: "cascade", "openai-realtime" or "assemblyai-agent"
    backend = traitlets.Unicode("cascade").tag(sync=True)

    def __init__(self, session: Session, *, show_turns: int = 5, idle_timeout: float = 60.0,
                 speak: bool | str = False, backend: str = "cascade",
                 voice: str | None = None, **kwargs: Any) -> None:
        from ..live.base import BACKENDS

        if backend not in BACKENDS:
            raise ConfigError(f"Unknown live backend {backend!r}; choose one of "
                              f"{', '.join(BACKENDS)}.")
        super().__init__(backend=backend, **kwargs)
        self.session = session
        #: a speech-to-speech backend speaks its answers itself: they always play in the page
        self._s2s = backend != "cascade"
        self._init_speaking(speak if not self._s2s else False)
        if self._s2s:
            self.speak = True
        self._live_voice = voice
        self._driver: Any = None
        self._hushed_then: Any = None  # tells the service how much was heard (barge-in)
        self.show_turns = show_turns
        self._heard = 0  # final turns heard in the current stream
        self._rt: Any = None
        self._before_drop: tuple[str, str] | None = None  # the status a drop interrupted
        self._speech_model: str | None = None
        self._page_stopped_at: float | None = None  # when the page's Stop came
        # start/feed/stop come from the browser's messages and from Python threads at once
        self._rt_lock = threading.Lock()
        self._worker = Worker(self._answer_turn, name="voicenb-live",
                              idle_timeout=idle_timeout)
        self.on_msg(self._on_msg)
        self._show_turns()
        preload_for(session.settings)

    def __repr__(self) -> str:
        return f"LiveRecorder(session={self.session.name!r}, state={self.state!r})"

    # -- from the browser, or from Python -------------------------------------------------

    def _on_msg(self, _widget: Any, content: dict[str, Any], buffers: list[Any]) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        try:
            if kind == "start":
                self._page_stopped_at = None
                self.start()
            elif kind == "audio":
                if self._page_stopped_at is not None and \
                        time.monotonic() - self._page_stopped_at < AFTER_STOP_S:
                    return  # the capture's last message, after Stop: not a new stream
                for buffer in buffers:
                    self.feed(bytes(buffer))
            elif kind == "play":
                self._play(content.get("turn", 0))
            elif kind == "stop":
                self._page_stopped_at = time.monotonic()
                threading.Thread(target=self.stop, name="voicenb-live-stop",
                                 daemon=True).start()
            elif kind == "error":
                self._show("error", f"No microphone: {content.get('message')}.")
            else:
                self._speaking_message(kind, content)
        except VoicenbError as exc:
            self._show("error", str(exc))

    def start(self) -> None:
        """Open a streaming session (the browser's Start button does this)."""
        with self._rt_lock:
            if self._rt is None:
                self._open()
        self._listening()

    def _listening(self) -> None:
        if while_loading(lambda: self.status.startswith(LOADING) and self._listening()):
            return self._show("listening", f"{LOADING}: speak, every word is kept")
        self._show("listening", LISTENING)

    def _open(self) -> None:
        if self._s2s:
            return self._open_s2s()
        from ..stt.streaming import RealtimeTranscriber

        self._heard = 0
        self._rt = RealtimeTranscriber(on_partial=self._on_partial, on_turn=self._on_turn,
                                       on_speech_started=lambda _s: self.hush(),
                                       on_reconnecting=self.on_reconnecting,
                                       on_reconnected=lambda _id, s: self.on_reconnected(s),
                                       settings=self.session.settings).start()
        #: the streaming model that hears the turns (it prices them)
        self._speech_model = self._rt.speech_model
        # The model's client (and its memory) is made while the person speaks: made here it
        # held up the stream, and every turn after would trail the speaker by as much.
        threading.Thread(target=self._warm_chat, name="voicenb-live-chat", daemon=True).start()
        self._warm_voice()

    def _warm_chat(self) -> None:
        try:
            self.session.chat
        except VoicenbError as exc:  # the turns will fail with it too; say it now
            self._show("error", str(exc))

    def feed(self, pcm: bytes) -> None:
        """Stream 16 kHz mono 16-bit PCM (starting the session if needed)."""
        with self._rt_lock:
            opened = self._rt is None
            if opened:
                self._open()
            self._rt.send(pcm)  # only queues: the lock is held for no time
        if opened:
            self._listening()

    def stop(self) -> None:
        """Flush, end the session with Terminate, and wait for the service to confirm."""
        with self._rt_lock:
            rt, self._rt = self._rt, None
        if rt is None:
            return
        if self._s2s:
            return self._stop_s2s(rt)
        # the voice's session ends once the last answer has been read (not under it)
        threading.Thread(target=lambda: (self._worker.wait(120), self._close_voice()),
                         name="voicenb-live-voice", daemon=True).start()
        try:
            rt.close()
            if self.state == "listening":
                self._show("idle", "stopped: no speech was heard" if not self._heard else
                           f"stopped after {self._heard} turn{'s' * (self._heard > 1)}")
        except VoicenbError as exc:
            self._show("error", str(exc))

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every finished turn has been answered; False on timeout."""
        if self._s2s:
            return self._driver is None or self._driver.wait(timeout)
        return self._worker.wait(timeout)

    # -- a speech-to-speech backend (voicenb.live) ------------------------------------------

    def _open_s2s(self) -> None:
        from ..live._driver import Driver

        self._heard = 0
        self._driver = Driver(self.session, self.backend, view=self, player=self,
                              voice=self._live_voice)
        self._rt = self._driver
        try:
            self._driver.start()
        except BaseException:
            self._rt = None
            raise

    def _stop_s2s(self, driver: Any) -> None:
        try:
            driver.stop()
            if self.state == "listening":
                self._show("idle", "stopped: no speech was heard" if not self._heard else
                           f"stopped after {self._heard} turn{'s' * (self._heard > 1)}")
        except VoicenbError as exc:
            self._show("error", str(exc))

    # the Driver's player: answers play in the page (by the clock when no page shows it)
    def new_answer(self, backend: str, model: str | None, voice: str | None) -> Any:
        from .._talkback import AudioSpeaker
        from ..live._driver import ClockPlayer

        if not self._front:
            return ClockPlayer().new_answer(backend, model, voice)
        send, all_sent = self._next_answer()
        self._speaker = AudioSpeaker(send, backend=backend, model=model, voice=voice,
                                     on_all_sent=all_sent)
        return self._speaker

    def hush(self, speaker: Any = None, then: Any = None) -> None:  # type: ignore[override]
        """Stop the answer being played (the person spoke); ``then(heard_ms)`` once the page
        says how much of it played (a speech-to-speech backend tells its service)."""
        if speaker is None or self._speaker is not speaker:  # the cascade, or no page
            if speaker is not None and then is not None:
                from ..live._driver import ClockPlayer

                return ClockPlayer().hush(speaker, then)
            return super().hush()
        if speaker._played is not None:  # the page's own voice check stopped it already
            then(speaker.heard_ms())
            return
        self._hushed_then = then
        super().hush()

    def _after_hushed(self, speaker: Any) -> None:
        then, self._hushed_then = self._hushed_then, None
        if then is not None and hasattr(speaker, "heard_ms"):
            then(speaker.heard_ms())

    # the Driver's view
    def on_speech_started(self) -> None:
        pass

    def on_heard(self, turn: Any) -> None:
        self._heard += 1
        self.partial = ""
        self.transcript, self.answer = turn.text, ""
        self._show("answering", "answering")

    def on_partial(self, text: str) -> None:
        self.partial = text

    def on_answer_text(self, delta: str) -> None:
        self.answer += delta
        if self.state == "answering":
            self._show("speaking", "speaking: talk to interrupt")

    def on_replied(self, reply: Any) -> None:
        if reply.error is not None:
            self._show("error", str(reply.error))

    def on_recorded(self, number: int) -> None:
        turn = self.session.turn(number)
        if turn.status != "error":
            self._show("listening" if self._rt else "idle",
                       f"turn {number}: done ({turn.total_s or 0.0:.1f} s)")
        self._show_turns()

    def on_reconnecting(self, attempt: int, error: VoicenbError) -> None:
        """The connection dropped: say so while a new one is made (every word is kept)."""
        self._before_drop = self._before_drop or (self.state, self.status)
        self._show(self.state, f"reconnecting (try {attempt}): every word is kept")

    def on_reconnected(self, downtime_s: float) -> None:
        before, self._before_drop = self._before_drop, None
        if before is not None and self.status.startswith("reconnecting"):
            self._show(*before)

    def on_failed(self, error: VoicenbError) -> None:
        with self._rt_lock:
            self._rt = None
        self._show("error", str(error))

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
            speaker = self._new_speaker()
            turn = self.session.ask_text(
                event.text, audio=event.audio, stt_backend=BACKEND, stt_s=event.stt_s,
                transcript_id=f"{event.session_id or 'live'}:{event.turn_order}",
                speech_model=self._speech_model, live_backend="cascade",
                reconnects=event.reconnects,
                on_token=shown if speaker is None else both(shown, speaker.feed))
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
            speaker, self._speaker = self._speaker, None
            if speaker is not None:  # the turn failed before its answer was read out
                speaker.cancel()
            self._show_turns()

    def _show(self, state: str, status: str) -> None:
        self.state, self.status = state, status
