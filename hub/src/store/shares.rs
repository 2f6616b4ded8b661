//! What the store keeps for sharing between hubs (`cyclerhub share`), written once for both
//! backends as plain statements over [`Val`]s.
//!
//! On the sending hub: the shares (`shares`), each share's log of entries (`share_log`, ids
//! assigned once and for good, so that the receiving hub's resume point keeps its meaning
//! across restarts of either side; an entry names what it carries, which is re-read when it is
//! sent), and how far each shared test is logged (`share_progress`). On the receiving hub:
//! where each share stream comes from (`share_origins`), the provenance of its tests.

use std::collections::HashMap;

use super::{HubStore, StoreError, now_unix_s};

/// A statement parameter or a result column, the few types the share tables use.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Val {
    /// An integer column.
    Int(i64),
    /// A floating-point column.
    Real(f64),
    /// A text column; `None` for NULL (the share tables' only nullable columns are text, but
    /// one is a time: see [`Val::real_or_null`]).
    Text(Option<String>),
}

impl Val {
    fn text(s: &str) -> Val {
        Val::Text(Some(s.to_owned()))
    }

    fn int(&self) -> i64 {
        match self {
            Val::Int(v) => *v,
            Val::Real(v) => *v as i64,
            Val::Text(_) => 0,
        }
    }

    fn real_or_null(&self) -> Option<f64> {
        match self {
            Val::Real(v) => Some(*v),
            Val::Int(v) => Some(*v as f64),
            Val::Text(_) => None,
        }
    }

    fn string(&self) -> Option<String> {
        match self {
            Val::Text(s) => s.clone(),
            _ => None,
        }
    }
}

/// One share, as `cyclerhub share add` stored it and the running hub updates it.
#[derive(Debug, Clone, PartialEq)]
pub struct ShareRow {
    /// Its name, unique on this hub (`share remove NAME`).
    pub name: String,
    /// The receiving hub's gRPC URL.
    pub target: String,
    /// The receiving hub's CA certificate (PEM) for an `https://` target.
    pub ca_file: Option<String>,
    /// The file holding the receiving hub's token; read at every connection, never stored.
    pub token_file: Option<String>,
    /// The lab secret the pseudonyms are made with; `None` shares without anonymising.
    pub salt_file: Option<String>,
    /// What the share selects, as JSON (`crate::share::Selection`).
    pub selection: String,
    /// Shares only what matched when it was added, then is done.
    pub once: bool,
    /// How this hub names itself to the receiver (its provenance there).
    pub origin: String,
    /// The daemon id the receiving hub knows this share's stream by.
    pub stream_id: String,
    /// The stream's credential at the receiving hub (a daemon secret).
    pub stream_secret: String,
    /// The stream's store epoch: a new one for every share added.
    pub epoch: u64,
    /// When it was added, Unix seconds.
    pub created_unix_s: f64,
    /// The highest log entry the receiver acknowledged.
    pub acked: u64,
    /// `waiting` (not connected yet), `streaming`, `retrying` or `done` (a `--once` share).
    pub state: String,
    /// Why the last connection failed, if it did.
    pub last_error: Option<String>,
    /// When `acked`, `state` or `last_error` last changed.
    pub updated_unix_s: Option<f64>,
    /// The highest entry logged so far (`acked` of this many: all sent).
    pub logged: u64,
}

/// One entry of a share's log: what to send under id `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct ShareLogEntry {
    /// The entry id at the receiver.
    pub id: u64,
    /// The test (this hub's id).
    pub test_id: String,
    /// `registered`, `samples`, `event`, `cycle` or `ended`.
    pub kind: String,
    /// `samples`: the first seq; `event`: its index in the test's events; `cycle`: its number.
    pub a: i64,
    /// `samples`: the seq after the last.
    pub b: i64,
}

/// How far one shared test is logged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShareProgress {
    /// The seq the next samples entry starts at.
    pub next_seq: u64,
    /// Events logged (the index of the next).
    pub events: u64,
    /// The last complete cycle logged (cycles complete in order).
    pub cycles: u32,
    /// The test's end is logged.
    pub ended: bool,
}

/// Where a share stream comes from, as the sending hub declares it in the Upload call's
/// `cyclerd-share-bin` metadata (JSON); the stream's token says which lab it writes to.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ShareOrigin {
    /// The sending hub's name for itself (`cyclerhub share add --origin`).
    pub hub: String,
    /// The share's name at the sending hub.
    pub share: String,
    /// Whether identifiers were replaced by the sending lab's pseudonyms.
    pub anonymised: bool,
    /// What the share selects, in words, without identifiers when anonymised.
    pub selection: String,
}

/// Where a test of this hub came from, when another hub shared it.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedFrom {
    /// The sending hub, as it names itself.
    pub hub: String,
    /// The share's name there.
    pub share: String,
    /// Whether it replaced identifiers by its lab's pseudonyms.
    pub anonymised: bool,
    /// What the share selects, in the sending hub's words.
    pub selection: String,
    /// When this hub first heard from the share.
    pub since_unix_s: f64,
}

