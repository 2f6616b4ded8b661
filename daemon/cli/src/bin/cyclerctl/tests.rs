use super::*;
use clap::CommandFactory as _;

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
fn the_command_line_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn cyclerctl_version_names_cyclerctl() {
    let version = Cli::command().render_version();
    assert!(version.starts_with("cyclerctl "), "{version}");
}

#[test]
fn every_argument_is_described_in_help() {
    let mut all = Vec::new();
    arguments(&Cli::command(), "cyclerctl", &mut all);
    for (path, arg) in all {
        let id = arg.get_id().as_str();
        if ["help", "version"].contains(&id) {
            continue;
        }
        assert!(arg.get_help().is_some(), "{path}: {id} has no help");
    }
}

#[test]
fn only_the_commands_that_talk_to_a_daemon_take_daemon() {
    let parse = |args: &[&str]| Cli::try_parse_from([&["cyclerctl"], args].concat());
    for ok in [
        &["status", "--daemon", "http://pc:50052"][..],
        &["watch", "--config", "lab.toml"],
        &["outbox", "retry", "--daemon", "http://pc:50052"],
        &[
            "stop",
            "psb1/1",
            "--daemon",
            "http://pc:50052",
            "--reason",
            "r",
        ],
    ] {
        assert!(parse(ok).is_ok(), "{ok:?}");
    }
    for refused in [
        &["--daemon", "http://pc:50052", "status"][..],
        &["protocol", "check", "p.yaml", "--daemon", "http://pc:50052"],
        &["protocol", "simulate", "p.yaml", "--token", "t"],
    ] {
        assert!(parse(refused).is_err(), "{refused:?}");
    }
}

#[test]
fn no_client_variable_can_be_read_as_daemon_configuration() {
    let mut all = Vec::new();
    arguments(&Cli::command(), "cyclerctl", &mut all);
    let prefix = cyclerd::config::ENV_PREFIX.to_ascii_uppercase();
    let envs: Vec<String> = all
        .iter()
        .filter_map(|(_, a)| a.get_env())
        .map(|e| e.to_string_lossy().to_ascii_uppercase())
        .collect();
    assert!(envs.contains(&"CYCLERD_CONTROL".to_owned()), "{envs:?}");
    for env in envs {
        assert!(!env.starts_with(&prefix), "{env} is read as configuration");
    }
}

#[test]
fn the_lab_config_says_where_the_daemon_listens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lab.toml");
    let config = |control: &str| {
        format!(
            "[store]\npath = \"outbox.sqlite\"\n[hub]\naddress = \"http://127.0.0.1:50051\"\n\
             [limits]\nvoltage_min = 2.5\nvoltage_max = 4.25\ncurrent_max = 10.0\n\
             [[device]]\nname = \"psb1\"\nfamily = \"ea-psb\"\naddress = \"127.0.0.1:502\"\n\
             [[channel]]\nid = \"psb1/1\"\n[control]\n{control}\n"
        )
    };
    let to = |daemon: Option<&str>| DaemonArgs {
        daemon: daemon.map(String::from),
        config: Some(path.clone()),
        token: None,
        ca: None,
    };
    std::fs::write(&path, config("listen = \"127.0.0.1:50099\"")).unwrap();
    assert_eq!(to(None).address().unwrap(), "http://127.0.0.1:50099");
    // --daemon (or CYCLERD_CONTROL) says better.
    assert_eq!(to(Some("http://pc:1")).address().unwrap(), "http://pc:1");
    std::fs::write(
        &path,
        config("listen = \"0.0.0.0:50098\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\""),
    )
    .unwrap();
    assert_eq!(to(None).address().unwrap(), "https://127.0.0.1:50098");
    std::fs::remove_file(&path).unwrap();
    let e = to(None).address().unwrap_err().to_string();
    assert!(e.contains("lab.toml"), "{e}");
}
