"""What a turn cost in USD, from a dated price table that cites where each price comes from.

A turn's cost adds up to three parts, each priced only if it happened:

- speech to text: ``audio_s`` seconds at the price of the row's ``stt_backend`` and
  ``speech_model`` (typed turns, ``stt_backend="text"``, have none);
- the answer: ``prompt_tokens`` and ``completion_tokens`` at the ``llm_model``'s prices;
- speech synthesis: ``spoken_chars`` characters at the ``tts_model``'s price, or, when the row
  names no model (or one the table lacks), its ``tts_backend``'s: ``assemblyai`` at the rate of
  ``assemblyai-tts-1``, ``espeak`` free. A service bills every character it synthesises, and a
  cut-off answer plays fewer of them than were sent, so this is a lower bound for such a turn.

A turn of a live speech-to-speech backend (``live_backend``) is priced as its service bills:
``openai-realtime`` by tokens at its model's rates, its audio tokens (``audio_in_tokens``,
``audio_out_tokens``, parts of ``prompt_tokens`` and ``completion_tokens``) at the entry's
``audio_input_per_mtok`` and ``audio_output_per_mtok``, plus the person's audio at its input
transcription model's rate; ``assemblyai-agent`` all in by the hour of session (``live``
section, ``per_hour``), for the turn's share of it (``billed_s``). Neither has a separate
speech synthesis part.

Engines that run on this machine (pocketsphinx, faster-whisper, espeak-ng) cost 0. A part with
no price makes the whole cost unknown (``None``), never a guess: :meth:`Prices.missing` names
what is missing and :meth:`Prices.explain` says how to add it. Where a vendor publishes no rate
for a model voicenb names, the shipped entry rests on the closest published evidence and its
``note`` starts with ``ASSUMPTION:`` and says what the figure rests on.

>>> prices = Prices.load()
>>> prices.turn_cost({"stt_backend": "assemblyai", "speech_model": "universal-2",
...                   "audio_s": 90.0, "llm_model": "gpt-4o-mini",
...                   "prompt_tokens": 1000, "completion_tokens": 250})   # doctest: +SKIP
0.00405

Overrides (``Settings(prices=...)``, or ``VOICENB_PRICES=/path/prices.json``) use the shape of
the shipped table and win over it, entry by entry::

    {
      "stt": {"assemblyai/assemblyai-stt-3-7": {"per_hour": 0.15},
              "openai/gpt-4o-mini-transcribe": {"per_minute": 0.003}},
      "llm": {"llama3.2": {"input_per_mtok": 0, "output_per_mtok": 0}},
      "tts": {"gpt-4o-mini-tts": {"per_mchar": 12.0}}
    }

``stt`` keys are ``"<stt_backend>/<speech_model>"`` (``"<stt_backend>/*"``: any model) with
exactly one of ``per_hour`` or ``per_minute``; ``llm`` keys are model names with
``input_per_mtok`` and ``output_per_mtok`` (USD per million tokens); ``tts`` keys are model
(or backend) names with ``per_mchar`` (USD per million characters); ``live`` keys are
live backends billed by the hour with ``per_hour``. Any entry may add
``as_of`` (YYYY-MM-DD), ``source`` (a URL) and ``note``. A ``.toml`` file works too (Python
3.11+). Prices are list prices: cached-input discounts, free tiers and contracts are not
modelled, and a service behind a different base URL (a local Ollama, a proxy) needs its own
entries.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pandas as pd

from ._config import Settings, resolve
from ._errors import ConfigError

__all__ = ["AS_OF", "Prices"]

#: The day the shipped table was last checked against its sources.
AS_OF = "2026-12-05"

# Where a vendor publishes no rate for a model voicenb names, the entry carries the closest
# published evidence, and its note starts "ASSUMPTION:" and says what the figure rests on.
_ASSUMED = "ASSUMPTION: "

# AssemblyAI's pricing page is rendered by script; its prices were read from a verbatim
# transcription of it (every price found in the fetched page text, page read 2026-10-07).
_AAI = "https://www.assemblyai.com/pricing"
_AAI_VIA = ("quoted verbatim from the page (read 2026-10-07) by https://raw.githubusercontent"
            ".com/api-evangelist/assemblyai/refs/heads/main/plans/assemblyai-plans-pricing.yml")
# AssemblyAI's model reference (last updated 2026-06-24): u3-pro is an alias of u3-rt-pro.
_AAI_MODELS = "https://www.assemblyai.com/llms/models.md"
# AssemblyAI's text-to-speech page: "pay $15 per 1M characters" (the page carries no date).
_AAI_TTS = "https://www.assemblyai.com/explore/text-to-speech"
# Vercel's AI Gateway resells AssemblyAI's models "at API rates" (listed 2026-11-27); its
# universal-2 ($0.15/h) and TTS-1 ($15/1M characters) rates are AssemblyAI's own.
_VERCEL = "https://vercel.com/ai-gateway/models/assemblyai/"
# OpenAI's model pages carry no date of their own: their as_of is the day they were read.
_OPENAI = "https://developers.openai.com/api/docs/models/"
_READ_NOV = "2026-11-23"  # the day the first set of OpenAI's model pages was read
# OpenAI's own pages for most chat models were not among the copies read; this file
# transcribes OpenAI's pricing page and last changed on 2026-07-30 (the GPT-5.6 price cut).
_LLM_PRICES = "https://github.com/simonw/llm-prices/blob/main/data/openai.json"
_LLM_VIA = "transcribes https://developers.openai.com/api/docs/pricing"
_LONG = "; prompts over 272K tokens cost more, which a spoken turn never reaches"
# OpenAI's retirements, from its deprecations page (each date is the model's shutdown day).
_DEPRECATIONS = "https://developers.openai.com/api/docs/deprecations"
_GONE_2026_10_23 = f"OpenAI shut it down on 2026-10-23 ({_DEPRECATIONS})"
_ENDS_2026_12_11 = f"OpenAI shuts it down on 2026-12-11 (notice of 2026-06-11, {_DEPRECATIONS})"
_ENDS_2027_01_14 = f"OpenAI shuts it down on 2027-01-14 (notice of 2026-10-14, {_DEPRECATIONS})"
_ENDS_2027_02_26 = ("OpenAI shuts it down on 2027-02-26 (notice of 2026-08-26, as reported on "
                    "2026-10-17 by https://www.developersdigest.tech/blog/whisper-1-gpt-4o-"
                    "transcribe-deprecation)")
_TTS_END = ("OpenAI retires it on 2027-01-06, as reported on 2026-11-03 by "
            "https://www.assemblyai.com/blog/migrate-openai-tts-to-assemblyai")
# OpenAI bills its transcription models in tokens; its pricing page gives a per-minute estimate.
_TRANSCRIBE = "https://tokenmix.ai/blog/gpt-4o-transcribe-speech-to-text-api-guide-2026"
_TRANSCRIBE_VIA = ("OpenAI bills audio and text tokens; this is its per-minute estimate, as "
                   "quoted (checked against OpenAI's April 2026 docs) by the source; ")
_LOCAL = "runs on this machine: no per-use fee"
_AAI_AGENT = "https://www.assemblyai.com/blog/introducing-our-voice-agent-api"
_REALTIME = "https://aidigest.shelfcritter.com/topics/gpt-realtime-2"
#: live backends that speak for themselves: no separate speech synthesis to price
_SPEECH_TO_SPEECH = ("openai-realtime", "assemblyai-agent")

_SHIPPED: dict[str, dict[str, dict[str, Any]]] = {
    "stt": {
        "assemblyai/universal-2": {
            "per_hour": 0.15, "as_of": "2026-10-07", "source": _AAI, "note": _AAI_VIA},
        "assemblyai/universal-3-5-pro": {
            "per_hour": 0.21, "as_of": "2026-10-07", "source": _AAI, "note": _AAI_VIA},
        "assemblyai/assemblyai-stt-3-7": {
            "per_hour": 0.21, "as_of": "2026-11-27", "source": _VERCEL + "stt-3.7",
            "note": _ASSUMED + "AssemblyAI's own pricing page, as last transcribed "
                    "(2026-10-07), predates the model; this is the rate Vercel's AI Gateway "
                    "bills for it at AssemblyAI's API rates (its other AssemblyAI rates match "
                    "AssemblyAI's own), and the rate of universal-3-5-pro, which it replaces"},
        "assemblyai-sync/universal-3-5-pro": {
            "per_hour": 0.30, "as_of": "2026-10-07", "source": _AAI,
            "note": "the Sync API's rate; " + _AAI_VIA},
        "assemblyai-streaming/u3-rt-pro": {
            "per_hour": 0.45, "as_of": "2026-10-07", "source": _AAI,
            "note": "the page's one realtime rate; streaming bills the whole session and "
                    "voicenb prices the turn's audio, so this is a lower bound; " + _AAI_VIA},
        "assemblyai-streaming/u3-pro": {
            "per_hour": 0.45, "as_of": "2026-10-07", "source": _AAI,
            "note": "u3-pro is an alias that routes to u3-rt-pro (" + _AAI_MODELS + ", "
                    "2026-06-24), billed as it; a lower bound, as for u3-rt-pro; " + _AAI_VIA},
        "assemblyai-streaming/universal-streaming-english": {
            "per_hour": 0.15, "as_of": "2025-06-02",
            "source": "https://www.assemblyai.com/blog/introducing-universal-streaming",
            "note": _ASSUMED + "the launch price of 2025-06-02 ($0.15 an hour of session); "
                    "the pricing page as transcribed on 2026-10-07 lists no rate for the "
                    "Universal-Streaming models; a lower bound (sessions are billed whole)"},
        "assemblyai-streaming/universal-streaming-multilingual": {
            "per_hour": 0.15, "as_of": "2025-06-02",
            "source": "https://www.assemblyai.com/blog/introducing-universal-streaming",
            "note": _ASSUMED + "Universal-Streaming's launch price of 2025-06-02 ($0.15 an "
                    "hour of session), taken to hold for its multilingual model; the pricing "
                    "page as transcribed on 2026-10-07 lists no rate for either; a lower bound "
                    "(sessions are billed whole)"},
        "openai/whisper-1": {
            "per_minute": 0.006, "as_of": _READ_NOV, "source": _OPENAI + "whisper-1",
            "note": _ENDS_2027_02_26},
        "openai/gpt-transcribe": {
            "per_minute": 0.0045, "as_of": _READ_NOV, "source": _OPENAI + "gpt-transcribe"},
        "openai/gpt-4o-mini-transcribe": {
            "per_minute": 0.003, "as_of": "2026-04-25", "source": _TRANSCRIBE,
            "note": _TRANSCRIBE_VIA + _ENDS_2027_02_26},
        "openai/gpt-4o-transcribe": {
            "per_minute": 0.006, "as_of": "2026-04-25", "source": _TRANSCRIBE,
            "note": _TRANSCRIBE_VIA + _ENDS_2027_02_26},
        "sphinx/*": {"per_hour": 0.0, "as_of": AS_OF, "note": _LOCAL,
                     "source": "https://github.com/cmusphinx/pocketsphinx"},
        "whisper/*": {"per_hour": 0.0, "as_of": AS_OF, "note": _LOCAL,
                      "source": "https://github.com/SYSTRAN/faster-whisper"},
    },
    "llm": {
        # the current models (the GPT-5.4, 5.5 and 5.6 families)
        "gpt-5.4-mini": {"input_per_mtok": 0.75, "output_per_mtok": 4.50, "as_of": "2026-07-30",
                         "source": _LLM_PRICES, "note": _LLM_VIA + _LONG},
        "gpt-5.4-nano": {"input_per_mtok": 0.20, "output_per_mtok": 1.25,
                         "as_of": AS_OF, "source": _OPENAI + "gpt-5.4-nano"},
        "gpt-5.4": {"input_per_mtok": 2.50, "output_per_mtok": 15.00, "as_of": "2026-07-30",
                    "source": _LLM_PRICES, "note": _LLM_VIA + _LONG},
        "gpt-5.5": {"input_per_mtok": 5.00, "output_per_mtok": 30.00, "as_of": "2026-07-30",
                    "source": _LLM_PRICES, "note": _LLM_VIA + _LONG},
        # GPT-5.6: Luna's page reads 0.20 / 1.20 since OpenAI's price cut of 2026-07-30
        "gpt-5.6-luna": {"input_per_mtok": 0.20, "output_per_mtok": 1.20, "as_of": AS_OF,
                         "source": _OPENAI + "gpt-5.6-luna",
                         "note": "1.00 / 6.00 before OpenAI's price cut of 2026-07-30" + _LONG},
        "gpt-5.6-terra": {"input_per_mtok": 2.00, "output_per_mtok": 12.00, "as_of": "2026-07-30",
                          "source": _LLM_PRICES,
                          "note": _LLM_VIA + "; 2.50 / 15.00 before 2026-07-30" + _LONG},
        "gpt-5.6-sol": {"input_per_mtok": 5.00, "output_per_mtok": 30.00, "as_of": "2026-07-30",
                        "source": _LLM_PRICES, "note": _LLM_VIA + _LONG},
        # speech to speech (OpenAI's Realtime API): text tokens at the first two rates, the
        # audio ones (audio_in_tokens, audio_out_tokens) at the audio rates
        "gpt-realtime-2": {
            "input_per_mtok": 4.00, "output_per_mtok": 24.00,
            "audio_input_per_mtok": 32.00, "audio_output_per_mtok": 64.00,
            "as_of": AS_OF, "source": _OPENAI + "gpt-realtime-2",
            "note": "the model page (undated, read 2026-12-05); cached input, text or audio, "
                    "$0.40, not modelled; the audio rates match those reported at its "
                    "release (" + _REALTIME + ", 2026-05-11)"},
        "gpt-realtime-2.1-mini": {
            "input_per_mtok": 0.60, "output_per_mtok": 2.40,
            "audio_input_per_mtok": 10.00, "audio_output_per_mtok": 20.00,
            "as_of": AS_OF, "source": _OPENAI + "gpt-realtime-2.1-mini",
            "note": "the model page (undated, read 2026-12-05); cached input not modelled"},
        # older models, priced for the history rows they left behind
        "gpt-4o-mini": {"input_per_mtok": 0.15, "output_per_mtok": 0.60, "as_of": "2026-07-30",
                        "source": _LLM_PRICES, "note": _LLM_VIA + "; " + _ENDS_2027_01_14},
        "gpt-4o": {"input_per_mtok": 2.50, "output_per_mtok": 10.00, "as_of": "2026-07-30",
                   "source": _LLM_PRICES, "note": _LLM_VIA + "; " + _ENDS_2027_01_14},
        "gpt-4.1-mini": {"input_per_mtok": 0.40, "output_per_mtok": 1.60, "as_of": "2026-07-30",
                         "source": _LLM_PRICES, "note": _LLM_VIA + "; " + _ENDS_2027_01_14},
        "gpt-4.1-nano": {"input_per_mtok": 0.10, "output_per_mtok": 0.40,
                         "as_of": _READ_NOV, "source": _OPENAI + "gpt-4.1-nano",
                         "note": _GONE_2026_10_23},
        "gpt-5-mini": {"input_per_mtok": 0.25, "output_per_mtok": 2.00,
                       "as_of": _READ_NOV, "source": _OPENAI + "gpt-5-mini",
                       "note": _ENDS_2026_12_11},
        "gpt-5-nano": {"input_per_mtok": 0.05, "output_per_mtok": 0.40,
                       "as_of": _READ_NOV, "source": _OPENAI + "gpt-5-nano",
                       "note": _ENDS_2026_12_11},
        "gpt-3.5-turbo": {"input_per_mtok": 0.50, "output_per_mtok": 1.50,
                          "as_of": AS_OF, "source": _OPENAI + "gpt-3.5-turbo",
                          "note": _GONE_2026_10_23},
    },
    "live": {
        "assemblyai-agent": {
            "per_hour": 4.50, "as_of": "2026-04-29", "source": _AAI_AGENT,
            "note": "'$4.50/hr covers everything: speech understanding, LLM reasoning, and "
                    "voice generation' (the launch post); billed on the session's time, "
                    "which voicenb shares out to the turns (billed_s)"},
    },
    "tts": {
        "assemblyai-tts-1": {
            "per_mchar": 15.0, "as_of": AS_OF, "source": _AAI_TTS,
            "note": "'pay $15 per 1M characters' (the page is undated; read 2026-12-05), the "
                    "rate Vercel's AI Gateway lists for it too (" + _VERCEL + "tts-1, "
                    "2026-11-27). AssemblyAI bills every character it synthesises "
                    "(X-TTS-Billed-Characters; a session's Termination: "
                    "total_input_char_length); voicenb prices the characters played "
                    "(spoken_chars), so an answer cut short costs more than this says"},
        "assemblyai": {
            "per_mchar": 15.0, "as_of": AS_OF, "source": _AAI_TTS,
            "note": "a row spoken by AssemblyAI that names no model: its one model's rate, "
                    "assemblyai-tts-1's"},
        "gpt-4o-mini-tts": {
            "per_mchar": 15.9, "as_of": AS_OF, "source": _OPENAI + "gpt-4o-mini-tts",
            "note": _ASSUMED + "OpenAI bills it in tokens ($0.60 per 1M text tokens in, $12 "
                    "per 1M audio tokens out), not characters; 15.9 is the per-character "
                    "equivalent of a measured bill (4,096 characters for $0.0652: https://"
                    "raw.githubusercontent.com/sanand0/blog/main/posts/2025/openai-tts-cost.md, "
                    "2025-11-02); " + _TTS_END},
        "tts-1": {"per_mchar": 15.0, "as_of": _READ_NOV, "source": _OPENAI + "tts-1",
                  "note": _TTS_END},
        "tts-1-hd": {"per_mchar": 30.0, "as_of": _READ_NOV, "source": _OPENAI + "tts-1-hd",
                     "note": _TTS_END},
        "espeak": {"per_mchar": 0.0, "as_of": AS_OF, "note": _LOCAL,
                   "source": "https://github.com/espeak-ng/espeak-ng"},
    },
}

# Dated snapshots voicenb names, each priced as the model whose page prices it. The snapshot
# of gpt-4o-mini-tts of 2025-03-20 was shut down on 2026-07-23 (OpenAI's deprecations page):
# priced for the rows spoken before then.
_SNAPSHOTS = {
    "llm": {"gpt-4o-mini-2024-07-18": "gpt-4o-mini", "gpt-5.4-mini-2026-03-17": "gpt-5.4-mini",
            "gpt-5.4-nano-2026-03-17": "gpt-5.4-nano", "gpt-5.5-2026-04-23": "gpt-5.5",
            "gpt-5-mini-2025-08-07": "gpt-5-mini", "gpt-5-nano-2025-08-07": "gpt-5-nano"},
    "tts": {"gpt-4o-mini-tts-2025-12-15": "gpt-4o-mini-tts",
            "gpt-4o-mini-tts-2025-03-20": "gpt-4o-mini-tts"},
}
for _kind, _snapshots in _SNAPSHOTS.items():
    for _snapshot, _model in _snapshots.items():
        _SHIPPED[_kind][_snapshot] = {
            **_SHIPPED[_kind][_model],
            "note": f"a dated snapshot of {_model}, priced as it; "
                    + _SHIPPED[_kind][_model].get("note", "")}
del _kind, _snapshots, _snapshot, _model

# kind -> (rate fields, how many of them an entry sets: "all" or "one")
_RATES = {"stt": (("per_hour", "per_minute"), "one"),
          "llm": (("input_per_mtok", "output_per_mtok"), "all"),
          "tts": (("per_mchar",), "all"),
          "live": (("per_hour",), "all")}
#: rates an entry may add: a speech-to-speech model's audio tokens
_OPTIONAL = {"llm": ("audio_input_per_mtok", "audio_output_per_mtok")}
_LABELS = ("as_of", "source", "note")
_UNITS = {"per_hour": ("audio", "hour"), "per_minute": ("audio", "minute"),
          "input_per_mtok": ("input", "1M tokens"), "output_per_mtok": ("output", "1M tokens"),
          "per_mchar": ("characters", "1M characters"),
          "audio_input_per_mtok": ("audio input", "1M tokens"),
          "audio_output_per_mtok": ("audio output", "1M tokens")}
#: stt_backend values of turns that were typed, not transcribed
_TYPED = ("text",)
_EXAMPLE = ('{"stt": {"assemblyai/assemblyai-stt-3-7": {"per_hour": 0.15}}, '
            '"llm": {"gpt-9": {"input_per_mtok": 1.0, "output_per_mtok": 4.0}}, '
            '"tts": {"tts-1": {"per_mchar": 15.0}}}')


@dataclass(frozen=True)
class _Entry:
    kind: str
    key: str
    rates: Mapping[str, float]
    as_of: str = ""
    source: str = ""
    note: str = ""


@dataclass(frozen=True)
class Prices:
    """The price table: the shipped prices, with any overrides applied. Never changed in place.

    >>> from voicenb.pricing import Prices
    >>> prices = Prices.load()
    >>> history["cost_usd"] = history.apply(prices.turn_cost, axis=1)   # doctest: +SKIP
    """

    entries: Mapping[tuple[str, str], _Entry] = field(default_factory=dict)

    @classmethod
    def load(cls, settings: Settings | None = None) -> Prices:
        """The shipped table merged with ``Settings(prices=...)`` or ``VOICENB_PRICES``.

        >>> Prices.load(vnb.Settings(prices={"llm": {"gpt-9": {             # doctest: +SKIP
        ...     "input_per_mtok": 1.0, "output_per_mtok": 4.0}}}))
        """
        entries = _parse(_SHIPPED, "the shipped price table", "")
        override = resolve(settings).prices
        if override is not None:
            data, origin, source = _read_override(override)
            entries.update(_parse(data, origin, source))
        return cls(MappingProxyType(entries))

    def turn_cost(self, row: Mapping[str, Any]) -> float | None:
        """The USD cost of one history row (a dict or a pandas row); ``None`` when any part
        that happened has no price. A part that did not happen costs 0.

        >>> prices.turn_cost({"stt_backend": "whisper", "audio_s": 4.0})   # doctest: +SKIP
        0.0
        """
        parts = self._parts(row)
        if any(cost is None for _, cost in parts):
            return None
        return float(sum(cost for _, cost in parts))

    def missing(self, row: Mapping[str, Any]) -> list[str]:
        """What in ``row`` has no price, e.g. ``["llm gpt-9"]``; empty when fully priced."""
        return [label for label, cost in self._parts(row) if cost is None]

    def explain(self, row: Mapping[str, Any]) -> str | None:
        """A sentence saying which prices ``row`` lacks and how to add them; None if none."""
        missing = self.missing(row)
        if not missing:
            return None
        return (f"No price for {', '.join(missing)}, so the turn's cost is unknown. Add it to "
                f"a JSON file named by VOICENB_PRICES (or pass Settings(prices=...)), shaped "
                f"like {_EXAMPLE}; see voicenb.pricing.")

    def table(self) -> pd.DataFrame:
        """Every price, one row per rate, with its date and source (for a README or notebook)."""
        columns = ["kind", "key", "item", "usd", "per", "as_of", "source", "note"]
        rows = [(e.kind, e.key, _UNITS[name][0], rate, _UNITS[name][1], e.as_of, e.source, e.note)
                for _, e in sorted(self.entries.items(), key=_table_order)
                for name, rate in e.rates.items()]
        return pd.DataFrame(rows, columns=columns)

    # -- pricing one row ---------------------------------------------------------------------

    def _parts(self, row: Mapping[str, Any]) -> list[tuple[str, float | None]]:
        live = _text(row, "live_backend")
        if live in _SPEECH_TO_SPEECH:
            parts = [self._session(row, live)] if live == "assemblyai-agent" else [
                self._speech(row, as_backend="openai"), self._answer(row)]
        else:
            parts = [self._speech(row), self._answer(row), self._synthesis(row)]
        return [part for part in parts if part is not None]

    def _session(self, row: Mapping[str, Any], live: str) -> tuple[str, float | None] | None:
        """A service billed by the hour of session, all in: the turn's share of it."""
        billed = _number(row, "billed_s")
        if billed is None:
            return None
        entry = self.entries.get(("live", live))
        return f"live {live}", None if entry is None else billed * entry.rates["per_hour"] / 3600

    def _speech(self, row: Mapping[str, Any], as_backend: str | None = None
                ) -> tuple[str, float | None] | None:
        """``as_backend``: the service whose rates price it (a realtime session's input
        transcription is billed as that transcription model's)."""
        backend, audio_s = as_backend or _text(row, "stt_backend"), _number(row, "audio_s")
        # Services bill a finished transcript only: a row whose transcript never came paid none.
        unfinished = "transcript" in row and _text(row, "transcript", keep_empty=True) is None
        if backend is None or backend in _TYPED or audio_s is None or unfinished:
            return None
        model = _text(row, "speech_model")
        entry = (model and self.entries.get(("stt", f"{backend}/{model}"))
                 or self.entries.get(("stt", f"{backend}/*")))
        label = f"stt {backend}/{model or '(unknown model)'}"
        if entry is None:
            return label, None
        per_second = (entry.rates["per_hour"] / 3600 if "per_hour" in entry.rates
                      else entry.rates["per_minute"] / 60)
        return label, audio_s * per_second

    def _answer(self, row: Mapping[str, Any]) -> tuple[str, float | None] | None:
        prompt, completion = _number(row, "prompt_tokens"), _number(row, "completion_tokens")
        if prompt is None and completion is None:
            return None  # the turn ended before the model answered
        model = _text(row, "llm_model")
        entry = self.entries.get(("llm", model)) if model else None
        label = f"llm {model or '(unknown model)'}"
        if entry is None:
            return label, None
        audio_in, audio_out = (_number(row, "audio_in_tokens") or 0.0,
                               _number(row, "audio_out_tokens") or 0.0)
        rates = entry.rates
        if (audio_in and "audio_input_per_mtok" not in rates) or (
                audio_out and "audio_output_per_mtok" not in rates):
            return f"{label} audio tokens", None
        return label, (((prompt or 0) - audio_in) * rates["input_per_mtok"]
                       + ((completion or 0) - audio_out) * rates["output_per_mtok"]
                       + audio_in * rates.get("audio_input_per_mtok", 0.0)
                       + audio_out * rates.get("audio_output_per_mtok", 0.0)) / 1e6

    def _synthesis(self, row: Mapping[str, Any]) -> tuple[str, float | None] | None:
        chars = _number(row, "spoken_chars")
        if not chars:
            return None
        names = [n for n in (_text(row, "tts_model"), _text(row, "tts_backend")) if n]
        entry = next((self.entries[("tts", n)] for n in names if ("tts", n) in self.entries),
                     None)
        label = f"tts {names[0] if names else '(unknown model)'}"
        return label, None if entry is None else chars * entry.rates["per_mchar"] / 1e6


