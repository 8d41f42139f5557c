"""A real, throwaway PostgreSQL server for the tests (no mocking).

``PostgresServer`` runs ``initdb`` into a temporary folder and starts ``postgres`` on
127.0.0.1 and a free TCP port, with SCRAM passwords. A login role ``voicenb`` (its password
random and full of characters a URL must quote) owns the database ``voicenb_test``.
``new_database()`` makes a fresh empty database for one test.

PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` user
(``runuser -u postgres -- ...``), in folders owned by that user.

Fixtures (register them in conftest.py): ``postgres_server`` (one server per session; skipped
when PostgreSQL is not installed, failed instead when ``CI=true``) and ``postgres_url``
(a fresh database per test).

URLs are libpq style, ``postgresql://voicenb:<quoted password>@127.0.0.1:<port>/<db>``: what
``psycopg.connect`` and ``psql`` take. SQLAlchemy reads that prefix as psycopg2 (not
installed); ``sqlalchemy_url(url)`` gives ``postgresql+psycopg://...`` for ``create_engine``.

No password is ever printed, logged by the server or put in an exception message: the role's
password reaches the server only as a SCRAM verifier, computed by libpq on this side.
"""
from __future__ import annotations

import atexit
import glob
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest

INSTALL_HINT = ("install PostgreSQL (apt-get install -y postgresql) "
                "or set VOICENB_PG_BIN to the folder holding initdb and pg_ctl")
ROLE = "voicenb"
DATABASE = "voicenb_test"
SUPERUSER = "postgres"
# Characters a URL must quote, in every password the role gets.
SPECIALS = "@:/%#?&=+"


def find_bin() -> str | None:
    """The folder holding initdb and pg_ctl: $VOICENB_PG_BIN, else the newest
    /usr/lib/postgresql/*/bin, else the folder of pg_ctl on PATH; None if none."""
    env = os.environ.get("VOICENB_PG_BIN")
    if env:
        return env

    def version(path: str) -> tuple:
        name = Path(path).parent.name
        return tuple(int(p) if p.isdigit() else -1 for p in re.split(r"[.]", name))

    found = [d for d in glob.glob("/usr/lib/postgresql/*/bin")
             if os.access(os.path.join(d, "initdb"), os.X_OK)
             and os.access(os.path.join(d, "pg_ctl"), os.X_OK)]
    if found:
        return max(found, key=version)
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return os.path.dirname(os.path.realpath(pg_ctl))
    return None


