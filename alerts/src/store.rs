//! Where alerts wait until delivered: a small SQLite file of its own (private, beside the
//! outbox), so an alert raised while the network is down is sent when it returns, once, also
//! across a restart of the daemon.

use super::Raised;
use crate::config::{AlertKind, Target};
use anyhow::Context as _;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::Mutex;

/// Schema version in `PRAGMA user_version`; a file from a newer daemon is refused.
const VERSION: i64 = 1;

const CREATE: &str = "
    CREATE TABLE IF NOT EXISTS alerts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        -- One alert per occurrence (rules::Raised::key): what dedupes.
        key TEXT NOT NULL UNIQUE,
        -- Sent with every attempt, so a receiver can drop a repeat after a lost reply.
        uuid TEXT NOT NULL,
        kind TEXT NOT NULL,
        channel TEXT NOT NULL,
        test_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        text TEXT NOT NULL,
        raised_unix_ms INTEGER NOT NULL
    );
    -- One row per alert and target; delivered_unix_ms set once the receiver took it.
    CREATE TABLE IF NOT EXISTS deliveries (
        alert_id INTEGER NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
        target TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL DEFAULT '',
        delivered_unix_ms INTEGER,
        PRIMARY KEY (alert_id, target)
    );
    -- Each test's first full cycle: capacity retention's reference across restarts.
    CREATE TABLE IF NOT EXISTS baselines (
        test_id TEXT PRIMARY KEY,
        cycle INTEGER NOT NULL,
        discharge_ah REAL NOT NULL
    );
";

/// Delivered alerts older than this are forgotten (their keys with them).
const KEEP_MS: i64 = 90 * 24 * 3600 * 1000;

/// An alert as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAlert {
    pub id: i64,
    /// The idempotency id receivers see.
    pub uuid: String,
    pub kind: AlertKind,
    pub channel: String,
    pub test_id: String,
    pub reason: String,
    pub text: String,
    pub raised_unix_ms: i64,
}

/// One target's delivery of an alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub target: Target,
    /// Attempts that failed or succeeded so far.
    pub attempts: u32,
    /// Why the last attempt failed ("" when none did).
    pub last_error: String,
    /// When the receiver took it.
    pub delivered_unix_ms: Option<i64>,
}

/// An alert with its deliveries, for `cyclerctl status` and the web monitor.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertView {
    pub alert: StoredAlert,
    pub deliveries: Vec<Delivery>,
}

/// The alert store; one connection, used briefly.
pub struct Store {
    conn: Mutex<Connection>,
}

fn target(name: &str) -> Target {
    if name == "email" {
        Target::Email
    } else {
        Target::Webhook
    }
}

fn alert_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredAlert> {
    let kind: String = r.get(2)?;
    Ok(StoredAlert {
        id: r.get(0)?,
        uuid: r.get(1)?,
        kind: AlertKind::from_name(&kind).unwrap_or(AlertKind::TestFaulted),
        channel: r.get(3)?,
        test_id: r.get(4)?,
        reason: r.get(5)?,
        text: r.get(6)?,
        raised_unix_ms: r.get(7)?,
    })
}

const ALERT_COLUMNS: &str = "a.id, a.uuid, a.kind, a.channel, a.test_id, a.reason, a.text, \
                             a.raised_unix_ms";