const SHARE_COLUMNS: &str = "s.name, s.target, s.ca_file, s.token_file, s.salt_file, \
    s.selection, s.once, s.origin, s.stream_id, s.stream_secret, s.epoch, s.created_unix_s, \
    s.acked, s.state, s.last_error, s.updated_unix_s";

const INSERT_SHARE: &str = "INSERT INTO shares (name, target, ca_file, token_file, salt_file, \
    selection, once, origin, stream_id, stream_secret, epoch, created_unix_s) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING";
const DELETE_SHARE: &str = "DELETE FROM shares WHERE name = $1";
const DELETE_SHARE_LOG: &str = "DELETE FROM share_log WHERE share = $1";
const DELETE_SHARE_PROGRESS: &str = "DELETE FROM share_progress WHERE share = $1";
const SHARE_STATE: &str = "UPDATE shares SET acked = $2, state = $3, last_error = $4, \
    updated_unix_s = $5 WHERE name = $1";
/// An entry with the next id of its share, in the transaction that logs it.
const APPEND_LOG: &str = "INSERT INTO share_log (share, id, test_id, kind, a, b) \
    SELECT CAST($1 AS text), coalesce(max(id), 0) + 1, CAST($2 AS text), CAST($3 AS text), \
    CAST($4 AS bigint), CAST($5 AS bigint) FROM share_log WHERE share = $1";
const SET_PROGRESS: &str = "INSERT INTO share_progress (share, test_id, next_seq, events, \
    cycles, ended) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (share, test_id) DO UPDATE SET \
    next_seq = excluded.next_seq, events = excluded.events, cycles = excluded.cycles, \
    ended = excluded.ended";
const PROGRESS: &str = "SELECT test_id, next_seq, events, cycles, ended FROM share_progress \
    WHERE share = $1";
const LOG_PAGE: &str = "SELECT id, test_id, kind, a, b FROM share_log \
    WHERE share = $1 AND id > $2 ORDER BY id LIMIT $3";
const RECORD_ORIGIN: &str = "INSERT INTO share_origins (daemon_id, hub, share, anonymised, \
    selection, first_unix_s, last_unix_s) VALUES ($1, $2, $3, $4, $5, $6, $6) \
    ON CONFLICT (daemon_id) DO UPDATE SET hub = excluded.hub, share = excluded.share, \
    anonymised = excluded.anonymised, selection = excluded.selection, \
    last_unix_s = excluded.last_unix_s";
const ORIGINS: &str = "SELECT daemon_id, hub, share, anonymised, selection, first_unix_s \
    FROM share_origins";

impl HubStore {
    /// Stores a new share; refused when the name is taken.
    pub fn add_share(&self, s: &ShareRow) -> Result<(), StoreError> {
        let opt = |v: &Option<String>| Val::Text(v.clone());
        let changed = self.backend.run(&[(
            INSERT_SHARE,
            vec![
                Val::text(&s.name),
                Val::text(&s.target),
                opt(&s.ca_file),
                opt(&s.token_file),
                opt(&s.salt_file),
                Val::text(&s.selection),
                Val::Int(i64::from(s.once)),
                Val::text(&s.origin),
                Val::text(&s.stream_id),
                Val::text(&s.stream_secret),
                Val::Int(super::epoch_to_sql(s.epoch)),
                Val::Real(s.created_unix_s),
            ],
        )])?;
        if changed.first() == Some(&1) {
            Ok(())
        } else {
            Err(StoreError::Refused(format!(
                "a share named {:?} exists already; remove it first or choose another name",
                s.name
            )))
        }
    }

    /// Removes a share and its log: the running hub stops its stream. `false` when there was
    /// none of that name.
    pub fn remove_share(&self, name: &str) -> Result<bool, StoreError> {
        let name = || vec![Val::text(name)];
        let changed = self.backend.run(&[
            (DELETE_SHARE, name()),
            (DELETE_SHARE_LOG, name()),
            (DELETE_SHARE_PROGRESS, name()),
        ])?;
        Ok(changed.first().is_some_and(|n| *n > 0))
    }

    /// Every share, by name, with how far it got.
    pub fn shares(&self) -> Result<Vec<ShareRow>, StoreError> {
        let statement = format!(
            "SELECT {SHARE_COLUMNS}, (SELECT coalesce(max(l.id), 0) FROM share_log l \
             WHERE l.share = s.name) FROM shares s ORDER BY s.name"
        );
        let rows = self.backend.rows(&statement, &[])?;
        Ok(rows.iter().map(|r| share_row(r)).collect())
    }

    /// Records where a share stream has got to: the receiver's ack, its state, the last error.
    pub fn set_share_state(
        &self,
        name: &str,
        acked: u64,
        state: &str,
        last_error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.backend.run(&[(
            SHARE_STATE,
            vec![
                Val::text(name),
                Val::Int(i64::try_from(acked).unwrap_or(i64::MAX)),
                Val::text(state),
                Val::Text(last_error.map(str::to_owned)),
                Val::Real(now_unix_s()),
            ],
        )])?;
        Ok(())
    }