def sqlalchemy_url(url: str) -> str:
    """The same URL for ``sqlalchemy.create_engine``: the psycopg (3) driver named."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _password() -> str:
    """Random, and with every character of SPECIALS somewhere in it."""
    rng = secrets.SystemRandom()
    chars = list(secrets.token_urlsafe(24)) + list(SPECIALS)
    rng.shuffle(chars)
    return "".join(chars)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:]) or "(server log empty)"


class PostgresServer:
    """One throwaway PostgreSQL server. ``with PostgresServer() as pg: pg.url``"""

    def __init__(self, bin_dir: str | None = None):
        self.bin_dir = bin_dir
        self.port: int | None = None
        self.host = "127.0.0.1"
        self.password: str = _password()            # the voicenb role's
        self._superuser_password = secrets.token_urlsafe(24)
        self.base: Path | None = None
        self.start_seconds: float | None = None
        self._admin = None
        self._lock = threading.Lock()
        self._count = 0
        self._started = False

    # -- paths and commands ---------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base / "sock"

    @property
    def log_file(self) -> Path:
        return self.base / "server.log"

    def _as_root(self) -> bool:
        return hasattr(os, "geteuid") and os.geteuid() == 0

    def _cmd(self, tool: str, *args: str) -> list[str]:
        cmd = [os.path.join(self.bin_dir, tool), *args]
        if self._as_root():
            cmd = ["runuser", "-u", SUPERUSER, "--", *cmd]
        return cmd

    def _run(self, tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        # cwd: the tests chdir into folders the postgres user may not enter
        return subprocess.run(self._cmd(tool, *args), cwd=self.base, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def _redact(self, text: str) -> str:
        for secret in (self.password, quote(self.password, safe=""), self._superuser_password):
            text = text.replace(secret, "***")
        return text

    def _fail(self, what: str, detail: str = "", log: bool = True) -> RuntimeError:
        msg = f"PostgreSQL test server: {what}"
        if detail.strip():
            msg += f"\n{detail.strip()}"
        if log and self.base is not None:
            msg += f"\n--- the server log's last lines ---\n{_tail(self.log_file)}"
        return RuntimeError(self._redact(msg))

    # -- URLs -----------------------------------------------------------------------------
    def url_for(self, database: str) -> str:
        return (f"postgresql://{ROLE}:{quote(self.password, safe='')}"
                f"@{self.host}:{self.port}/{database}")

    @property
    def url(self) -> str:
        return self.url_for(DATABASE)

    @property
    def superuser_url(self) -> str:
        return (f"postgresql://{SUPERUSER}:{quote(self._superuser_password, safe='')}"
                f"@{self.host}:{self.port}/postgres")

    sqlalchemy_url = staticmethod(sqlalchemy_url)

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> PostgresServer:
        if self._started:
            return self
        t0 = time.monotonic()
        self.bin_dir = self.bin_dir or find_bin()
        if not self.bin_dir:
            raise RuntimeError(f"PostgreSQL not found: {INSTALL_HINT}.")
        for tool in ("initdb", "pg_ctl", "postgres"):
            if not os.access(os.path.join(self.bin_dir, tool), os.X_OK):
                raise RuntimeError(f"PostgreSQL not found: no {tool} in {self.bin_dir}; "
                                   f"{INSTALL_HINT}.")
        if self._as_root() and not shutil.which("runuser"):
            raise RuntimeError("PostgreSQL refuses to run as root, and runuser (util-linux) "
                               "is missing to run it as the postgres user.")
        self._make_dirs()
        self._started = True            # from here stop() has something to clean up
        atexit.register(self.stop)
        try:
            self._initdb()
            self._pg_ctl_start()
            self._create_role_and_database()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _make_dirs(self) -> None:
        tmp = None
        if self._as_root():
            import pwd

            try:
                pw = pwd.getpwnam(SUPERUSER)
            except KeyError:
                raise RuntimeError(
                    "PostgreSQL refuses to run as root and there is no 'postgres' user to run "
                    f"it as: {INSTALL_HINT} (the package creates the user), or run as non-root."
                ) from None
            # the postgres user must be able to reach the folder: TMPDIR may be private
            tmp = tempfile.gettempdir()
            if not all(os.stat(p).st_mode & 0o001 for p in [tmp, *map(str, Path(tmp).parents)]):
                tmp = "/tmp"
        # short base: a unix socket path must stay under ~107 bytes
        self.base = Path(tempfile.mkdtemp(prefix="voicenb-pg-", dir=tmp))
        self.socket_dir.mkdir()
        pwfile = self.base / "pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self._superuser_password + "\n")
        if self._as_root():
            for p in (self.base, self.socket_dir, pwfile):
                os.chown(p, pw.pw_uid, pw.pw_gid)

    def _initdb(self) -> None:
        common = ["-D", str(self.data_dir), "--auth=scram-sha-256", f"--username={SUPERUSER}",
                  f"--pwfile={self.base / 'pwfile'}", "-E", "UTF8", "--no-sync"]
        try:
            r = self._run("initdb", *common, "--locale=C.UTF-8")
            if r.returncode != 0:
                shutil.rmtree(self.data_dir, ignore_errors=True)
                r2 = self._run("initdb", *common, "--no-locale")
                if r2.returncode != 0:
                    raise self._fail("initdb failed", f"with --locale=C.UTF-8:\n{r.stderr[-2000:]}"
                                     f"\nwith --no-locale:\n{r2.stderr[-2000:]}", log=False)
        finally:
            (self.base / "pwfile").unlink(missing_ok=True)

    def _pg_ctl_start(self) -> None:
        last = ""
        for _attempt in range(3):          # the free port can be taken before postgres binds it
            self.port = _free_port()
            opts = (f"-c listen_addresses={self.host} -p {self.port} "
                    f"-k {shlex.quote(str(self.socket_dir))} "
                    "-c fsync=off -c max_connections=200 -c synchronous_commit=off")
            r = self._run("pg_ctl", "start", "-D", str(self.data_dir), "-w", "-t", "60",
                          "-l", str(self.log_file), "-o", opts)
            if r.returncode == 0:
                return
            last = (r.stdout + r.stderr)[-2000:]
            if "could not bind" not in _tail(self.log_file, 10) and "in use" not in last:
                break
        raise self._fail(f"pg_ctl start failed (port {self.port})", last)

    def _connect_admin(self, dbname: str = "postgres"):
        import psycopg

        try:
            return psycopg.connect(host=self.host, port=self.port, user=SUPERUSER,
                                   password=self._superuser_password, dbname=dbname,
                                   autocommit=True, connect_timeout=10)
        except psycopg.Error as e:
            raise self._fail("cannot connect as the superuser", str(e)) from None

    def _admin_conn(self):
        if self._admin is None or self._admin.closed or self._admin.broken:
            self._admin = self._connect_admin()
        return self._admin

    def _create_role_and_database(self) -> None:
        from psycopg import sql

        with self._lock:
            conn = self._admin_conn()
            # libpq hashes the password here: only the SCRAM verifier goes to the server,
            # so no statement log can hold the password
            verifier = conn.pgconn.encrypt_password(
                self.password.encode(), ROLE.encode(), b"scram-sha-256").decode()
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(ROLE), sql.Literal(verifier)))
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(DATABASE), sql.Identifier(ROLE)))

    def new_database(self, name: str | None = None) -> str:
        """A fresh empty database owned by voicenb; its URL."""
        from psycopg import sql

        if not self._started:
            raise RuntimeError("PostgreSQL test server is not running")
        with self._lock:
            if name is None:
                self._count += 1
                name = f"voicenb_t{self._count}_{secrets.token_hex(3)}"
            conn = self._admin_conn()
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(ROLE)))
        return self.url_for(quote(name, safe=""))

    def drop_database(self, name_or_url: str) -> None:
        """Drop a database made by new_database (its connections are closed first)."""
        from urllib.parse import unquote, urlsplit

        from psycopg import sql

        name = name_or_url
        if "://" in name_or_url:
            name = unquote(urlsplit(name_or_url).path.lstrip("/"))
        with self._lock:
            self._admin_conn().execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                                       .format(sql.Identifier(name)))

    def stop(self) -> None:
        """Stop the server at once and remove its folders. Safe to call twice."""
        if not self._started:
            return
        self._started = False
        atexit.unregister(self.stop)
        if self._admin is not None:
            try:
                self._admin.close()
            except Exception:
                pass
            self._admin = None
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "immediate",
                          "-w", "-t", "30", timeout=60)
        except Exception:
            pass
        finally:
            if self.base is not None:
                shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"127.0.0.1:{self.port}" if self._started else "stopped"
        return f"<PostgresServer {state}>"      # never the password


# -- pytest fixtures ----------------------------------------------------------------------
# One server per process, even if several modules import these fixtures (each import makes
# its own session-scoped FixtureDef) or a session fixture is set up again.
_server: PostgresServer | None = None


def _shared_server() -> PostgresServer:
    global _server
    if _server is None or not _server._started:
        _server = PostgresServer().start()
    return _server


def require_bin() -> str:
    """find_bin(), or skip the test when PostgreSQL is not installed (fail it when CI=true)."""
    found = find_bin()
    if found is None:
        reason = f"PostgreSQL not found: {INSTALL_HINT}"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return found


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the whole test run."""
    require_bin()
    server = _shared_server()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server):
    """The URL of a fresh empty database (owner voicenb), dropped after the test."""
    url = postgres_server.new_database()
    yield url
    if postgres_server._started:
        try:
            postgres_server.drop_database(url)
        except Exception:
            pass
