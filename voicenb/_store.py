"""Where the history lives: one schema and one set of queries (SQLAlchemy 2 Core) for a
SQLite file (the default, ``<home>/history.sqlite``) and a PostgreSQL server a team shares.

A row is written when a turn starts and updated at every stage, so a crash, a kill or a
failed request never loses a turn. A turn in a stage whose process is gone reads as
``interrupted``: a process of this host is checked by its pid; one on another host holds a
lease (``leases``) that it renews every :data:`LEASE_RENEW_S` while it has turns in progress,
and that expires :data:`LEASE_S` after the last renewal (by the database's clock).
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import sqlalchemy as sa

from ._config import Settings, resolve
from ._errors import ConfigError, MissingDependencyError, ServiceError, redact, remember_secret

SCHEMA_VERSION = 8

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
    # schema 7: which backend and voice read the answer, and (by the service's word timings)
    # how many of its words were heard before the person spoke over it
    ("tts_backend", "TEXT"),     # "assemblyai", "openai", "espeak"
    ("tts_voice", "TEXT"),       # "aai-jane", "alloy", "en"...
    ("words_heard", "INTEGER"),  # None: no word timings (a backend without them)
    # schema 8: live conversations, on the cascade or a speech-to-speech service
    ("live_backend", "TEXT"),    # "cascade", "openai-realtime", "assemblyai-agent"
    ("audio_in_tokens", "INTEGER"),   # of prompt_tokens, the audio ones (speech-to-speech)
    ("audio_out_tokens", "INTEGER"),  # of completion_tokens, the audio ones
    ("billed_s", "REAL"),        # session seconds billed for the turn (billed by the hour)
    ("reconnects", "INTEGER"),   # times the live connection was made again during the turn
)
NAMES = tuple(name for name, _ in COLUMNS)
FLOATS = tuple(n for n, t in COLUMNS if t.startswith("REAL") and n != "started_at")
INTS = ("polls", "prompt_tokens", "completion_tokens", "spoken_chars", "words_heard",
        "audio_in_tokens", "audio_out_tokens", "reconnects")
STRINGS = tuple(n for n, t in COLUMNS if t.startswith("TEXT"))
#: the schema version that added each column (the rest are schema 1's)
ADDED_IN = {**dict.fromkeys(("setup_s", "wait_s", "overhead_s"), 2), "speech_model": 3,
            **dict.fromkeys(NAMES[NAMES.index("experiment"):NAMES.index("first_token_s")], 4),
            **dict.fromkeys(NAMES[NAMES.index("first_token_s"):NAMES.index("tts_backend")], 5),
            **dict.fromkeys(NAMES[NAMES.index("tts_backend"):NAMES.index("live_backend")], 7),
            **dict.fromkeys(NAMES[NAMES.index("live_backend"):], 8)}

#: A turn still in one of these stages is in progress (or was, if its process died).
STAGES = ("started", "uploading", "transcribing", "answering")
#: "barged_in": answered, and the person spoke over the answer while it was read aloud
#: (spoken_chars says how much was heard); "interrupted" is a process that stopped
FINAL = ("ok", "barged_in", "error", "interrupted")
#: answered turns, whose question and (heard part of the) answer the conversation remembers
ANSWERED = ("ok", "barged_in")
INTERRUPTED = ("The process running this turn stopped before it finished; Session.resume() "
               "finishes it.")

#: a process on another host that has not renewed its lease for this long is taken as gone
LEASE_S = 60.0
#: how often a process with turns in progress renews its lease
LEASE_RENEW_S = 15.0
#: turns of another host untouched for this long are taken as interrupted when their
#: process never held a lease (a store written by voicenb before schema 6)
STALE_S = 6 * 3600

_TYPES = {"TEXT": sa.Text, "REAL": sa.Double, "INTEGER": sa.Integer}
metadata = sa.MetaData()
turns = sa.Table(
    "turns", metadata,
    *(sa.Column(name, _TYPES[kind.split()[0]](), nullable="NOT NULL" not in kind,
                primary_key=name in ("session", "turn"), autoincrement=False)
      for name, kind in COLUMNS),
    sa.Index("turns_status", "status"), sa.Index("turns_experiment", "experiment"))
#: who runs each turn in progress, and where its audio was uploaded (to resume without it)
turn_state = sa.Table(
    "turn_state", metadata,
    sa.Column("session", sa.Text, primary_key=True),
    sa.Column("turn", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("upload_url", sa.Text), sa.Column("owner", sa.Text),
    sa.Column("updated_at", sa.Double))
#: an experiment's variants as they were first run (a changed variant is refused)
variants = sa.Table(
    "variants", metadata,
    sa.Column("experiment", sa.Text, primary_key=True),
    sa.Column("variant", sa.Text, primary_key=True),
    sa.Column("spec", sa.Text, nullable=False))
#: schema 6: every turn's audio, once per content, so that any machine can play it
audio = sa.Table(
    "audio", metadata,
    sa.Column("sha256", sa.Text, primary_key=True),
    sa.Column("format", sa.Text, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False))
#: schema 6: a process's lease, renewed while it has turns in progress
leases = sa.Table(
    "leases", metadata,
    sa.Column("owner", sa.Text, primary_key=True),
    sa.Column("renewed_at", sa.Double, nullable=False))
#: schema 6: the schema version (SQLite's is read from PRAGMA user_version, as before)
schema = sa.Table("voicenb_schema", metadata, sa.Column("version", sa.Integer, nullable=False))
_T = turns  # for methods whose ``turns`` argument hides the table


def owner_id() -> str:
    """This process, so that others can tell whether it is still alive (worked out once per
    process: every write records it)."""
    return _owner(os.getpid())


@functools.lru_cache(maxsize=4)
def _owner(pid: int) -> str:  # keyed by pid: a forked child is another owner
    return f"{socket.gethostname()}:{pid}:{_start_time(pid)}"


def _start_time(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return "?"


def _alive_here(owner: str) -> bool:
    """Whether ``owner``, a process of this host, still runs."""
    _, _, rest = owner.partition(":")
    pid_text, _, started = rest.partition(":")
    try:
        pid = int(pid_text)
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return started in ("?", _start_time(pid))


def stopped(owner: str | None, updated_at: float | None, renewed_at: float | None,
            now: float) -> bool:
    """Whether a turn in progress belongs to a process that is gone: by its pid on this
    host, by its lease (or, without one, by ``STALE_S``) on another."""
    if not owner:
        return True
    if owner.partition(":")[0] == socket.gethostname():
        return not _alive_here(owner)
    if renewed_at is not None:
        return now - renewed_at > LEASE_S
    return updated_at is not None and now - updated_at > STALE_S


# -- where the store is -----------------------------------------------------------------------

def store_url(history: str | os.PathLike[str] | None, home: Path) -> sa.engine.URL:
    """The SQLAlchemy URL of a history location: None (``<home>/history.sqlite``), a SQLite
    file path, ``sqlite:///path``, or ``postgresql://user:password@host:port/db``."""
    if history is None:
        return sa.engine.URL.create("sqlite", database=str(home / "history.sqlite"))
    text = os.fspath(history)
    if "://" not in text:
        return sa.engine.URL.create("sqlite", database=str(Path(text).expanduser()))
    try:
        url = sa.engine.make_url(text)
    except sa.exc.ArgumentError:
        raise ConfigError("The history URL is not a URL voicenb can read; write "
                          "postgresql://user:password@host:5432/database, or a SQLite file "
                          "path.") from None
    remember_secret(url.password if isinstance(url.password, str) else None)
    remember_secret(urlsplit(text).password)  # as written, %-quoted
    backend = url.get_backend_name()
    if backend == "sqlite":
        return url
    if backend in ("postgresql", "postgres"):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise MissingDependencyError("psycopg", "postgres",
                                         "A history on PostgreSQL") from None
        return url.set(drivername="postgresql+psycopg")
    raise ConfigError(f"voicenb keeps its history in SQLite or PostgreSQL, not {backend!r}: "
                      "pass a file path or postgresql://user:password@host:5432/database.")


