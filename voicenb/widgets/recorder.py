"""``session.recorder()``: push to talk in a cell; each question becomes a turn.

An anywidget (``static/capture.js`` + ``turns.js`` + ``recorder.js``): one Record/Stop button,
a status line that ticks, the transcript, the answer streaming in, and the last turns with a
play button each. While you speak the browser sends 16 kHz PCM to the kernel in ~100 ms
chunks; at Stop the kernel keeps the clip (WAV), and unless it is too short or silent (then
nothing is sent anywhere and the status says so) it becomes a turn on a worker thread, so the
kernel stays free. Nothing is played unless a play button is pressed. Every text is shown as
text (``textContent``), never as markup.

``engine="ipywebrtc"`` records with ipywebrtc instead (the browser compresses to WebM/Opus:
for long recordings); only our own button shows, and nothing is played back.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anywidget
import traitlets

from .._errors import AudioError, VoicenbError
from ..audio import Audio, pcm_is_silent, pcm_to_wav
from ._hearing import LOADING, preload_for, while_loading
from ._speaking import SpeaksMixin, both
from ._worker import Streamed, Worker

if TYPE_CHECKING:  # pragma: no cover
    from ..session import Session, Turn

STATIC = Path(__file__).with_name("static")
RATE = 16000
#: clips shorter than this (a double-click on Record) are not sent anywhere
MIN_SECONDS = 0.3

STATUS_TEXT = {
    "idle": "press Record, ask your question, press Stop",
    "recording": "recording",
    "started": "starting",
    "uploading": "uploading",
    "transcribing": "transcribing",
    "answering": "thinking",
    "ok": "done",
    "error": "error",
    "interrupted": "interrupted",
}


def bundle(*names: str) -> str:
    """Widget JavaScript: the shared files first, the widget's own module last."""
    return "\n".join((STATIC / name).read_text(encoding="utf-8") for name in names)


class TurnsMixin:
    """The last turns of a widget's session as rows for ``turns.js``, and their audio on
    request (a play button)."""

    session: Session
    show_turns: int

    @property
    def headless(self) -> bool:
        """True when no one can press the widget's button: the notebook runs with no browser
        attached (nbclient, papermill, nbconvert --execute), or outside a notebook."""
        from .._frontend import browser_attached

        return not browser_attached()

    def _show_turns(self) -> None:
        if self.show_turns <= 0:
            return
        rows = self.session.store.rows(self.session.name)[-self.show_turns:]
        self.turns = [{
            "turn": r["turn"], "status": r["status"] or "",
            "said": r["transcript"] if r["transcript"] is not None else (r["error"] or ""),
            "answer": (r["answer"] or "")[:300], "seconds": r["total_s"],
            "audio": bool(r["audio_path"] and r["audio_sha256"]),
        } for r in reversed(rows)]

    def _play(self, number: int) -> None:
        turn = self.session.turn(int(number))
        path = self.session.store.audio_file(turn.audio_path)
        if path is None:
            return
        clip = Audio(path)
        self.send({"type": "audio", "turn": turn.turn, "mime": f"audio/{clip.format}"},
                  [clip.read()])


@dataclass(frozen=True)
class _Recording:
    """A clip recorded in the page, and its upload made while it was recorded (or None)."""

    wav: bytes
    live: Any = None
    #: when Stop was pressed (monotonic): where the voice-to-voice time of its answer starts
    stopped_at: float | None = None


