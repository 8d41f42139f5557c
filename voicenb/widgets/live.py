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

    def __init__(self, session: Session, *, show_turns: int = 5, idle_timeout: float = 60.0,
                 speak: bool | str = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.session = session
        self._init_speaking(speak)
        self.show_turns = show_turns
        self._heard = 0  # final turns heard in the current stream
        self._rt: Any = None
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
        from ..stt.streaming import RealtimeTranscriber

        self._heard = 0
        self._rt = RealtimeTranscriber(on_partial=self._on_partial, on_turn=self._on_turn,
                                       on_speech_started=lambda _s: self.hush(),
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
            speaker = self._new_speaker()
            turn = self.session.ask_text(
                event.text, audio=event.audio, stt_backend=BACKEND, stt_s=event.stt_s,
                transcript_id=f"{event.session_id or 'live'}:{event.turn_order}",
                speech_model=self._speech_model,
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
