"""Notebook widgets. Only this package imports ipywidgets / ipywebrtc / anywidget."""

from __future__ import annotations

from .recorder import Recorder, TurnView

__all__ = ["Recorder", "TurnView"]
