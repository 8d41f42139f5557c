"""The durable history, loaded as a pandas DataFrame, and its analysis (summary, plots,
playback). One row per turn, in SQLite (WAL) or on a PostgreSQL server (``history=``): see
:mod:`voicenb._store`. A row is written when a turn starts and updated at every stage, so a
crash, a kill or a failed request never loses a turn. Rows whose process died mid-turn read
as ``interrupted``. Several processes (and machines, on a server) can write one store at once.
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from ._errors import ConfigError
from ._store import (  # noqa: F401 - the schema and the store, as voicenb.history named them
    ANSWERED,
    COLUMNS,
    FINAL,
    FLOATS,
    INTERRUPTED,
    INTS,
    NAMES,
    SCHEMA_VERSION,
    STAGES,
    STRINGS,
    HistoryStore,
    fetch_missing,
    owner_id,
    to_frame,
)


def load_history(home: str | os.PathLike[str] | None = None,
                 session: str | None = None, *, experiment: str | None = None,
                 history: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """All turns of every session in the history (or of one ``session``, or of one
    ``experiment``: see :class:`~voicenb.Experiment`) as a DataFrame.

    The history is ``<home>/history.sqlite`` unless ``history`` (or VOICENB_HISTORY_URL)
    names another: a SQLite file, or ``postgresql://user:password@host/db``.

    >>> df = vnb.load_history()                       # doctest: +SKIP
    >>> df.groupby("session").total_s.median()        # doctest: +SKIP
    """
    store = HistoryStore(home, history=history)
    try:
        return store.dataframe(session, experiment=experiment)
    finally:
        store.close()


# -- analysis ---------------------------------------------------------------------------------

#: per-stage latency columns, in the order a turn goes through them. The top-level stages
#: (TOP) add up to total_s; upload_s and transcribe_s are parts of stt_s, ttft_s of llm_s.
LATENCIES = ("setup_s", "wait_s", "upload_s", "transcribe_s", "stt_s", "ttft_s", "llm_s",
             "overhead_s", "total_s")
TOP = ("setup_s", "wait_s", "stt_s", "llm_s", "overhead_s")


#: what the summary and the plot of a history with no turns say instead of tables of NaN
NO_TURNS = ("No turns yet: record a question (session.recorder()) or ask one "
            "(session.ask_text(...)), then run this again.")


class Summary:
    """:func:`summary`'s result: ``latency`` (p50/p90/max per stage), ``by_status`` (counts),
    ``tokens`` (totals and per-turn means) and ``cost`` (USD: total, per turn, and how many
    turns have a price; see :mod:`voicenb.pricing`). With no turns it shows one line,
    :data:`NO_TURNS`, instead of tables of NaN."""

    def __init__(self, latency: pd.DataFrame, by_status: pd.Series, tokens: pd.DataFrame,
                 turns: int, cost: pd.Series, voice: pd.DataFrame | None = None) -> None:
        self.latency, self.by_status, self.tokens, self.turns = latency, by_status, tokens, turns
        #: p50/p90 from the end of speech to each milestone of a spoken answer (None when
        #: no answer was read aloud)
        self.cost, self.voice = cost, voice

    def __repr__(self) -> str:
        if not self.turns:
            return NO_TURNS
        voice = ("" if self.voice is None else
                 f"\n\nvoice to voice (s)\n{self.voice.round(3).to_string()}")
        return (f"{self.turns} turns\n\nlatency (s)\n{self.latency.round(3).to_string()}\n\n"
                f"by status\n{self.by_status.to_string()}\n\ntokens\n"
                f"{self.tokens.to_string()}\n\ncost (USD)\n{self.cost.to_string()}{voice}")

    def _repr_html_(self) -> str:  # pandas escapes cell text
        if not self.turns:
            return f"<p>{NO_TURNS}</p>"
        voice = ("" if self.voice is None else
                 f"<h4>voice to voice (s)</h4>{self.voice.round(3).to_html()}")
        return (f"<p>{self.turns} turns</p><h4>latency (s)</h4>{self.latency.round(3).to_html()}"
                f"<h4>by status</h4>{self.by_status.to_frame().to_html()}"
                f"<h4>tokens</h4>{self.tokens.to_html()}"
                f"<h4>cost (USD)</h4>{self.cost.to_frame('USD').to_html()}{voice}")


def summary(df: pd.DataFrame) -> Summary:
    """Per-stage latency p50/p90/max, turns by status, and token use of a history DataFrame.

    >>> vnb.summary(session.history).latency          # doctest: +SKIP
    """
    _require_columns(df)
    stages = df[list(LATENCIES)].astype("float64")
    latency = pd.DataFrame({
        "count": stages.count(),
        "p50": stages.quantile(0.5),
        "p90": stages.quantile(0.9),
        "max": stages.max(),
        "mean": stages.mean(),
    })
    by_status = df["status"].astype("object").value_counts().rename("turns")
    tokens = pd.DataFrame({
        "total": [int(df["prompt_tokens"].sum()), int(df["completion_tokens"].sum())],
        "mean per turn": [df["prompt_tokens"].astype("float64").mean(),
                          df["completion_tokens"].astype("float64").mean()],
    }, index=["prompt_tokens", "completion_tokens"])
    cost = df["cost_usd"].astype("float64")
    # object dtype: a float Series would print the count of priced turns as 3.0
    spent = pd.Series({"total": cost.sum(min_count=1), "mean per turn": cost.mean(),
                       "turns priced": int(cost.notna().sum())}, dtype=object, name="cost_usd")
    return Summary(latency, by_status, tokens, len(df), spent, _voice(df))


#: the voice-to-voice path of a spoken answer, from the end of the person's speech
VOICE = (("final transcript (stt_s)", "stt_s"), ("first answer token", "first_token_s"),
         ("first answer audio", "first_audio_s"), ("speech synthesis, first byte",
                                                   "tts_ttfb_s"))


def _voice(df: pd.DataFrame) -> pd.DataFrame | None:
    spoken = df[df["first_audio_s"].notna()]
    if spoken.empty:
        return None
    cols = spoken[[c for _, c in VOICE]].astype("float64")
    return pd.DataFrame({"count": cols.count().values, "p50": cols.quantile(0.5).values,
                         "p90": cols.quantile(0.9).values},
                        index=[f"end of speech -> {n}" if c != "tts_ttfb_s" else n
                               for n, c in VOICE])


def plot_latency(df: pd.DataFrame, ax: Any = None) -> Any:
    """A stacked bar per turn whose height is its ``total_s``: set-up, waiting, upload,
    transcription, time to first token, the rest of the answer, and voicenb's own work.

    Returns the matplotlib Axes. With no turns there is nothing to draw: it prints the line
    :data:`NO_TURNS` and returns None (given an ``ax``, it writes the line there instead).

    >>> ax = vnb.plot_latency(session.history)      # doctest: +SKIP
    """
    _require_columns(df)
    import matplotlib.pyplot as plt

    if df.empty:
        if ax is None:
            print(NO_TURNS)
            return None
        ax.set_axis_off()
        ax.text(0.5, 0.5, NO_TURNS, ha="center", va="center", wrap=True,
                transform=ax.transAxes)
        return ax
    if ax is None:
        _, ax = plt.subplots(figsize=(max(7.0, min(0.35 * len(df), 16.0) + 3), 3.5))
    f = df[list(LATENCIES)].astype("float64").fillna(0.0)
    upload = f["upload_s"].clip(upper=f["stt_s"])
    first = f["ttft_s"].clip(upper=f["llm_s"])
    parts = pd.DataFrame({
        "first-call set-up": f["setup_s"],
        "waiting for other turns": f["wait_s"],
        "upload": upload,
        "transcription": f["stt_s"] - upload,
        "time to first token": first,
        "rest of the answer": f["llm_s"] - first,
        "voicenb (audio, history)": f["overhead_s"],
    })
    labels = [f"{s} #{t}" if df["session"].nunique() > 1 else f"#{t}"
              for s, t in zip(df["session"], df["turn"])]
    bottom = pd.Series(0.0, index=parts.index)
    for name in parts:
        if parts[name].any():
            ax.bar(range(len(parts)), parts[name], bottom=bottom, label=name)
        bottom = bottom + parts[name]
    if df["first_audio_s"].notna().any():  # answers read aloud: the voice-to-voice path
        for column, marker, name in (("first_token_s", "_", "first answer token"),
                                     ("first_audio_s", "v", "first answer audio")):
            ax.scatter(range(len(parts)), df[column].astype("float64"), marker=marker, s=80,
                       color="black", zorder=3, label=name)
    ax.set_xticks(range(len(parts)), labels, rotation=90 if len(parts) > 12 else 0)
    ax.set_ylabel("seconds")
    ax.set_title("latency per turn (bar height = total_s)")
    handles, names = ax.get_legend_handles_labels()
    stages = [i for i, n in enumerate(names) if not n.startswith("first answer")]
    order = stages + [i for i in range(len(names)) if i not in stages]  # markers last
    ax.legend([handles[i] for i in order], [names[i] for i in order], loc="upper left",
              bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    ax.figure.tight_layout()
    return ax


def play(turn: Any) -> Any:
    """An inline player for a turn's audio: a :class:`~voicenb.Turn`, a history row (a
    DataFrame row or dict with ``audio_path``), or a path.

    >>> vnb.play(session.history.iloc[-1])          # doctest: +SKIP
    """
    from IPython.display import Audio as Player

    path = turn if isinstance(turn, (str, os.PathLike)) else (
        turn.get("audio_path") if hasattr(turn, "get") else getattr(turn, "audio_path", None))
    if path is None or (isinstance(path, float) and pd.isna(path)) or pd.isna(path):
        raise ConfigError("This turn has no audio to play (it was typed, or its file never "
                          "arrived).")
    if fetch_missing(path) is None:  # a shared history has it if this machine does not
        raise ConfigError(f"The audio file {str(path)!r} is not there (moved, or recorded on "
                          "another machine). Pass a row of vnb.load_history(), whose "
                          "audio_path values are absolute; a row of a shared history "
                          "(history=postgresql://...) is fetched from the server.")
    return Player(filename=str(path))


def _require_columns(df: pd.DataFrame) -> None:
    missing = [c for c in NAMES if c not in df.columns]
    if missing:
        raise ConfigError(f"This is not a voicenb history DataFrame (missing {missing[:3]}); "
                          "pass session.history or vnb.load_history().")
