"""Reading answers aloud in the page, for the live widget and the recorder (private).

The kernel side of ``static/speaker.js``: a :class:`~voicenb._talkback.Speaker` per answer
sends each sentence's WAV as it is synthesised (``say``, then ``said`` with the count); the
page answers ``playing`` (a sentence started), ``ended`` or ``hushed`` (stopped, with the
seconds of each sentence played). :meth:`SpeaksMixin.hush` stops the answer being read (the
person started speaking); the turn is then recorded ``barged_in`` with what was heard.
"""

from __future__ import annotations

import time
from typing import Any

import traitlets

#: how long a turn waits for the page beyond the audio it still has to play (a page closed,
#: or a kernel busy running a cell, which hears no message from the page until it is done)
PLAYER_IDLE_S = 10.0


class SpeaksMixin(traitlets.HasTraits):
    """For an anywidget whose page bundles speaker.js and sends ``front`` when shown."""

    #: read answers aloud in the page (set at creation)
    speak = traitlets.Bool(False).tag(sync=True)

    def _init_speaking(self, speak: bool | str) -> None:
        from .._config import resolve
        from ..tts import DEFAULT_MODEL, assemblyai, backend_for, check_model

        self.speak = bool(speak)
        #: the speech backend ("assemblyai", "espeak", "openai"...; None: Settings.tts)
        self.voice = speak if isinstance(speak, str) else None
        #: AssemblyAI: the conversation's text-to-speech session, opened at its first answer
        self._voice_session: Any = None
        if speak:  # an unknown backend, voice or language, or a model shut down, is said now
            cfg = resolve(self.session.settings, tts=self.voice)
            backend = backend_for(cfg)
            if backend == "openai":
                check_model(DEFAULT_MODEL)
            elif backend == "assemblyai":
                self._voice_session = assemblyai.Voice(cfg)
        self._front = False  # no page has shown the widget yet: nothing could be played
        self._speaker: Any = None  # the answer being read aloud now, and its id
        self._answer_id = 0
        self._barge_at: float | None = None
        #: seconds from the person starting to speak over an answer to its playback stopped
        self.barge_stops: list[float] = []

    def _speaking_message(self, kind: str | None, content: dict[str, Any]) -> bool:
        """Handle a message of the page's player; False when it is not one."""
        if kind == "front":
            self._front = True  # a page shows the widget: it can play answers
        elif kind == "closed":
            # the page is gone: the next answers are not read, and this one's wait ends
            # once the audio it had to play is over (what it started counts as heard)
            self._front = False
        elif kind in ("playing", "ended", "hushed"):
            self._from_player(kind, content)
        else:
            return False
        return True

    def _new_speaker(self) -> Any:
        """A Speaker for the next answer, or None when answers are not read aloud here."""
        from .._talkback import Speaker, StreamSpeaker

        if not (self.speak and self._front):
            return None
        send, all_sent = self._next_answer()
        if self._voice_session is not None:
            speaker: Any = StreamSpeaker(send, self._voice_session, on_all_sent=all_sent,
                                         settings=self.session.settings)
        else:
            speaker = Speaker(send, on_all_sent=all_sent, backend=self.voice,
                              settings=self.session.settings)
        self._speaker = speaker
        return speaker

    def _next_answer(self) -> tuple[Any, Any]:
        """A new answer for the page: how to send it a clip, and say how many were sent."""
        self._answer_id += 1
        answer = self._answer_id

        def send(seq: int, wav: bytes) -> None:
            self.send({"type": "say", "answer": answer, "seq": seq}, buffers=[wav])

        def all_sent(count: int) -> None:
            self.send({"type": "said", "answer": answer, "count": count})

        return send, all_sent

    def _spoken(self, turn: Any, speaker: Any, spoken_at: float) -> Any:
        """Wait until the answer was read out (or spoken over), then record how.
        ``spoken_at``: the end of the person's speech, on the monotonic clock."""
        speaker.finish()
        spoken = speaker.result(idle=PLAYER_IDLE_S)
        self._speaker = None
        self._barge_at = None
        first = spoken.first_audio_at - spoken_at if spoken.first_audio_at else None
        return self.session.record_speech(
            turn.turn, spoken_chars=spoken.spoken_chars, interrupted=spoken.interrupted,
            tts_model=spoken.tts_model, tts_ttfb_s=spoken.tts_ttfb_s, first_audio_s=first,
            tts_backend=spoken.backend, tts_voice=spoken.voice,
            words_heard=spoken.words_heard, reconnects=spoken.reconnects)

    def _warm_voice(self) -> None:
        """Open the conversation's text-to-speech session in the background (its first
        answer then does not wait for the handshake); a failure is said at that answer."""
        voice = self._voice_session
        if voice is None:
            return

        def run() -> None:
            try:
                voice.open()
            except Exception as exc:  # noqa: BLE001 - said again when an answer needs it
                import logging

                logging.getLogger("voicenb").info("voicenb: opening the voice failed: %s",
                                                  exc)

        import threading

        threading.Thread(target=run, name="voicenb-voice-open", daemon=True).start()

    def _close_voice(self) -> None:
        """End the conversation's text-to-speech session (the widget stopped), off the
        caller's thread: Terminate waits for the service's summary. The next answer opens a
        new session."""
        voice = self._voice_session
        if voice is not None:
            import threading

            threading.Thread(target=voice.close, name="voicenb-voice-close",
                             daemon=True).start()

    def hush(self) -> None:
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
        else:  # hushed: by the kernel (hush), or by the page hearing the person
            speaker.cancel()
            if self._barge_at is not None:
                self.barge_stops.append(time.monotonic() - self._barge_at)
                self._barge_at = None
            played = content.get("played")
            speaker.hushed(played if isinstance(played, dict) else {})
            self._after_hushed(speaker)

    def _after_hushed(self, speaker: Any) -> None:
        """The page stopped ``speaker``'s answer and said how much it played (a hook)."""


def both(first: Any, second: Any) -> Any:
    """One on_token callback that calls two."""
    def call(piece: str) -> None:
        first(piece)
        second(piece)
    return call