def _table_order(item: tuple[tuple[str, str], _Entry]) -> tuple[int, str]:
    (kind, key), _ = item
    return list(_RATES).index(kind), key


# -- reading a row -----------------------------------------------------------------------------


def _absent(value: Any) -> bool:
    """None, NaN, pd.NA and NaT all mean "not recorded"."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # a list or array is a value, not a missing one
        return False


def _text(row: Mapping[str, Any], name: str, keep_empty: bool = False) -> str | None:
    value = row.get(name)
    if _absent(value):
        return None
    value = str(value)
    return value if value or keep_empty else None


def _number(row: Mapping[str, Any], name: str) -> float | None:
    value = row.get(name)
    return None if _absent(value) else float(value)


# -- reading a table ---------------------------------------------------------------------------


def _read_override(value: Any) -> tuple[Any, str, str]:
    """The override's data, its name in messages, and the source its entries default to."""
    if isinstance(value, Mapping):
        return value, "Settings(prices=...)", "Settings(prices=...)"
    path = Path(value).expanduser()
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise ConfigError(
            f"The price file {str(path)!r} (VOICENB_PRICES or Settings(prices=...)) {what}. "
            f"Point it at a JSON file of prices shaped like {_EXAMPLE}, or unset it to use "
            f"the prices that ship with voicenb.")
    toml = path.suffix.lower() == ".toml"
    try:
        if toml:
            import tomllib  # Python 3.11+

            data = tomllib.loads(path.read_text(encoding="utf-8"))
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
    except ImportError as exc:
        raise ConfigError(f"Reading the TOML price file {path} needs Python 3.11 or newer; "
                          f"write it as JSON instead.") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"The price file {path} is not valid {'TOML' if toml else 'JSON'} "
                          f"({exc}). Expected prices shaped like {_EXAMPLE}.") from exc
    return data, f"the price file {path}", str(path)


