"""The PostgreSQL test server itself: a real server, its URLs, isolation, passwords."""
from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

import psycopg
import pytest
import sqlalchemy

from tests._postgres import SPECIALS, PostgresServer, find_bin, require_bin, sqlalchemy_url


def scalar(url: str, query: str):
    with psycopg.connect(url, connect_timeout=10) as conn:
        return conn.execute(query).fetchone()[0]


def test_url_is_libpq_style_with_a_quoted_password(postgres_server):
    pg = postgres_server
    parts = urlsplit(pg.url)
    assert parts.scheme == "postgresql"
    assert parts.hostname == "127.0.0.1" and parts.port == pg.port
    assert parts.username == "voicenb" and parts.path == "/voicenb_test"
    assert all(c in pg.password for c in SPECIALS)
    assert unquote(parts.password) == pg.password
    assert not any(c in parts.password for c in "@:/#?&=+")    # all of them quoted
    assert pg.password not in repr(pg)


def test_psycopg_connects_as_voicenb(postgres_server):
    with psycopg.connect(postgres_server.url, connect_timeout=10) as conn:
        user, db, su = conn.execute(
            "SELECT current_user, current_database(), "
            "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)").fetchone()
        assert (user, db, su) == ("voicenb", "voicenb_test", False)
        conn.execute("CREATE TABLE IF NOT EXISTS t (x int)")
        assert conn.execute("SHOW server_encoding").fetchone()[0] == "UTF8"


def test_sqlalchemy_connects(postgres_server):
    url = sqlalchemy_url(postgres_server.url)
    assert url.startswith("postgresql+psycopg://")
    engine = sqlalchemy.create_engine(url)
    try:
        assert engine.url.password == postgres_server.password
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT current_user")).scalar() == "voicenb"
        # the password is masked wherever SQLAlchemy shows the URL
        assert postgres_server.password not in repr(engine.url)
    finally:
        engine.dispose()


def test_new_databases_are_isolated(postgres_server):
    a, b = postgres_server.new_database(), postgres_server.new_database()
    assert a != b
    with psycopg.connect(a) as conn:
        conn.execute("CREATE TABLE only_in_a (x int)")
        conn.execute("INSERT INTO only_in_a VALUES (1)")
    assert scalar(a, "SELECT count(*) FROM only_in_a") == 1
    assert scalar(b, "SELECT to_regclass('only_in_a') IS NULL") is True
    assert scalar(b, "SELECT pg_get_userbyid(datdba) FROM pg_database "
                     "WHERE datname = current_database()") == "voicenb"


def test_postgres_url_fixture_is_a_fresh_empty_database(postgres_url):
    assert postgres_url.startswith("postgresql://voicenb:")
    assert scalar(postgres_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
    with psycopg.connect(postgres_url) as conn:      # voicenb may create in public (owner)
        conn.execute("CREATE TABLE t (x int)")


def test_postgres_url_fixture_again_sees_nothing_of_the_last_test(postgres_url):
    assert scalar(postgres_url, "SELECT to_regclass('t') IS NULL") is True


def test_wrong_password_is_refused(postgres_server):
    pg = postgres_server
    wrong = pg.url_for("voicenb_test").replace(
        pg.url.split("@")[0], "postgresql://voicenb:not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong, connect_timeout=10)
    with pytest.raises(psycopg.OperationalError):          # the raw, unquoted password fails too
        psycopg.connect(host="127.0.0.1", port=pg.port, user="voicenb",
                        password=pg.password + "x", dbname="voicenb_test", connect_timeout=10)
    # and the right one, given as a keyword rather than in a URL, works
    with psycopg.connect(host="127.0.0.1", port=pg.port, user="voicenb",
                         password=pg.password, dbname="voicenb_test", connect_timeout=10):
        pass


def test_password_never_reaches_the_server_log(postgres_server):
    pg = postgres_server
    with pytest.raises(psycopg.Error):
        with psycopg.connect(pg.url) as conn:
            conn.execute("SELECT * FROM no_such_table")
    log = pg.log_file.read_text(errors="replace")
    assert "no_such_table" in log                     # errors are logged...
    assert pg.password not in log                     # ...never the password
    assert pg.url.split("@")[0].split(":")[-1] not in log


def test_start_stop_context_manager_and_errors(tmp_path):
    require_bin()
    with PostgresServer() as pg:
        assert pg.start_seconds is not None and pg.start_seconds < 60
        base, port = pg.base, pg.port
        assert scalar(pg.url, "SELECT 1") == 1
        assert scalar(pg.superuser_url, "SELECT rolsuper FROM pg_roles "
                                        "WHERE rolname = current_user") is True
    assert not base.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host="127.0.0.1", port=port, user="voicenb", password="x",
                        connect_timeout=3)
    pg.stop()                                         # twice is fine

    with pytest.raises(RuntimeError, match="apt-get install -y postgresql") as e:
        PostgresServer(bin_dir=str(tmp_path)).start()
    assert "VOICENB_PG_BIN" in str(e.value)


def test_find_bin(monkeypatch, tmp_path):
    monkeypatch.setenv("VOICENB_PG_BIN", str(tmp_path))
    assert find_bin() == str(tmp_path)
    monkeypatch.delenv("VOICENB_PG_BIN")
    found = require_bin()
    assert found == find_bin()
    assert found and os.access(os.path.join(found, "initdb"), os.X_OK)
