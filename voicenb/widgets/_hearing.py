"""The local speech model, seen from a widget: start loading it as soon as the widget exists,
and say "loading the speech model" while that is what a turn waits for."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .._config import Settings, resolve
from .._errors import VoicenbError

LOADING = "loading the speech model"


def preload_for(settings: Settings) -> None:
    """Start loading Whisper in the background when this session hears with it (the
    simulators, when they hear with it, started its load already)."""
    from ..stt.local import auto_backend, preload

    cfg = resolve(settings)
    try:
        backend = auto_backend(cfg) if cfg.stt == "auto" else cfg.stt
    except VoicenbError:  # no backend at all: the first turn says so
        return
    if backend == "whisper":
        preload(settings=cfg)


def while_loading(then: Callable[[], None]) -> bool:
    """True when a speech model is loading in this process; ``then`` is called on a thread
    once it has loaded (to put the status line back)."""
    from ..stt.local import loading

    if not loading():
        return False

    def wait() -> None:
        while loading():
            time.sleep(0.05)
        then()

    threading.Thread(target=wait, name="voicenb-loading", daemon=True).start()
    return True
