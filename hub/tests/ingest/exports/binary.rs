//! Exports through the real `cyclerhub` binary: every format end to end, and what it refuses.

use super::*;

#[tokio::test]
async fn exporting_through_the_cyclerhub_binary_writes_every_format_end_to_end() {
    let mut hub = hub_with_cycling_test(Backend::Sqlite, HALF_CYCLE).await;
    hub.shutdown().await;
    let db = hub.db.clone();
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();

    // Without -o, BDF CSV on standard output, as before: the library's bytes exactly.
    let out = cyclerhub(&["export", "--db", &db, TEST_ID]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut expected = Vec::new();
    export::write_bdf_csv(&hub.store, TEST_ID, &mut expected).unwrap();
    assert_eq!(out.stdout, expected);

    for (format, output) in [
        ("bdf-csv", "run.csv"),
        ("bdf-parquet", "run.parquet"),
        ("battery-archive", "run"),
    ] {
        let out = cyclerhub(&[
            "export",
            "--db",
            &db,
            TEST_ID,
            "--format",
            format,
            "-o",
            &at(output),
        ]);
        assert!(out.status.success(), "{format}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("wrote {SAMPLES} samples of {TEST_ID}")),
            "{}",
            stderr(&out)
        );
    }
    let mut written: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|f| f.unwrap().file_name().into_string().unwrap())
        .collect();
    written.sort();
    assert_eq!(
        written,
        [
            "run.bdf.csv",
            "run.bdf.csv.metadata.json",
            "run.bdf.parquet",
            "run.bdf.parquet.metadata.json",
            "run.cycles.csv",
            "run.cycles.parquet",
            "run.metadata.json",
            "run_cycle_data.csv",
            "run_timeseries.csv",
        ]
    );
    // `run.csv` and `run.parquet` were named with the suffixes BDF's validator accepts.
    assert_eq!(fs::read(at("run.bdf.csv")).unwrap(), expected);
    let reader = SerializedFileReader::new(fs::File::open(at("run.bdf.parquet")).unwrap()).unwrap();
    assert_eq!(reader.metadata().file_metadata().num_rows(), SAMPLES as i64);

    // Anonymised, with the salt from --salt and from the environment: the same pseudonyms.
    fs::write(dir.path().join("lab-secret"), SECRET).unwrap();
    let anonymised = tempfile::tempdir().unwrap();
    let a = anonymised.path().join("a.bdf.parquet");
    let b = anonymised.path().join("b.bdf.parquet");
    let out = cyclerhub(&[
        "export",
        "--db",
        &db,
        TEST_ID,
        "--format",
        "bdf-parquet",
        "-o",
        a.to_str().unwrap(),
        "--anonymise",
        "--salt",
        &at("lab-secret"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = Command::new(env!("CARGO_BIN_EXE_cyclerhub"))
        .args(["export", "--db", &db, TEST_ID, "--format", "bdf-parquet"])
        .args(["-o", b.to_str().unwrap(), "--anonymise"])
        .env("CYCLERHUB_SALT_FILE", at("lab-secret"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_no_identifier_in(anonymised.path());
    let (ja, jb) = (
        read_json(&anonymised.path().join("a.bdf.parquet.metadata.json")),
        read_json(&anonymised.path().join("b.bdf.parquet.metadata.json")),
    );
    assert_eq!(ja, jb);
    assert!(ja["test_id"].as_str().unwrap().starts_with("test-"));
}

#[tokio::test]
async fn the_binary_refuses_unknown_tests_unwritable_outputs_and_anonymising_without_a_secret() {
    let mut hub = hub_with_cycling_test(Backend::Sqlite, HALF_CYCLE).await;
    hub.shutdown().await;
    let db = hub.db.clone();
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    fs::write(at("short-secret"), "too short\n").unwrap();
    fs::write(at("lab-secret"), SECRET).unwrap();
    fs::create_dir(at("a-directory")).unwrap();
    // A missing folder is created; one that cannot be (a file is in the way) is an error.
    let under_a_file = at("lab-secret/x.bdf.parquet");

    for (args, message) in [
        (
            vec!["--format", "bdf-parquet", "-o", &at("x.parquet")],
            "no test with id \"0190a0c0-0000-7000-8000-00000000dead\"",
        ),
        (
            vec!["--format", "bdf-parquet"],
            "--format bdf-parquet writes files: give -o FILE",
        ),
        (
            vec!["--format", "battery-archive"],
            "--format battery-archive writes files: give -o PREFIX",
        ),
        (
            vec!["-o", &at("x.csv"), "--anonymise"],
            "--anonymise needs the lab's secret: --salt FILE",
        ),
        (
            vec!["--anonymise", "--salt", &at("lab-secret")],
            "--anonymise applies to the metadata JSON, which is written beside an output file: \
             give -o FILE",
        ),
        (
            vec![
                "-o",
                &at("x.csv"),
                "--anonymise",
                "--salt",
                &at("short-secret"),
            ],
            "the lab secret is 9 bytes; it needs at least 16",
        ),
        (
            vec![
                "-o",
                &at("x.csv"),
                "--anonymise",
                "--salt",
                &at("no-secret"),
            ],
            "cannot read the salt file",
        ),
    ] {
        let test_id = if message.starts_with("no test") {
            "0190a0c0-0000-7000-8000-00000000dead"
        } else {
            TEST_ID
        };
        let mut all = vec!["export", "--db", &db, test_id];
        all.extend(&args);
        let out = cyclerhub(&all);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    }
    for (output, message) in [
        (
            under_a_file.as_str(),
            format!("cannot create the folder {}", at("lab-secret")),
        ),
        (
            &at("a-directory"),
            format!("cannot write {}: it is a directory", at("a-directory")),
        ),
    ] {
        let out = cyclerhub(&[
            "export",
            "--db",
            &db,
            TEST_ID,
            "--format",
            "bdf-parquet",
            "-o",
            output,
        ]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(&message), "{}", stderr(&out));
    }
    // Nothing was left behind: no output, no half-written temporary file.
    let mut left: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|f| f.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["a-directory", "lab-secret", "short-secret"]);
    assert_eq!(fs::read_dir(at("a-directory")).unwrap().count(), 0);
}
