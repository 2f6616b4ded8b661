//! Statements both backends run as they are, written once with PostgreSQL's `$N` parameters;
//! [`sqlite`] turns them into SQLite's `?N` (same numbers, so the binding order is the same).

/// A new token; ignored when its id or name is taken (the caller reports the name).
pub(super) const INSERT_TOKEN: &str = "INSERT INTO tokens (token_id, lab, name, secret_hash, \
     created_unix_s, role) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING";
pub(super) const REVOKE_TOKEN: &str =
    "UPDATE tokens SET revoked_unix_s = $2 WHERE name = $1 AND revoked_unix_s IS NULL";
pub(super) const TOKENS: &str = "SELECT token_id, lab, name, created_unix_s, revoked_unix_s, \
     secret_hash, role FROM tokens ORDER BY created_unix_s";
/// Binds only a daemon the hub has no test of: tests uploaded without a lab are assigned to
/// one by a person (`cyclerhub assign`), never claimed by whoever holds a token.
pub(super) const BIND_NEW_DAEMON: &str = "INSERT INTO daemon_labs (daemon_id, lab) \
     SELECT $1, $2 WHERE NOT EXISTS (SELECT 1 FROM tests WHERE daemon_id = $1) \
     ON CONFLICT DO NOTHING";
/// Binds a daemon id to its credential's hash, the first time only.
pub(super) const CLAIM_DAEMON: &str = "INSERT INTO daemon_credentials (daemon_id, secret_hash, \
     bound_unix_s) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
pub(super) const DAEMON_CREDENTIAL: &str =
    "SELECT secret_hash FROM daemon_credentials WHERE daemon_id = $1";
pub(super) const FORGET_DAEMON_CREDENTIAL: &str =
    "DELETE FROM daemon_credentials WHERE daemon_id = $1";
pub(super) const KNOWN_DAEMON: &str = "SELECT EXISTS (SELECT 1 FROM daemons WHERE daemon_id = $1)";
/// A person's assignment: binds or moves the daemon.
pub(super) const ASSIGN_DAEMON: &str = "INSERT INTO daemon_labs (daemon_id, lab) VALUES ($1, $2) \
     ON CONFLICT (daemon_id) DO UPDATE SET lab = excluded.lab";
/// The teams of an assigned daemon's tests, which could not be recorded while it had no lab.
pub(super) const ASSIGN_TEAMS: &str = "INSERT INTO teams (lab, team, first_test_unix_s) \
     SELECT $2, team, min(start_unix_s) FROM tests WHERE daemon_id = $1 AND team IS NOT NULL \
     GROUP BY team ON CONFLICT DO NOTHING";
pub(super) const DAEMON_LAB: &str = "SELECT lab FROM daemon_labs WHERE daemon_id = $1";
pub(super) const DAEMON_LABS: &str = "SELECT daemon_id, lab FROM daemon_labs";
pub(super) const PROTOCOL: &str = "SELECT protocol_source, plan_json FROM tests WHERE test_id = $1";
pub(super) const CELLS: &str = "SELECT cell_id, manufacturer, model, chemistry, form_factor, \
     nominal_capacity_ah, nominal_voltage_v, first_test_unix_s, lab FROM cells \
     ORDER BY lab, cell_id";
/// How a cell row takes in what another says of the same cell: known values stay, gaps are
/// filled, the first test time is the earliest.
macro_rules! merge_cell {
    () => {
        "ON CONFLICT (lab, cell_id) DO UPDATE SET \
         manufacturer = coalesce(cells.manufacturer, excluded.manufacturer), \
         model = coalesce(cells.model, excluded.model), \
         chemistry = coalesce(cells.chemistry, excluded.chemistry), \
         form_factor = coalesce(cells.form_factor, excluded.form_factor), \
         nominal_capacity_ah = coalesce(cells.nominal_capacity_ah, excluded.nominal_capacity_ah), \
         nominal_voltage_v = coalesce(cells.nominal_voltage_v, excluded.nominal_voltage_v), \
         first_test_unix_s = CASE WHEN excluded.first_test_unix_s < cells.first_test_unix_s \
         THEN excluded.first_test_unix_s ELSE cells.first_test_unix_s END"
    };
}
/// Merges what a test's metadata says of its cell into the cell of its lab.
pub(super) const UPSERT_CELL: &str = concat!(
    "INSERT INTO cells (cell_id, manufacturer, model, chemistry, form_factor, \
     nominal_capacity_ah, nominal_voltage_v, first_test_unix_s, lab) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ",
    merge_cell!()
);
/// After a daemon ($1) left lab $2 ('' for none): that lab's cells of the daemon's tests that
/// no test of the lab ran any more.
pub(super) const PRUNE_CELLS: &str = "DELETE FROM cells WHERE lab = $2 \
     AND cell_id IN (SELECT cell_id FROM tests WHERE daemon_id = $1) \
     AND NOT EXISTS (SELECT 1 FROM tests t LEFT JOIN daemon_labs l ON l.daemon_id = t.daemon_id \
     WHERE t.cell_id = cells.cell_id AND coalesce(l.lab, '') = $2)";
