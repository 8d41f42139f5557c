"""OpenAI's chat models and what they take: one place for the client (which adapts and checks a
request before anything is paid for) and the simulator (which answers as OpenAI does).

The names are the chat model list of OpenAI's spec (openai-openapi, ``ModelIdsShared``'s
enum, December 2026); a fine-tuned model is ``ft:<base>:<org>:<suffix>:<id>``. The reasoning
models (the o-series and the GPT-5 family, but not the ``*-chat-latest`` aliases) take
``max_completion_tokens`` and refuse ``max_tokens``, and refuse sampling parameters other
than their defaults, except GPT-5.1 and later at ``reasoning_effort="none"``. Which
``reasoning_effort`` values a model takes (OpenAI's reasoning guide): GPT-5.1 and later
``none`` (their default), ``low``, ``medium``, ``high``, and ``xhigh`` from GPT-5.2; earlier
ones ``minimal`` to ``high`` (default ``medium``); ``gpt-5-pro`` and ``gpt-5.2-pro`` only
``high``.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["CHAT_MODELS", "EFFORTS", "known", "reasoning", "efforts", "refused", "adapt"]

CHAT_MODELS = (
    "gpt-5.6-sol", "gpt-5.6-terra", "gpt-5.6-luna", "gpt-5.5", "gpt-5.5-2026-04-23", "gpt-5.4",
    "gpt-5.4-mini", "gpt-5.4-nano", "gpt-5.4-mini-2026-03-17", "gpt-5.4-nano-2026-03-17",
    "gpt-5.3-chat-latest", "gpt-5.2", "gpt-5.2-2025-12-11", "gpt-5.2-chat-latest",
    "gpt-5.2-pro", "gpt-5.2-pro-2025-12-11", "gpt-5.1", "gpt-5.1-2025-11-13", "gpt-5.1-codex",
    "gpt-5.1-mini", "gpt-5.1-chat-latest", "gpt-5", "gpt-5-mini", "gpt-5-nano",
    "gpt-5-2025-08-07", "gpt-5-mini-2025-08-07", "gpt-5-nano-2025-08-07", "gpt-5-chat-latest",
    "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-4.1-2025-04-14", "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano-2025-04-14", "o4-mini", "o4-mini-2025-04-16", "o3", "o3-2025-04-16",
    "o3-mini", "o3-mini-2025-01-31", "o1", "o1-2024-12-17", "o1-preview",
    "o1-preview-2024-09-12", "o1-mini", "o1-mini-2024-09-12", "gpt-4o", "gpt-4o-2024-11-20",
    "gpt-4o-2024-08-06", "gpt-4o-2024-05-13", "gpt-4o-audio-preview",
    "gpt-4o-audio-preview-2024-10-01", "gpt-4o-audio-preview-2024-12-17",
    "gpt-4o-audio-preview-2025-06-03", "gpt-4o-mini-audio-preview",
    "gpt-4o-mini-audio-preview-2024-12-17", "gpt-4o-search-preview",
    "gpt-4o-mini-search-preview", "gpt-4o-search-preview-2025-03-11",
    "gpt-4o-mini-search-preview-2025-03-11", "chatgpt-4o-latest", "codex-mini-latest",
    "gpt-4o-mini", "gpt-4o-mini-2024-07-18", "gpt-4-turbo", "gpt-4-turbo-2024-04-09",
    "gpt-4-0125-preview", "gpt-4-turbo-preview", "gpt-4-1106-preview", "gpt-4-vision-preview",
    "gpt-4", "gpt-4-0314", "gpt-4-0613", "gpt-4-32k", "gpt-4-32k-0314", "gpt-4-32k-0613",
    "gpt-3.5-turbo", "gpt-3.5-turbo-16k", "gpt-3.5-turbo-0301", "gpt-3.5-turbo-0613",
    "gpt-3.5-turbo-1106", "gpt-3.5-turbo-0125", "gpt-3.5-turbo-16k-0613",
)
#: ReasoningEffort's enum in the spec
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
#: the sampling parameters a reasoning model takes only at their defaults
SAMPLING = {"temperature": 1, "top_p": 1, "presence_penalty": 0, "frequency_penalty": 0,
            "logprobs": False}


def _base(model: str) -> str:
    """``ft:gpt-4o-mini-2024-07-18:org::abc`` -> ``gpt-4o-mini-2024-07-18``."""
    return model.split(":")[1] if model.startswith("ft:") and model.count(":") >= 2 else model


def known(model: str) -> bool:
    """Whether OpenAI serves ``model`` (one of its chat models, or a fine-tune of one)."""
    return _base(model) in CHAT_MODELS


def _gpt5(model: str) -> tuple[int, int] | None:
    match = re.match(r"gpt-5(?:\.(\d+))?(?:-|$)", _base(model))
    return (5, int(match.group(1) or 0)) if match else None


def reasoning(model: str) -> bool:
    """The o-series and the GPT-5 family, but not the ``*-chat-latest`` aliases."""
    base = _base(model)
    if "chat-latest" in base:
        return False
    return base.startswith(("o1", "o3", "o4")) or _gpt5(base) is not None


def efforts(model: str) -> tuple[str, ...]:
    """The ``reasoning_effort`` values ``model`` takes, its default first (() for none)."""
    if not reasoning(model):
        return ()
    version = _gpt5(model)
    if version is not None and "-pro" in _base(model):
        return ("high",)
    if version is not None and version >= (5, 1):
        return ("none", "low", "medium", "high") + (("xhigh",) if version >= (5, 2) else ())
    return ("medium", "minimal", "low", "high")


def refused(model: str, params: dict[str, Any]) -> tuple[str, str, str] | None:
    """Why OpenAI refuses these request parameters for ``model``, as (message, code, param),
    worded as OpenAI words it; None when it takes them."""
    allowed = efforts(model)
    effort = params.get("reasoning_effort")
    if effort is not None and not allowed:
        return ("Unsupported parameter: 'reasoning_effort' is not supported with this model.",
                "unsupported_parameter", "reasoning_effort")
    if not allowed:
        return None
    if params.get("max_tokens") is not None:
        return ("Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                "'max_completion_tokens' instead.", "unsupported_parameter", "max_tokens")
    if effort is not None and effort not in allowed:
        names = ", ".join(f"'{e}'" for e in sorted(allowed))
        return (f"Unsupported value: '{effort}' is not supported with the '{model}' model. "
                f"Supported values are: {names}.", "unsupported_value", "reasoning_effort")
    if (effort or allowed[0]) == "none":  # GPT-5.1 and later, not reasoning: they sample
        return None
    for name, default in SAMPLING.items():
        value = params.get(name)
        if value is not None and value != default:
            return (f"Unsupported value: '{name}' does not support {value!r} with this model. "
                    f"Only the default ({default!r}) value is supported.", "unsupported_value",
                    name)
    return None


def adapt(model: str, params: dict[str, Any], reasoning_effort: str | None) -> dict[str, Any]:
    """The request parameters as ``model`` takes them: ``max_tokens`` becomes
    ``max_completion_tokens`` for a reasoning model, and the configured
    ``reasoning_effort`` is sent to reasoning models only (a model that does not take the
    configured value keeps its default)."""
    out = dict(params)
    if not reasoning(model):
        return out
    if "max_tokens" in out and "max_completion_tokens" not in out:
        out["max_completion_tokens"] = out.pop("max_tokens")
    if reasoning_effort and "reasoning_effort" not in out and reasoning_effort in efforts(model):
        out["reasoning_effort"] = reasoning_effort
    return out
