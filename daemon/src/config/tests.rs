use super::*;
use crate::control::tokens::{Role, TokenStore};

const GOOD: &str = r#"
    [store]
    path = "outbox.sqlite"
    [hub]
    address = "http://127.0.0.1:50051"
    [limits]
    voltage_min = 2.5
    voltage_max = 4.25
    current_max = 10.0
    [[device]]
    name = "psb1"
    family = "ea-psb"
    address = "127.0.0.1:502"
    [[channel]]
    id = "psb1/1"
"#;

#[test]
fn a_minimal_config_gets_sensible_defaults() {
    let c = Config::from_toml(GOOD, "lab.toml").unwrap();
    assert_eq!(c.store.commit_interval_ms, 250);
    assert_eq!(c.channels[0].poll_interval_ms, 100);
    assert_eq!(c.devices[0].unit, 1);
    assert_eq!(c.control.listen.port(), 50052);
}

#[test]
fn a_config_override_uses_a_prefix_the_clients_do_not_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lab.toml");
    std::fs::write(&path, GOOD).unwrap();
    // What a shell that also runs cyclerctl has set: its variables are not configuration.
    let env = [
        ("CYCLERD_CONTROL", "http://127.0.0.1:50052"),
        ("CYCLERD_TOKEN", "cyd_0123456789abcdef"),
        ("CYCLERD_CA", "/etc/cyclerd/ca.pem"),
        ("CYCLERD__HUB__WINDOW", "7"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let c = Config::read_with_env(&path, Some(env)).unwrap();
    assert_eq!(c.hub.window, 7);
    assert_eq!(c.control.listen.port(), 50052);
    assert!(ENV_PREFIX.ends_with("__"), "{ENV_PREFIX}");
}

#[test]
fn unknown_key_is_an_error_naming_file_and_key() {
    let text = GOOD.replace("current_max = 10.0", "current_max = 10.0\ncurent = 3");
    let e = Config::from_toml(&text, "lab.toml")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("lab.toml:"), "{e}");
    assert!(e.contains("curent"), "{e}");
}