/// A daemon assigned to lab $2: the cells its tests ran, as its former lab ($3, '' for none)
/// knew them, become cells of the new lab too (merged with any it has of the same id).
pub(super) const ASSIGN_CELLS: &str = concat!(
    "INSERT INTO cells (cell_id, manufacturer, model, chemistry, form_factor, \
     nominal_capacity_ah, nominal_voltage_v, first_test_unix_s, lab) \
     SELECT cell_id, manufacturer, model, chemistry, form_factor, nominal_capacity_ah, \
     nominal_voltage_v, first_test_unix_s, $2 FROM cells \
     WHERE lab = $3 AND cell_id IN (SELECT cell_id FROM tests WHERE daemon_id = $1) ",
    merge_cell!()
);
pub(super) const INSERT_CHANNEL: &str = "INSERT INTO channels (daemon_id, channel_id, \
     first_test_unix_s) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
pub(super) const LINK_CELL: &str = "UPDATE tests SET cell_id = $2 WHERE test_id = $1";

pub(super) const INSERT_LAB: &str =
    "INSERT INTO labs (lab, created_unix_s) VALUES ($1, $2) ON CONFLICT DO NOTHING";
pub(super) const LABS: &str = "SELECT lab, created_unix_s FROM labs ORDER BY lab";
pub(super) const TEAMS: &str = "SELECT lab, team, first_test_unix_s FROM teams ORDER BY lab, team";
pub(super) const INSERT_TEAM: &str = "INSERT INTO teams (lab, team, first_test_unix_s) \
     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
pub(super) const SET_SCHEMA: &str = "INSERT INTO metadata_schemas (lab, tier, schema_json, \
     updated_unix_s) VALUES ($1, $2, $3, $4) ON CONFLICT (lab, tier) DO UPDATE SET \
     schema_json = excluded.schema_json, updated_unix_s = excluded.updated_unix_s";
pub(super) const REMOVE_SCHEMA: &str = "DELETE FROM metadata_schemas WHERE lab = $1 AND tier = $2";
pub(super) const SCHEMAS: &str = "SELECT tier, schema_json, updated_unix_s \
     FROM metadata_schemas WHERE lab = $1 ORDER BY tier";
/// The inventory keeps each instrument as the latest test described it.
pub(super) const UPSERT_EQUIPMENT: &str = "INSERT INTO equipment (daemon_id, name, family, \
     address, last_test_unix_s) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (daemon_id, name) DO UPDATE SET family = excluded.family, \
     address = excluded.address, last_test_unix_s = excluded.last_test_unix_s \
     WHERE excluded.last_test_unix_s >= equipment.last_test_unix_s";
pub(super) const INSERT_TEST_EQUIPMENT: &str = "INSERT INTO test_equipment (test_key, name, \
     family, address, role) SELECT test_key, $2, $3, $4, $5 FROM tests WHERE test_id = $1 \
     ON CONFLICT DO NOTHING";
pub(super) const TEST_EQUIPMENT: &str = "SELECT e.name, e.family, e.address, e.role \
     FROM test_equipment e JOIN tests t ON t.test_key = e.test_key WHERE t.test_id = $1 \
     ORDER BY e.name";

/// A cycle's summary; a later one of the same cycle replaces it (the cycle went on).
pub(super) const UPSERT_CYCLE: &str = "INSERT INTO cycles (test_key, cycle, complete, \
     start_test_time_s, end_test_time_s, charge_capacity_ah, discharge_capacity_ah, \
     charge_energy_wh, discharge_energy_wh, max_temperature_c, dcir_ohm, first_seq, last_seq) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
     ON CONFLICT (test_key, cycle) DO UPDATE SET complete = excluded.complete, \
     start_test_time_s = excluded.start_test_time_s, end_test_time_s = excluded.end_test_time_s, \
     charge_capacity_ah = excluded.charge_capacity_ah, \
     discharge_capacity_ah = excluded.discharge_capacity_ah, \
     charge_energy_wh = excluded.charge_energy_wh, \
     discharge_energy_wh = excluded.discharge_energy_wh, \
     max_temperature_c = excluded.max_temperature_c, dcir_ohm = excluded.dcir_ohm, \
     first_seq = excluded.first_seq, last_seq = excluded.last_seq";
