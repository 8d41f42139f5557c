"""The durable history: one row per turn in SQLite (WAL), loaded as a pandas DataFrame.

A row is written when a turn starts and updated at every stage, so a crash, a kill or a
failed request never loses a turn. Rows whose process died mid-turn read as
``interrupted``. Several processes can write one store at once.
"""

from __future__ import annotations

import os
import random
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ._config import Settings, resolve
from ._errors import ConfigError, redact

SCHEMA_VERSION = 5

#: The history schema of DESIGN.md: table and DataFrame columns, in this order.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("session", "TEXT NOT NULL"),
    ("turn", "INTEGER NOT NULL"),
    ("started_at", "REAL"),
    ("status", "TEXT NOT NULL"),
    ("error", "TEXT"),
    ("audio_path", "TEXT"),
    ("audio_s", "REAL"),
    ("audio_sha256", "TEXT"),
    ("stt_backend", "TEXT"),
    ("transcript_id", "TEXT"),
    ("transcript", "TEXT"),
    ("confidence", "REAL"),
    ("upload_s", "REAL"),
    ("transcribe_s", "REAL"),
    ("polls", "INTEGER"),
    ("stt_s", "REAL"),
    ("llm_model", "TEXT"),
    ("prompt", "TEXT"),
    ("answer", "TEXT"),
    ("ttft_s", "REAL"),
    ("llm_s", "REAL"),
    ("prompt_tokens", "INTEGER"),
    ("completion_tokens", "INTEGER"),
    ("total_s", "REAL"),
    # schema 2: the rest of total_s, so that a turn's top-level stages add up to it
    ("setup_s", "REAL"),
    ("wait_s", "REAL"),
    ("overhead_s", "REAL"),
    # schema 3: the speech model that actually ran (the service's answer, not the request)
    ("speech_model", "TEXT"),
    # schema 4: experiments (vnb.Experiment) and what a turn cost
    ("experiment", "TEXT"),
    ("variant", "TEXT"),
    ("reference", "TEXT"),  # what was really said, when known: wer compares the transcript
    ("wer", "REAL"),
    ("cost_usd", "REAL"),
    ("simulated", "TEXT"),  # the services a voicenb simulator stood in for: "stt", "llm"...
    # schema 5: answers spoken aloud, and the voice-to-voice path (from the end of speech:
    # a streamed turn's start; a recorded turn's start)
    ("first_token_s", "REAL"),   # -> the answer's first token
    ("first_audio_s", "REAL"),   # -> the answer's first audio playing in the browser
    ("tts_model", "TEXT"),       # what spoke it: "espeak", "gpt-4o-mini-tts"...
    ("tts_ttfb_s", "REAL"),      # the first sentence: synthesis request -> first audio byte
    ("spoken_chars", "INTEGER"),  # characters of the answer actually played
)
NAMES = tuple(name for name, _ in COLUMNS)
FLOATS = tuple(n for n, t in COLUMNS if t.startswith("REAL") and n != "started_at")
INTS = ("polls", "prompt_tokens", "completion_tokens", "spoken_chars")
STRINGS = tuple(n for n, t in COLUMNS if t.startswith("TEXT"))

#: A turn still in one of these stages is in progress (or was, if its process died).
STAGES = ("started", "uploading", "transcribing", "answering")
#: "barged_in": answered, and the person spoke over the answer while it was read aloud
#: (spoken_chars says how much was heard); "interrupted" is a process that stopped
FINAL = ("ok", "barged_in", "error", "interrupted")
#: answered turns, whose question and (heard part of the) answer the conversation remembers
ANSWERED = ("ok", "barged_in")

_STATE = ("upload_url", "owner", "updated_at")
_STATUS, _ERROR = NAMES.index("status"), NAMES.index("error")
INTERRUPTED = ("The process running this turn stopped before it finished; Session.resume() "
               "finishes it.")


def _while_locked(step: Any, timeout: float = 60.0) -> Any:
    """Run ``step``, again while SQLite says the file is locked (another process is
    opening it), for up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            return step()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.5)


def owner_id() -> str:
    """This process, so that others can tell whether it is still alive."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def _start_time(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return "?"