def _parse(data: Any, origin: str, source: str) -> dict[tuple[str, str], _Entry]:
    """Entries from a table shaped like ``_SHIPPED``; ConfigError naming the bad part."""
    if not isinstance(data, Mapping):
        raise _shape_error(origin, "the whole table", f"is a {type(data).__name__}, not an "
                           f"object of sections")
    unknown = sorted(set(data) - set(_RATES))
    if unknown:
        raise _shape_error(origin, f"section {unknown[0]!r}",
                           "is not one of stt, llm, tts, live")
    entries = {}
    for kind, section in data.items():
        if not isinstance(section, Mapping):
            raise _shape_error(origin, f"section {kind!r}", "is not an object of entries")
        for key, spec in section.items():
            entries[(kind, str(key))] = _entry(kind, str(key), spec, origin, source)
    return entries


def _entry(kind: str, key: str, spec: Any, origin: str, source: str) -> _Entry:
    where = f"{kind} entry {key!r}"
    names, how_many = _RATES[kind]
    optional = _OPTIONAL.get(kind, ())
    if not isinstance(spec, Mapping):
        raise _shape_error(origin, where, "is not an object of prices")
    if kind == "stt" and "/" not in key:
        raise _shape_error(origin, where, "is not '<stt_backend>/<speech_model>' (or "
                           "'<stt_backend>/*')")
    unknown = sorted(set(spec) - set(names) - set(optional) - set(_LABELS))
    if unknown:
        raise _shape_error(origin, where, f"has an unknown field {unknown[0]!r} (it takes "
                           f"{', '.join((*names, *optional))}, as_of, source, note)")
    given = [n for n in names if n in spec]
    if (how_many == "one" and len(given) != 1) or (how_many == "all" and len(given) != len(names)):
        need = " or ".join(names) if how_many == "one" else " and ".join(names)
        raise _shape_error(origin, where, f"needs {'exactly one of ' if how_many == 'one' else ''}"
                           f"{need}")
    rates = {}
    for name in given + [n for n in optional if n in spec]:
        rate = spec[name]
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (
                math.isfinite(rate) and rate >= 0):
            raise _shape_error(origin, where, f"has {name}={rate!r}; a price is a number of "
                               f"USD, 0 or more")
        rates[name] = float(rate)
    labels = {n: str(spec[n]) for n in _LABELS if spec.get(n) is not None}
    labels.setdefault("source", source)
    return _Entry(kind, key, MappingProxyType(rates), **labels)


def _shape_error(origin: str, where: str, problem: str) -> ConfigError:
    return ConfigError(f"In {origin}, {where} {problem}. Expected prices shaped like "
                       f"{_EXAMPLE}; see voicenb.pricing for every field.")