def shown(url: sa.engine.URL) -> str:
    """The URL with its password masked (and without the driver), for messages and reprs."""
    return url.set(drivername=url.get_backend_name()).render_as_string(hide_password=True)


def _while_locked(step: Any, timeout: float = 60.0) -> Any:
    """Run ``step``, again while SQLite says the file is locked (another process is
    opening it), for up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            return step()
        except sa.exc.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.5)


def _engine(url: sa.engine.URL) -> sa.engine.Engine:
    if url.get_backend_name() != "sqlite":
        # READ COMMITTED; writers only ever lock the rows they touch
        return sa.create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=60,
                                pool_timeout=120, connect_args={"connect_timeout": 10})
    # Connections to a file are cheap: as many as threads read at once (writers queue on a
    # lock in the store, and on the file's lock across processes).
    engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False},
                              pool_size=4, max_overflow=-1)

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi: Any, _record: Any) -> None:
        dbapi.isolation_level = None  # transactions are begun below, not by the driver
        dbapi.execute("PRAGMA busy_timeout = 60000")
        # Switching to WAL takes the file's exclusive lock, and SQLite answers "database is
        # locked" at once, without waiting, when another process opens it at that moment.
        _while_locked(lambda: dbapi.execute("PRAGMA journal_mode = WAL"))
        dbapi.execute("PRAGMA synchronous = NORMAL")

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        # IMMEDIATE: concurrent writers queue for the lock instead of failing mid-transaction
        write = conn.get_execution_options().get("voicenb_write")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _unreachable(url: sa.engine.URL, exc: BaseException) -> ServiceError:
    reason = redact(str(getattr(exc, "orig", None) or exc).strip().splitlines()[0])
    return ServiceError(f"Cannot open the history at {shown(url)}: {reason}. Check that the "
                        "server runs, the user and password, and the URL (history=, "
                        "VOICENB_HISTORY_URL).", service="history")


class HistoryStore:
    """The history of every session: append and update turns, read them back.

    ``HistoryStore("voicenb-data")`` keeps it in ``voicenb-data/history.sqlite``;
    ``history="postgresql://user:password@host/db"`` on a PostgreSQL server, with the audio
    in the database too and ``<home>/audio`` as this machine's copy.

    >>> store = HistoryStore("voicenb-data")                # doctest: +SKIP
    >>> store.dataframe(session="demo")                     # doctest: +SKIP
    """

    STALE_S = STALE_S

    def __init__(self, home: str | os.PathLike[str] | None = None, *,
                 history: str | os.PathLike[str] | None = None,
                 settings: Settings | None = None) -> None:
        resolved = resolve(settings)
        self.home = Path(home if home is not None else resolved.home).expanduser()
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            (self.home / "audio").mkdir(exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"Cannot create the voicenb data folder {str(self.home)!r}: "
                              f"{exc.strerror or exc}. Pass home= or set VOICENB_HOME.") from exc
        self.audio_dir = self.home / "audio"
        self.url = store_url(history if history is not None else resolved.history_url,
                             self.home)
        self.dialect = self.url.get_backend_name()
        #: True for a server every machine reaches: the audio is kept in it too
        self.shared = self.dialect != "sqlite"
        #: the SQLite file (None on a server)
        self.path = None if self.shared else Path(self.url.database or "")
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.engine = _engine(self.url)
        # In this process, SQLite writers queue here (the file lock is for other processes).
        self._wlock: Any = contextlib.nullcontext() if self.shared else threading.RLock()
        self._mine: set[tuple[str, int]] = set()  # turns this store has in progress
        self._mine_lock = threading.Lock()
        self._renewed = 0.0
        self._beating: threading.Thread | None = None
        self._closed = threading.Event()
        try:
            _while_locked(self._migrate)
        except sa.exc.OperationalError as exc:
            self.engine.dispose()
            raise _unreachable(self.url, exc) from None
        if self.shared:
            _SHARED[str(self.audio_dir.resolve())] = self.url

    def __repr__(self) -> str:
        where = str(self.home) if not self.shared else shown(self.url)
        return f"HistoryStore({where!r})"

    @property
    def key(self) -> str:
        """Names this store's location (without a password), e.g. to tell stores apart."""
        return shown(self.url)

    def close(self) -> None:
        self._closed.set()
        self.engine.dispose()

    # -- schema -------------------------------------------------------------------------------

    def _version(self, conn: sa.Connection) -> int:
        if self.dialect == "sqlite":  # where every voicenb has kept it, and checks it
            return conn.exec_driver_sql("PRAGMA user_version").scalar() or 0
        if sa.inspect(conn).has_table("voicenb_schema"):
            return conn.execute(sa.select(sa.func.max(schema.c.version))).scalar() or 0
        return 0

    def _migrate(self) -> None:
        """Bring the store to SCHEMA_VERSION in place, one version after another; every row
        is kept. Opening a store that is up to date writes nothing."""
        with self.engine.connect() as conn:
            if self._version(conn) == SCHEMA_VERSION:
                return
        with self._write() as conn:
            if self.dialect == "postgresql":  # one migrating process at a time
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(7_343_001)))
            version = self._version(conn)
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"The history at {self.key} was written by a newer voicenb (schema "
                    f"{version}); upgrade voicenb (pip install -U voicenb) to read it.")
            if version == 0:
                metadata.create_all(conn, checkfirst=True)
            for step in range(max(version, 1) + 1, SCHEMA_VERSION + 1):
                self._step(conn, step)
            conn.execute(sa.delete(schema))
            conn.execute(sa.insert(schema).values(version=SCHEMA_VERSION))
            if self.dialect == "sqlite":  # and voicenb before 6 refuses a store newer than it
                conn.exec_driver_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _step(self, conn: sa.Connection, version: int) -> None:
        """Schema ``version``'s migration: the columns it appended to ``turns``, and (6) the
        tables for the audio, the leases and the version."""
        have = {c["name"] for c in sa.inspect(conn).get_columns("turns")}
        for column in turns.columns:
            if ADDED_IN.get(column.name) == version and column.name not in have:
                kind = column.type.compile(dialect=conn.dialect)
                conn.exec_driver_sql(f"ALTER TABLE turns ADD COLUMN {column.name} {kind}")
        if version == 4:
            conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS turns_experiment "
                                 "ON turns (experiment)")
        if version == 6:
            for table in (variants, audio, leases, schema):
                table.create(conn, checkfirst=True)

    @contextlib.contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """A short write transaction (on SQLite BEGIN IMMEDIATE, so writers queue)."""
        with self._wlock, self.engine.connect() as conn:
            conn.execution_options(voicenb_write=True)
            with conn.begin():
                yield conn

    def _insert(self, table: sa.Table) -> Any:
        """An INSERT that can say what to do ON CONFLICT, in this store's dialect."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)

    def _now(self, conn: sa.Connection) -> float:
        """Seconds since the epoch by the database's clock (machines' clocks differ)."""
        if self.dialect == "postgresql":
            return float(conn.execute(sa.select(
                sa.extract("epoch", sa.func.clock_timestamp()))).scalar_one())
        return time.time()

    # -- writing ------------------------------------------------------------------------------

    def start_turn(self, session: str, turn: int | None = None, **fields: Any) -> int:
        """Insert a new turn, numbered ``turn`` or next for ``session``; return the number."""
        fields = _clean(fields)
        fields.setdefault("status", "started")
        fields.setdefault("started_at", time.time())
        with self._write() as conn:
            if turn is None:
                if self.dialect == "postgresql":  # numbering one session's turns: in turn
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(
                        sa.func.hashtext(session))))
                turn = conn.execute(sa.select(sa.func.coalesce(sa.func.max(turns.c.turn), 0)
                                              + 1).where(turns.c.session == session)
                                    ).scalar_one()
            conn.execute(_INSERT, {"session": session, "turn": turn, **fields})
            self._own(conn, session, turn, fields["status"])
        return turn

    def claim(self, session: str, turn: int, seen: str | None, **fields: Any) -> bool:
        """Insert turn ``turn`` of ``session``, or update it if its status is still ``seen``
        (None: it did not exist), in one statement; False when another process got there
        first. This process becomes the turn's owner."""
        fields = _clean(fields)
        key = (turns.c.session == session) & (turns.c.turn == turn)
        with self._write() as conn:
            # RETURNING says whether the row was written (rowcount is -1 on some drivers)
            if seen is None:
                done = conn.execute(self._insert(turns).values(
                    session=session, turn=turn, started_at=time.time(), **fields)
                    .on_conflict_do_nothing(index_elements=["session", "turn"])
                    .returning(turns.c.turn))
            else:
                done = conn.execute(sa.update(turns).where(key & (turns.c.status == seen))
                                    .values(**fields).returning(turns.c.turn))
            if done.first() is None:
                return False
            self._own(conn, session, turn, fields.get("status"))
        return True

    def variant_spec(self, experiment: str, variant: str, spec: str) -> str:
        """The spec ``variant`` of ``experiment`` was first run with (recording ``spec`` if
        it is new)."""
        with self._write() as conn:
            conn.execute(self._insert(variants).values(
                experiment=experiment, variant=variant, spec=spec).on_conflict_do_nothing())
            return conn.execute(sa.select(variants.c.spec).where(
                (variants.c.experiment == experiment) & (variants.c.variant == variant))
            ).scalar_one()

    def update(self, session: str, turn: int, *, upload_url: str | None = None,
               **fields: Any) -> None:
        """Set columns of one turn (and, with ``upload_url``, where its audio was uploaded);
        this process becomes the turn's owner."""
        fields = _clean(fields)
        with self._write() as conn:
            if fields:
                conn.execute(_UPDATE, {"key_session": session, "key_turn": turn, **fields})
            self._own(conn, session, turn, fields.get("status"), upload_url)

    def _own(self, conn: sa.Connection, session: str, turn: int, status: str | None,
             upload_url: str | None = None) -> None:
        """Record this process as the turn's owner (and renew its lease when due)."""
        now = time.time()
        state: dict[str, Any] = dict(session=session, turn=turn, owner=owner_id(),
                                     updated_at=now)
        if upload_url is not None:
            state["upload_url"] = upload_url
        conn.execute(self._own_statement(upload_url is not None), state)
        if status is None:
            return
        with self._mine_lock:
            if status in STAGES:
                self._mine.add((session, turn))
            else:
                self._mine.discard((session, turn))
            due = bool(self._mine) and now - self._renewed > LEASE_RENEW_S / 3
        if due:
            self._renew(conn)
            self._heartbeat()

    def _own_statement(self, with_url: bool) -> Any:
        """The upsert of a turn's owner (made once: building statements costs more CPU than
        SQLite takes to run them)."""
        key = (self.dialect, with_url)
        if key not in _OWN:
            insert = self._insert(turn_state)
            names = ["owner", "updated_at", *(["upload_url"] if with_url else [])]
            _OWN[key] = insert.on_conflict_do_update(
                index_elements=["session", "turn"],
                set_={name: insert.excluded[name] for name in names})
        return _OWN[key]

    def _renew(self, conn: sa.Connection) -> None:
        values = dict(owner=owner_id(), renewed_at=self._now(conn))
        conn.execute(self._insert(leases).values(**values).on_conflict_do_update(
            index_elements=["owner"], set_={"renewed_at": values["renewed_at"]}))
        self._renewed = time.time()

    def _heartbeat(self) -> None:
        """Keep this process's lease while it has turns in progress (a thread that ends
        when it has none, or the store is closed)."""
        with self._mine_lock:
            if self._beating is not None and self._beating.is_alive():
                return
            self._beating = threading.Thread(target=self._beat, name="voicenb-lease",
                                             daemon=True)
            self._beating.start()

    def _beat(self) -> None:
        while not self._closed.wait(LEASE_RENEW_S):
            with self._mine_lock:
                if not self._mine:
                    return
            try:
                with self._write() as conn:
                    self._renew(conn)
            except sa.exc.SQLAlchemyError:
                pass  # the next beat tries again; the lease has LEASE_S to spare

    def mark_interrupted(self) -> int:
        """Turns in a stage whose process is gone become ``interrupted``; return how many."""
        query = _joined(turns.c.session, turns.c.turn).where(turns.c.status.in_(STAGES))
        with self.engine.connect() as conn:
            now = self._now(conn)
            dead = [(r.session, r.turn) for r in conn.execute(query)
                    if stopped(r.owner, r.updated_at, r.renewed_at, now)]
        if dead:
            with self._write() as conn:
                conn.execute(
                    sa.update(turns).where(
                        (turns.c.session == sa.bindparam("s")) &
                        (turns.c.turn == sa.bindparam("t")) &
                        sa.or_(*(turns.c.status == stage for stage in STAGES)))
                    .values(status="interrupted",
                            error=sa.func.coalesce(turns.c.error, INTERRUPTED)),
                    [{"s": s, "t": t} for s, t in dead])
        return len(dead)

    # -- audio --------------------------------------------------------------------------------

    def save_audio(self, clip: Any) -> Path:
        """Keep a turn's audio (an :class:`~voicenb.Audio`) in ``<home>/audio`` and, on a
        shared store, in the database once per content; the local file's path."""
        saved = clip.save(self.audio_dir)
        if self.shared:
            data = saved.read_bytes()
            with self._write() as conn:
                conn.execute(self._insert(audio).values(
                    sha256=clip.sha256, format=clip.format, size=len(data), data=data)
                    .on_conflict_do_nothing())
        return saved

    def audio_file(self, audio_path: str | None) -> Path | None:
        """The file a row's ``audio_path`` names (kept relative to home), if it exists, or
        fetched from a shared store into ``<home>/audio``."""
        if not audio_path:
            return None
        path = self.home / audio_path
        if path.is_file():
            return path
        return self.fetch_audio(path) if self.shared else None

    def fetch_audio(self, path: Path) -> Path | None:
        """Write the audio named ``<sha256>.<format>`` from the database to ``path``."""
        sha = Path(path).name.split(".")[0]
        with self.engine.connect() as conn:
            data = conn.execute(sa.select(audio.c.data).where(audio.c.sha256 == sha)).scalar()
        if data is None:
            return None
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.part")
        part.write_bytes(data)
        os.replace(part, path)
        return path

    # -- reading ------------------------------------------------------------------------------

    def get(self, session: str, turn: int) -> dict[str, Any] | None:
        """One turn as a dict of the schema's columns plus ``upload_url``."""
        rows = self.rows(session=session, turns=[turn])
        return rows[0] if rows else None

    def rows(self, session: str | None = None, *, statuses: Sequence[str] | None = None,
             turns: Iterable[int] | None = None, experiment: str | None = None
             ) -> list[dict[str, Any]]:
        query = _joined(*_table_columns(), turn_state.c.upload_url).where(
            *_where(session, statuses, turns, experiment)).order_by(_T.c.session, _T.c.turn)
        with self.engine.connect() as conn:
            out = [dict(row._mapping) for row in conn.execute(query)]
        for row in out:
            del row["renewed_at"], row["updated_at"]
        return out

    def sessions(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(turns.c.session).distinct()
                                     .order_by(turns.c.session)).scalars())

    def dataframe(self, session: str | None = None, *,
                  experiment: str | None = None) -> pd.DataFrame:
        """The history as a DataFrame: the schema's columns in order, one row per turn,
        ``started_at`` tz-aware UTC, seconds as floats, token counts as nullable ints.

        Reading never writes: a turn whose process is gone shows as ``interrupted`` here,
        and becomes so in the store when ``Session.resume()`` picks it up.
        """
        query = _joined(*_table_columns()).where(
            *_where(session, None, None, experiment)).order_by(turns.c.session, turns.c.turn)
        with self.engine.connect() as conn:
            now = self._now(conn)
            result = conn.execute(query)
            # the driver's plain tuples: pandas takes them much faster than Row objects
            raw = pd.DataFrame.from_records(result.cursor.fetchall(),
                                            columns=list(result.keys()), coerce_float=True)
        going = raw["status"].isin(STAGES)
        if going.any():  # only turns in a stage need the owner check
            gone = [stopped(r.owner, r.updated_at, r.renewed_at, now)
                    for r in raw.loc[going, ["owner", "updated_at", "renewed_at"]]
                    .itertuples()]
            mask = going.copy()
            mask[going] = gone
            raw.loc[mask, "status"] = "interrupted"
            raw.loc[mask, "error"] = raw.loc[mask, "error"].fillna(INTERRUPTED)
        df = to_frame(raw[list(NAMES)], copy=False)  # the selection is a new frame already
        saved = df["audio_sha256"].notna() & df["audio_path"].notna()
        home = str(self.home.resolve()) + os.sep
        df.loc[saved, "audio_path"] = home + df.loc[saved, "audio_path"]
        return df


