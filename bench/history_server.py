"""A history a team shares (issue 17): turns recorded per second into PostgreSQL vs SQLite by
1 and 8 writer processes, and a 100,000-turn history loaded into a DataFrame from each.

One **turn** here is what ``HistoryStore`` sees of a recorded question, three write
transactions: ``start_turn(session, status="transcribing", audio_path=, audio_s=,
audio_sha256=, stt_backend=)``, ``update(session, turn, status="answering", transcript=,
transcript_id=, confidence=, upload_s=, transcribe_s=, polls=, stt_s=, speech_model=,
llm_model=, prompt=)`` and ``update(session, turn, status="ok", answer=, ttft_s=, llm_s=,
tokens, total_s=, setup_s=, wait_s=, overhead_s=, ...every other column)``. The values are
``bench.history_load``'s rows. (A real ``Session.ask_audio`` turn through the async API
writes 5-6 times and reads once: it also records the transcript id when submitted and the
cost; so a real session records roughly half as many turns a second.)

Writers are processes (fork), each with its own ``HistoryStore`` on the same store; each
opens its store and records 10 warm-up turns (in a session of its own), then all start
together on a barrier. Wall is from the barrier to the last writer's last turn; turns/s =
turns / wall. "8 sessions": each writer its own session; "1 session": all 8 number their
turns in one session (the store serialises numbering: on PostgreSQL an advisory lock per
session, held until the start_turn transaction commits; on SQLite the file's write lock).

Where the time goes, per turn: each writer's time inside the SQLAlchemy engine (statements,
commits, the pool's pre-ping, waiting for a lock: ``BEGIN IMMEDIATE`` on SQLite,
``pg_advisory_xact_lock`` on PostgreSQL), the writer processes' CPU, the server processes'
CPU (postmaster and its children, from /proc), and how busy the machine's cores were.

PostgreSQL runs twice: as the tests start it (``tests._postgres.PostgresServer``: fsync=off,
synchronous_commit=off) and with the server's defaults for durability (fsync=on,
synchronous_commit=on), as a team's server would run. SQLite is the store's WAL file with
synchronous=NORMAL (no fsync per commit; a power loss can lose the last commits, not the file).

Loading: 100,000 turns (and their ``turn_state`` rows, which every recorded turn has) are
bulk-inserted in one transaction; then ``HistoryStore.dataframe()`` vs ``pandas.read_sql``
of the same SELECT (the store's own ``_joined`` query, untyped) on the same engine, best
of 3 each.

``python -m bench.history_server`` (about 5 minutes on 2 cores); ``--quick``: 1 and 2
writers x 50 turns on SQLite and PostgreSQL (fsync off), 5,000 turns loaded (~7 s).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import multiprocessing as mp
import os
import platform
import queue
import sqlite3
import statistics
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

import voicenb as vnb
from voicenb import _store
from voicenb.history import NAMES

from . import history_load
from ._common import table

#: PostgreSQL, 8 writers, distinct sessions: at least this many times one writer's turns/s
GOAL_SCALING = 4.0
#: HistoryStore.dataframe() / pandas.read_sql of the same SELECT, at most
GOAL_LOAD = 1.5
#: turns each writer records (in a session of its own) before the barrier: psycopg prepares
#: a statement on its 5th execution
WARM = 10

# The columns each of a turn's three writes sets (status aside); the last write sets the rest.
START = ("audio_path", "audio_s", "audio_sha256", "stt_backend")
HEARD = ("transcript_id", "transcript", "confidence", "upload_s", "transcribe_s", "polls",
         "stt_s", "speech_model", "llm_model", "prompt")
ANSWER = tuple(n for n in NAMES if n not in ("session", "turn", "status", "started_at",
                                              *START, *HEARD))
ONE_TURN = (f"One turn = 3 write transactions: start_turn(session, status=\"transcribing\", "
            f"{', '.join(START)}); update(session, turn, status=\"answering\", "
            f"{', '.join(HEARD)}); update(session, turn, status=\"ok\", {', '.join(ANSWER)}).")


# -- rows ---------------------------------------------------------------------------------------

class _Capture:
    """Stands in for a HistoryStore (and its connection) in ``history_load.fill``, keeping
    the rows it would insert instead of inserting them."""

    def __init__(self) -> None:
        self.rows: list[Any] = []
        self.engine = self

    @contextlib.contextmanager
    def _write(self) -> Any:
        yield self

    begin = connect = _write

    def executemany(self, _sql: Any, rows: Any) -> None:
        self.rows.extend(rows)

    def execute(self, _sql: Any, rows: Any = None) -> None:
        self.rows.extend(rows if isinstance(rows, list) else [])

    exec_driver_sql = execute


def history_rows(n: int) -> list[dict[str, Any]]:
    """``n`` rows of every history column, as ``bench.history_load`` makes them (session
    "bench", turns 1..n, one in 20 an error, one in 3 with an experiment and speech)."""
    capture = _Capture()
    history_load.fill(capture, n)
    rows = [r if isinstance(r, dict) else dict(zip(NAMES, r, strict=True))
            for r in capture.rows]
    if len(rows) != n:
        raise RuntimeError(f"bench.history_load.fill made {len(rows)} rows, not {n}")
    return rows


def turn_writes() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The fields of a turn's start_turn and its two updates (from a full row)."""
    row = history_rows(3)[2]  # turn 3: an experiment's, spoken aloud, so no column is empty
    return ({"status": "transcribing", **{k: row[k] for k in START}},
            {"status": "answering", **{k: row[k] for k in HEARD}},
            {**{k: row[k] for k in ANSWER}, "status": "ok", "error": None})


