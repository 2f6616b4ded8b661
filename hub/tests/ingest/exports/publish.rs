//! `cyclerhub publish`: a bundle for a public archive, through the real binary: which tests'
//! files it holds, its RO-Crate description checked against the files on disk, anonymised
//! bundles, and what a failed or refused publish leaves (nothing).

use std::collections::{BTreeMap, BTreeSet};

use cyclerhub::export::bundle::{BdfFormat, Bundle, BundleError};
use sha2::{Digest as _, Sha256};

use super::remote::{A1, A2, B1, OLD, files, hub_with_a_lab, run, strings};
use super::*;

/// Runs `cyclerhub publish ARGS --license CC-BY-4.0` and asserts it succeeded.
async fn publish(args: &[&str]) -> Output {
    let mut all = vec!["publish"];
    all.extend(args);
    all.extend(["--license", "CC-BY-4.0"]);
    let out = run(strings(&all)).await;
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    out
}

/// The file names of a bundle, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    files(dir).into_keys().collect()
}

/// The six files `cyclerhub export` writes of test `name` in BDF (`bdf`: csv or parquet) and
/// Battery Archive.
fn test_files(name: &str, bdf: &str) -> Vec<String> {
    [
        format!("{name}.bdf.{bdf}"),
        format!("{name}.bdf.{bdf}.metadata.json"),
        format!("{name}.cycles.{bdf}"),
        format!("{name}.metadata.json"),
        format!("{name}_cycle_data.csv"),
        format!("{name}_timeseries.csv"),
    ]
    .into()
}

/// The crate's entities by `@id`.
fn graph(dir: &Path) -> BTreeMap<String, Value> {
    let json = read_json(&dir.join("ro-crate-metadata.json"));
    assert_eq!(json["@context"], "https://w3id.org/ro/crate/1.1/context");
    let mut entities = BTreeMap::new();
    for e in json["@graph"].as_array().expect("a flat @graph") {
        let id = e["@id"]
            .as_str()
            .expect("every entity has an @id")
            .to_owned();
        assert!(
            entities.insert(id.clone(), e.clone()).is_none(),
            "{id} twice"
        );
    }
    entities
}

