"""The page's player (widgets/static/speaker.js) played out from Python, for the widgets that
read answers aloud (LiveRecorder, Recorder): the widget's messages to the page come to
``receive`` instead, and it answers as the page would."""

from __future__ import annotations


class PagePlayer:
    """Every sentence starts as it arrives (``playing``); ``ended`` follows ``said`` while
    ``answer_ends``; with ``barge_after`` sentences started the person speaks over the answer
    (the service's SpeechStarted: ``hush``); a ``hush`` is answered with ``played`` seconds."""

    def __init__(self, widget, *, barge_after: int | None = None, answer_ends: bool = True,
                 played: float = 0.5) -> None:
        self.widget, self.barge_after, self.answer_ends = widget, barge_after, answer_ends
        self.played, self.seen = played, []
        widget.send = self.receive
        self.tell("front")

    def tell(self, kind: str, **content) -> None:
        self.widget._on_msg(self.widget, {"type": kind, **content}, [])

    def receive(self, content, buffers=None) -> None:
        self.seen.append(content["type"])
        answer = content.get("answer")
        if content["type"] == "say":
            assert bytes(buffers[0])[:4] == b"RIFF"  # a whole WAV per sentence
            self.tell("playing", answer=answer, seq=content["seq"])
            if content["seq"] + 1 == self.barge_after:
                self.widget.hush()
        elif content["type"] == "said" and self.answer_ends and self.barge_after is None:
            self.tell("ended", answer=answer)
        elif content["type"] == "hush":
            self.tell("hushed", answer=answer, played={"0": self.played}, reason="kernel")