# -- a server with the defaults for durability --------------------------------------------------

def _server_class() -> type:
    from tests._postgres import PostgresServer

    class Server(PostgresServer):
        """The tests' server, or (``durable``) the same with fsync and synchronous_commit on:
        PostgresServer passes them off on postgres' command line, so they are swapped there."""

        def __init__(self, durable: bool = False) -> None:
            super().__init__()
            self.durable = durable

        def _run(self, tool: str, *args: str, timeout: float = 120) -> Any:
            if self.durable and tool == "pg_ctl" and "start" in args:
                args = tuple(a.replace("-c fsync=off", "-c fsync=on")
                             .replace("-c synchronous_commit=off", "-c synchronous_commit=on")
                             for a in args)
            return super()._run(tool, *args, timeout=timeout)

        def settings(self) -> dict[str, str]:
            with self._lock:
                conn = self._admin_conn()
                return {name: conn.execute(f"SHOW {name}").fetchone()[0]
                        for name in ("server_version", "fsync", "synchronous_commit",
                                     "wal_sync_method", "full_page_writes")}

    return Server


def _postgres_missing() -> str | None:
    """Why PostgreSQL cannot run here (None if it can); raises under CI=true, as the tests."""
    from tests._postgres import INSTALL_HINT, find_bin

    if find_bin() is not None:
        return None
    reason = f"PostgreSQL not found: {INSTALL_HINT}"
    if os.environ.get("CI", "").lower() in ("true", "1"):
        raise RuntimeError(reason)
    return reason


# -- measuring ----------------------------------------------------------------------------------

