"""What a turn cost in USD, from a dated price table that cites where each price comes from.

A turn's cost adds up to three parts, each priced only if it happened:

- speech to text: ``audio_s`` seconds at the price of the row's ``stt_backend`` and
  ``speech_model`` (typed turns, ``stt_backend="text"``, have none);
- the answer: ``prompt_tokens`` and ``completion_tokens`` at the ``llm_model``'s prices;
- speech synthesis: ``spoken_chars`` characters at the ``tts_model``'s (or ``tts_backend``'s)
  price, when a row has those columns.

Engines that run on this machine (pocketsphinx, faster-whisper, espeak-ng) cost 0. A part with
no price makes the whole cost unknown (``None``), never a guess: :meth:`Prices.missing` names
what is missing and :meth:`Prices.explain` says how to add it.

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
(or backend) names with ``per_mchar`` (USD per million characters). Any entry may add
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
AS_OF = "2026-11-23"

# AssemblyAI's pricing page is rendered by script; its prices were read from a verbatim
# transcription of it (every price found in the fetched page text, page read 2026-10-07).
_AAI = "https://www.assemblyai.com/pricing"
_AAI_VIA = ("quoted verbatim from the page (read 2026-10-07) by https://raw.githubusercontent"
            ".com/api-evangelist/assemblyai/refs/heads/main/plans/assemblyai-plans-pricing.yml")
# OpenAI's model pages carry no date of their own: their as_of is the day they were read.
_OPENAI = "https://developers.openai.com/api/docs/models/"
# OpenAI's own pages for gpt-4o-mini, gpt-4o and gpt-4.1-mini were not among the copies read;
# this file transcribes OpenAI's pricing page and last changed on 2026-07-30.
_LLM_PRICES = "https://github.com/simonw/llm-prices/blob/main/data/openai.json"
_LLM_VIA = "transcribes https://developers.openai.com/api/docs/pricing"
_TTS_END = ("OpenAI retires it on 2027-01-06, as reported on 2026-11-03 by "
            "https://www.assemblyai.com/blog/migrate-openai-tts-to-assemblyai")
_LOCAL = "runs on this machine: no per-use fee"

_SHIPPED: dict[str, dict[str, dict[str, Any]]] = {
    "stt": {
        "assemblyai/universal-2": {
            "per_hour": 0.15, "as_of": "2026-10-07", "source": _AAI, "note": _AAI_VIA},
        "assemblyai/universal-3-5-pro": {
            "per_hour": 0.21, "as_of": "2026-10-07", "source": _AAI, "note": _AAI_VIA},
        "assemblyai-sync/universal-3-5-pro": {
            "per_hour": 0.30, "as_of": "2026-10-07", "source": _AAI,
            "note": "the Sync API's rate; " + _AAI_VIA},
        "assemblyai-streaming/u3-rt-pro": {
            "per_hour": 0.45, "as_of": "2026-10-07", "source": _AAI,
            "note": "the page's one realtime rate; streaming bills the whole session and "
                    "voicenb prices the turn's audio, so this is a lower bound; " + _AAI_VIA},
        "openai/whisper-1": {
            "per_minute": 0.006, "as_of": AS_OF, "source": _OPENAI + "whisper-1"},
        "openai/gpt-transcribe": {
            "per_minute": 0.0045, "as_of": AS_OF, "source": _OPENAI + "gpt-transcribe"},
        "sphinx/*": {"per_hour": 0.0, "as_of": AS_OF, "note": _LOCAL,
                     "source": "https://github.com/cmusphinx/pocketsphinx"},
        "whisper/*": {"per_hour": 0.0, "as_of": AS_OF, "note": _LOCAL,
                      "source": "https://github.com/SYSTRAN/faster-whisper"},
    },
    "llm": {
        "gpt-4o-mini": {"input_per_mtok": 0.15, "output_per_mtok": 0.60, "as_of": "2026-07-30",
                        "source": _LLM_PRICES, "note": _LLM_VIA},
        "gpt-4o": {"input_per_mtok": 2.50, "output_per_mtok": 10.00, "as_of": "2026-07-30",
                   "source": _LLM_PRICES, "note": _LLM_VIA},
        "gpt-4.1-mini": {"input_per_mtok": 0.40, "output_per_mtok": 1.60, "as_of": "2026-07-30",
                         "source": _LLM_PRICES, "note": _LLM_VIA},
        "gpt-4.1-nano": {"input_per_mtok": 0.10, "output_per_mtok": 0.40,
                         "as_of": AS_OF, "source": _OPENAI + "gpt-4.1-nano"},
        "gpt-5-mini": {"input_per_mtok": 0.25, "output_per_mtok": 2.00,
                       "as_of": AS_OF, "source": _OPENAI + "gpt-5-mini"},
        "gpt-5-nano": {"input_per_mtok": 0.05, "output_per_mtok": 0.40,
                       "as_of": AS_OF, "source": _OPENAI + "gpt-5-nano"},
    },
    "tts": {
        "tts-1": {"per_mchar": 15.0, "as_of": AS_OF, "source": _OPENAI + "tts-1",
                  "note": _TTS_END},
        "tts-1-hd": {"per_mchar": 30.0, "as_of": AS_OF, "source": _OPENAI + "tts-1-hd",
                     "note": _TTS_END},
        "espeak": {"per_mchar": 0.0, "as_of": AS_OF, "note": _LOCAL,
                   "source": "https://github.com/espeak-ng/espeak-ng"},
    },
}

# kind -> (rate fields, how many of them an entry sets: "all" or "one")
_RATES = {"stt": (("per_hour", "per_minute"), "one"),
          "llm": (("input_per_mtok", "output_per_mtok"), "all"),
          "tts": (("per_mchar",), "all")}
_LABELS = ("as_of", "source", "note")
_UNITS = {"per_hour": ("audio", "hour"), "per_minute": ("audio", "minute"),
          "input_per_mtok": ("input", "1M tokens"), "output_per_mtok": ("output", "1M tokens"),
          "per_mchar": ("characters", "1M characters")}
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
        parts = [self._speech(row), self._answer(row), self._synthesis(row)]
        return [part for part in parts if part is not None]

    def _speech(self, row: Mapping[str, Any]) -> tuple[str, float | None] | None:
        backend, audio_s = _text(row, "stt_backend"), _number(row, "audio_s")
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
        return label, ((prompt or 0) * entry.rates["input_per_mtok"]
                       + (completion or 0) * entry.rates["output_per_mtok"]) / 1e6

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
        raise _shape_error(origin, f"section {unknown[0]!r}", "is not one of stt, llm, tts")
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
    if not isinstance(spec, Mapping):
        raise _shape_error(origin, where, "is not an object of prices")
    if kind == "stt" and "/" not in key:
        raise _shape_error(origin, where, "is not '<stt_backend>/<speech_model>' (or "
                           "'<stt_backend>/*')")
    unknown = sorted(set(spec) - set(names) - set(_LABELS))
    if unknown:
        raise _shape_error(origin, where, f"has an unknown field {unknown[0]!r} (it takes "
                           f"{', '.join(names)}, as_of, source, note)")
    given = [n for n in names if n in spec]
    if (how_many == "one" and len(given) != 1) or (how_many == "all" and len(given) != len(names)):
        need = " or ".join(names) if how_many == "one" else " and ".join(names)
        raise _shape_error(origin, where, f"needs {'exactly one of ' if how_many == 'one' else ''}"
                           f"{need}")
    rates = {}
    for name in given:
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