class Recorder(SpeaksMixin, TurnsMixin, anywidget.AnyWidget):
    """The recorder widget of a :class:`~voicenb.Session` (use ``session.recorder()``).

    Recordings made while a turn runs wait in order. ``submit(audio)`` queues audio from
    Python (a file or bytes) exactly as a recording would be; ``wait()`` blocks until every
    queued recording has become a turn. Without a browser, ``begin()``, ``feed(pcm)`` and
    ``end()`` do what the page does while you press Record, speak and press Stop.
    """

    _esm = bundle("capture.js", "speaker.js", "turns.js", "recorder.js")
    state = traitlets.Unicode("idle").tag(sync=True)
    status = traitlets.Unicode(STATUS_TEXT["idle"]).tag(sync=True)
    transcript = traitlets.Unicode("").tag(sync=True)
    answer = traitlets.Unicode("").tag(sync=True)
    turns = traitlets.List(traitlets.Dict()).tag(sync=True)
    #: whether the page records (False when another engine supplies the audio)
    capture = traitlets.Bool(True).tag(sync=True)
    #: the page has no microphone, so Record uses the kernel's machine's (sounddevice)
    kernel_mic = traitlets.Bool(False).tag(sync=True)

    def __init__(self, session: Session, *, show_turns: int = 5, capture: bool = True,
                 idle_timeout: float = 60.0, speak: bool | str = False,
                 **kwargs: Any) -> None:
        super().__init__(capture=capture, **kwargs)
        self.session = session
        self._init_speaking(speak)
        self.show_turns = show_turns
        self._pcm: bytearray | None = None  # the recording in progress
        self._live: Any = None  # its upload to the Sync API while it is recorded, if any
        self._mic: Any = None  # this machine's microphone, when the page has none
        self._lock = threading.Lock()
        # Recordings become turns one at a time, in order, on a thread that leaves when idle.
        self._worker = Worker(self._run_turn, name="voicenb-recorder",
                              idle_timeout=idle_timeout)
        self.on_msg(self._on_msg)
        self._show_turns()
        preload_for(session.settings)

    def __repr__(self) -> str:
        return f"Recorder(session={self.session.name!r}, state={self.state!r})"

    # -- input --------------------------------------------------------------------------------

    def submit(self, audio: Any) -> None:
        """Queue a recording (bytes, a path or an Audio) to become the next turn."""
        self._worker.submit(audio)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every queued recording has become a turn; False on timeout."""
        return self._worker.wait(timeout)

    def begin(self) -> None:
        """A recording starts (the page's Record button): the audio is uploaded to
        AssemblyAI's Sync API as it comes, when the session's speech-to-text allows."""
        try:
            live = self.session.live_upload()
        except VoicenbError:  # no key yet, say: the turn will say so, with the clip kept
            live = None
        with self._lock:
            self._pcm = bytearray()
            old, self._live = self._live, live
        if old is not None:
            old.abort()
        self._warm_voice()  # the answer's voice connects while the person speaks
        if live is None:  # no upload while speaking: at least open the connection now
            threading.Thread(target=self.session.warm, daemon=True).start()
        self.hush()  # Record pressed while an answer is read aloud: the person speaks over it
        self._set("recording")

    def feed(self, pcm: bytes) -> None:
        """16 kHz mono 16-bit PCM of the recording in progress."""
        with self._lock:
            if self._pcm is not None:
                self._pcm += pcm
                if self._live is not None:
                    self._live.write(pcm)

    def end(self) -> bool:
        """The recording stops (the page's Stop button): it becomes a turn unless it is too
        short or silent. Returns whether it was queued."""
        with self._lock:
            pcm, self._pcm = self._pcm, None
            live, self._live = self._live, None
        if pcm is None:
            return False
        seconds = len(pcm) / 2 / RATE
        dropped = "nothing was sent" if live is None else "it was not transcribed"
        if live is not None:
            if seconds < MIN_SECONDS or pcm_is_silent(pcm):
                live.abort()  # dropped before the service made a transcript of it
                live = None
            else:
                live.close()  # the service transcribes the last stretch from now
        if seconds < MIN_SECONDS:
            self._set("short", f"too short ({seconds:.1f} s), so {dropped}: press "
                               "Record, ask your question, then press Stop")
            return False
        if pcm_is_silent(pcm):
            self._set("silent", f"nothing was heard, so {dropped}: check that the "
                                "microphone is on and not muted, then record again")
            return False
        self._set("started")
        self.submit(_Recording(pcm_to_wav(bytes(pcm), RATE), live, time.monotonic()))
        return True

    def close(self) -> None:
        """Close the widget; a recording in progress is dropped (its upload aborted)."""
        with self._lock:
            live, self._live, self._pcm = self._live, None, None
        if live is not None:
            live.abort()
        self._close_voice()
        super().close()

    def _on_msg(self, _widget: Any, content: dict[str, Any], buffers: list[Any]) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "start":
            self.begin()
        elif kind == "audio":
            for buffer in buffers:
                self.feed(bytes(buffer))
        elif kind == "stop":
            self.end()
        elif kind == "play":
            self._play(content.get("turn", 0))
        elif kind == "kernel-start":
            self.begin()
            try:
                self._mic.start(self.feed)
            except BaseException:
                self.end()  # nothing recorded: its upload is dropped
                raise
        elif kind == "kernel-stop":
            self._mic.stop()
            self.end()
        elif kind == "error":
            self._no_microphone(str(content.get("message")), bool(content.get("local")))
        else:
            self._speaking_message(kind, content)

    def _no_microphone(self, why: str, local: bool) -> None:
        """The page cannot record: say why, and offer this machine's microphone when the
        page comes from this machine and sounddevice can open it."""
        from .._mic import microphone

        ask = "ask from Python: recorder.submit('question.wav')"
        fallback = f"You can still {ask}."
        if local:
            try:
                self._mic = microphone()
            except VoicenbError as exc:
                fallback = (f"To use this computer's microphone through Python: "
                            f"{str(exc).rstrip('.')}. Or {ask}.")
            else:
                self.kernel_mic = True
                fallback = "Press Record to record with this computer's microphone instead."
        self._set("nomic", f"no microphone in this page: {why}. {fallback}")

    # -- one turn, on the worker's thread ------------------------------------------------------

    def _run_turn(self, audio: Any) -> Turn | None:
        self.transcript = self.answer = ""
        live, spoken_at = None, time.monotonic()
        if isinstance(audio, _Recording):
            audio, live, spoken_at = audio.wav, audio.live, audio.stopped_at or spoken_at

        def on_status(turn: int, status: str) -> None:
            if status == "answering":
                self.transcript = self.session.turn(turn).transcript or ""
            if status in ("uploading", "transcribing") and while_loading(
                    lambda: self.state == status and self._set(status, turn=turn)):
                return self._set(status, LOADING, turn=turn)
            self._set(status, turn=turn)

        shown = Streamed(lambda text: setattr(self, "answer", text))
        speaker = None
        try:
            speaker = self._new_speaker()
            turn = self.session.ask_audio(
                audio, on_status=on_status, live=live, speak=False if speaker else None,
                on_token=shown if speaker is None else both(shown, speaker.feed))
            if speaker is not None:
                self._set("speaking", "reading the answer aloud", turn=turn.turn)
                turn = self._spoken(turn, speaker, spoken_at)
        except VoicenbError as exc:
            self._set("error", str(exc))
            return None
        except Exception as exc:  # a bug must not kill the widget's worker silently
            self._set("error", f"{type(exc).__name__}: {exc}")
            return None
        finally:
            if speaker is not None and self._speaker is speaker:  # the turn failed
                speaker.cancel()
                self._speaker = None
            self._show_turns()
        self.transcript, self.answer = turn.transcript or "", turn.answer or ""
        self._set("ok", f"turn {turn.turn}: done, {turn.total_s:.1f} s in all")
        return turn

    def _set(self, state: str, message: str | None = None, *, turn: int | None = None) -> None:
        text = message if message is not None else STATUS_TEXT.get(state, state)
        self.status = f"turn {turn}: {text}" if turn else text
        self.state = state


class WebRTCRecorder(Recorder):
    """``session.recorder(engine="ipywebrtc")``: ipywebrtc records (the browser compresses
    to WebM/Opus, for long recordings); our Record/Stop button drives it, its own controls
    and player are never shown, and the recording is never played back."""

    def __init__(self, session: Session, *, stream: Any = None, **kwargs: Any) -> None:
        import ipywidgets as widgets
        from ipywebrtc import AudioRecorder, CameraStream

        super().__init__(session, capture=False, **kwargs)
        camera = stream or CameraStream(constraints={"audio": True, "video": False})
        self.audio_recorder = AudioRecorder(stream=camera, autosave=False,
                                            layout=widgets.Layout(display="none"))
        self.button = widgets.ToggleButton(value=False, description="Record",
                                           icon="microphone", button_style="danger",
                                           tooltip="Record a question")
        self.button.add_class("voicenb-record")
        self.button.observe(self._on_button, "value")
        self.audio_recorder.audio.observe(self._on_audio, "value")
        self.box = widgets.VBox([self.button, self.audio_recorder, self])

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.box)

    def _on_button(self, change: dict[str, Any]) -> None:
        recording = bool(change.get("new"))
        self.button.description = "Stop" if recording else "Record"
        self.button.icon = "stop" if recording else "microphone"
        self.audio_recorder.recording = recording
        if recording:  # open the connection while the question is spoken
            threading.Thread(target=self.session.warm, daemon=True).start()
        self._set("recording" if recording else "started")

    def _on_audio(self, change: dict[str, Any]) -> None:
        data = change.get("new")
        if data:
            try:
                self.submit(Audio(bytes(data)))
            except AudioError as exc:
                self._set("error", str(exc))
