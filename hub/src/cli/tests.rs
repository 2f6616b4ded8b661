use super::*;
use clap::CommandFactory as _;

#[test]
fn the_command_line_definition_is_consistent() {
    Cli::command().debug_assert();
}

/// Every argument of `command` and its subcommands, with the path of subcommands to it.
fn arguments(command: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
    for arg in command.get_arguments() {
        out.push((path.to_owned(), arg.clone()));
    }
    for sub in command.get_subcommands() {
        arguments(sub, &format!("{path} {}", sub.get_name()), out);
    }
}

#[test]
fn every_argument_is_described_in_help() {
    let mut all = Vec::new();
    arguments(&Cli::command(), "cyclerhub", &mut all);
    for (path, arg) in all {
        let id = arg.get_id().as_str();
        if ["help", "version"].contains(&id) {
            continue;
        }
        assert!(arg.get_help().is_some(), "{path}: {id} has no help");
    }
}

#[test]
fn serve_help_says_it_serves_queries_and_the_web_app() {
    let mut cli = Cli::command();
    let serve = cli.find_subcommand_mut("serve").unwrap();
    let help = serve.render_help().to_string();
    assert!(
        help.contains("queries") && help.contains("web app"),
        "{help}"
    );
    assert!(Cli::command().render_version().starts_with("cyclerhub "));
}

#[test]
fn a_state_no_test_can_be_in_is_refused_with_the_states_there_are() {
    let parse = |args: &[&str]| Cli::try_parse_from([&["cyclerhub"], args].concat());
    let e = parse(&["tests", "--db", "hub.sqlite", "--state", "done"])
        .err()
        .expect("done is no state")
        .to_string();
    assert!(e.contains("finished") && e.contains("ended"), "{e}");
    assert!(parse(&["tests", "--db", "hub.sqlite", "--state", "ended"]).is_ok());
    // The query service refuses it too, for clients other than this one.
    let filter = TestFilter {
        state: "done".into(),
        ..TestFilter::default()
    };
    assert!(filter.check().unwrap_err().contains("running"));
}

#[test]
fn since_and_until_take_dates_and_rfc_3339_times() {
    let parse = |args: &[&str]| Cli::try_parse_from([&["cyclerhub"], args].concat());
    let Ok(Cli {
        command: Command::Tests { filters, .. },
        ..
    }) = parse(&[
        "tests",
        "--db",
        "hub.sqlite",
        "--since",
        "2026-12-01",
        "--until",
        "2026-12-02T06:00:00+01:00",
    ])
    else {
        panic!("a date and an RFC 3339 time are times");
    };
    assert_eq!(filters.since, Some(1_796_083_200.0));
    assert_eq!(
        filters.until,
        Some(1_796_083_200.0 + 86_400.0 + 5.0 * 3600.0)
    );
    let e = parse(&["tests", "--db", "hub.sqlite", "--since", "2026-12-32"])
        .err()
        .expect("no such day")
        .to_string();
    assert!(e.contains("2026-12-32"), "{e}");
    assert!(!e.contains("float"), "{e}");
}

#[test]
fn export_takes_a_test_or_filters_but_not_both() {
    let parse = |args: &[&str]| Cli::try_parse_from([&["cyclerhub"], args].concat());
    assert!(parse(&["export", "--hub", "http://hub:50051", "0190a0c0", "-o", "x"]).is_ok());
    let bulk = [
        "export", "--db", "h.sqlite", "--lab", "L", "--state", "ended", "-o", "out",
    ];
    assert!(parse(&bulk).is_ok());
    assert!(parse(&["export", "--db", "h.sqlite", "ID", "--lab", "L"]).is_err());
}

#[test]
fn a_missing_database_folder_is_named_as_such() {
    let e = open("/no/such/folder/hub.sqlite", false)
        .expect_err("no folder")
        .to_string();
    assert!(e.contains("the folder /no/such/folder"), "{e}");
}