def _alive(owner: str | None) -> bool:
    """False when ``owner`` names a process of this host that no longer runs."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid_text, _, started = rest.partition(":")
    if host != socket.gethostname():
        return True  # can't tell from here; see the age check
    try:
        pid = int(pid_text)
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return started in ("?", _start_time(pid))


class HistoryStore:
    """``<home>/history.sqlite``: append and update turns, read them back.

    >>> store = HistoryStore("voicenb-data")                # doctest: +SKIP
    >>> store.dataframe(session="demo")                     # doctest: +SKIP
    """

    #: turns of another host untouched for this long are taken as interrupted
    STALE_S = 6 * 3600

    def __init__(self, home: str | os.PathLike[str] | None = None, *,
                 settings: Settings | None = None) -> None:
        self.home = Path(home if home is not None else resolve(settings).home).expanduser()
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            (self.home / "audio").mkdir(exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"Cannot create the voicenb data folder {str(self.home)!r}: "
                              f"{exc.strerror or exc}. Pass home= or set VOICENB_HOME.") from exc
        self.path = self.home / "history.sqlite"
        self.audio_dir = self.home / "audio"
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 60000")
        # Switching to WAL takes the file's exclusive lock, and SQLite answers "database is
        # locked" at once, without waiting, when another process opens it at that moment.
        _while_locked(lambda: self._db.execute("PRAGMA journal_mode = WAL"))
        self._db.execute("PRAGMA synchronous = NORMAL")
        _while_locked(self._migrate)

    def __repr__(self) -> str:
        return f"HistoryStore({str(self.home)!r})"

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- schema -------------------------------------------------------------------------------

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return  # up to date: opening a store to read it writes nothing
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"{self.path} was written by a newer voicenb (schema {version}); upgrade "
                    "voicenb (pip install -U voicenb) to read it.")
            if version < 1:
                cols = ", ".join(f"{name} {kind}" for name, kind in COLUMNS)
                db.execute(f"CREATE TABLE IF NOT EXISTS turns ({cols}, "
                           "PRIMARY KEY (session, turn))")
                db.execute("CREATE TABLE IF NOT EXISTS turn_state (session TEXT NOT NULL, "
                           "turn INTEGER NOT NULL, upload_url TEXT, owner TEXT, updated_at REAL, "
                           "PRIMARY KEY (session, turn))")
                db.execute("CREATE INDEX IF NOT EXISTS turns_status ON turns (status)")
            # Later schemas append columns: add what an older store lacks, keeping every row.
            have = {row[1] for row in db.execute("PRAGMA table_info(turns)")}
            for name, kind in COLUMNS:
                if name not in have:
                    db.execute(f"ALTER TABLE turns ADD COLUMN {name} {kind}")
            db.execute("CREATE INDEX IF NOT EXISTS turns_experiment ON turns (experiment)")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    class _Txn:
        def __init__(self, store: HistoryStore) -> None:
            self.store = store

        def __enter__(self) -> sqlite3.Connection:
            self.store._lock.acquire()
            try:
                self.store._db.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.store._lock.release()
                raise
            return self.store._db

        def __exit__(self, exc_type: Any, *_: Any) -> None:
            try:
                self.store._db.execute("ROLLBACK" if exc_type else "COMMIT")
            finally:
                self.store._lock.release()

    def _write(self) -> HistoryStore._Txn:
        """A short write transaction; BEGIN IMMEDIATE so concurrent writers queue, not fail."""
        return HistoryStore._Txn(self)

    # -- writing ------------------------------------------------------------------------------

    def start_turn(self, session: str, turn: int | None = None, **fields: Any) -> int:
        """Insert a new turn, numbered ``turn`` or next for ``session``; return the number."""
        fields = _clean(fields)
        fields.setdefault("status", "started")
        fields.setdefault("started_at", time.time())
        with self._write() as db:
            if turn is None:
                turn = db.execute("SELECT COALESCE(MAX(turn), 0) + 1 FROM turns WHERE "
                                  "session = ?", (session,)).fetchone()[0]
            names = ["session", "turn", *fields]
            db.execute(f"INSERT INTO turns ({', '.join(names)}) VALUES "
                       f"({', '.join('?' * len(names))})", (session, turn, *fields.values()))
            db.execute("INSERT OR REPLACE INTO turn_state (session, turn, owner, updated_at) "
                       "VALUES (?, ?, ?, ?)", (session, turn, owner_id(), time.time()))
        return turn

    def claim(self, session: str, turn: int, seen: str | None, **fields: Any) -> bool:
        """Insert turn ``turn`` of ``session``, or update it if its status is still ``seen``
        (None: it did not exist), in one transaction; False when another process got there
        first. This process becomes the turn's owner."""
        fields = _clean(fields)
        with self._write() as db:
            now = db.execute("SELECT status FROM turns WHERE session = ? AND turn = ?",
                             (session, turn)).fetchone()
            if (now[0] if now else None) != seen:
                return False
            if now is None:
                names = ["session", "turn", "started_at", *fields]
                db.execute(f"INSERT INTO turns ({', '.join(names)}) VALUES "
                           f"({', '.join('?' * len(names))})",
                           (session, turn, time.time(), *fields.values()))
            else:
                db.execute(f"UPDATE turns SET {', '.join(f'{n} = ?' for n in fields)} "
                           "WHERE session = ? AND turn = ?", (*fields.values(), session, turn))
            db.execute("INSERT OR REPLACE INTO turn_state (session, turn, owner, updated_at, "
                       "upload_url) VALUES (?, ?, ?, ?, (SELECT upload_url FROM turn_state "
                       "WHERE session = ? AND turn = ?))",
                       (session, turn, owner_id(), time.time(), session, turn))
        return True

    def variant_spec(self, experiment: str, variant: str, spec: str) -> str:
        """The spec ``variant`` of ``experiment`` was first run with (recording ``spec`` if
        it is new)."""
        with self._write() as db:
            db.execute("CREATE TABLE IF NOT EXISTS variants (experiment TEXT NOT NULL, "
                       "variant TEXT NOT NULL, spec TEXT NOT NULL, "
                       "PRIMARY KEY (experiment, variant))")
            db.execute("INSERT OR IGNORE INTO variants VALUES (?, ?, ?)",
                       (experiment, variant, spec))
            return db.execute("SELECT spec FROM variants WHERE experiment = ? AND variant = ?",
                              (experiment, variant)).fetchone()[0]

    def update(self, session: str, turn: int, *, upload_url: str | None = None,
               **fields: Any) -> None:
        """Set columns of one turn (and, with ``upload_url``, where its audio was uploaded);
        this process becomes the turn's owner."""
        fields = _clean(fields)
        with self._write() as db:
            if fields:
                sets = ", ".join(f"{name} = ?" for name in fields)
                db.execute(f"UPDATE turns SET {sets} WHERE session = ? AND turn = ?",
                           (*fields.values(), session, turn))
            db.execute("INSERT INTO turn_state (session, turn, owner, updated_at) "
                       "VALUES (?, ?, ?, ?) ON CONFLICT (session, turn) DO UPDATE SET "
                       "owner = excluded.owner, updated_at = excluded.updated_at",
                       (session, turn, owner_id(), time.time()))
            if upload_url is not None:
                db.execute("UPDATE turn_state SET upload_url = ? WHERE session = ? AND turn = ?",
                           (upload_url, session, turn))

    def _stopped(self, owner: str | None, updated_at: float | None, now: float) -> bool:
        """Whether a turn in progress belongs to a process that is gone."""
        return not _alive(owner) or (updated_at is not None and now - updated_at > self.STALE_S)

    def mark_interrupted(self) -> int:
        """Turns in a stage whose process is gone become ``interrupted``; return how many."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT t.session, t.turn, s.owner, s.updated_at FROM turns t LEFT JOIN "
                f"turn_state s USING (session, turn) WHERE t.status IN "
                f"({', '.join('?' * len(STAGES))})", STAGES).fetchall()
        now = time.time()
        dead = [(session, turn) for session, turn, owner, updated in rows
                if self._stopped(owner, updated, now)]
        if dead:
            with self._write() as db:
                db.executemany(
                    "UPDATE turns SET status = 'interrupted', error = COALESCE(error, ?) "
                    "WHERE session = ? AND turn = ? AND "
                    f"status IN ({', '.join('?' * len(STAGES))})",
                    [(INTERRUPTED, s, t, *STAGES) for s, t in dead])
        return len(dead)

    # -- reading ------------------------------------------------------------------------------

    def get(self, session: str, turn: int) -> dict[str, Any] | None:
        """One turn as a dict of the schema's columns plus ``upload_url``."""
        rows = self.rows(session=session, turns=[turn])
        return rows[0] if rows else None

    def rows(self, session: str | None = None, *, statuses: Sequence[str] | None = None,
             turns: Iterable[int] | None = None, experiment: str | None = None
             ) -> list[dict[str, Any]]:
        where, params = _where(session, statuses, turns, experiment)
        with self._lock:
            cursor = self._db.execute(
                f"SELECT {', '.join('t.' + n for n in NAMES)}, s.upload_url, s.owner FROM turns t "
                f"LEFT JOIN turn_state s USING (session, turn) {where} ORDER BY t.session, t.turn",
                params)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]

    def audio_file(self, audio_path: str | None) -> Path | None:
        """The file a row's ``audio_path`` names (kept relative to home), if it exists."""
        if not audio_path:
            return None
        path = self.home / audio_path
        return path if path.is_file() else None

    def sessions(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute(
                "SELECT DISTINCT session FROM turns ORDER BY session")]

    def dataframe(self, session: str | None = None, *,
                  experiment: str | None = None) -> pd.DataFrame:
        """The history as a DataFrame: the schema's columns in order, one row per turn,
        ``started_at`` tz-aware UTC, seconds as floats, token counts as nullable ints.

        Reading never writes: a turn whose process is gone shows as ``interrupted`` here,
        and becomes so in the store when ``Session.resume()`` picks it up.
        """
        where, params = _where(session, None, None, experiment)
        with self._lock:
            cursor = self._db.execute(
                f"SELECT {', '.join('t.' + n for n in NAMES)}, s.owner, s.updated_at FROM turns "
                f"t LEFT JOIN turn_state s USING (session, turn) {where} "
                "ORDER BY t.session, t.turn", params)
            rows = cursor.fetchall()
        df = to_frame([self._as_read(row) for row in rows])
        saved = df["audio_sha256"].notna() & df["audio_path"].notna()
        home = str(self.home.resolve()) + os.sep
        df.loc[saved, "audio_path"] = home + df.loc[saved, "audio_path"]
        return df

    def _as_read(self, row: tuple, now: float | None = None) -> tuple:
        """A row as a reader should see it (without its owner columns)."""
        if row[_STATUS] not in STAGES:
            return row[:-2]
        *values, owner, updated_at = row
        if self._stopped(owner, updated_at, now or time.time()):
            values[_STATUS], values[_ERROR] = "interrupted", values[_ERROR] or INTERRUPTED
        return tuple(values)


