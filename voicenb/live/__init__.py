"""Live conversations: one protocol (:mod:`voicenb.live.base`), three backends.

``session.live(backend=...)`` picks one: ``"cascade"`` (the default: streaming speech to text,
the chat model, a voice), ``"openai-realtime"`` (OpenAI's Realtime API) or
``"assemblyai-agent"`` (AssemblyAI's Voice Agent API). The widget and the history depend on
the protocol only.
"""

from __future__ import annotations

from .base import BACKENDS, INPUT_RATE, Conversation, Heard, Listener, Reply

__all__ = ["BACKENDS", "INPUT_RATE", "Conversation", "Heard", "Listener", "Reply"]
