//! From a result row to each row type, written once for both backends: `$r.$get(i)` reads
//! column `i` (`get` on a rusqlite row, `try_get` on a postgres one), and `?` turns either
//! library's error into the caller's. The column order is the one the queries select.

macro_rules! test_row_raw {
    ($r:ident . $get:ident) => {
        TestRowRaw {
            row: TestRow {
                test_id: $r.$get(0)?,
                daemon_id: $r.$get(1)?,
                channel_id: $r.$get(2)?,
                protocol_name: $r.$get(3)?,
                metadata: Default::default(),
                start_unix_s: $r.$get(5)?,
                end_unix_s: $r.$get(6)?,
                outcome: $r.$get(7)?,
                reason: $r.$get(8)?,
                sample_count: u64_from_sql($r.$get(9)?),
                expected_samples: $r.$get::<_, Option<i64>>(10)?.map(u64_from_sql),
                team: $r.$get(11)?,
                metadata_problems: Vec::new(),
            },
            metadata_json: $r.$get(4)?,
            problems_json: $r.$get(12)?,
        }
    };
}

macro_rules! sample_row {
    ($r:ident . $get:ident) => {
        SampleRow {
            seq: u64_from_sql($r.$get(0)?),
            test_time_s: $r.$get(1)?,
            unix_time_s: $r.$get(2)?,
            voltage_v: $r.$get(3)?,
            current_a: $r.$get(4)?,
            cycle: u32_from_sql($r.$get(5)?),
            step: u32_from_sql($r.$get(6)?),
            charge_capacity_ah: $r.$get(7)?,
            discharge_capacity_ah: $r.$get(8)?,
            charge_energy_wh: $r.$get(9)?,
            discharge_energy_wh: $r.$get(10)?,
            temperature_c: $r.$get(11)?,
            ambient_temperature_c: $r.$get(12)?,
        }
    };
}

macro_rules! event_row {
    ($r:ident . $get:ident) => {
        EventRow {
            unix_time_s: $r.$get(0)?,
            test_time_s: $r.$get(1)?,
            kind: $r.$get(2)?,
            message: $r.$get(3)?,
            step: u32_from_sql($r.$get(4)?),
            cycle: u32_from_sql($r.$get(5)?),
        }
    };
}

macro_rules! rejection_row {
    ($r:ident . $get:ident) => {
        RejectionRow {
            daemon_id: $r.$get(0)?,
            store_epoch: epoch_from_sql($r.$get(1)?),
            entry_id: u64_from_sql($r.$get(2)?),
            kind: $r.$get(3)?,
            test_id: $r.$get(4)?,
            reason: $r.$get(5)?,
        }
    };
}

/// A token and its stored secret hash, as [`super::sql::TOKENS`] selects them.
macro_rules! token_row {
    ($r:ident . $get:ident) => {
        (
            TokenRow {
                token_id: $r.$get(0)?,
                lab: $r.$get(1)?,
                name: $r.$get(2)?,
                created_unix_s: $r.$get(3)?,
                revoked_unix_s: $r.$get(4)?,
                role: crate::auth::Role::from_stored(&$r.$get::<_, String>(6)?),
            },
            $r.$get(5)?,
        )
    };
}

/// As [`super::sql::CELLS`] selects it.
macro_rules! cell_row {
    ($r:ident . $get:ident) => {
        CellRow {
            cell_id: $r.$get(0)?,
            manufacturer: $r.$get(1)?,
            model: $r.$get(2)?,
            chemistry: $r.$get(3)?,
            form_factor: $r.$get(4)?,
            nominal_capacity_ah: $r.$get(5)?,
            nominal_voltage_v: $r.$get(6)?,
            first_test_unix_s: $r.$get(7)?,
            lab: $r.$get(8)?,
        }
    };
}

/// As [`super::sql::TEAMS`] selects it.
macro_rules! team_row {
    ($r:ident . $get:ident) => {
        TeamRow {
            lab: $r.$get(0)?,
            team: $r.$get(1)?,
            first_test_unix_s: $r.$get(2)?,
        }
    };
}

/// As [`super::sql::SCHEMAS`] selects it.
macro_rules! schema_row {
    ($r:ident . $get:ident) => {
        SchemaRow {
            tier: $r.$get(0)?,
            schema_json: $r.$get(1)?,
            updated_unix_s: $r.$get(2)?,
        }
    };
}

/// As [`super::sql::TEST_EQUIPMENT`] selects it.
macro_rules! equipment_row {
    ($r:ident . $get:ident) => {
        Equipment {
            name: $r.$get(0)?,
            family: $r.$get(1)?,
            address: $r.$get(2)?,
            role: $r.$get(3)?,
        }
    };
}
