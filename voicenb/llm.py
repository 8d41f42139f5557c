"""GPT answers through the official openai SDK: :func:`ask`, :class:`Chat`, :class:`Answer`.

Every call streams (so the time to the first token is always measured, and usage comes from
``stream_options={"include_usage": True}``); ``stream=True`` only decides whether the tokens
are shown as they arrive: printed in a terminal, updated in place in a notebook.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from . import _chat_models, _openai
from ._config import Settings, resolve
from ._errors import ConfigError, ServiceError, VoicenbError

log = logging.getLogger("voicenb")

#: Earlier turns kept as context, by default: this many question/answer pairs...
DEFAULT_MAX_HISTORY = 20
#: ...and at most about this many tokens of them (oldest dropped first).
DEFAULT_HISTORY_TOKENS = 8000
#: the error code OpenAI (and compatible servers) send for a conversation over the context
CONTEXT_TOO_LONG = "context_length_exceeded"
#: what a model is told when its answer's stream broke and it is asked, once, for the rest
#: (after the part received, sent back as its own message): OpenAI's chat API continues no
#: assistant message, so the model is asked in words
CONTINUE_PROMPT = ("Your previous reply was cut off by a network failure after the text "
                   "above. Continue it from exactly where it stopped: do not repeat anything "
                   "already written and do not start again; reply with the rest only.")
#: a continuation that starts by repeating at least this much of the end of what was said,
#: from a word's start, has that repeat left out
MIN_REPEAT_CHARS = 8
#: characters of what was said quoted in the error when the answer broke twice
SAID_IN_ERROR = 500


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
    #: streams that broke mid-answer and were asked again for the rest (0 or 1); the token
    #: counts then add both requests (a broken stream's own, which it never reports, are
    #: estimated from its text)
    retries: int = 0

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

        A stream that breaks once the answer has begun (the connection dropped, a garbled
        chunk, an end before the model finished) is asked again once: with what was received
        sent back as the model's own message and :data:`CONTINUE_PROMPT`, so only the rest
        comes, and ``on_token`` and the display never get a piece twice. A second break
        raises :class:`ServiceError` quoting what was said (also in its ``said``).
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
        said = _Said(on_token, _live_display() if stream else None)
        t0 = time.monotonic()
        try:
            first = self._stream(messages, params, said, t0)
            if first.cut is None:
                return self._answer(said, t0, first)
            # the stream broke after the answer began: ask once more, for the rest only
            log.info("voicenb: the answer stream broke (%s); asking once more", first.cut)
            again = messages
            if said.text:
                again = [*messages, {"role": "assistant", "content": said.text},
                         {"role": "user", "content": CONTINUE_PROMPT}]
                said.resume()
            try:
                second = self._stream(again, params, said, t0)
            except VoicenbError as exc:
                raise self._cut_twice(said.text, exc) from None
            said.end()
            if second.cut is not None:
                raise self._cut_twice(said.text, second.cut)
            return self._answer(said, t0, first, second, first_messages=messages)
        finally:
            said.close()

    def _stream(self, messages: list[dict[str, str]], params: dict[str, Any], said: _Said,
                t0: float) -> _Streamed:
        """One streamed request; its pieces go to ``said``. A refusal raises (the SDK has
        retried what waiting fixes); a stream that breaks once it has begun is returned
        with ``cut`` set, for the caller to ask once more."""
        out = _Streamed()
        try:
            response = self._client.chat.completions.create(
                model=self.model, messages=messages, stream=True,
                stream_options={"include_usage": True}, **params)
        except Exception as exc:
            if not _openai.is_transport_error(exc):
                raise
            raise self._convert(exc) from None
        try:
            with response:
                for chunk in response:
                    out.chunks += 1
                    if chunk.usage is not None:
                        out.usage = chunk.usage
                    for choice in chunk.choices or ():
                        out.finished = out.finished or bool(getattr(choice, "finish_reason",
                                                                    None))
                        text = choice.delta.content if choice.delta else None
                        if text:
                            out.chars += len(text)
                            said.add(text, t0)
        except Exception as exc:
            if not _openai.is_transport_error(exc):
                raise
            cause = exc.__cause__ or exc  # the SDK wraps the HTTP library's error
            out.cut = ServiceError(
                f"the stream from {self.settings.openai_base_url} broke off "
                f"({type(cause).__name__}: {str(cause)[:200]})", service=_openai.SERVICE)
            return out
        where = self.settings.openai_base_url
        if not out.chunks:  # a 200 whose body is not a stream of chunks: not a network fault
            raise ServiceError(
                f"{_openai.SERVICE} at {where} sent no answer from {self.model!r}: the reply "
                "was not a stream of chat completion chunks. Ask again; if it keeps happening, "
                "check OPENAI_BASE_URL points at an OpenAI-compatible server.",
                service=_openai.SERVICE)
        if not out.finished:  # the body ended before the model did
            out.cut = ServiceError(f"the stream from {where} ended before the model finished",
                                   service=_openai.SERVICE)
        return out

    def _convert(self, exc: BaseException) -> VoicenbError:
        return _openai.convert(exc, model=self.model, base_url=self.settings.openai_base_url,
                               what="chat completion")

    def _cut_twice(self, text: str, error: VoicenbError) -> VoicenbError:
        if type(error) is not ServiceError:
            return error  # a refusal of the second request says what it says
        shown = text if len(text) <= SAID_IN_ERROR else text[:SAID_IN_ERROR] + "…"
        cut = ServiceError(
            f"The answer from {self.model!r} was cut off, and again when voicenb asked it once "
            f"to continue ({error.message}). " + (
                f"What it had said before the cut ({len(text)} characters): “{shown}”. "
                if text else "") + "Ask again.",
            service=error.service, status_code=error.status_code, detail=error.detail)
        cut.said = text  # type: ignore[attr-defined]  # for whoever records the turn
        return cut

    def _answer(self, said: _Said, t0: float, first: _Streamed,
                second: _Streamed | None = None, *,
                first_messages: list[dict[str, str]] | None = None) -> Answer:
        prompt = getattr(first.usage, "prompt_tokens", None)
        completion = getattr(first.usage, "completion_tokens", None)
        if second is not None:
            if first.usage is None and first_messages is not None:
                # a cut stream never reports its usage, though its tokens were billed
                prompt = sum(estimate_tokens(str(m.get("content") or ""))
                             for m in first_messages)
                completion = estimate_tokens(said.text[:first.chars]) if first.chars else 0
            more_prompt = getattr(second.usage, "prompt_tokens", None)
            more_completion = getattr(second.usage, "completion_tokens", None)
            prompt = None if more_prompt is None else prompt + more_prompt
            completion = None if more_completion is None else completion + more_completion
        return Answer(text=said.text, model=self.model, ttft_s=said.ttft,
                      llm_s=time.monotonic() - t0, prompt_tokens=prompt,
                      completion_tokens=completion, retries=int(second is not None))


@dataclass
class _Streamed:
    """What one streamed request gave."""

    usage: Any = None
    finished: bool = False  # a finish_reason arrived: the model, not the connection, ended it
    chunks: int = 0  # received
    chars: int = 0  # of content received
    cut: VoicenbError | None = None  # it broke after it began


class _Said:
    """The answer as shown and spoken: each piece once, across a retry. After
    :meth:`resume`, the start of the continuation is held while it could still be the model
    repeating the end of what was said, and that repeat is left out."""

    def __init__(self, on_token: Callable[[str], None] | None,
                 display: _Terminal | _Notebook | None) -> None:
        self.on_token, self.display = on_token, display
        self.pieces: list[str] = []
        self.ttft: float | None = None
        self._said: str | None = None  # while a continuation's start is checked against it
        self._held = ""

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def add(self, text: str, t0: float) -> None:
        if self.ttft is None:
            self.ttft = time.monotonic() - t0
        if self._said is not None:
            self._held += text
            if self._held in self._said:
                return  # it may yet run on into a repeat of the end of what was said
            text, self._held, self._said = _unrepeated(self._said, self._held), "", None
            if not text:
                return
        self.pieces.append(text)
        if self.on_token is not None:
            self.on_token(text)
        if self.display is not None:
            self.display.update(self.text)

    def resume(self) -> None:
        self._said, self._held = self.text, ""

    def end(self) -> None:
        """The continuation ended: what is held is said (unless it only repeated)."""
        said, held, self._said, self._held = self._said, self._held, None, ""
        if said is not None and held and (rest := _unrepeated(said, held)):
            self.add(rest, 0.0)

    def close(self) -> None:
        if self.display is not None:
            self.display.close()


def _unrepeated(said: str, more: str) -> str:
    """``more`` (a continuation) without the longest start of it that repeats the end of
    ``said`` from a word's start on (at least :data:`MIN_REPEAT_CHARS` long)."""
    for k in range(min(len(said), len(more)), MIN_REPEAT_CHARS - 1, -1):
        start = len(said) - k
        if said.endswith(more[:k]) and (start == 0 or said[start - 1].isspace()):
            rest = more[k:]
            return rest.lstrip() if said[-1:].isspace() else rest
    return more


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
