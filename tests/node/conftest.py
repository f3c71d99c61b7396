import os
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

PG_URL = os.environ.get("ATOLL_TEST_PG", "postgresql+psycopg://{user}@127.0.0.1:5432/{db}")


def _pg_admin():
    """A connection to the machine's PostgreSQL (127.0.0.1:5432, trust auth), or None."""
    try:
        import psycopg
    except ImportError:
        return None, None
    for user in ("postgres", "root"):
        try:
            return psycopg.connect(host="127.0.0.1", port=5432, user=user, dbname="test", autocommit=True,
                                   connect_timeout=3), user
        except Exception:  # noqa: BLE001
            continue
    return None, None


@pytest.fixture(scope="session")
def pg_url():
    """A fresh PostgreSQL database for this test run (dropped at the end). Skipped without a
    server, except under CI, where .ci/run starts one and its absence is a failure."""
    conn, user = _pg_admin()
    if conn is None:
        if os.environ.get("CI"):
            pytest.fail("no PostgreSQL server at 127.0.0.1:5432 (.ci/run should have started one)")
        pytest.skip("no PostgreSQL server at 127.0.0.1:5432 (trust auth, database 'test')")
    name = f"atoll_test_{uuid.uuid4().hex[:10]}"
    conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_URL.format(user=user, db=name)
    finally:
        from sqlalchemy.pool import NullPool  # noqa: F401 - engines are disposed by the tests
        conn.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db_url(request, tmp_path_factory):
    """Store tests run on SQLite and on PostgreSQL (a fresh schema per test module)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'node.db'}"
        return
    base = request.getfixturevalue("pg_url")
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:10]}"
    dbname = base.rsplit("/", 1)[1]
    user = base.split("://", 1)[1].split("@", 1)[0]
    with psycopg.connect(host="127.0.0.1", port=5432, user=user, dbname=dbname, autocommit=True) as c:
        c.execute(f'CREATE SCHEMA "{schema}"')
    yield f"{base}?options=-csearch_path%3D{schema}"
    with psycopg.connect(host="127.0.0.1", port=5432, user=user, dbname=dbname, autocommit=True) as c:
        c.execute(f'DROP SCHEMA "{schema}" CASCADE')