#[test]
fn tests_and_samples_read_from_exactly_one_of_a_database_and_a_hub() {
    let parse = |args: &[&str]| Cli::try_parse_from([&["cyclerhub"], args].concat());
    for ok in [
        &["tests", "--db", "hub.sqlite"][..],
        &["tests", "--hub", "https://hub:50051", "--ca-file", "ca.pem"],
        &[
            "samples",
            "--hub",
            "http://hub:50051",
            "--token-file",
            "t",
            "ID",
        ],
    ] {
        assert!(parse(ok).is_ok(), "{ok:?}");
    }
    for refused in [
        &["tests"][..],
        &["tests", "--db", "hub.sqlite", "--hub", "http://hub:50051"],
        &["tests", "--db", "hub.sqlite", "--ca-file", "ca.pem"],
        &["samples", "--db", "hub.sqlite", "--token-file", "t", "ID"],
    ] {
        assert!(parse(refused).is_err(), "{refused:?}");
    }
}

#[test]
fn min_grade_takes_a_letter_in_either_case_and_refuses_others() {
    let parse = |args: &[&str]| Cli::try_parse_from([&["cyclerhub"], args].concat());
    let Ok(Cli {
        command: Command::Tests { filters, .. },
        ..
    }) = parse(&["tests", "--db", "hub.sqlite", "--min-grade", "b"])
    else {
        panic!("b is a grade");
    };
    assert_eq!(filters.into_filter().min_grade, "B");
    let e = parse(&["tests", "--db", "hub.sqlite", "--min-grade", "F"])
        .err()
        .expect("F is no grade")
        .to_string();
    assert!(e.contains("A (best) to E"), "{e}");
}

#[test]
fn a_quality_file_gives_defaults_lab_overrides_and_errors_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quality.toml");
    std::fs::write(
        &path,
        "max_gap_s = 120\n[lab.formation]\nstuck_samples = 50\n",
    )
    .unwrap();
    let q = serve::quality_thresholds(Some(&path)).unwrap();
    assert_eq!(q.base.max_gap_s, 120.0);
    let formation = q.for_name("formation");
    assert_eq!((formation.max_gap_s, formation.stuck_samples), (120.0, 50));
    assert_eq!(serve::quality_thresholds(None).unwrap(), Default::default());
    std::fs::write(&path, "[lab.formation]\nmax_gap_s = -1\n").unwrap();
    let e = serve::quality_thresholds(Some(&path))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("quality.toml") && e.contains("formation") && e.contains("max_gap_s"),
        "{e}"
    );
    std::fs::write(&path, "max_gap = 5\n").unwrap();
    let e = serve::quality_thresholds(Some(&path))
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_gap"), "{e}");
    std::fs::write(&path, "not toml [").unwrap();
    assert!(serve::quality_thresholds(Some(&path)).is_err());
}

#[test]
fn show_and_tests_print_the_grade_its_reasons_and_the_findings() {
    use cyclerd_proto::hub::{QualityFindingRow, TestDetail, TestSummary};
    let summary = TestSummary {
        test_id: "0190a0c0-0000-7000-8000-000000000001".into(),
        state: "finished".into(),
        sample_count: 600,
        grade: "B".into(),
        grade_score: 80,
        ..TestSummary::default()
    };
    let detail = TestDetail {
        summary: Some(summary.clone()),
        grade_reasons: vec!["1 voltage_stuck finding(s) (-10)".into()],
        quality_findings: vec![QualityFindingRow {
            source: "hub".into(),
            check: "voltage_stuck".into(),
            first_seq: 150,
            last_seq: 549,
            open: true,
            reason: "voltage 3.8 V unchanged for 300 samples under 1.25 A".into(),
            ..QualityFindingRow::default()
        }],
        ..TestDetail::default()
    };
    let mut out = Vec::new();
    read::print_detail(&mut out, &detail).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("grade     B (80 of 100)\n  1 voltage_stuck finding(s) (-10)\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "  hub     voltage_stuck        seq 150..549 (going on): voltage 3.8 V unchanged"
        ),
        "{text}"
    );
    let mut out = Vec::new();
    read::print_tests(&mut out, &[summary]).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.lines().next().unwrap().contains("GRADE"), "{text}");
    assert!(text.contains("B (80)"), "{text}");
}
