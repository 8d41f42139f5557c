"""``session.recorder()``: record a question in a cell; the turn runs in the background.

The microphone part is ipywebrtc (``CameraStream`` with audio only + ``AudioRecorder``).
Each finished recording (WebM/Opus bytes in ``recorder.audio.value``) is queued and becomes a
turn of the session on a worker thread, so the kernel stays free; the status line, the
transcript and the answer (streaming in) update as it goes. Every text shown is escaped.
"""

from __future__ import annotations

import html
import threading
import time
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from .._errors import VoicenbError
from ._worker import Streamed, Worker

if TYPE_CHECKING:  # pragma: no cover
    from ..session import Session, Turn

STATUS_TEXT = {
    "idle": "idle: press the record button, ask your question, press it again",
    "recording": "recording",
    "started": "starting",
    "uploading": "uploading",
    "transcribing": "transcribing",
    "answering": "thinking",
    "ok": "done",
    "error": "error",
    "interrupted": "interrupted",
}
MIC_HINT = ("No sound reaching the recorder? The browser must allow the microphone, and it only "
            "offers one on https:// or localhost pages.")


def _escaped(text: str | None) -> str:
    return html.escape(text or "").replace("\n", "<br>")


class TurnView(widgets.VBox):
    """What was heard and what was answered, as escaped text."""

    def __init__(self) -> None:
        self.transcript = widgets.HTML(layout=widgets.Layout(min_height="1.5em"))
        self.answer = widgets.HTML(layout=widgets.Layout(min_height="1.5em"))
        super().__init__([self.transcript, self.answer])
        self.add_class("voicenb-turn")

    def show(self, transcript: str | None = None, answer: str | None = None) -> None:
        if transcript is not None:
            self.transcript.value = (f"<div class='voicenb-transcript'><b>You:</b> "
                                     f"{_escaped(transcript)}</div>")
        if answer is not None:
            self.answer.value = (f"<div class='voicenb-answer' style='white-space: pre-wrap'>"
                                 f"<b>GPT:</b> {_escaped(answer)}</div>")

    def clear(self) -> None:
        self.transcript.value = self.answer.value = ""