/// A test's cycles in order.
pub(super) const CYCLES: &str = "SELECT c.cycle, c.complete, c.start_test_time_s, \
     c.end_test_time_s, c.charge_capacity_ah, c.discharge_capacity_ah, c.charge_energy_wh, \
     c.discharge_energy_wh, c.max_temperature_c, c.dcir_ohm, c.first_seq, c.last_seq \
     FROM cycles c JOIN tests t ON t.test_key = c.test_key WHERE t.test_id = $1 ORDER BY c.cycle";

/// A quality finding; a later one of the same run (test, source, check, first seq) replaces
/// it while it is open: a closed finding is final.
pub(super) const UPSERT_FINDING: &str = "INSERT INTO quality_findings (test_key, source, \
     check_name, first_seq, last_seq, open, first_test_time_s, last_test_time_s, missing_s, \
     reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
     ON CONFLICT (test_key, source, check_name, first_seq) DO UPDATE SET \
     last_seq = excluded.last_seq, open = excluded.open, \
     last_test_time_s = excluded.last_test_time_s, missing_s = excluded.missing_s, \
     reason = excluded.reason WHERE quality_findings.open = 1";
/// At a test's end every run of it has ended.
pub(super) const CLOSE_FINDINGS: &str =
    "UPDATE quality_findings SET open = 0 WHERE test_key = $1 AND open = 1";
/// A test's findings, by first seq.
pub(super) const FINDINGS: &str = "SELECT q.source, q.check_name, q.first_seq, q.last_seq, \
     q.open, q.first_test_time_s, q.last_test_time_s, q.missing_s, q.reason \
     FROM quality_findings q JOIN tests t ON t.test_key = q.test_key WHERE t.test_id = $1 \
     ORDER BY q.first_seq, q.check_name, q.source";
/// Every test's findings counted by source and check, with their missing time.
pub(super) const FINDING_TALLIES: &str = "SELECT t.test_id, q.source, q.check_name, \
     count(*), sum(q.missing_s) FROM quality_findings q JOIN tests t ON t.test_key = q.test_key \
     GROUP BY t.test_id, q.source, q.check_name";
/// The hub's own checker state of a test.
pub(super) const QUALITY_STATE: &str = "SELECT state FROM quality_state WHERE test_key = $1";
pub(super) const SET_QUALITY_STATE: &str = "INSERT INTO quality_state (test_key, state) \
     VALUES ($1, $2) ON CONFLICT (test_key) DO UPDATE SET state = excluded.state";
pub(super) const DROP_QUALITY_STATE: &str = "DELETE FROM quality_state WHERE test_key = $1";
/// The plan a test ran (JSON), by its key.
pub(super) const TEST_PLAN: &str = "SELECT plan_json FROM tests WHERE test_key = $1";

/// The lowest `first_seq` a chunk of test $1 holding seq $2 or later can have: the start of
/// the chunk that holds $2 (chunks never overlap), else $2 itself. An index seek.
macro_rules! chunk_floor {
    () => {
        "first_seq >= coalesce((SELECT max(first_seq) FROM sample_chunks \
         WHERE test_key = $1 AND first_seq <= $2), $2)"
    };
}
/// `(first_seq, last_seq)` of the chunks of test $1 holding any seq in [$2, $3].
pub(super) const HELD_CHUNKS: &str = concat!(
    "SELECT first_seq, last_seq FROM sample_chunks \
     WHERE test_key = $1 AND first_seq <= $3 AND last_seq >= $2 AND ",
    chunk_floor!(),
    " ORDER BY first_seq"
);
/// A chunk; ignored when the test has one at the same first seq.
pub(super) const INSERT_CHUNK: &str = "INSERT INTO sample_chunks (test_key, first_seq, \
     last_seq, n_samples, t_min, t_max, temps, data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT DO NOTHING";
/// `(first_seq, data)` of the chunk of test $1 that ends at seq $2, if it holds at most $3.
pub(super) const CHUNK_ENDING_AT: &str = "SELECT first_seq, data FROM sample_chunks \
     WHERE test_key = $1 AND last_seq = $2 AND n_samples <= $3 AND first_seq = \
     (SELECT max(first_seq) FROM sample_chunks WHERE test_key = $1 AND first_seq <= $2)";
/// The chunk of test $1 at first seq $2, grown.
pub(super) const REPLACE_CHUNK: &str = "UPDATE sample_chunks SET last_seq = $3, n_samples = $4, \
     t_min = $5, t_max = $6, temps = $7, data = $8 WHERE test_key = $1 AND first_seq = $2";
pub(super) const ADD_SAMPLES: &str =
    "UPDATE tests SET sample_count = sample_count + $2 WHERE test_key = $1";
