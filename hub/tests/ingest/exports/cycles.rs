//! Per-cycle results in exports: the table beside every BDF export, efficiency in Battery
//! Archive's cycle file, and `cyclerhub cycles`.

use super::*;

/// The per-cycle table's header, pinned here as a reader matches on it.
const CYCLES_HEADER: &str = "Cycle Count / 1,Start Test Time / s,Duration / s,\
Charging Capacity / Ah,Discharging Capacity / Ah,Charging Energy / Wh,Discharging Energy / Wh,\
Coulombic Efficiency / 1,Energy Efficiency / 1,Mean Charge Voltage / V,\
Mean Discharge Voltage / V,Max Temperature / degC,Capacity Retention / 1,\
DC Internal Resistance / ohm,Cycle Complete / 1";

async fn a_per_cycle_table_is_written_beside_every_bdf_export_with_the_documented_columns(
    backend: Backend,
) {
    // A test stored without per-cycle results: the hub computes them from its samples.
    let mut hub = hub_with_cycling_test(backend, HALF_CYCLE).await;
    let dir = tempfile::tempdir().unwrap();
    let half_ah = HALF_CYCLE as f64 / 3600.0;
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    for (format, output, data, cycles) in [
        (Format::BdfCsv, "run.csv", "run.bdf.csv", "run.cycles.csv"),
        (
            Format::BdfParquet,
            "run.parquet",
            "run.bdf.parquet",
            "run.cycles.parquet",
        ),
    ] {
        let exported =
            export::export_files(&hub.store, TEST_ID, format, &dir.path().join(output), None)
                .expect("export");
        let files: Vec<&str> = exported
            .files
            .iter()
            .map(|f| f.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(
            files,
            [data, cycles, &format!("{data}.metadata.json")],
            "the per-cycle table sits beside the BDF file"
        );
        let table = if format == Format::BdfCsv {
            BdfTable::from_csv(&exported.files[1])
        } else {
            BdfTable::from_parquet(&exported.files[1])
        };
        assert_eq!(table.header.join(","), CYCLES_HEADER, "{cycles}");
        assert_eq!(table.column("Cycle Count / 1"), [1.0, 2.0, 3.0]);
        for c in 0..CYCLES as usize {
            let at = |name: &str| table.column(name)[c];
            assert!(close(at("Charging Capacity / Ah"), half_ah), "{cycles}");
            assert!(close(at("Discharging Capacity / Ah"), half_ah));
            assert!(close(at("Coulombic Efficiency / 1"), 1.0));
            assert!(close(at("Energy Efficiency / 1"), 3.6 / 3.7));
            assert!(close(at("Mean Charge Voltage / V"), 3.7));
            assert!(close(at("Mean Discharge Voltage / V"), 3.6));
            assert!(close(at("Capacity Retention / 1"), 1.0));
            assert!(close(at("Duration / s"), (2 * HALF_CYCLE - 1) as f64));
            assert!(close(
                at("Start Test Time / s"),
                (c * 2 * HALF_CYCLE) as f64
            ));
            assert!(at("Max Temperature / degC") > 25.0);
            assert!(
                at("DC Internal Resistance / ohm").is_nan(),
                "no rest to step out of: no resistance, an empty cell"
            );
            assert_eq!(at("Cycle Complete / 1"), 1.0);
        }
        let json = read_json(exported.files.last().unwrap());
        let listed = &json["export"]["files"][1];
        assert_eq!(listed["role"], "cycles");
        assert_eq!(names(&listed["columns"]).join(","), CYCLES_HEADER);
    }
    hub.shutdown().await;
}

async fn the_battery_archive_cycle_file_carries_efficiency_from_the_daemons_cycle_rows(
    backend: Backend,
) {
    let mut hub = hub_with_cycling_test(backend, HALF_CYCLE).await;
    // The daemon's summary of cycle 2 (it saw samples the hub never got): the cycle file takes
    // it; cycles 1 and 3, which it has none of, take the timeseries' values.
    let (mut up, resume) = hub.upload("daemon-a", 1).await;
    let summary = cyclerd_proto::ingest::CycleSummary {
        test_id: TEST_ID.into(),
        cycle: 2,
        complete: true,
        start_test_time_s: 1000.0,
        end_test_time_s: 1999.0,
        charge_capacity_ah: 0.2,
        discharge_capacity_ah: 0.19,
        charge_energy_wh: 0.74,
        discharge_energy_wh: 0.684,
        max_temperature_c: 25.6,
        dcir_ohm: f64::NAN,
        first_seq: 1000,
        last_seq: 1999,
    };
    let id = resume + 1;
    up.send_entries([entry(id, Body::Cycle(summary))]).await;
    assert!(up.until_ack(id).await.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let exported = export::export_files(
        &hub.store,
        TEST_ID,
        Format::BatteryArchive,
        &dir.path().join("ba"),
        None,
    )
    .expect("export");
    let cy = read_csv(&exported.files[1]);
    assert_eq!(
        cy[0][12..],
        ["Coulombic_Efficiency", "Energy_Efficiency"],
        "{:?}",
        cy[0]
    );
    let num = |s: &str| s.parse::<f64>().unwrap();
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    assert_eq!(cy.len(), 1 + CYCLES as usize);
    let stored = &cy[2];
    assert_eq!((num(&stored[8]), num(&stored[9])), (0.2, 0.19));
    assert!(close(num(&stored[12]), 0.95), "{stored:?}");
    assert!(close(num(&stored[13]), 0.684 / 0.74), "{stored:?}");
    for row in [&cy[1], &cy[3]] {
        assert!(close(num(&row[8]), HALF_CYCLE as f64 / 3600.0), "{row:?}");
        assert!(close(num(&row[12]), 1.0), "{row:?}");
        assert!(close(num(&row[13]), 3.6 / 3.7), "{row:?}");
    }
    let json = read_json(exported.files.last().unwrap());
    let columns = names(&json["export"]["files"][1]["columns"]);
    assert_eq!(columns.join(","), cy[0].join(","));
    hub.shutdown().await;
}

#[tokio::test]
async fn cyclerhub_cycles_prints_an_aligned_table_in_80_columns_or_the_export_csv() {
    let mut hub = hub_with_cycling_test(Backend::Sqlite, HALF_CYCLE).await;
    let db = hub.db.clone();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cyclerhub(&args)
        })
    };
    let args = |from: &[&str], more: &[&str]| -> Vec<String> {
        ["cycles"]
            .iter()
            .chain(from)
            .chain(more)
            .map(|s| s.to_string())
            .collect()
    };
    let url = format!("http://{}", hub.addr);
    let mut tables = Vec::new();
    // From the database, and from the running hub: the same table.
    for from in [["--db", db.as_str()], ["--hub", url.as_str()]] {
        let out = run(args(&from, &[TEST_ID])).await.unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        tables.push(String::from_utf8(out.stdout).unwrap());
    }
    assert_eq!(tables[0], tables[1]);
    let table = &tables[0];
    println!("{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines.iter().all(|l| l.chars().count() <= 80),
        "wider than 80 columns:\n{table}"
    );
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "cycle", "duration", "charge", "dischg", "CE", "EE", "V", "chg", "V", "dch", "max",
            "T", "retent.", "DCIR"
        ]
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["h", "Ah", "Ah", "%", "%", "V", "V", "°C", "%", "mΩ"]
    );
    // Cycle 1: 500 s of charge and 500 s of discharge at 1 A, sampled every second; no
    // resistance measured: its column is blank, so the row ends at the retention.
    let cells: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "1", "0.28", "0.1389", "0.1389", "100.00", "97.30", "3.700", "3.600", "25.6", "100.00"
        ],
        "{table}"
    );
    // Every column is right-aligned under its title: the row ends where `retent.` does.
    let end = lines[0].find("retent.").unwrap() + "retent.".len();
    assert_eq!(lines[2].len(), end, "{table}");
    assert_eq!(lines.len(), 2 + CYCLES as usize + 2, "{table}");
    assert!(
        lines[5].contains("cycle 1's, the first full cycle"),
        "{table}"
    );
    assert!(
        lines[6].contains("computed by the hub from the samples"),
        "{table}"
    );

    let out = run(args(&["--db", &db], &[TEST_ID, "--csv"]))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let csv = String::from_utf8(out.stdout).unwrap();
    let csv: Vec<&str> = csv.lines().collect();
    assert_eq!(csv[0], CYCLES_HEADER);
    assert_eq!(csv.len(), 1 + CYCLES as usize);
    assert!(csv[1].starts_with("1,0,999,"), "{}", csv[1]);

    let unknown = "0190a0c0-0000-7000-8000-00000000dead";
    for from in [["--db", db.as_str()], ["--hub", url.as_str()]] {
        let out = run(args(&from, &[unknown])).await.unwrap();
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains(&format!("no test with id \"{unknown}\"")),
            "{}",
            stderr(&out)
        );
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }
    hub.shutdown().await;
}

on_both_backends!(
    a_per_cycle_table_is_written_beside_every_bdf_export_with_the_documented_columns,
    the_battery_archive_cycle_file_carries_efficiency_from_the_daemons_cycle_rows,
);
