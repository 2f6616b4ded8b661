//! The outbox's SQLite schema and connection settings.

use rusqlite::{Connection, OptionalExtension};

/// Schema version in `PRAGMA user_version`; a file from a newer daemon is refused.
pub const VERSION: i64 = 4;

/// `auto_vacuum` must be chosen before the first table exists: incremental, so the file shrinks
/// as acknowledged entries are deleted, a few pages at a time.
pub const CREATE: &str = "
    PRAGMA auto_vacuum = INCREMENTAL;
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        samples INTEGER NOT NULL,
        body BLOB NOT NULL,
        crc INTEGER NOT NULL,
        -- How body encodes the entry (outbox::stored): 0 protobuf, 1 sample columns.
        format INTEGER NOT NULL DEFAULT 0,
        created_unix_s REAL NOT NULL,
        -- Set when the hub acknowledged the entry and store.keep_acked keeps it a while.
        acked_unix_s REAL
    );
    CREATE INDEX IF NOT EXISTS outbox_acked ON outbox (acked_unix_s) WHERE acked_unix_s IS NOT NULL;
    CREATE TABLE IF NOT EXISTS dead_letters (
        id INTEGER PRIMARY KEY,
        samples INTEGER NOT NULL,
        body BLOB NOT NULL,
        crc INTEGER NOT NULL,
        format INTEGER NOT NULL DEFAULT 0,
        reason TEXT NOT NULL,
        parked_unix_s REAL NOT NULL
    );
    -- One row per stepped test in progress: what a restarted daemon needs to resume it. Written
    -- in the same transaction as the samples it accounts for, so the two always agree.
    CREATE TABLE IF NOT EXISTS checkpoints (
        test_id TEXT PRIMARY KEY,
        channel_id TEXT NOT NULL,
        protocol_source TEXT NOT NULL,
        origin TEXT NOT NULL,
        metadata_json TEXT NOT NULL,
        start_unix_s REAL NOT NULL,
        engine_json TEXT NOT NULL,
        next_seq INTEGER NOT NULL,
        test_time_s REAL NOT NULL,
        unix_s REAL NOT NULL,
        paused_s REAL NOT NULL,
        -- The protocol parameters the test's plan was resolved with (JSON object).
        params_json TEXT NOT NULL DEFAULT '{}',
        -- The test's per-cycle tracker as of the same sample (JSON; empty for none yet).
        cycles_json TEXT NOT NULL DEFAULT '',
        -- The test's quality checks as of the same sample (JSON; empty for none).
        quality_json TEXT NOT NULL DEFAULT ''
    );
";

/// What each older version lacks, by the version it takes the store to: `UPGRADES[i]` takes
/// version `i + 1` to `i + 2`.
pub const UPGRADES: &[&str] = &[
    "ALTER TABLE checkpoints ADD COLUMN params_json TEXT NOT NULL DEFAULT '{}';
     ALTER TABLE checkpoints ADD COLUMN cycles_json TEXT NOT NULL DEFAULT '';",
    // Every row so far holds a protobuf entry (format 0); nothing stored is rewritten.
    "ALTER TABLE outbox ADD COLUMN format INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE dead_letters ADD COLUMN format INTEGER NOT NULL DEFAULT 0;",
    // A test checkpointed before has no quality state: its checks start again at the restart.
    "ALTER TABLE checkpoints ADD COLUMN quality_json TEXT NOT NULL DEFAULT '';",
];

/// The tables as schema 2 made them (before rows had a format): tests open such a store to
/// check that an upgraded daemon still reads and uploads what is in it.
#[doc(hidden)]
pub const SCHEMA_2: &str = "
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, samples INTEGER NOT NULL,
        body BLOB NOT NULL, crc INTEGER NOT NULL, created_unix_s REAL NOT NULL,
        acked_unix_s REAL);
    CREATE INDEX outbox_acked ON outbox (acked_unix_s) WHERE acked_unix_s IS NOT NULL;
    CREATE TABLE dead_letters (id INTEGER PRIMARY KEY, samples INTEGER NOT NULL,
        body BLOB NOT NULL, crc INTEGER NOT NULL, reason TEXT NOT NULL,
        parked_unix_s REAL NOT NULL);
    CREATE TABLE checkpoints (test_id TEXT PRIMARY KEY, channel_id TEXT NOT NULL,
        protocol_source TEXT NOT NULL, origin TEXT NOT NULL, metadata_json TEXT NOT NULL,
        start_unix_s REAL NOT NULL, engine_json TEXT NOT NULL, next_seq INTEGER NOT NULL,
        test_time_s REAL NOT NULL, unix_s REAL NOT NULL, paused_s REAL NOT NULL,
        params_json TEXT NOT NULL DEFAULT '{}', cycles_json TEXT NOT NULL DEFAULT '');
    PRAGMA user_version = 2;
";

/// How hard a commit pushes data to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Every commit is on the disk before it counts: a power cut loses nothing committed.
    #[default]
    Full,
    /// WAL commits are synced at checkpoints only: a power cut may lose the last commits
    /// (never corrupts the file); a process crash loses nothing committed.
    Normal,
}

pub fn configure(conn: &Connection, sync: SyncMode) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch(match sync {
        SyncMode::Full => "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;",
        SyncMode::Normal => "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;",
    })?;
    // After a checkpoint the WAL is cut back to this size, so a drained backlog frees the disk.
    // The working set is the newest pages (appends, acks, the uploader's reads): 512 KiB of
    // page cache per connection holds it, where SQLite's default 2 MiB each would fill over
    // hours with pages nobody reads again.
    conn.execute_batch("PRAGMA journal_size_limit = 16777216; PRAGMA cache_size = -512;")
}

pub fn meta(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}

pub fn set_meta(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )?
    .execute([key, value])
    .map(|_| ())
}

pub fn meta_u64(conn: &Connection, key: &str) -> rusqlite::Result<u64> {
    Ok(meta(conn, key)?.and_then(|v| v.parse().ok()).unwrap_or(0))
}