#: this process's shared stores by their local audio folder, so that a history row's audio
#: (an absolute path into that folder) can be fetched by vnb.play on any machine
_SHARED: dict[str, sa.engine.URL] = {}
_READERS: dict[str, HistoryStore] = {}
_READERS_LOCK = threading.Lock()


def fetch_missing(path: str | os.PathLike[str]) -> Path | None:
    """The audio file at ``path``, fetched from the shared store it came from if it is not
    on this machine (None if no open store has it)."""
    path = Path(path)
    if path.is_file():
        return path
    folder = str(path.parent.resolve())
    url = _SHARED.get(folder)
    if url is None:
        return None
    with _READERS_LOCK:  # one store per folder, kept: a table of players fetches many clips
        store = _READERS.get(folder)
        if store is None:
            store = _READERS[folder] = HistoryStore(
                path.parent.parent, history=url.render_as_string(hide_password=False))
    return store.fetch_audio(path)


_OWN: dict[tuple[str, bool], Any] = {}
_INSERT = sa.insert(turns)  # executed with the values by column name


#: UPDATE of one turn, made once: executed with ``key_session``, ``key_turn`` and the new
#: values by column name (the SET clause is those names; SQLAlchemy caches each set's SQL)
_UPDATE = sa.update(turns).where((turns.c.session == sa.bindparam("key_session")) &
                                 (turns.c.turn == sa.bindparam("key_turn")))


