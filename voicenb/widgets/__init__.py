"""Notebook widgets. Only this package imports ipywidgets / ipywebrtc / anywidget."""

from __future__ import annotations

from .live import LiveRecorder
from .recorder import Recorder, WebRTCRecorder

__all__ = ["Recorder", "WebRTCRecorder", "LiveRecorder"]