impl Store {
    /// Opens (or creates, private to the daemon's user) the store at `path`.
    pub fn open(path: &Path, now_unix_ms: i64) -> anyhow::Result<Store> {
        let at = || format!("alert store {}", path.display());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(at)?;
        }
        cyclerd_proto::files::create_private(path).with_context(at)?;
        let conn = Connection::open(path).with_context(at)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .with_context(at)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
        )
        .with_context(at)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .with_context(at)?;
        anyhow::ensure!(
            version <= VERSION,
            "{}: made by a newer cyclerd (schema {version}; this one knows {VERSION})",
            at()
        );
        conn.execute_batch(CREATE).with_context(at)?;
        conn.execute_batch(&format!("PRAGMA user_version = {VERSION};"))
            .with_context(at)?;
        conn.execute(
            "DELETE FROM alerts WHERE raised_unix_ms < ?1 AND NOT EXISTS (
                 SELECT 1 FROM deliveries d WHERE d.alert_id = alerts.id
                 AND d.delivered_unix_ms IS NULL)",
            [now_unix_ms - KEEP_MS],
        )
        .with_context(at)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `r` for delivery to its targets, unless an alert with its key is kept already;
    /// whether it is new.
    pub fn insert(&self, r: &Raised) -> rusqlite::Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let added = tx.execute(
            "INSERT OR IGNORE INTO alerts
                 (key, uuid, kind, channel, test_id, reason, text, raised_unix_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                r.key,
                uuid::Uuid::now_v7().to_string(),
                r.kind.name(),
                r.channel,
                r.test_id,
                r.reason,
                r.text,
                r.raised_unix_ms
            ],
        )?;
        if added == 0 {
            return Ok(false);
        }
        let id = tx.last_insert_rowid();
        for t in &r.targets {
            tx.execute(
                "INSERT INTO deliveries (alert_id, target) VALUES (?1, ?2)",
                params![id, t.name()],
            )?;
        }
        tx.commit()?;
        Ok(true)
    }

    /// Every delivery not yet made, oldest alert first, with its attempts so far.
    pub fn pending(&self) -> rusqlite::Result<Vec<(StoredAlert, Target, u32)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {ALERT_COLUMNS}, d.target, d.attempts FROM deliveries d
             JOIN alerts a ON a.id = d.alert_id
             WHERE d.delivered_unix_ms IS NULL ORDER BY a.id, d.target"
        ))?;
        stmt.query_map([], |r| {
            let name: String = r.get(8)?;
            Ok((alert_from(r)?, target(&name), r.get(9)?))
        })?
        .collect()
    }

    /// Records that `target` took alert `id`.
    pub fn delivered(&self, id: i64, to: Target, unix_ms: i64) -> rusqlite::Result<()> {
        self.conn().execute(
            "UPDATE deliveries SET attempts = attempts + 1, last_error = '',
                 delivered_unix_ms = ?3 WHERE alert_id = ?1 AND target = ?2",
            params![id, to.name(), unix_ms],
        )?;
        Ok(())
    }

    /// Records a failed attempt to deliver alert `id` to `target`.
    pub fn failed(&self, id: i64, to: Target, error: &str) -> rusqlite::Result<()> {
        self.conn().execute(
            "UPDATE deliveries SET attempts = attempts + 1, last_error = ?3
                 WHERE alert_id = ?1 AND target = ?2",
            params![id, to.name(), error],
        )?;
        Ok(())
    }

    /// The newest `n` alerts with their deliveries, newest first.
    pub fn recent(&self, n: usize) -> rusqlite::Result<Vec<AlertView>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts a ORDER BY a.id DESC LIMIT ?1"
        ))?;
        let alerts: Vec<StoredAlert> = stmt
            .query_map([n as i64], alert_from)?
            .collect::<rusqlite::Result<_>>()?;
        let mut deliveries = conn.prepare_cached(
            "SELECT target, attempts, last_error, delivered_unix_ms FROM deliveries
             WHERE alert_id = ?1 ORDER BY target",
        )?;
        alerts
            .into_iter()
            .map(|alert| {
                let deliveries = deliveries
                    .query_map([alert.id], |r| {
                        let name: String = r.get(0)?;
                        Ok(Delivery {
                            target: target(&name),
                            attempts: r.get(1)?,
                            last_error: r.get(2)?,
                            delivered_unix_ms: r.get(3)?,
                        })
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                Ok(AlertView { alert, deliveries })
            })
            .collect()
    }

    /// Every kept retention reference: test id, cycle, discharge capacity (Ah).
    pub fn baselines(&self) -> rusqlite::Result<Vec<(String, u32, f64)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT test_id, cycle, discharge_ah FROM baselines")?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect()
    }

    /// Keeps a test's retention reference unless one is kept already.
    pub fn keep_baseline(
        &self,
        test_id: &str,
        cycle: u32,
        discharge_ah: f64,
    ) -> rusqlite::Result<()> {
        let conn = self.conn();
        let known: Option<i64> = conn
            .query_row(
                "SELECT 1 FROM baselines WHERE test_id = ?1",
                [test_id],
                |r| r.get(0),
            )
            .optional()?;
        if known.is_none() {
            conn.execute(
                "INSERT INTO baselines (test_id, cycle, discharge_ah) VALUES (?1, ?2, ?3)",
                params![test_id, cycle, discharge_ah],
            )?;
        }
        Ok(())
    }
}