def _table_columns() -> list[sa.Column]:
    return [turns.c[name] for name in NAMES]


def _joined(*columns: Any) -> sa.Select:
    """SELECT ``columns`` and each turn's owner, its last update and its owner's lease."""
    return (sa.select(*columns, turn_state.c.owner, turn_state.c.updated_at,
                      leases.c.renewed_at)
            .select_from(turns.outerjoin(turn_state, (turn_state.c.session == turns.c.session)
                                         & (turn_state.c.turn == turns.c.turn))
                         .outerjoin(leases, leases.c.owner == turn_state.c.owner)))


def to_frame(rows: list[tuple] | pd.DataFrame, *, copy: bool = True) -> pd.DataFrame:
    """Rows of the schema's columns -> the typed DataFrame (``copy=False``: typing the
    columns of a DataFrame of them in place)."""
    if isinstance(rows, pd.DataFrame):
        df = rows.copy() if copy else rows
    else:
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
    return df.reset_index(drop=True)


def _where(session: str | None, statuses: Sequence[str] | None,
           numbers: Iterable[int] | None, experiment: str | None = None) -> list[Any]:
    clauses: list[Any] = []
    if session is not None:
        clauses.append(turns.c.session == session)
    if experiment is not None:
        clauses.append(turns.c.experiment == experiment)
    if statuses:
        clauses.append(turns.c.status.in_(list(statuses)))
    if numbers is not None:
        clauses.append(turns.c.turn.in_(list(numbers)))
    return clauses


def _clean(fields: dict[str, Any]) -> dict[str, Any]:
    unknown = set(fields) - set(NAMES)
    if unknown:
        raise ValueError(f"not history columns: {sorted(unknown)}")
    return {k: (redact(v) if isinstance(v, str) else v) for k, v in fields.items()}
