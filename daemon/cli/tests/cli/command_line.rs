//! `cyclerd` and `cyclerctl` on the command line: configs refused with the reason, signals,
//! the demo, exit statuses.

use std::process::Command;

fn write(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("lab.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn config(store: &std::path::Path, listen: &str, extra: &str) -> String {
    format!(
        "[store]\npath = {store:?}\n[hub]\naddress = \"http://127.0.0.1:9\"\n[control]\nlisten = \"{listen}\"\n\
             [limits]\nvoltage_min = 2.5\nvoltage_max = 4.2\ncurrent_max = 5.0\n{extra}"
    )
}

fn run(path: &std::path::Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cyclerd"))
        .args(["run", "--config"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn cyclerd_sim_serves_a_psb_that_the_driver_identifies() {
    use cyclerd_drivers::ea_psb::PsbClient;
    let args = [
        "sim",
        "ea-psb",
        "--listen",
        "127.0.0.1:0",
        "--serial",
        "T42",
    ];
    let mut sim = announced(&args, &[]).await;
    assert!(sim.first.starts_with("simulated EA PSB"), "{}", sim.first);
    let timeout = std::time::Duration::from_secs(5);
    let client = PsbClient::connect(sim.first_addr(), 1, timeout, None)
        .await
        .unwrap();
    assert_eq!(client.identity().serial, "T42");
    sim.child.kill().await.unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn cyclerd_sim_serves_a_serial_scpi_instrument_on_the_linked_path() {
    use cyclerd_drivers::scpi::{Dialect, ScpiClient, ScpiOptions};
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("itech");
    let args = ["sim", "scpi", "--model", "itech-it6000", "--pty"];
    let (mut sim, endpoint) = announced_on_pty(&args, &link, 9600).await;
    let client = ScpiClient::connect(endpoint, ScpiOptions::default())
        .await
        .unwrap();
    assert_eq!(client.dialect(), Dialect::ItechIt6000);
    sim.child.kill().await.unwrap();
}

#[tokio::test]
async fn cyclerd_sim_watlow_serves_a_chamber_whose_temperature_the_driver_reads() {
    use cyclerd_drivers::chamber::{Chamber, thermal::ROOM_C};
    use cyclerd_drivers::watlow::{WatlowClient, WatlowOptions};
    let mut sim = announced(&["sim", "watlow", "--listen", "127.0.0.1:0"], &[]).await;
    assert!(
        sim.first.starts_with("simulated Watlow F4T"),
        "{}",
        sim.first
    );
    let mut client = WatlowClient::connect(sim.first_addr(), WatlowOptions::default())
        .await
        .unwrap();
    let r = client.read().await.unwrap();
    assert!((r.temperature_c - ROOM_C).abs() < 1.0, "{r:?}");
    sim.child.kill().await.unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn cyclerd_sim_binder_serves_a_chamber_on_the_linked_path_whose_temperature_the_driver_reads()
{
    use cyclerd_drivers::binder::{BinderClient, BinderOptions, wire};
    use cyclerd_drivers::chamber::{Chamber, thermal::ROOM_C};
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("binder");
    let args = ["sim", "binder", "--pty"];
    let (mut sim, endpoint) = announced_on_pty(&args, &link, wire::BAUD_RATE).await;
    let mut client = BinderClient::connect(endpoint, BinderOptions::default())
        .await
        .unwrap();
    let r = client.read().await.unwrap();
    assert!((r.temperature_c - ROOM_C).abs() < 1.0, "{r:?}");
    sim.child.kill().await.unwrap();
}

/// A `cyclerd sim ...` child and what it announced on stdout.
struct Announced {
    /// The simulator, killed when dropped.
    child: tokio::process::Child,
    /// Kept open: the child may still print, and a closed pipe would make it fail.
    _lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    /// The first line: what is simulated (and where, for a one-line announcement).
    first: String,
    /// The first word after each `  key: ` line asked for.
    values: std::collections::HashMap<String, String>,
}

impl Announced {
    /// Where a one-line announcement (`simulated ... on ADDR, ...`) says it listens.
    fn first_addr(&self) -> std::net::SocketAddr {
        self.first
            .split_once(" on ")
            .and_then(|(_, rest)| rest.split(',').next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in {:?}", self.first))
    }

    fn value(&self, key: &str) -> &str {
        &self.values[key]
    }

    fn addr(&self, key: &str) -> std::net::SocketAddr {
        self.value(key)
            .parse()
            .unwrap_or_else(|e| panic!("{key}: {:?}: {e}", self.value(key)))
    }
}

/// Starts `cyclerd ARGS` and reads its stdout until its first line and every `key` have been
/// announced.
async fn announced(args: &[&str], keys: &[&str]) -> Announced {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cyclerd"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut values = std::collections::HashMap::new();
    let mut seen = Vec::new();
    while seen.is_empty() || !keys.iter().all(|k| values.contains_key(*k)) {
        let line = tokio::time::timeout_at(super::deadline(), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no {keys:?} announced in time; got {seen:?}"))
            .unwrap()
            .unwrap_or_else(|| panic!("cyclerd {args:?} ended after {seen:?}"));
        if let Some((key, rest)) = line.trim_start().split_once(": ")
            && let Some(word) = rest.split_whitespace().next()
        {
            values.insert(key.to_string(), word.to_string());
        }
        seen.push(line);
    }
    assert!(seen[0].starts_with("simulated "), "{seen:?}");
    Announced {
        child,
        _lines: lines,
        first: seen.remove(0),
        values,
    }
}

/// Starts `cyclerd ARGS --pty LINK` and waits for its announcement naming `link`; returns
/// the child and the line's endpoint at `baud`.
#[cfg(unix)]
async fn announced_on_pty(
    args: &[&str],
    link: &std::path::Path,
    baud: u32,
) -> (Announced, cyclerd_drivers::transport::Endpoint) {
    let path = link.to_str().expect("a UTF-8 temporary path");
    let sim = announced(&[args, &[path]].concat(), &[]).await;
    assert!(sim.first.contains(path), "{}", sim.first);
    let endpoint = cyclerd_drivers::transport::Endpoint::Serial {
        path: path.to_string(),
        baud,
    };
    (sim, endpoint)
}

#[cfg(unix)]
#[tokio::test]
async fn cyclerd_sim_neware_serves_its_units_channels_runs_a_step_file_from_its_folder_and_removes_the_folder_on_exit()
 {
    use cyclerd_drivers::cycler::{ChannelAddr, ChannelState, Cycler, Schedule};
    use cyclerd_drivers::neware::{NewareClient, NewareConfig};
    use cyclerd_protocols::Plan;
    use cyclerd_protocols::compile::{Target, compile};
    let mut sim = announced(
        &[
            "sim",
            "neware",
            "--channels",
            "3",
            "--units",
            "2",
            "--listen",
            "127.0.0.1:0",
        ],
        &["api", "step folder", "login"],
    )
    .await;
    assert_eq!(sim.value("login"), "admin");
    let folder = std::path::PathBuf::from(sim.value("step folder"));
    assert!(folder.is_dir(), "{}", folder.display());
    let mut client = NewareClient::connect(NewareConfig::new(sim.addr("api"), &folder))
        .await
        .unwrap();
    let chl = |subdevid, chlid| ChannelAddr {
        unit: 1,
        sub_unit: subdevid,
        channel: chlid,
    };
    assert_eq!(
        client.channels().await.unwrap(),
        vec![
            chl(1, 1),
            chl(1, 2),
            chl(1, 3),
            chl(2, 1),
            chl(2, 2),
            chl(2, 3)
        ]
    );

    let protocol = r#"
protocol: Long rest
version: 1
params: {capacity: 2.5 Ah}
safety: {voltage: [2.5 V, 4.25 V], current: 5 A}
steps: ["Rest for 1 hour"]
"#;
    let plan = Plan::from_yaml(protocol, "rest.yaml").unwrap();
    let schedule = Schedule {
        file_name: "rest.xml".into(),
        text: compile(&plan, Target::Neware).unwrap(),
    };
    client
        .start(chl(2, 3), &schedule, "cli rest")
        .await
        .unwrap();
    let status = client.status(&[chl(2, 3)]).await.unwrap().remove(0);
    assert_eq!(status.state, ChannelState::Running);

    let pid = sim.child.id().unwrap() as libc::pid_t;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let exit = tokio::time::timeout_at(super::deadline(), sim.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit}");
    assert!(!folder.exists(), "{} is left behind", folder.display());
}

#[tokio::test]
async fn cyclerd_sim_maccor_serves_the_channels_asked_for_on_its_json_and_binary_ports() {
    use cyclerd_drivers::cycler::Cycler;
    use cyclerd_drivers::maccor::{MaccorClient, MaccorConfig};
    let mut sim = announced(
        &[
            "sim",
            "maccor",
            "--channels",
            "5",
            "--listen",
            "127.0.0.1:0",
            "--binary-port",
            "0",
        ],
        &["json", "binary"],
    )
    .await;
    let (json, binary) = (sim.addr("json"), sim.addr("binary"));
    assert_eq!(json.ip(), binary.ip());
    assert_ne!(json.port(), binary.port());
    let config = MaccorConfig {
        json_port: json.port(),
        binary_port: binary.port(),
        ..MaccorConfig::new(json.ip())
    };
    let mut client = MaccorClient::connect(config).await.unwrap();
    let channels = client.channels().await.unwrap();
    assert_eq!(
        channels.iter().map(|c| c.channel).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    sim.child.kill().await.unwrap();
}

#[tokio::test]
async fn cyclerd_sim_arbin_serves_the_channels_asked_for_to_a_client_with_the_announced_login() {
    use cyclerd_drivers::arbin::{ArbinClient, ArbinConfig};
    use cyclerd_drivers::cycler::Cycler;
    let mut sim = announced(
        &[
            "sim",
            "arbin",
            "--channels",
            "6",
            "--listen",
            "127.0.0.1:0",
            "--file-port",
            "0",
            "--user",
            "lab",
        ],
        &["control", "file", "login"],
    )
    .await;
    let (control, file) = (sim.addr("control"), sim.addr("file"));
    assert_eq!(sim.value("login"), "lab");
    let config = ArbinConfig {
        control_port: control.port(),
        file_port: file.port(),
        ..ArbinConfig::new(control.ip(), "lab", "arbin")
    };
    let mut client = ArbinClient::connect(config).await.unwrap();
    let channels = client.channels().await.unwrap();
    assert_eq!(
        channels.iter().map(|c| c.channel).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4, 5]
    );
    sim.child.kill().await.unwrap();
}

#[tokio::test]
async fn cyclerd_sim_espec_serves_a_chamber_whose_temperature_the_driver_reads() {
    use cyclerd_drivers::chamber::Chamber;
    use cyclerd_drivers::espec::{EspecClient, EspecOptions};
    let mut sim = announced(&["sim", "espec", "--listen", "127.0.0.1:0"], &["lan"]).await;
    let mut client = EspecClient::connect(sim.addr("lan"), EspecOptions::default())
        .await
        .unwrap();
    let reading = client.read().await.unwrap();
    assert!((reading.temperature_c - 23.0).abs() < 0.5, "{reading:?}");
    sim.child.kill().await.unwrap();
}

#[tokio::test]
async fn cyclerd_sim_weiss_serves_a_chamber_whose_temperature_the_driver_reads() {
    use cyclerd_drivers::chamber::Chamber;
    use cyclerd_drivers::weiss::WeissClient;
    let mut sim = announced(&["sim", "weiss", "--listen", "127.0.0.1:0"], &["simserv"]).await;
    let mut client = WeissClient::connect(sim.addr("simserv"), std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let reading = client.read().await.unwrap();
    assert!((reading.temperature_c - 23.0).abs() < 0.5, "{reading:?}");
    sim.child.kill().await.unwrap();
}

#[test]
fn a_port_in_use_is_an_error_naming_file_key_and_address() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let path = write(dir.path(), &config(&dir.path().join("o.sqlite"), &addr, ""));
    let (ok, err) = run(&path);
    assert!(!ok);
    assert!(
        err.contains("lab.toml") && err.contains("control.listen") && err.contains(&addr),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_device_does_not_keep_the_daemon_down_and_is_named_with_its_address() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1.
    let gone = "127.0.0.1:1";
    let extra = format!(
        "[[device]]\nname = \"psb1\"\nfamily = \"ea-psb\"\naddress = \"{gone}\"\ntimeout_ms = 500\n[[channel]]\nid = \"psb1/1\"\n"
    );
    let path = write(
        dir.path(),
        &config(&dir.path().join("o.sqlite"), "127.0.0.1:0", &extra),
    );
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cyclerd"))
        .args(["run", "--config"])
        .arg(&path)
        .env("CYCLERD__WEB__LISTEN", "127.0.0.1:0")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let waiting = loop {
        let line = tokio::time::timeout_at(super::deadline(), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no line about the device in time; got {seen:?}"))
            .unwrap()
            .unwrap_or_else(|| panic!("cyclerd run ended after {seen:?}"));
        if line.contains("does not answer") {
            break line;
        }
        seen.push(line);
    };
    assert!(
        waiting.contains("psb1") && waiting.contains(gone) && waiting.contains("waiting"),
        "{waiting}"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the daemon keeps running"
    );
}

#[tokio::test]
async fn cyclerctl_watch_shows_the_demos_channels_in_80_columns_and_ends_with_one_line_when_the_daemon_dies()
 {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    use tokio::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_cyclerd"))
        .args(["demo", "--channels", "2", "--speed", "20", "--control"])
        .arg(port.to_string())
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut demo_out = tokio::io::BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut next_demo_line = async || {
        tokio::time::timeout_at(super::deadline(), demo_out.next_line())
            .await
            .expect("a demo line in time")
            .unwrap()
            .expect("the demo goes on")
    };
    let control = loop {
        let line = next_demo_line().await;
        if let Some((_, rest)) = line.split_once("control: ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // The demo's own progress: the same lines, both channels, within 80 columns.
    let mut progress = Vec::new();
    while !progress.iter().any(|l: &String| l.contains("SIM-NMC-002")) {
        let line = next_demo_line().await;
        if line.starts_with('[') || !progress.is_empty() {
            progress.push(line);
        }
    }
    for line in &progress {
        assert!(line.chars().count() <= 80, "{line}");
        assert!(
            !line.contains("NaN"),
            "no air NaN without a chamber: {line}"
        );
    }
    assert!(
        progress
            .iter()
            .any(|l| l.starts_with("psb1/1 ") && l.contains("running")),
        "{progress:#?}"
    );

    let mut watch = Command::new(env!("CARGO_BIN_EXE_cyclerctl"))
        .args(["watch", "--daemon", &control])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("SIM-NMC-001")) {
        let line = tokio::time::timeout_at(super::deadline(), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no test line from watch in time: {seen:#?}"))
            .unwrap()
            .unwrap_or_else(|| panic!("watch ended early: {seen:#?}"));
        seen.push(line);
    }
    demo.kill().await.unwrap();
    let status = tokio::time::timeout(super::WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push(line);
        }
        watch.wait().await.unwrap()
    })
    .await
    .expect("watch ends when the daemon dies");
    let mut err = String::new();
    watch
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .await
        .unwrap();
    assert_eq!(
        err,
        format!("cyclerctl: cyclerd stopped: the control API at {control} closed the stream\n")
    );
    assert_eq!(status.code(), Some(1), "the daemon going away is an error");
    for line in &seen {
        assert!(line.chars().count() <= 80, "{line}");
        assert!(!line.contains("NaN") && !line.contains('\x1b'), "{line}");
    }
}

#[test]
fn an_unknown_key_or_wrong_type_is_an_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        &config(
            &dir.path().join("o.sqlite"),
            "127.0.0.1:0",
            "[[device]]\nname = \"d\"\nfamily = \"ea-psb\"\naddress = \"127.0.0.1:1\"\nbauds = 9600\n",
        ),
    );
    let (ok, err) = run(&path);
    assert!(!ok);
    assert!(err.contains("lab.toml") && err.contains("bauds"), "{err}");
    let path = write(
        dir.path(),
        &config(&dir.path().join("o.sqlite"), "127.0.0.1:0", "")
            .replace("current_max = 5.0", "current_max = \"lots\""),
    );
    let (ok, err) = run(&path);
    assert!(!ok);
    assert!(err.contains("current_max"), "{err}");
}