/// The `@id`s a property refers to (one reference or a list of them).
fn refs(v: &Value) -> Vec<String> {
    match v {
        Value::Array(all) => all.iter().flat_map(refs).collect(),
        Value::Object(o) => o
            .get("@id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .into_iter()
            .collect(),
        _ => Vec::new(),
    }
}

#[tokio::test]
async fn a_bundle_holds_the_files_of_each_selected_test_and_nothing_of_the_others() {
    let mut hub = hub_with_a_lab().await;
    let (db, url) = (hub.db.clone(), format!("http://{}", hub.addr));
    let dir = tempfile::tempdir().unwrap();

    // By filters, from the database: the two ended tests of 1 December.
    let december = dir.path().join("december");
    let out = publish(&[
        "--db",
        &db,
        "--lab",
        "cell-lab",
        "--state",
        "ended",
        "--since",
        "2026-12-01",
        "--out",
        december.to_str().unwrap(),
    ])
    .await;
    assert!(
        stderr(&out).contains("published 2 tests"),
        "{}",
        stderr(&out)
    );
    let mut expected: Vec<String> = ["001", "002"]
        .iter()
        .flat_map(|n| test_files(&format!("cell-lab__NMC-42__20261201_{n}"), "csv"))
        .chain(["README.txt".into(), "ro-crate-metadata.json".into()])
        .collect();
    expected.sort();
    assert_eq!(names_in(&december), expected);
    for (name, bytes) in files(&december) {
        let text = String::from_utf8_lossy(&bytes);
        for other in [B1, OLD] {
            assert!(
                !text.contains(other),
                "{name} names the unselected test {other}"
            );
        }
    }
    let metadata = read_json(&december.join("cell-lab__NMC-42__20261201_002.metadata.json"));
    assert_eq!(metadata["test_id"], A2);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(&december).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o700,
            "private, as `cyclerhub export` makes its folders"
        );
    }

    // By ids (a unique prefix too), from a running hub, BDF as Parquet.
    let chosen = dir.path().join("chosen");
    let out = publish(&[
        "--hub",
        &url,
        &OLD[..OLD.len() - 2],
        A1,
        "--format",
        "parquet",
        "--out",
        chosen.to_str().unwrap(),
    ])
    .await;
    assert!(
        stderr(&out).contains("published 2 tests"),
        "{}",
        stderr(&out)
    );
    let mut expected: Vec<String> = test_files("cell-lab__NMC-42__20261130_001", "parquet")
        .into_iter()
        .chain(test_files("cell-lab__NMC-42__20261201_001", "parquet"))
        .chain(["README.txt".into(), "ro-crate-metadata.json".into()])
        .collect();
    expected.sort();
    assert_eq!(names_in(&chosen), expected);
    let identifiers: BTreeSet<String> = graph(&chosen)
        .values()
        .filter(|e| e["@type"] == "CreateAction")
        .map(|e| e["identifier"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(identifiers, BTreeSet::from([A1.to_owned(), OLD.to_owned()]));
    // The Battery Archive files are those `cyclerhub export` writes, byte for byte.
    let single = dir.path().join("single");
    let export = [
        "export",
        "--db",
        &db,
        A1,
        "--format",
        "battery-archive",
        "-o",
    ];
    let mut args = strings(&export);
    args.push(single.join("x").to_str().unwrap().to_owned());
    assert!(run(args).await.status.success());
    assert_eq!(
        fs::read(single.join("x_timeseries.csv")).unwrap(),
        fs::read(chosen.join("cell-lab__NMC-42__20261201_001_timeseries.csv")).unwrap()
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn the_ro_crate_metadata_is_ro_crate_1_1_json_ld_listing_every_file_with_its_size_and_hash() {
    let mut hub = hub_with_cycling_test(Backend::Sqlite, HALF_CYCLE).await;
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    let orcid = "https://orcid.org/0000-0002-1825-0097";
    publish(&[
        "--db",
        &hub.db.clone(),
        TEST_ID,
        "--out",
        bundle.to_str().unwrap(),
        "--title",
        "LG M50 ageing",
        "--creator",
        &format!("Ada Lovelace <{orcid}>"),
        "--publisher",
        "Cell Lab",
    ])
    .await;
    let g = graph(&bundle);

    let descriptor = &g["ro-crate-metadata.json"];
    assert_eq!(descriptor["@type"], "CreativeWork");
    assert_eq!(descriptor["about"]["@id"], "./");
    assert_eq!(
        descriptor["conformsTo"]["@id"],
        "https://w3id.org/ro/crate/1.1"
    );
    let root = &g["./"];
    assert_eq!(root["@type"], "Dataset");
    assert_eq!(root["name"], "LG M50 ageing");
    assert!(!root["description"].as_str().unwrap().is_empty());
    let date = root["datePublished"].as_str().unwrap();
    assert!(date.len() == 10 && date.as_bytes()[4] == b'-', "{date}");
    let license = root["license"]["@id"].as_str().unwrap();
    assert_eq!(license, "https://spdx.org/licenses/CC-BY-4.0");
    assert_eq!(g[license]["@type"], "CreativeWork");
    assert_eq!(g[refs(&root["creator"])[0].as_str()]["@type"], "Person");
    assert_eq!(refs(&root["creator"]), [orcid]);
    assert_eq!(g[orcid]["name"], "Ada Lovelace");
    assert_eq!(g[refs(&root["publisher"])[0].as_str()]["name"], "Cell Lab");

    // hasPart is every file on disk but the crate itself, each with its true size and hash.
    let on_disk = files(&bundle);
    let parts: BTreeSet<String> = refs(&root["hasPart"]).into_iter().collect();
    let mut listed: BTreeSet<String> = on_disk.keys().cloned().collect();
    listed.remove("ro-crate-metadata.json");
    assert_eq!(parts, listed);
    assert_eq!(parts.len(), 7, "six files of the test and README.txt");
    for part in &parts {
        let file = &g[part.as_str()];
        let bytes = &on_disk[part];
        assert_eq!(file["@type"], "File");
        assert_eq!(file["contentSize"], bytes.len().to_string(), "{part}");
        assert_eq!(
            file["sha256"],
            format!("{:x}", Sha256::digest(bytes)),
            "{part}"
        );
        assert!(
            !file["encodingFormat"].as_str().unwrap().is_empty(),
            "{part}"
        );
        if part != "README.txt" {
            let about = refs(&file["about"]);
            assert_eq!(g[about[0].as_str()]["@type"], "CreateAction", "{part}");
        }
    }
    assert_eq!(
        g["nolab__LGM50-0042XQ__20231114_001.bdf.csv"]["encodingFormat"],
        "text/csv"
    );

    // Every local reference resolves to an entity of the graph.
    for (id, e) in &g {
        for (key, value) in e.as_object().unwrap() {
            for r in refs(value).into_iter().filter(|r| !r.contains("://")) {
                assert!(g.contains_key(&r), "{id}.{key} -> {r} is not in the graph");
            }
        }
    }

    // The test: what it ran on and with, its start and end, and every file as its result.
    let tests: Vec<&Value> = g
        .values()
        .filter(|e| e["@type"] == "CreateAction")
        .collect();
    assert_eq!(tests.len(), 1);
    let test = tests[0];
    assert_eq!(test["identifier"], TEST_ID);
    assert_eq!(refs(&root["mentions"]), [test["@id"].as_str().unwrap()]);
    assert!(
        test["startTime"]
            .as_str()
            .unwrap()
            .starts_with("2023-11-14T")
    );
    assert!(test["endTime"].is_string());
    assert_eq!(refs(&test["result"]).len(), 6);
    assert_eq!(g[refs(&test["instrument"])[0].as_str()]["name"], "psb1");
    let properties: BTreeMap<String, &Value> = refs(&test["additionalProperty"])
        .iter()
        .map(|r| {
            let p = &g[r.as_str()];
            assert_eq!(p["@type"], "PropertyValue");
            (p["name"].as_str().unwrap().to_owned(), p)
        })
        .collect();
    assert_eq!(properties["cell_id"]["value"], CELL_ID);
    assert_eq!(properties["chemistry"]["value"], "NMC811/graphite-SiOx");
    assert_eq!(properties["nominal_capacity"]["value"], 5.0);
    assert_eq!(properties["nominal_capacity"]["unitText"], "Ah");
    assert_eq!(
        properties["protocol"]["value"],
        format!("1C cycling of {CELL_ID}")
    );
    assert_eq!(properties["outcome"]["value"], "stopped");
    // The grade as of the publish (docs/quality.md), letter and score.
    let letter = properties["grade"]["value"].as_str().unwrap();
    assert!(["A", "B", "C", "D", "E"].contains(&letter), "{letter}");
    let score = properties["grade_score"]["value"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&score), "{score}");
    let readme = fs::read_to_string(bundle.join("README.txt")).unwrap();
    assert!(
        readme.starts_with("LG M50 ageing\n") && readme.contains("CC-BY-4.0"),
        "{readme}"
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn an_anonymised_bundle_contains_no_cell_id_or_test_id_of_the_source() {
    let mut hub = hub_with_cycling_test(Backend::Sqlite, HALF_CYCLE).await;
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("lab-secret"), SECRET).unwrap();
    let bundle = dir.path().join("shared");
    let salt = dir.path().join("lab-secret");
    publish(&[
        "--db",
        &hub.db.clone(),
        "--out",
        bundle.to_str().unwrap(),
        "--format",
        "parquet",
        "--anonymise",
        "--salt",
        salt.to_str().unwrap(),
    ])
    .await;
    assert_no_identifier_in(&bundle);
    for name in names_in(&bundle) {
        for id in IDENTIFYING {
            assert!(
                !name.to_ascii_lowercase().contains(&id.to_ascii_lowercase()),
                "{name}"
            );
        }
    }
    let g = graph(&bundle);
    let test = g.values().find(|e| e["@type"] == "CreateAction").unwrap();
    let pseudonym = test["identifier"].as_str().unwrap();
    assert!(pseudonym.starts_with("test-"), "{pseudonym}");
    let cell = g.values().find(|e| e["name"] == "cell_id").unwrap()["value"]
        .as_str()
        .unwrap();
    assert!(cell.starts_with("cell-"), "{cell}");
    // The file names carry the cell's pseudonym, the one its metadata JSON gives.
    let stem = format!("nolab__{cell}__20231114_001");
    assert_eq!(
        read_json(&bundle.join(format!("{stem}.metadata.json")))["test_id"],
        pseudonym
    );

    // Without the lab's secret, nothing is published.
    let refused = dir.path().join("refused");
    let args = [
        "publish",
        "--db",
        &hub.db,
        "--out",
        refused.to_str().unwrap(),
    ];
    let mut args = strings(&args);
    args.extend(strings(&["--license", "CC0-1.0", "--anonymise"]));
    let out = run(args).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--anonymise needs the lab's secret"),
        "{}",
        stderr(&out)
    );
    assert!(!refused.exists());
    hub.shutdown().await;
}

#[tokio::test]
async fn a_failed_or_refused_publish_leaves_no_directory_and_touches_no_other_folder() {
    let mut hub = hub_with_a_lab().await;
    let db = hub.db.clone();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bundle");
    let out_arg = out.to_str().unwrap().to_owned();
    let unknown = "0190a0c0-0000-7000-8000-00000000dead";
    let attempt = |extra: &[&str]| {
        let mut args = strings(&["publish", "--db", &db, "--out", &out_arg]);
        args.extend(strings(extra));
        run(args)
    };
    for (extra, message) in [
        (
            vec![A1, unknown, "--license", "CC-BY-4.0"],
            "no test with id",
        ),
        (
            vec!["--cell", "LFP-1", "--license", "CC-BY-4.0"],
            "no test matches",
        ),
        (vec![A1], "--license"),
        (
            vec![A1, "--license", "CC BY"],
            "neither a URL nor an SPDX license id",
        ),
        (
            vec![A1, "--license", "CC-BY-4.0", "--creator", "Ada <orcid>"],
            "not a URL",
        ),
    ] {
        let done = attempt(&extra).await;
        assert!(!done.status.success(), "{extra:?} succeeded");
        assert!(
            stderr(&done).contains(message),
            "{extra:?}: {}",
            stderr(&done)
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "{extra:?} left something"
        );
    }

    // A failure while writing (the test vanishes after the bundle began): nothing is left.
    let mut bundle = Bundle::create(&out, false).unwrap();
    let mut source = export::Stored {
        store: &hub.store,
        test_id: unknown,
    };
    let failed = bundle.add_test(&mut source, "x", BdfFormat::Csv, None, Vec::new());
    assert!(matches!(failed, Err(BundleError::Export(_))), "{failed:?}");
    drop(bundle);
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);

    // A non-empty folder is refused, and with --force too unless it holds a previous bundle.
    fs::create_dir(&out).unwrap();
    fs::write(out.join("notes.txt"), "mine").unwrap();
    for force in [&[][..], &["--force"][..]] {
        let mut extra = vec![A1, "--license", "CC-BY-4.0"];
        extra.extend(force);
        let done = attempt(&extra).await;
        assert!(!done.status.success(), "{force:?}");
        assert!(
            stderr(&done).contains("the folder is not empty"),
            "{}",
            stderr(&done)
        );
    }
    assert_eq!(names_in(&out), ["notes.txt"]);
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

    // An empty folder takes a bundle; --force replaces a previous bundle as a whole.
    fs::remove_file(out.join("notes.txt")).unwrap();
    assert!(
        attempt(&[A1, "--license", "CC-BY-4.0"])
            .await
            .status
            .success()
    );
    let done = attempt(&[A2, "--license", "CC-BY-4.0", "--force"]).await;
    assert!(done.status.success(), "{}", stderr(&done));
    let identifiers: Vec<String> = graph(&out)
        .values()
        .filter(|e| e["@type"] == "CreateAction")
        .map(|e| e["identifier"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(identifiers, [A2]);
    assert!(
        names_in(&out).iter().all(|n| !n.contains("20261201_001")),
        "{:?}",
        names_in(&out)
    );
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temporary folder left"
    );
    hub.shutdown().await;
}