    /// How far each test of share `name` is logged, by test id.
    pub fn share_progress(&self, name: &str) -> Result<HashMap<String, ShareProgress>, StoreError> {
        let rows = self.backend.rows(PROGRESS, &[Val::text(name)])?;
        Ok(rows
            .iter()
            .map(|r| {
                let p = ShareProgress {
                    next_seq: u64::try_from(r[1].int()).unwrap_or(0),
                    events: u64::try_from(r[2].int()).unwrap_or(0),
                    cycles: u32::try_from(r[3].int()).unwrap_or(0),
                    ended: r[4].int() != 0,
                };
                (r[0].string().unwrap_or_default(), p)
            })
            .collect())
    }

    /// Appends `entries` (kind, a, b) of `test_id` to share `name`'s log, with the next ids,
    /// and sets the test's progress, in one transaction: both, or neither.
    pub fn log_share_entries(
        &self,
        name: &str,
        test_id: &str,
        entries: &[(&'static str, i64, i64)],
        progress: &ShareProgress,
    ) -> Result<(), StoreError> {
        let mut statements: Vec<(&str, Vec<Val>)> = entries
            .iter()
            .map(|(kind, a, b)| {
                (
                    APPEND_LOG,
                    vec![
                        Val::text(name),
                        Val::text(test_id),
                        Val::text(kind),
                        Val::Int(*a),
                        Val::Int(*b),
                    ],
                )
            })
            .collect();
        statements.push((
            SET_PROGRESS,
            vec![
                Val::text(name),
                Val::text(test_id),
                Val::Int(i64::try_from(progress.next_seq).unwrap_or(i64::MAX)),
                Val::Int(i64::try_from(progress.events).unwrap_or(i64::MAX)),
                Val::Int(i64::from(progress.cycles)),
                Val::Int(i64::from(progress.ended)),
            ],
        ));
        self.backend.run(&statements)?;
        Ok(())
    }

    /// Up to `limit` entries of share `name`'s log after id `after`, in id order.
    pub fn share_log(
        &self,
        name: &str,
        after: u64,
        limit: u64,
    ) -> Result<Vec<ShareLogEntry>, StoreError> {
        let rows = self.backend.rows(
            LOG_PAGE,
            &[
                Val::text(name),
                Val::Int(i64::try_from(after).unwrap_or(i64::MAX)),
                Val::Int(i64::try_from(limit).unwrap_or(i64::MAX)),
            ],
        )?;
        Ok(rows
            .iter()
            .map(|r| ShareLogEntry {
                id: u64::try_from(r[0].int()).unwrap_or(0),
                test_id: r[1].string().unwrap_or_default(),
                kind: r[2].string().unwrap_or_default(),
                a: r[3].int(),
                b: r[4].int(),
            })
            .collect())
    }

    /// Records that `daemon_id`'s stream is a share from another hub (its Hello said so).
    pub fn record_share_origin(
        &self,
        daemon_id: &str,
        origin: &ShareOrigin,
    ) -> Result<(), StoreError> {
        self.backend.run(&[(
            RECORD_ORIGIN,
            vec![
                Val::text(daemon_id),
                Val::text(&origin.hub),
                Val::text(&origin.share),
                Val::Int(i64::from(origin.anonymised)),
                Val::text(&origin.selection),
                Val::Real(now_unix_s()),
            ],
        )])?;
        Ok(())
    }

    /// Where the tests of each share stream came from, by its daemon id.
    pub fn share_origins(&self) -> Result<HashMap<String, SharedFrom>, StoreError> {
        let rows = self.backend.rows(ORIGINS, &[])?;
        Ok(rows
            .iter()
            .map(|r| {
                let from = SharedFrom {
                    hub: r[1].string().unwrap_or_default(),
                    share: r[2].string().unwrap_or_default(),
                    anonymised: r[3].int() != 0,
                    selection: r[4].string().unwrap_or_default(),
                    since_unix_s: r[5].real_or_null().unwrap_or(0.0),
                };
                (r[0].string().unwrap_or_default(), from)
            })
            .collect())
    }
}

fn share_row(r: &[Val]) -> ShareRow {
    let text = |i: usize| r[i].string().unwrap_or_default();
    ShareRow {
        name: text(0),
        target: text(1),
        ca_file: r[2].string(),
        token_file: r[3].string(),
        salt_file: r[4].string(),
        selection: text(5),
        once: r[6].int() != 0,
        origin: text(7),
        stream_id: text(8),
        stream_secret: text(9),
        epoch: super::epoch_from_sql(r[10].int()),
        created_unix_s: r[11].real_or_null().unwrap_or(0.0),
        acked: u64::try_from(r[12].int()).unwrap_or(0),
        state: text(13),
        last_error: r[14].string(),
        updated_unix_s: r[15].real_or_null(),
        logged: u64::try_from(r[16].int()).unwrap_or(0),
    }
}