#[test]
fn wrong_type_is_an_error_naming_the_key() {
    let text = GOOD.replace("voltage_max = 4.25", "voltage_max = \"high\"");
    let e = Config::from_toml(&text, "lab.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("voltage_max"), "{e}");
}

#[test]
fn a_device_is_either_networked_or_serial_and_a_riden_takes_no_baud() {
    let both = GOOD.replace(
        "address = \"127.0.0.1:502\"",
        "address = \"127.0.0.1:502\"\nport = \"/dev/ttyUSB0\"",
    );
    let e = Config::from_toml(&both, "lab.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not both or neither"), "{e}");
    let serial = GOOD.replace(
        "address = \"127.0.0.1:502\"",
        "port = \"/dev/ttyUSB0\"\nbaud = 57600",
    );
    let c = Config::from_toml(&serial, "lab.toml").unwrap();
    assert_eq!(c.devices[0].baud, Some(57600));
    let riden = serial.replace("family = \"ea-psb\"", "family = \"riden\"");
    let e = Config::from_toml(&riden, "lab.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("115200"), "{e}");
}

#[test]
fn cyclers_are_networked_and_name_what_they_need() {
    let neware = GOOD.replace("family = \"ea-psb\"", "family = \"neware\"");
    let e = Config::from_toml(&neware, "lab.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("step_folder"), "{e}");
    let with_folder = neware.replace(
        "address = \"127.0.0.1:502\"",
        "address = \"127.0.0.1:502\"\nstep_folder = \"/tmp/steps\"",
    );
    let c = Config::from_toml(&with_folder, "lab.toml").unwrap();
    assert!(c.devices[0].family.is_native());
    assert_eq!(c.devices[0].timeout().as_millis(), 5000);
    let arbin = GOOD.replace("family = \"ea-psb\"", "family = \"arbin\"");
    let e = Config::from_toml(&arbin, "lab.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("username and password"), "{e}");
    let serial = GOOD
        .replace("family = \"ea-psb\"", "family = \"maccor\"")
        .replace("address = \"127.0.0.1:502\"", "port = \"/dev/ttyUSB0\"");
    let e = Config::from_toml(&serial, "lab.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("over the network"), "{e}");
    let direct = GOOD.replace("family = \"ea-psb\"", "family = \"maccor-direct\"");
    let e = Config::from_toml(&direct, "lab.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("nominal_current"), "{e}");
    let misplaced = with_folder.replace("family = \"neware\"", "family = \"ea-psb\"");
    let e = Config::from_toml(&misplaced, "lab.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("step_folder does not apply to a ea-psb"), "{e}");
}

#[test]
fn a_chamber_names_existing_channels_each_in_one_chamber_and_sensible_limits() {
    let chamber = |extra: &str| {
        format!(
            "{GOOD}\n[[chamber]]\nname = \"c1\"\nfamily = \"espec\"\naddress = \"127.0.0.1:10001\"\n{extra}"
        )
    };
    let c = Config::from_toml(&chamber("channels = [\"psb1/1\"]"), "lab.toml").unwrap();
    assert_eq!(c.chamber_of("psb1/1").unwrap().name, "c1");
    assert_eq!(c.chambers[0].limits(&c.limits), (-40.0, 60.0));
    for (extra, expected) in [
        ("channels = [\"psb9/1\"]", "no [[channel]] defines"),
        (
            "channels = [\"psb1/1\"]\ntemperature_min = 50.0\ntemperature_max = 40.0",
            "must be below",
        ),
        ("channels = [\"psb1/1\"]\nloop_number = 2", "watlow only"),
        (
            "channels = [\"psb1/1\"]\nidle_set_point = 80.0",
            "idle_set_point (80) must be within the chamber's limits -40 to 60",
        ),
        (
            "channels = [\"psb1/1\"]\nport = \"/dev/ttyUSB1\"",
            "not both",
        ),
    ] {
        let e = Config::from_toml(&chamber(extra), "lab.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains(expected), "{extra}: {e}");
    }
    let twice = format!(
        "{}\n[[chamber]]\nname = \"c2\"\nfamily = \"weiss\"\naddress = \"127.0.0.1:2049\"\nchannels = [\"psb1/1\"]",
        chamber("channels = [\"psb1/1\"]")
    );
    let e = Config::from_toml(&twice, "lab.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("two chambers"), "{e}");
}

#[test]
fn every_example_lab_configuration_shipped_in_deploy_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            if let Err(e) = Config::from_toml(&text, &path.display().to_string()) {
                panic!("{e}");
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 4,
        "{checked} example configurations in {}",
        dir.display()
    );
}

#[test]
fn a_tls_hub_address_needs_the_lab_ca_and_a_ca_needs_tls() {
    let tls = GOOD.replace("http://127.0.0.1:50051", "https://hub.lab:50051");
    let e = Config::from_toml(&tls, "lab.toml").unwrap_err().to_string();
    assert!(e.contains("hub.ca_file"), "{e}");
    let with_ca = tls.replace(
        "address = \"https://hub.lab:50051\"",
        "address = \"https://hub.lab:50051\"\nca_file = \"/etc/cyclerd/lab-ca.pem\"",
    );
    Config::from_toml(&with_ca, "lab.toml").unwrap();
    let clear = with_ca.replace("https://", "http://");
    let e = Config::from_toml(&clear, "lab.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("use https://"), "{e}");
}

/// `GOOD` with a `[control]` section of `lines`, its tokens file in `dir`.
fn with_control(dir: &Path, lines: &str) -> String {
    let tokens = dir.join("control-tokens.toml");
    format!("{GOOD}\n[control]\ntokens_file = {tokens:?}\n{lines}\n")
}

#[test]
fn a_control_api_other_machines_reach_is_refused_without_tls_and_a_token_unless_said_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let open = with_control(dir.path(), "listen = \"0.0.0.0:50052\"");
    let e = Config::from_toml(&open, "lab.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("control.listen = 0.0.0.0:50052"), "{e}");
    assert!(
        e.contains("control.tls_cert") && e.contains("control.insecure"),
        "{e}"
    );
    let tls = format!("{open}tls_cert = \"daemon.pem\"\ntls_key = \"daemon-key.pem\"\n");
    let e = Config::from_toml(&tls, "lab.toml").unwrap_err().to_string();
    assert!(
        e.contains("holds none") && e.contains("cyclerd token issue"),
        "{e}"
    );
    let store = TokenStore::new(dir.path().join("control-tokens.toml"));
    store.issue("alice", Role::Operator).unwrap();
    let ready = Config::from_toml(&tls, "lab.toml").unwrap();
    assert!(ready.control_requires_tokens());
    store.revoke("alice").unwrap();
    let e = Config::from_toml(&tls, "lab.toml").unwrap_err().to_string();
    assert!(
        e.contains("holds none"),
        "a revoked token does not count: {e}"
    );

    let said = Config::from_toml(&format!("{open}insecure = true\n"), "lab.toml").unwrap();
    assert!(said.control.insecure && !said.control_requires_tokens());
}

#[test]
fn a_tls_certificate_without_its_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let half = with_control(dir.path(), "tls_cert = \"daemon.pem\"");
    let e = Config::from_toml(&half, "lab.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("control.tls_cert and control.tls_key go together"),
        "{e}"
    );
}

#[test]
fn whether_control_calls_need_a_token_follows_the_listen_address() {
    let dir = tempfile::tempdir().unwrap();
    TokenStore::new(dir.path().join("control-tokens.toml"))
        .issue("alice", Role::Reader)
        .unwrap();
    let tls = "tls_cert = \"d.pem\"\ntls_key = \"k.pem\"";
    for (lines, required) in [
        ("listen = \"127.0.0.1:50052\"", false),
        ("listen = \"[::1]:50052\"", false),
        ("listen = \"127.0.0.1:50052\"\nrequire_tokens = true", true),
        (&format!("listen = \"0.0.0.0:50052\"\n{tls}"), true),
        (&format!("listen = \"192.0.2.7:50052\"\n{tls}"), true),
        (&format!("listen = \"[::]:50052\"\n{tls}"), true),
        ("listen = \"0.0.0.0:50052\"\ninsecure = true", false),
    ] {
        let c = Config::from_toml(&with_control(dir.path(), lines), "lab.toml").unwrap();
        assert_eq!(c.control_requires_tokens(), required, "{lines}");
    }
    let default = Config::from_toml(GOOD, "lab.toml").unwrap();
    assert!(!default.control_requires_tokens());
    assert_eq!(
        default.control_tokens_file(),
        Path::new("control-tokens.toml"),
        "beside the outbox"
    );
}

#[test]
fn tokens_required_on_loopback_need_a_token_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let closed = with_control(dir.path(), "require_tokens = true");
    let e = Config::from_toml(&closed, "lab.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("control.require_tokens") && e.contains("holds none"),
        "{e}"
    );
}

#[test]
fn the_control_connection_cap_is_read_and_zero_is_refused() {
    assert_eq!(
        Config::from_toml(GOOD, "lab.toml")
            .unwrap()
            .control
            .max_connections,
        None
    );
    let capped = format!("{GOOD}\n[control]\nmax_connections = 64\n");
    let config = Config::from_toml(&capped, "lab.toml").unwrap();
    assert_eq!(config.control.max_connections, Some(64));
    let zero = format!("{GOOD}\n[control]\nmax_connections = 0\n");
    let e = Config::from_toml(&zero, "lab.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("control.max_connections"), "{e}");
}

#[test]
fn a_hub_lab_is_a_printable_name() {
    let with_lab = |lab: &str| {
        GOOD.replace(
            "address = \"http://127.0.0.1:50051\"",
            &format!("address = \"http://127.0.0.1:50051\"\nlab = {lab:?}"),
        )
    };
    Config::from_toml(&with_lab("cell-ageing"), "lab.toml").unwrap();
    for bad in ["", " cell-ageing", "cell\nageing"] {
        let e = Config::from_toml(&with_lab(bad), "lab.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("hub.lab"), "{bad:?}: {e}");
    }
}

#[test]
fn channel_on_an_undefined_device_is_refused() {
    let text = GOOD.replace("id = \"psb1/1\"", "id = \"psb9/1\"");
    let e = Config::from_toml(&text, "lab.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("channel[0].id") && e.contains("psb9"), "{e}");
}

#[test]
fn the_example_lab_configs_in_deploy_load() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let mut seen = 0;
    for entry in std::fs::read_dir(&deploy).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            Config::from_toml(&text, &path.display().to_string()).unwrap();
            seen += 1;
        }
    }
    assert!(seen > 0, "deploy/ has example configurations");
}

#[test]
fn channel_limits_can_only_narrow_the_lab_limits() {
    let c = Config::from_toml(GOOD, "lab.toml").unwrap();
    let narrowed = c.limits.stricter(&ChannelLimits {
        voltage_max: Some(4.5),
        current_max: Some(2.0),
        ..ChannelLimits::default()
    });
    assert_eq!(narrowed.voltage_max, 4.25);
    assert_eq!(narrowed.current_max, 2.0);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_text_is_an_error_or_a_config_never_a_panic(text in "\\PC{0,200}") {
            let _ = Config::from_toml(&text, "fuzz.toml");
        }

        #[test]
        fn mutated_configs_never_panic(cut in 0usize..400, insert in "[a-z_=\"\\[\\]0-9. \n]{0,20}") {
            let mut text = GOOD.to_string();
            let at = cut.min(text.len());
            let at = (0..=at).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
            text.insert_str(at, &insert);
            let _ = Config::from_toml(&text, "fuzz.toml");
        }
    }
}

#[test]
fn a_second_channel_on_a_single_output_psb_is_a_config_error_naming_the_model() {
    let text = format!("{GOOD}\n[[channel]]\nid = \"psb1/2\"\n");
    let e = Config::from_toml(&text, "lab.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"psb1/2\""), "{e}");
    assert!(e.contains("EA PSB with 1 output"), "{e}");
}

#[test]
fn channel_zero_of_a_stepped_device_is_a_config_error() {
    let text = GOOD.replace("id = \"psb1/1\"", "id = \"psb1/0\"");
    let e = Config::from_toml(&text, "lab.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("outputs count from 1"), "{e}");
}

#[test]
fn a_second_channel_on_a_riden_or_a_scpi_instrument_is_a_config_error_naming_the_model() {
    let riden = GOOD
        .replace("family = \"ea-psb\"", "family = \"riden\"")
        .replace("address = \"127.0.0.1:502\"", "port = \"/dev/ttyUSB0\"")
        + "\n[[channel]]\nid = \"psb1/2\"\n";
    let e = Config::from_toml(&riden, "lab.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("Riden RD60xx with 1 output"), "{e}");
    let scpi = GOOD.replace(
        "family = \"ea-psb\"",
        "family = \"scpi\"\ndialect = \"keithley-24xx\"",
    ) + "\n[[channel]]\nid = \"psb1/2\"\n";
    let e = Config::from_toml(&scpi, "lab.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("keithley-24xx dialect with 1 output"), "{e}");
}

#[test]
fn an_electronic_load_serves_one_channel() {
    let pair = |second: &str| {
        GOOD.replace("family = \"ea-psb\"", "family = \"scpi\"")
            + r#"
    [[device]]
    name = "supply2"
    family = "scpi"
    address = "127.0.0.1:5026"
    [[device]]
    name = "load1"
    family = "scpi"
    address = "127.0.0.1:5027"
    [[channel]]
    id = "supply2/1"
    load = "load1"
"# + second
    };
    let shared = pair("").replace("id = \"psb1/1\"", "id = \"psb1/1\"\n    load = \"load1\"");
    let e = Config::from_toml(&shared, "lab.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("a load serves one channel"), "{e}");
    let own = pair("[[channel]]\nid = \"load1/1\"\n");
    let e = Config::from_toml(&own, "lab.toml").unwrap_err().to_string();
    assert!(e.contains("a load serves one channel"), "{e}");
    assert!(Config::from_toml(&pair(""), "lab.toml").is_ok());
}

#[test]
fn the_hub_address_is_one_address_or_a_list_tried_in_order() {
    let one = Config::from_toml(GOOD, "lab.toml").unwrap();
    assert_eq!(one.hub.address.list(), ["http://127.0.0.1:50051"]);
    let two = GOOD.replace(
        "address = \"http://127.0.0.1:50051\"",
        "address = [\"http://hub-a.lab:50051\", \"http://hub-b.lab:50051\"]",
    );
    let c = Config::from_toml(&two, "lab.toml").unwrap();
    assert_eq!(
        c.hub.address.list(),
        ["http://hub-a.lab:50051", "http://hub-b.lab:50051"]
    );
    assert_eq!(
        c.hub.address.to_string(),
        "http://hub-a.lab:50051, http://hub-b.lab:50051"
    );
    for bad in [
        "address = []",
        "address = [\"http://hub-a.lab:50051\", \"hub-b.lab:50051\"]",
        "address = [\"http://hub-a.lab:50051\", \"https://hub-b.lab:50051\"]",
        "address = 50051",
    ] {
        let text = GOOD.replace("address = \"http://127.0.0.1:50051\"", bad);
        let e = Config::from_toml(&text, "lab.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("hub"), "{bad}: {e}");
    }
}

#[test]
fn the_web_monitor_listens_on_loopback_by_default_and_can_be_switched_off() {
    let c = Config::from_toml(GOOD, "lab.toml").unwrap();
    assert_eq!(
        c.web.address(),
        Ok(Some(DEFAULT_WEB_LISTEN.parse().unwrap()))
    );
    assert!(!c.web_requires_tokens());
    for off in ["\"\"", "\"off\""] {
        let c = Config::from_toml(&format!("{GOOD}\n[web]\nlisten = {off}\n"), "lab.toml").unwrap();
        assert_eq!(c.web.address(), Ok(None), "{off}");
    }
    let e = Config::from_toml(
        &format!("{GOOD}\n[web]\nlisten = \"nowhere\"\n"),
        "lab.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("web.listen") && e.contains("host:port"), "{e}");
}

#[test]
fn a_web_monitor_other_machines_reach_is_refused_without_tls_and_a_token_unless_said_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let open = format!(
        "{}\n[web]\nlisten = \"0.0.0.0:8620\"\n",
        with_control(dir.path(), "")
    );
    let e = Config::from_toml(&open, "lab.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("web.listen = 0.0.0.0:8620") && e.contains("control.tls_cert"),
        "{e}"
    );
    let tls = open.replace("[web]", "tls_cert = \"d.pem\"\ntls_key = \"k.pem\"\n[web]");
    let e = Config::from_toml(&tls, "lab.toml").unwrap_err().to_string();
    assert!(e.contains("holds none"), "{e}");
    TokenStore::new(dir.path().join("control-tokens.toml"))
        .issue("alice", Role::Operator)
        .unwrap();
    let ready = Config::from_toml(&tls, "lab.toml").unwrap();
    assert!(ready.web_requires_tokens() && !ready.control_requires_tokens());
    let said =
        Config::from_toml(&open.replace("[web]", "insecure = true\n[web]"), "lab.toml").unwrap();
    assert!(!said.web_requires_tokens());
    let closed = with_control(dir.path(), "require_tokens = true");
    assert!(
        Config::from_toml(&closed, "lab.toml")
            .unwrap()
            .web_requires_tokens()
    );
}

#[test]
fn quality_thresholds_default_take_protocol_overrides_and_a_bad_key_is_named() {
    let c = Config::from_toml(GOOD, "lab.toml").unwrap();
    assert_eq!(
        c.quality.0.base,
        crate::proto::quality::Thresholds::default()
    );
    let text = format!(
        "{GOOD}\n[quality]\nmax_gap_s = 30\n[quality.protocols.\"Slow drift\"]\nstuck_samples = 20\n"
    );
    let c = Config::from_toml(&text, "lab.toml").unwrap();
    let slow = c.quality.0.for_name("Slow drift");
    assert_eq!((slow.max_gap_s, slow.stuck_samples), (30.0, 20));
    assert_eq!(c.quality.0.for_name("other").stuck_samples, 300);
    let bad = format!("{GOOD}\n[quality.protocols.p]\nstuck_samples = 1\n");
    let e = Config::from_toml(&bad, "lab.toml").unwrap_err().to_string();
    assert!(e.contains("lab.toml") && e.contains("stuck_samples"), "{e}");
    let typo = format!("{GOOD}\n[quality]\nmax_gap = 30\n");
    let e = Config::from_toml(&typo, "lab.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_gap"), "{e}");
}