def to_frame(rows: list[tuple]) -> pd.DataFrame:
    """Rows of the schema's columns -> the typed DataFrame."""
    df = pd.DataFrame.from_records(rows, columns=list(NAMES), coerce_float=True)
    df["started_at"] = pd.to_datetime(df["started_at"].astype("float64"), unit="s",
                                      utc=True).dt.round("ms")
    df["turn"] = df["turn"].astype("Int64")
    for name in INTS:
        df[name] = df[name].astype("Int64")
    for name in FLOATS:
        df[name] = df[name].astype("float64")
    for name in STRINGS:
        df[name] = df[name].astype("string")
    return df


def _where(session: str | None, statuses: Sequence[str] | None,
           turns: Iterable[int] | None, experiment: str | None = None
           ) -> tuple[str, list[Any]]:
    clauses, params = [], []
    for name, value in (("session", session), ("experiment", experiment)):
        if value is not None:
            clauses.append(f"t.{name} = ?")
            params.append(value)
    if statuses:
        clauses.append(f"t.status IN ({', '.join('?' * len(statuses))})")
        params += list(statuses)
    if turns is not None:
        turns = list(turns)
        clauses.append(f"t.turn IN ({', '.join('?' * len(turns))})")
        params += turns
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def _clean(fields: dict[str, Any]) -> dict[str, Any]:
    unknown = set(fields) - set(NAMES)
    if unknown:
        raise ValueError(f"not history columns: {sorted(unknown)}")
    return {k: (redact(v) if isinstance(v, str) else v) for k, v in fields.items()}


