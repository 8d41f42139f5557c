"""GPT answers through the official openai SDK: :func:`ask`, :class:`Chat`, :class:`Answer`.

Every call streams (so the time to the first token is always measured, and usage comes from
``stream_options={"include_usage": True}``); ``stream=True`` only decides whether the tokens
are shown as they arrive: printed in a terminal, updated in place in a notebook.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from . import _chat_models, _openai
from ._config import Settings, resolve
from ._errors import ConfigError, ServiceError

#: Earlier turns kept as context, by default: this many question/answer pairs...
DEFAULT_MAX_HISTORY = 20
#: ...and at most about this many tokens of them (oldest dropped first).
DEFAULT_HISTORY_TOKENS = 8000
#: the error code OpenAI (and compatible servers) send for a conversation over the context
CONTEXT_TOO_LONG = "context_length_exceeded"


@dataclass
class Answer:
    """A model's reply, with ``ttft_s`` (request sent -> first content token), ``llm_s``
    (the whole call) and the token counts the service reported."""

    text: str
    model: str
    ttft_s: float | None = None
    llm_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    def to_row(self) -> dict[str, Any]:
        """The history columns this answer fills."""
        return {"llm_model": self.model, "answer": self.text, "ttft_s": self.ttft_s,
                "llm_s": self.llm_s, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return self.text


def estimate_tokens(text: str) -> int:
    """About four characters a token: enough to keep the context within a budget."""
    return (len(text) + 3) // 4 + 4


class Chat:
    """A conversation with memory.

    >>> chat = vnb.Chat(system="Answer in one sentence.")       # doctest: +SKIP
    >>> chat.ask("What is the capital of France?").text          # doctest: +SKIP
    >>> chat.ask("And of Italy?").text                           # remembers the first turn

    Memory is bounded: the last ``max_history`` question/answer pairs, trimmed further to
    about ``history_tokens`` tokens, so a long session never overflows the model's context.
    """

    def __init__(
        self,
        model: str | None = None,
        system: str | None = None,
        *,
        max_history: int = DEFAULT_MAX_HISTORY,
        history_tokens: int = DEFAULT_HISTORY_TOKENS,
        settings: Settings | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
    ) -> None:
        if max_history < 0 or history_tokens < 0:
            raise ConfigError("max_history and history_tokens must be 0 or more.")
        self.settings = resolve(settings, model=model, openai_api_key=api_key,
                                openai_base_url=base_url)
        self.model = self.settings.model
        effort = self.settings.reasoning_effort
        if effort is not None and effort not in _chat_models.EFFORTS:
            raise ConfigError(f"reasoning_effort={effort!r} (Settings or "
                              f"VOICENB_REASONING_EFFORT) is not one of "
                              f"{', '.join(_chat_models.EFFORTS)}.")
        self.system = system
        self.max_history = max_history
        self.history_tokens = history_tokens
        self.history: list[tuple[str, str]] = []  # (question, answer) pairs, oldest first
        self._client = _openai.client(self.settings)

    def __repr__(self) -> str:
        return f"Chat(model={self.model!r}, turns={len(self.history)})"

    def messages(self, prompt: str) -> list[dict[str, str]]:
        """What is sent for ``prompt``: the system text, the kept history, the prompt."""
        return self._messages(self._kept(), prompt)

    def _kept(self) -> list[tuple[str, str]]:
        """The newest question/answer pairs within ``max_history`` and ``history_tokens``."""
        kept: list[tuple[str, str]] = []
        budget = self.history_tokens
        for question, answer in reversed(self.history[-self.max_history:] if self.max_history
                                         else []):
            cost = estimate_tokens(question) + estimate_tokens(answer)
            if cost > budget:
                break
            budget -= cost
            kept.append((question, answer))
        kept.reverse()
        return kept

    def _messages(self, kept: list[tuple[str, str]], prompt: str) -> list[dict[str, str]]:
        out = [{"role": "system", "content": self.system}] if self.system else []
        for question, answer in kept:
            out += [{"role": "user", "content": question},
                    {"role": "assistant", "content": answer}]
        out.append({"role": "user", "content": prompt})
        return out

    def ask(self, prompt: str, *, stream: bool = False,
            on_token: Callable[[str], None] | None = None, **params: Any) -> Answer:
        """Ask and remember. ``stream=True`` shows tokens as they arrive; ``on_token`` is
        called with each piece of text; ``params`` go to the API (``temperature=0``...).

        If the model says the conversation is longer than its context, the older half of
        the memory is dropped and the question asked again, down to no memory at all; a
        prompt too long on its own raises :class:`ServiceError` saying so.
        """
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError("The prompt is empty: there is nothing to ask.")
        kept = full = self._kept()
        while True:
            try:
                answer = self._complete(self._messages(kept, prompt), stream=stream,
                                        on_token=on_token, **params)
                break
            except ServiceError as exc:
                if exc.code != CONTEXT_TOO_LONG:
                    raise
                if not kept:
                    raise ServiceError(
                        f"The prompt alone is too long for {self.model!r} ({exc.detail}). "
                        "Shorten it, or split it into several questions (voicenb already "
                        "left the earlier turns out).", service=exc.service,
                        status_code=exc.status_code, detail=exc.detail, code=exc.code
                    ) from None
                kept = kept[(len(kept) + 1) // 2:]  # leave the older half out
        if len(kept) < len(full):  # and out of the next questions too
            self.history = list(kept)
        self.history.append((prompt, answer.text))
        if len(self.history) > max(self.max_history, 1) * 4:  # keep the list itself small
            del self.history[: len(self.history) - self.max_history]
        return answer

    def reset(self) -> None:
        """Forget the conversation."""
        self.history.clear()

    def _openai_params(self, params: dict[str, Any]) -> dict[str, Any]:
        params = _chat_models.adapt(self.model, params, self.settings.reasoning_effort)
        if (why := _chat_models.refused(self.model, params)) is not None:
            raise ConfigError(f"{self.model!r} does not take that request: {why[0]} Leave "
                              f"{why[2]!r} out (reasoning models choose their own sampling), "
                              "or ask a model that takes it.")
        return params

    def _complete(self, messages: list[dict[str, str]], *, stream: bool,
                  on_token: Callable[[str], None] | None, **params: Any) -> Answer:
        if _chat_models.known(self.model):  # OpenAI's own: what it refuses is refused here,
            # before anything is paid (another server's models are its business)
            params = self._openai_params(params)
        display = _live_display() if stream else None
        pieces: list[str] = []
        usage = None
        ttft = None
        finished = False  # a finish_reason arrived: the model, not the connection, ended it
        t0 = time.monotonic()
        try:
            response = self._client.chat.completions.create(
                model=self.model, messages=messages, stream=True,
                stream_options={"include_usage": True}, **params)
            with response:
                for chunk in response:
                    if chunk.usage is not None:
                        usage = chunk.usage
                    for choice in chunk.choices or ():
                        finished = finished or bool(getattr(choice, "finish_reason", None))
                        text = choice.delta.content if choice.delta else None
                        if text:
                            if ttft is None:
                                ttft = time.monotonic() - t0
                            pieces.append(text)
                            if on_token is not None:
                                on_token(text)
                            if display is not None:
                                display.update("".join(pieces))
        except Exception as exc:
            if not _openai.is_transport_error(exc):
                raise
            error = _openai.convert(exc, model=self.model, base_url=self.settings.openai_base_url,
                                    what="chat completion")
            if pieces and type(error) is ServiceError:
                error = ServiceError(
                    f"The answer from {self.model!r} was cut off after {len(pieces)} pieces "
                    f"({error.message}). Ask again.", service=error.service,
                    status_code=error.status_code, detail=error.detail)
            raise error from None
        finally:
            if display is not None:
                display.close()
        if not finished:  # the body ended early, or was not a stream of chunks at all
            where = self.settings.openai_base_url
            raise ServiceError(
                f"The answer from {self.model!r} was cut off after {len(pieces)} pieces (the "
                f"stream from {where} ended before the model finished). Ask again."
                if pieces else
                f"{_openai.SERVICE} at {where} sent no answer from {self.model!r}: the reply "
                "was not a stream of chat completion chunks. Ask again; if it keeps happening, "
                "check OPENAI_BASE_URL points at an OpenAI-compatible server.",
                service=_openai.SERVICE)
        llm_s = time.monotonic() - t0
        return Answer(
            text="".join(pieces), model=self.model, ttft_s=ttft, llm_s=llm_s,
            prompt_tokens=getattr(usage, "prompt_tokens", None),
            completion_tokens=getattr(usage, "completion_tokens", None))


def ask(
    prompt: str,
    model: str | None = None,
    system: str | None = None,
    stream: bool = False,
    *,
    settings: Settings | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
    **params: Any,
) -> Answer:
    """Ask a model one question (no memory); see :class:`Chat` for a conversation.

    >>> vnb.ask("What is the capital of France?").text     # doctest: +SKIP
    'The capital of France is Paris.'
    """
    chat = Chat(model, system, max_history=0, settings=settings, api_key=api_key,
                base_url=base_url)
    return chat.ask(prompt, stream=stream, **params)


# -- showing a stream ---------------------------------------------------------------------------


class _Terminal:
    def __init__(self) -> None:
        self.shown = 0

    def update(self, text: str) -> None:
        sys.stdout.write(text[self.shown:])
        sys.stdout.flush()
        self.shown = len(text)

    def close(self) -> None:
        if self.shown:
            sys.stdout.write("\n")
            sys.stdout.flush()


class _Notebook:
    """One output area, updated in place as plain text (the front end escapes it), at most
    ~20 times a second so a long answer does not flood the kernel's messages."""

    def __init__(self) -> None:
        from IPython.display import display

        self.handle = display({"text/plain": ""}, raw=True, display_id=True)
        self.last = 0.0
        self.text = ""

    def update(self, text: str) -> None:
        self.text = text
        now = time.monotonic()
        if now - self.last >= 0.05:
            self.last = now
            self.handle.update({"text/plain": text}, raw=True)

    def close(self) -> None:
        self.handle.update({"text/plain": self.text}, raw=True)


def _live_display() -> _Terminal | _Notebook:
    from ._frontend import in_notebook

    return _Notebook() if in_notebook() else _Terminal()
