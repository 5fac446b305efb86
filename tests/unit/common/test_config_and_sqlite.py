import sqlite3

import pytest

from services.common.config import from_environment
from services.common.sqlite import Database


def test_config_reads_peers_tls_and_settings(tmp_path):  # type: ignore[no-untyped-def]
    config = from_environment("planner", {
        "HG_LISTEN": "127.0.0.1:7001", "HG_PKI_DIR": str(tmp_path), "HG_DETECTOR_ADDRESS": "127.0.0.1:7002",
        "HG_PLANNER_ADDRESS": "ignored:1", "HG_SETTING_BATCH_TIME_BUDGET_SECONDS": "2",
    })
    assert config.listen_port == 7001
    assert config.tls is not None and config.tls.cert == tmp_path / "planner.pem"
    assert config.peer("detector") == "127.0.0.1:7002"
    assert "planner" not in config.peers
    assert config.settings == {"batch_time_budget_seconds": "2"}
    with pytest.raises(LookupError, match="HG_AUDIT_ADDRESS"):
        config.peer("audit")


@pytest.mark.parametrize("env", [{"HG_LISTEN": "nonsense"}, {"HG_LISTEN": "host:port"}])
def test_malformed_listen_address_fails_loudly(env):  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="HG_LISTEN"):
        from_environment("planner", env)


def test_unknown_service_is_refused():
    with pytest.raises(ValueError, match="unknown service"):
        from_environment("billing", {})


def test_migrations_apply_once_and_are_durable(tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "x.sqlite3"
    migrations = ["CREATE TABLE t (a INTEGER PRIMARY KEY);", "ALTER TABLE t ADD COLUMN b TEXT;"]
    db = Database(path, migrations)
    with db.transaction() as conn:
        conn.execute("INSERT INTO t VALUES (1, 'one')")
    db.close()
    again = Database(path, migrations)  # re-running migrations must not fail or lose rows
    with again.read() as conn:
        assert conn.execute("SELECT b FROM t").fetchone()[0] == "one"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_a_failed_transaction_leaves_nothing(tmp_path):  # type: ignore[no-untyped-def]
    db = Database(tmp_path / "y.sqlite3", ["CREATE TABLE t (a INTEGER PRIMARY KEY);"])
    with pytest.raises(sqlite3.IntegrityError):
        with db.transaction() as conn:
            conn.execute("INSERT INTO t VALUES (1)")
            conn.execute("INSERT INTO t VALUES (1)")
    with db.read() as conn:
        assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0


def test_a_broken_migration_rolls_back_and_keeps_the_version(tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "z.sqlite3"
    Database(path, ["CREATE TABLE t (a INTEGER);"]).close()
    with pytest.raises(sqlite3.OperationalError):
        Database(path, ["CREATE TABLE t (a INTEGER);", "CREATE TABLE u (a INTEGER); SELECT * FROM missing;"])
    db = Database(path, ["CREATE TABLE t (a INTEGER);"])
    with db.read() as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'u'").fetchone() is None