def load_history(home: str | os.PathLike[str] | None = None,
                 session: str | None = None, *, experiment: str | None = None
                 ) -> pd.DataFrame:
    """All turns of every session under ``home`` (or of one ``session``, or of one
    ``experiment``: see :class:`~voicenb.Experiment`) as a DataFrame.

    >>> df = vnb.load_history()                       # doctest: +SKIP
    >>> df.groupby("session").total_s.median()        # doctest: +SKIP
    """
    store = HistoryStore(home)
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


class Summary:
    """:func:`summary`'s result: ``latency`` (p50/p90/max per stage), ``by_status`` (counts),
    ``tokens`` (totals and per-turn means) and ``cost`` (USD: total, per turn, and how many
    turns have a price; see :mod:`voicenb.pricing`)."""

    def __init__(self, latency: pd.DataFrame, by_status: pd.Series, tokens: pd.DataFrame,
                 turns: int, cost: pd.Series, voice: pd.DataFrame | None = None) -> None:
        self.latency, self.by_status, self.tokens, self.turns = latency, by_status, tokens, turns
        #: p50/p90 from the end of speech to each milestone of a spoken answer (None when
        #: no answer was read aloud)
        self.cost, self.voice = cost, voice

    def __repr__(self) -> str:
        voice = ("" if self.voice is None else
                 f"\n\nvoice to voice (s)\n{self.voice.round(3).to_string()}")
        return (f"{self.turns} turns\n\nlatency (s)\n{self.latency.round(3).to_string()}\n\n"
                f"by status\n{self.by_status.to_string()}\n\ntokens\n"
                f"{self.tokens.to_string()}\n\ncost (USD)\n{self.cost.to_string()}{voice}")

    def _repr_html_(self) -> str:  # pandas escapes cell text
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
        "total": [df["prompt_tokens"].sum(), df["completion_tokens"].sum()],
        "mean per turn": [df["prompt_tokens"].astype("float64").mean(),
                          df["completion_tokens"].astype("float64").mean()],
    }, index=["prompt_tokens", "completion_tokens"])
    cost = df["cost_usd"].astype("float64")
    spent = pd.Series({"total": cost.sum(min_count=1), "mean per turn": cost.mean(),
                       "turns priced": float(cost.notna().sum())}, name="cost_usd")
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

    Returns the matplotlib Axes.
    """
    _require_columns(df)
    import matplotlib.pyplot as plt

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
    if len(df):
        handles, names = ax.get_legend_handles_labels()
        stages = [i for i, n in enumerate(names) if not n.startswith("first answer")]
        order = stages + [i for i in range(len(names)) if i not in stages]  # markers last
        ax.legend([handles[i] for i in order], [names[i] for i in order], loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    else:
        ax.text(0.5, 0.5, "no turns yet", ha="center", va="center", transform=ax.transAxes)
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
    if not Path(path).is_file():
        raise ConfigError(f"The audio file {str(path)!r} is not there (moved, or recorded on "
                          "another machine). Pass a row of vnb.load_history(), whose "
                          "audio_path values are absolute.")
    return Player(filename=str(path))


def _require_columns(df: pd.DataFrame) -> None:
    missing = [c for c in NAMES if c not in df.columns]
    if missing:
        raise ConfigError(f"This is not a voicenb history DataFrame (missing {missing[:3]}); "
                          "pass session.history or vnb.load_history().")
