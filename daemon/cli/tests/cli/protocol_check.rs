//! `cyclerctl protocol check` and `compile` on the standard library: every problem at once,
//! every step on a target, and one schedule file per segment where the daemon supervises.

use std::path::{Path, PathBuf};

fn library(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/protocols")
        .join(name)
}

/// Runs `cyclerctl protocol ARGS`: success, standard output, error.
fn protocol(args: &[&str]) -> (bool, String, String) {
    super::cyclerctl_protocol(args)
}

#[test]
fn every_library_protocol_runs_on_every_cycler_cyclerd_drives() {
    for entry in std::fs::read_dir(library("")).unwrap() {
        let path = entry.unwrap().path();
        let (ok, out, err) = protocol(&["check", path.to_str().unwrap()]);
        assert!(ok, "{}: {err}", path.display());
        for target in ["maccor", "neware", "arbin"] {
            assert!(
                out.lines()
                    .any(|l| l.trim_start().starts_with(&format!("{target}: ok"))),
                "{}: {out}",
                path.display()
            );
        }
    }
}

#[test]
fn check_on_a_target_lists_every_step_native_supervised_with_its_reaction_or_impossible() {
    let file = library("cycle-life-1c.yaml");
    let (ok, out, err) = protocol(&["check", "--target", "maccor", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    let native = out.lines().filter(|l| l.ends_with(": native")).count();
    let supervised: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("    ") && l.contains("supervised:"))
        .collect();
    assert_eq!(native, 3, "the three rests: {out}");
    assert_eq!(
        supervised.len(),
        3,
        "the loop and two temperature ends: {out}"
    );
    assert!(out.contains("80% of the first pass's"), "{out}");
    assert!(out.contains("reaction: one poll"), "{out}");

    let file = library("rpt.yaml");
    let (ok, out, _) = protocol(&["check", "--target", "biologic", file.to_str().unwrap()]);
    assert!(ok);
    let impossible = out.lines().filter(|l| l.contains("IMPOSSIBLE")).count();
    assert_eq!(impossible, 4, "all at once, not the first: {out}");
    assert!(out.contains("no biologic driver"), "{out}");
}

#[test]
fn compile_writes_one_schedule_per_segment_when_the_daemon_supervises() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("life.000");
    let file = library("cycle-life-1c.yaml");
    let (ok, _, err) = protocol(&[
        "compile",
        "--target",
        "maccor",
        file.to_str().unwrap(),
        "-o",
        out_file.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("4 segments"), "{err}");
    for n in 1..=4 {
        let seg = dir.path().join(format!("life.seg{n}.000"));
        let text = std::fs::read_to_string(&seg).unwrap();
        assert!(text.contains("MaccorTestProcedure"), "{}", seg.display());
    }
    // Without -o there is no one file to write them to.
    let (ok, _, err) = protocol(&["compile", "--target", "maccor", file.to_str().unwrap()]);
    assert!(!ok && err.contains("give -o FILE"), "{err}");
    // A protocol a cycler says whole is one file, as before.
    let (ok, out, err) = protocol(&[
        "compile",
        "--target",
        "maccor",
        library("demo.yaml").to_str().unwrap(),
    ]);
    assert!(ok && out.contains("MaccorTestProcedure"), "{err}");
}