/// Up to $3 chunks of test $1, `(first_seq, last_seq, data)`, from the one holding seq $2 on.
pub(super) const CHUNK_PAGE: &str = concat!(
    "SELECT first_seq, last_seq, data FROM sample_chunks WHERE test_key = $1 AND last_seq >= $2 AND ",
    chunk_floor!(),
    " ORDER BY first_seq LIMIT $3"
);
/// The first seq of the first chunk of test $1 that reaches test time $2 (an index seek).
pub(super) const FIRST_SEQ_AT: &str = "SELECT min(first_seq) FROM sample_chunks \
     WHERE test_key = $1 AND t_max >= $2";
/// The largest test time of test $1's samples (an index read: the chunks' `t_max`).
pub(super) const LAST_TEST_TIME: &str = "SELECT max(t_max) FROM sample_chunks WHERE test_key = $1";
/// Stores the summary of the chunk of test $1 at first seq $2 (replacing one it had).
pub(super) const SET_SUMMARY: &str = "INSERT INTO chunk_summaries (test_key, first_seq, summary) \
     VALUES ($1, $2, $3) ON CONFLICT (test_key, first_seq) DO UPDATE SET summary = excluded.summary";
/// Up to $3 chunks of test $1 from first seq $2 on, for a plot of test time $4 to $5 with
/// $6 pixel columns per second: `(first_seq, last_seq, t_min, t_max, summary, data)`, the data
/// only when the chunk has no summary or does not fall inside one pixel column of the window
/// (the column of time t is trunc((t - $4) * $6), as `http::plot` computes it). `$trunc` is the
/// backend's truncation of a non-negative float.
macro_rules! plot_page {
    ($open:literal, $close:literal) => {
        concat!(
            "SELECT c.first_seq, c.last_seq, c.t_min, c.t_max, s.summary, \
             CASE WHEN s.summary IS NULL OR c.t_min < $4 OR c.t_max > $5 OR ",
            $open,
            "(c.t_min - $4) * $6",
            $close,
            " <> ",
            $open,
            "(c.t_max - $4) * $6",
            $close,
            " THEN c.data END \
             FROM sample_chunks c LEFT JOIN chunk_summaries s \
             ON s.test_key = c.test_key AND s.first_seq = c.first_seq \
             WHERE c.test_key = $1 AND c.first_seq >= $2 ORDER BY c.first_seq LIMIT $3"
        )
    };
}
pub(super) const PLOT_PAGE_SQLITE: &str = plot_page!("CAST(", " AS INTEGER)");
pub(super) const PLOT_PAGE_PG: &str = plot_page!("trunc(", ")");
/// Where the summary backfill stands (no row: done).
pub(super) const BACKFILL_CURSOR: &str = "SELECT test_key, first_seq FROM summary_backfill";
/// Up to $3 chunks after `(test_key, first_seq)` = ($1, $2), in that order.
pub(super) const CHUNKS_AFTER: &str = "SELECT test_key, first_seq, data FROM sample_chunks \
     WHERE (test_key, first_seq) > ($1, $2) ORDER BY test_key, first_seq LIMIT $3";
pub(super) const BACKFILL_SUMMARY: &str = "INSERT INTO chunk_summaries (test_key, first_seq, \
     summary) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
pub(super) const MOVE_BACKFILL: &str = "UPDATE summary_backfill SET test_key = $1, first_seq = $2";
pub(super) const END_BACKFILL: &str = "DELETE FROM summary_backfill";
/// Whether any sample of test $1 has a cell temperature, and an ambient one.
pub(super) const HAS_TEMPERATURES: &str = "SELECT \
     EXISTS (SELECT 1 FROM sample_chunks WHERE test_key = $1 AND (temps & 1) <> 0), \
     EXISTS (SELECT 1 FROM sample_chunks WHERE test_key = $1 AND (temps & 2) <> 0)";
/// The former one-row-per-sample table (before chunks), read to convert it.
pub(super) const NEXT_LEGACY_TEST: &str =
    "SELECT test_key FROM samples WHERE test_key > $1 ORDER BY test_key LIMIT 1";
pub(super) const HAS_CHUNKS: &str =
    "SELECT EXISTS (SELECT 1 FROM sample_chunks WHERE test_key = $1)";
pub(super) const LEGACY_PAGE: &str = "SELECT seq, test_time_s, unix_time_s, voltage_v, \
     current_a, cycle, step, charge_capacity_ah, discharge_capacity_ah, charge_energy_wh, \
     discharge_energy_wh, temperature_c, ambient_temperature_c, plan_step \
     FROM samples WHERE test_key = $1 AND seq >= $2 ORDER BY seq LIMIT $3";

/// `statement` with SQLite's parameter markers.
pub(super) fn sqlite(statement: &str) -> String {
    statement.replace('$', "?")
}