class Recorder(widgets.VBox):
    """The recorder widget of a :class:`~voicenb.Session` (use ``session.recorder()``).

    Recordings made while a turn runs wait in order. ``submit(audio)`` queues audio from
    Python (a file or bytes) exactly as a recording would be; ``wait()`` blocks until the
    queue is done.
    """

    def __init__(self, session: Session, *, show_turns: int = 5, stream: Any = None,
                 idle_timeout: float = 60.0) -> None:
        from ipywebrtc import AudioRecorder, CameraStream

        self.session = session
        self.show_turns = show_turns
        self.camera = stream or CameraStream(constraints={"audio": True, "video": False})
        self.audio_recorder = AudioRecorder(stream=self.camera)
        # Our own toggle: ipywebrtc's round button starts recording without telling the kernel,
        # so the status line could not say "recording".
        self.button = widgets.ToggleButton(value=False, description="Record", icon="microphone",
                                           tooltip="Start recording; press again to stop",
                                           button_style="danger")
        self.button.add_class("voicenb-record")
        self.button.observe(self._on_button, "value")
        self.status = widgets.HTML()
        self.view = TurnView()
        self.turns = widgets.HTML()
        self.hint = widgets.HTML(f"<small style='color: #777'>{html.escape(MIC_HINT)}</small>")
        super().__init__([widgets.HBox([self.button, self.audio_recorder]), self.status,
                          self.view, self.turns, self.hint])
        self.add_class("voicenb-recorder")
        # Recordings become turns one at a time, in order, on a thread that leaves when idle.
        self._worker = Worker(self._run_turn, name="voicenb-recorder",
                              idle_timeout=idle_timeout)
        self._state = "idle"
        self._since = time.monotonic()
        self._ticker_stop = threading.Event()
        self.audio_recorder.audio.observe(self._on_audio, "value")
        self.audio_recorder.observe(self._on_recording, "recording")
        self._set_status("idle")
        self._show_turns()

    def __repr__(self) -> str:
        return f"Recorder(session={self.session.name!r}, state={self._state!r})"

    # -- input --------------------------------------------------------------------------------

    def submit(self, audio: Any) -> None:
        """Queue a recording (bytes, a path or an Audio) to become the next turn."""
        self._worker.submit(audio)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every queued recording has become a turn; False on timeout."""
        return self._worker.wait(timeout)

    def _on_audio(self, change: dict[str, Any]) -> None:
        data = change.get("new")
        if data:
            self.submit(bytes(data))

    def _on_button(self, change: dict[str, Any]) -> None:
        recording = bool(change.get("new"))
        self.button.description = "Stop" if recording else "Record"
        self.button.icon = "stop" if recording else "microphone"
        if self.audio_recorder.recording != recording:
            self.audio_recorder.recording = recording

    def _on_recording(self, change: dict[str, Any]) -> None:
        recording = bool(change.get("new"))
        if self.button.value != recording:
            self.button.value = recording
        if recording:
            self._set_status("recording")
        elif self._state == "recording":
            self._set_status("idle")

    # -- one turn, on the worker's thread ------------------------------------------------

    def _run_turn(self, audio: Any) -> Turn | None:
        self.view.clear()

        def on_status(turn: int, status: str) -> None:
            if status == "answering":
                self.view.show(transcript=self.session.turn(turn).transcript)
            self._set_status(status, turn)

        self._start_ticker()
        try:
            turn = self.session.ask_audio(
                audio, on_status=on_status,
                on_token=Streamed(lambda text: self.view.show(answer=text)))
        except VoicenbError as exc:
            self._set_status("error", message=str(exc))
            return None
        except Exception as exc:  # a bug must not kill the widget's worker silently
            self._set_status("error", message=f"{type(exc).__name__}: {exc}")
            return None
        finally:
            self._ticker_stop.set()
            self._show_turns()
        self.view.show(transcript=turn.transcript, answer=turn.answer)
        self._set_status("ok", turn.turn, message=f"{turn.total_s:.1f} s in all")
        return turn

    # -- display ------------------------------------------------------------------------------

    def _set_status(self, state: str, turn: int | None = None, message: str = "") -> None:
        if state != self._state:
            self._since = time.monotonic()
        self._state = state
        self._turn = turn
        self._message = message
        self._render_status()

    def _render_status(self) -> None:
        state = self._state
        text = STATUS_TEXT.get(state, state)
        busy = state in ("recording", "started", "uploading", "transcribing", "answering")
        elapsed = f" {time.monotonic() - self._since:.1f} s" if busy else ""
        turn = f"turn {self._turn}: " if getattr(self, "_turn", None) else ""
        extra = f" ({self._message})" if self._message else ""
        color = {"error": "#b00020", "ok": "#1b5e20"}.get(state, "#555")
        self.status.value = (f"<span class='voicenb-status' data-state='{state}' "
                             f"style='color: {color}'>{html.escape(turn + text + elapsed + extra)}"
                             "</span>")

    def _start_ticker(self) -> None:
        self._ticker_stop = stop = threading.Event()

        def tick() -> None:
            while not stop.wait(0.5):
                self._render_status()

        threading.Thread(target=tick, name="voicenb-ticker", daemon=True).start()

    def _show_turns(self) -> None:
        if self.show_turns <= 0:
            return
        rows = self.session.store.rows(self.session.name)[-self.show_turns:]
        if not rows:
            self.turns.value = ""
            return
        body = "".join(_turn_row(r) for r in reversed(rows))
        self.turns.value = ("<table class='voicenb-turns' style='font-size: 90%'><tr><th>#</th>"
                            "<th>status</th><th>you said</th><th>answer</th><th>time</th></tr>"
                            f"{body}</table>")


def _turn_row(row: dict[str, Any]) -> str:
    seconds = "" if row["total_s"] is None else f"{row['total_s']:.1f} s"
    said = row["transcript"] if row["transcript"] is not None else row["error"]
    return (f"<tr><td>{row['turn']}</td><td>{html.escape(row['status'] or '')}</td>"
            f"<td>{_escaped(said)}</td><td>{_escaped((row['answer'] or '')[:200])}</td>"
            f"<td>{seconds}</td></tr>")