class _Probe:
    """Time spent inside one engine: statements (lock waits apart), commits, pre-pings."""

    KINDS = ("lock", "statements", "commit", "ping")

    def __init__(self, engine: sa.Engine) -> None:
        self.s = dict.fromkeys(self.KINDS, 0.0)
        self.n = dict.fromkeys(self.KINDS, 0)
        dialect = engine.dialect
        for kind, name in (("commit", "do_commit"), ("ping", "do_ping")):
            setattr(dialect, name, self._timed(kind, getattr(dialect, name)))
        sa.event.listen(engine, "before_cursor_execute", self._before)
        sa.event.listen(engine, "after_cursor_execute", self._after)

    def _timed(self, kind: str, call: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                self.s[kind] += time.perf_counter() - t
                self.n[kind] += 1
        return timed

    def _before(self, conn, cursor, statement, parameters, context, many) -> None:
        conn.info["bench_t"] = time.perf_counter()

    def _after(self, conn, cursor, statement, parameters, context, many) -> None:
        took = time.perf_counter() - conn.info.pop("bench_t")
        kind = ("lock" if statement.startswith("BEGIN IMMEDIATE")
                or "pg_advisory_xact_lock" in statement else "statements")
        self.s[kind] += took
        self.n[kind] += 1

    def reset(self) -> None:
        self.s = dict.fromkeys(self.KINDS, 0.0)
        self.n = dict.fromkeys(self.KINDS, 0)


def _one_turn(store: vnb.HistoryStore, session: str, writes: tuple, lat: dict | None) -> None:
    first, heard, answer = writes
    t0 = time.perf_counter()
    turn = store.start_turn(session, **first)
    t1 = time.perf_counter()
    store.update(session, turn, **heard)
    t2 = time.perf_counter()
    store.update(session, turn, **answer)
    t3 = time.perf_counter()
    if lat is not None:
        lat["start_turn"].append(t1 - t0)
        lat["update"] += [t2 - t1, t3 - t2]


def _writer(url: str | None, home: str, session: str, n: int, index: int, barrier: Any,
            results: Any, done: Any) -> None:
    """One writer process: open a store, WARM warm-up turns, wait for the others, n turns."""
    try:
        writes = turn_writes()
        store = vnb.HistoryStore(home, history=url)
        probe = _Probe(store.engine)
        for _ in range(WARM):  # connections, the lease, psycopg's prepared statements
            _one_turn(store, f"warm-{index}", writes, None)
        probe.reset()
        barrier.wait(timeout=120)
        lat: dict[str, list[float]] = {"start_turn": [], "update": []}
        cpu = time.process_time()
        start = time.monotonic()
        for _ in range(n):
            _one_turn(store, session, writes, lat)
        end = time.monotonic()
        results.put(dict(index=index, start=start, end=end, cpu=time.process_time() - cpu,
                         lat=lat, engine_s=probe.s, engine_n=probe.n))
        done.wait(timeout=600)  # the server's CPU is read before its backends go
        store.close()
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
        barrier.abort()
        results.put(dict(index=index, error=traceback.format_exc()))


def _proc_stat(pid: str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _server_cpu(server: Any) -> float:
    """CPU seconds of the postmaster, its live children and the children it has reaped."""
    if server is None:
        return 0.0
    pid = (server.data_dir / "postmaster.pid").read_text().split()[0]
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _proc_stat(entry)
        if fields is None:
            continue
        if entry == pid:  # utime stime cutime cstime
            ticks += sum(int(f) for f in fields[11:15])
        elif fields[1] == pid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _busy_cpu() -> float:
    """CPU seconds the machine spent not idle (all cores), from /proc/stat."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:9]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values) - idle) / os.sysconf("SC_CLK_TCK")


def _writers(url: str | None, home: str, writers: int, n: int, one_session: bool,
             server: Any) -> dict:
    """``writers`` processes recording ``n`` turns each, started together."""
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(writers + 1)
    results = ctx.Queue()
    done = ctx.Event()
    procs = [ctx.Process(target=_writer, daemon=True,
                         args=(url, home, "shared" if one_session else f"writer-{i}", n, i,
                               barrier, results, done))
             for i in range(writers)]
    for p in procs:
        p.start()
    out: list[dict] = []
    try:
        with contextlib.suppress(Exception):
            barrier.wait(timeout=120)
        server0, busy0, t0 = _server_cpu(server), _busy_cpu(), time.monotonic()
        while len(out) < writers:
            try:
                got = results.get(timeout=5)
            except queue.Empty:
                if any(p.exitcode not in (None, 0) for p in procs) or \
                        time.monotonic() - t0 > 900:
                    raise RuntimeError("a writer process died") from None
                continue
            if "error" in got:
                raise RuntimeError(f"writer {got['index']} failed:\n{got['error']}")
            out.append(got)
        server1, busy1, t1 = _server_cpu(server), _busy_cpu(), time.monotonic()
    finally:
        done.set()
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    wall = max(r["end"] for r in out) - min(r["start"] for r in out)
    total = writers * n
    lat = {k: [x for r in out for x in r["lat"][k]] for k in ("start_turn", "update")}
    engine_s = {k: sum(r["engine_s"][k] for r in out) / total for k in _Probe.KINDS}
    engine_n = {k: sum(r["engine_n"][k] for r in out) / total for k in _Probe.KINDS}
    return dict(writers=writers, n=n, turns=total, wall=wall, rate=total / wall,
                start_turn_ms=statistics.median(lat["start_turn"]) * 1e3,
                update_ms=statistics.median(lat["update"]) * 1e3,
                turn_ms=statistics.mean(r["end"] - r["start"] for r in out) / n * 1e3,
                engine_ms={k: v * 1e3 for k, v in engine_s.items()}, engine_n=engine_n,
                writer_cpu_ms=sum(r["cpu"] for r in out) / total * 1e3,
                server_cpu_ms=(server1 - server0) / total * 1e3,
                busy_cores=(busy1 - busy0) / (t1 - t0),
                # what the rest of the machine used meanwhile (another test run, say)
                other_cores=((busy1 - busy0) - (server1 - server0)
                             - sum(r["cpu"] for r in out)) / (t1 - t0))


def _check(engine: sa.Engine, writers: int, n: int, one_session: bool) -> None:
    """Every turn recorded once, numbered 1.. without a gap in its session, and finished."""
    t = _store.turns
    with engine.connect() as conn:
        got = conn.execute(sa.select(t.c.session, sa.func.count(), sa.func.max(t.c.turn),
                                     sa.func.sum(sa.case((t.c.status == "ok", 1), else_=0)))
                           .where(~t.c.session.like("warm-%")).group_by(t.c.session)).all()
    want = {("shared" if one_session else f"writer-{i}"): writers * n if one_session else n
            for i in range(writers)}
    have = {s: (c, m, ok) for s, c, m, ok in got}
    if have != {s: (k, k, k) for s, k in want.items()}:
        raise AssertionError(f"the turns recorded are not {want}: {have}")


def _write_run(make_url: Any, writers: int, n: int, one_session: bool, server: Any) -> dict:
    """One run of ``writers`` x ``n`` turns on a fresh store, checked afterwards."""
    with tempfile.TemporaryDirectory(prefix="vnb-hs-") as home:
        url = make_url()
        store = vnb.HistoryStore(home, history=url)  # the schema, before the writers
        store.close()
        result = _writers(url, home, writers, n, one_session, server)
        store = vnb.HistoryStore(home, history=url)
        try:
            _check(store.engine, writers, n, one_session)
        finally:
            store.close()
        if server is not None:
            server.drop_database(url)
    return result


def write_bench(store_name: str, make_url: Any, shapes: list[tuple[int, bool]], n: int,
                repeat: int, server: Any = None) -> list[dict]:
    """For each (writers, one session) shape, the median of ``repeat`` runs of ``n`` turns a
    writer; the runs of all shapes take turns, so that a slow spell of the machine does not
    fall on one shape."""
    runs: dict[tuple[int, bool], list[dict]] = {shape: [] for shape in shapes}
    for _ in range(repeat):
        for writers, one in shapes:
            runs[writers, one].append(_write_run(make_url, writers, n, one, server))
    out = []
    for (_, one), done in runs.items():
        done.sort(key=lambda r: r["rate"])
        mid = dict(done[len(done) // 2])
        mid.update(store=store_name, one_session=one, rates=[r["rate"] for r in done])
        out.append(mid)
    return out


# -- loading ------------------------------------------------------------------------------------

def _bulk_fill(store: vnb.HistoryStore, n: int) -> float:
    """``n`` turns of session "bench", each with its turn_state row (as start_turn leaves
    it, owner a process long gone), in one transaction of executemany; the seconds taken."""
    rows = history_rows(n)
    owner = "bench-host:1:1"
    states = [dict(session=r["session"], turn=r["turn"], owner=owner,
                   updated_at=r["started_at"]) for r in rows]
    t = time.perf_counter()
    with store.engine.begin() as conn:
        conn.execute(_store.turns.insert(), rows)
        conn.execute(_store.turn_state.insert(), states)
        conn.execute(_store.leases.insert(), [dict(owner=owner, renewed_at=time.time())])
    return time.perf_counter() - t


def load_bench(store_name: str, url: str | None, n: int, repeat: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="vnb-hs-") as home:
        store = vnb.HistoryStore(home, history=url)
        try:
            fill_s = _bulk_fill(store, n)
            query = _store._joined(*_store._table_columns()).order_by(
                _store.turns.c.session, _store.turns.c.turn)
            ours: list[float] = []
            base: list[float] = []
            for i in range(repeat):  # alternating which goes first; no garbage carried over
                for which in ((ours, base) if i % 2 == 0 else (base, ours)):
                    gc.collect()
                    t = time.perf_counter()
                    if which is ours:
                        df = store.dataframe()
                    else:
                        raw = pd.read_sql(query, store.engine)
                    which.append(time.perf_counter() - t)
                assert len(df) == len(raw) == n, (len(df), len(raw), n)
                assert list(df.columns) == list(NAMES)
                del df, raw
        finally:
            store.close()
    return dict(store=store_name, n=n, fill_s=fill_s, ours=min(ours), base=min(base),
                ours_all=ours, base_all=base)


# -- the run ------------------------------------------------------------------------------------

def run(quick: bool = False, n: int | None = None, repeat: int | None = None,
        load_n: int | None = None) -> dict:
    n = n or (50 if quick else 400)
    repeat = repeat or (1 if quick else 3)
    load_n = load_n or (5_000 if quick else 100_000)
    many = 2 if quick else 8
    shapes = [(1, False), (many, False), (many, True)]
    r: dict[str, Any] = dict(quick=quick, n=n, repeat=repeat, many=many, writes=[], loads=[],
                             servers={}, skipped=None)
    t_all = time.monotonic()
    r["loadavg"] = os.getloadavg()

    def sqlite_url() -> None:
        return None  # the store's default: <home>/history.sqlite

    r["writes"] += write_bench("SQLite", sqlite_url, shapes, n, repeat)
    r["loads"].append(load_bench("SQLite", None, load_n, 3))

    r["skipped"] = _postgres_missing()
    if r["skipped"] is None:
        Server = _server_class()
        for durable in ([False] if quick else [False, True]):
            name = "PostgreSQL, durable" if durable else "PostgreSQL, fsync off"
            with Server(durable=durable) as server:
                settings = server.settings()
                if durable != (settings["fsync"] == "on"
                               and settings["synchronous_commit"] == "on"):
                    raise RuntimeError(f"the server runs with {settings}")
                settings["filesystem"] = _filesystem(server.data_dir)
                r["servers"][name] = settings
                r["writes"] += write_bench(name, server.new_database, shapes, n, repeat, server)
                if not durable:
                    r["loads"].append(load_bench("PostgreSQL", server.new_database(),
                                                 load_n, 3))
    r["seconds"] = time.monotonic() - t_all
    return r


def _filesystem(path: Path) -> str:
    best = ("", "?")
    with open("/proc/mounts") as fh:
        for line in fh:
            _dev, mount, kind = line.split()[:3]
            if str(path).startswith(mount) and len(mount) > len(best[0]):
                best = (mount, kind)
    return best[1]


# -- the report ---------------------------------------------------------------------------------

def _versions(r: dict) -> str:
    import psycopg

    pg = next(iter(r["servers"].values()), {}).get("server_version", "not run")
    return (f"PostgreSQL {pg}, SQLAlchemy {sa.__version__}, psycopg {psycopg.__version__} "
            f"({psycopg.pq.__impl__}, libpq {psycopg.pq.version()}), pandas {pd.__version__}, "
            f"SQLite {sqlite3.sqlite_version}; {platform.python_implementation()} "
            f"{platform.python_version()}, {os.cpu_count()} cores, {platform.machine()}")


def _scaling(r: dict, store: str, one_session: bool) -> float | None:
    base = [w for w in r["writes"] if w["store"] == store and w["writers"] == 1]
    many = [w for w in r["writes"] if w["store"] == store and w["writers"] == r["many"]
            and w["one_session"] == one_session]
    return many[0]["rate"] / base[0]["rate"] if base and many else None


def _why(r: dict, store: str) -> str:
    """Why the writers do not reach GOAL_SCALING x one writer, from the CPU measured."""
    one = next(w for w in r["writes"] if w["store"] == store and w["writers"] == 1)
    many = next(w for w in r["writes"] if w["store"] == store and w["writers"] == r["many"]
                and not w["one_session"])
    cores = os.cpu_count() or 1
    cpu1 = one["writer_cpu_ms"] + one["server_cpu_ms"]
    demand = cpu1 / one["turn_ms"]
    cpu8 = many["writer_cpu_ms"] + many["server_cpu_ms"]
    ceiling = cores * 1e3 / cpu8
    idle = max(one["turn_ms"] - cpu1, 0.0)
    return (
        f"{store}: a turn costs {cpu1:.2f} ms of CPU ({one['writer_cpu_ms']:.2f} ms in the "
        f"writer, {one['server_cpu_ms']:.2f} ms in the server) and takes {one['turn_ms']:.2f} "
        f"ms, so one writer alone keeps {demand:.2f} cores busy and {GOAL_SCALING:g}x its rate "
        f"needs {GOAL_SCALING * demand:.1f} cores at that cost; this machine has {cores}. "
        f"Only the {idle:.2f} ms a turn in which neither runs (round trips; commits take "
        f"{one['engine_ms']['commit']:.2f} ms a turn) can be overlapped by more writers. With "
        f"{many['writers']} writers a turn costs {cpu8:.2f} ms of CPU (more processes than "
        f"cores: switches, lock hand-offs), which caps {cores} cores at ~{ceiling:.0f} turns/s "
        f"= {ceiling / one['rate']:.1f}x one writer (measured {many['rate']:.0f}/s, "
        f"{many['busy_cores']:.2f} cores busy of which {max(many['other_cores'], 0):.2f} "
        "other processes)")


def _all(times: list[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in times)


def _sessions(w: dict) -> str:
    return "1" if w["one_session"] or w["writers"] == 1 else str(w["writers"])


def _writes_table(r: dict) -> str:
    rows = [("store", "writers x turns", "sessions", "turns/s (range)", "x 1 writer",
             "start_turn / update p50 ms", "CPU ms/turn writer + server",
             "cores busy (other processes)")]
    one_rate = {w["store"]: w["rate"] for w in r["writes"] if w["writers"] == 1}
    for w in r["writes"]:
        spread = (f" ({min(w['rates']):.0f}-{max(w['rates']):.0f})"
                  if len(w["rates"]) > 1 else "")
        rows.append((w["store"], f"{w['writers']} x {w['n']}", _sessions(w),
                     f"{w['rate']:.0f}{spread}", f"{w['rate'] / one_rate[w['store']]:.2f}",
                     f"{w['start_turn_ms']:.2f} / {w['update_ms']:.2f}",
                     f"{w['writer_cpu_ms']:.2f} + {w['server_cpu_ms']:.2f}",
                     f"{w['busy_cores']:.2f} ({max(w['other_cores'], 0):.2f})"))
    return table(rows)


def _breakdown_table(r: dict) -> str:
    rows = [("store", "writers", "sessions", "per turn ms", "lock wait", "statements (n)",
             "commits (n)", "pre-pings (n)", "rest: client + pool")]
    for w in r["writes"]:
        e, c = w["engine_ms"], w["engine_n"]
        rows.append((w["store"], str(w["writers"]), _sessions(w), f"{w['turn_ms']:.2f}",
                     f"{e['lock']:.2f}", f"{e['statements']:.2f} ({c['statements']:.1f})",
                     f"{e['commit']:.2f} ({c['commit']:.1f})",
                     f"{e['ping']:.2f} ({c['ping']:.1f})",
                     f"{w['turn_ms'] - sum(e.values()):.2f}"))
    return table(rows)


def _load_table(r: dict) -> str:
    rows = [("measure", "value")]
    for ld in r["loads"]:
        name = ld["store"]
        ours = f"{name}: HistoryStore.dataframe(), best of 3 ({_all(ld['ours_all'])})"
        base = (f"{name}: pandas.read_sql of the same SELECT, untyped, best of 3 "
                f"({_all(ld['base_all'])})")
        rows += [
            (f"{name}: {ld['n']:,} turns bulk-inserted (executemany, one transaction)",
             f"{ld['fill_s']:.2f} s"),
            (ours, f"{ld['ours']:.3f} s"),
            (base, f"{ld['base']:.3f} s"),
            (f"{name}: ratio HistoryStore.dataframe / read_sql",
             f"{ld['ours'] / ld['base']:.2f}"),
        ]
    return table(rows)


def _goals_table(r: dict) -> str:
    rows = [("measure", "goal", "result", "met")]
    for name in r["servers"]:
        for one in (False, True):
            x = _scaling(r, name, one)
            if x is not None:
                sessions = "1 session" if one else f"{r['many']} sessions"
                rows.append((f"{name}: {r['many']} writers ({sessions}) / 1 writer, turns/s",
                             f">= {GOAL_SCALING:g}", f"{x:.2f}", "yes" if x >= GOAL_SCALING
                             else "no"))
    for ld in r["loads"]:
        ratio = ld["ours"] / ld["base"]
        rows.append((f"{ld['store']}: {ld['n']:,} turns -> DataFrame, store / read_sql",
                     f"<= {GOAL_LOAD:g}", f"{ratio:.2f}", "yes" if ratio <= GOAL_LOAD else "no"))
    return table(rows)


def report(r: dict) -> str:
    load = ", ".join(f"{x:.2f}" for x in r["loadavg"])
    out = [f"History on a server (issue 17): {_versions(r)}; load average at the start {load}.",
           ONE_TURN]
    for name, s in r["servers"].items():
        out.append(f"{name}: fsync={s['fsync']}, synchronous_commit={s['synchronous_commit']}, "
                   f"wal_sync_method={s['wal_sync_method']}, data on {s['filesystem']}.")
    out.append("SQLite: the store's WAL file, synchronous=NORMAL (no fsync per commit).")
    if r["skipped"]:
        out.append(f"PostgreSQL skipped: {r['skipped']}.")
    where = ("Where a writer's time goes, per turn (mean over turns; lock wait: BEGIN "
             "IMMEDIATE on SQLite, pg_advisory_xact_lock on PostgreSQL):")
    out += ["", _writes_table(r), "", where, "", _breakdown_table(r), "", _load_table(r), "",
            _goals_table(r)]
    for name in r["servers"]:
        if (_scaling(r, name, False) or 0) < GOAL_SCALING:
            out += ["", f"Why not: {_why(r, name)}."]
    done = f"({r['seconds']:.0f} s; {r['repeat']} run(s) per row, taking turns, the median shown.)"
    out += ["", done]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.history_server")
    parser.add_argument("--quick", action="store_true",
                        help="1 and 2 writers x 50 turns, 5,000 turns loaded")
    parser.add_argument("-n", type=int, default=None, help="turns per writer (400; quick 50)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per row (3; quick 1)")
    parser.add_argument("--load", type=int, default=None, help="turns loaded (100,000)")
    args = parser.parse_args(argv)
    print(report(run(args.quick, args.n, args.repeat, args.load)))


if __name__ == "__main__":
    main()
