//! `cyclerd check-config [FILE]`: everything `cyclerd run` checks of a configuration before it
//! reaches a device, without reaching any: the file parses and validates, the control API's
//! and the hub's TLS and token files can be read, the listen addresses are valid, the hub
//! addresses parse. Devices, the outbox and the hub are not opened, so it is safe beside a
//! running daemon (e.g. before `systemctl restart cyclerd`).

use cyclerd::HubSettings;
use cyclerd::config::Config;
use std::io::Write;
use std::path::Path;

/// Checks `path` and writes a report to `out`: what the daemon would run, or every problem
/// found. `Ok(false)` when there is a problem.
pub fn check(path: &Path, out: &mut impl Write) -> std::io::Result<bool> {
    let origin = path.display().to_string();
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            writeln!(out, "error: {e}")?;
            writeln!(out, "{origin}: NOT OK")?;
            return Ok(false);
        }
    };
    // The checks after parsing are independent: every problem is reported, not the first.
    let mut problems = Vec::new();
    if let Err(e) = cyclerd::control::ServeOptions::from_config(&config, &origin) {
        problems.push(format!("{e:#}"));
    }
    let web = match config.web.address() {
        Ok(web) => web,
        Err(e) => {
            problems.push(format!("{origin}: {e}"));
            None
        }
    };
    // The monitor's TLS setup parses the certificate and key, which the control API's leaves
    // to its first connection: checked whether or not the monitor is on.
    if config.control.tls_cert.is_some()
        && let Err(e) = cyclerd::web::WebOptions::from_config(&config, &origin)
    {
        problems.push(format!("{e:#}"));
    }
    let hub = match HubSettings::read(&config, &origin) {
        Ok(hub) => Some(hub),
        Err(e) => {
            problems.push(format!("{e:#}"));
            None
        }
    };
    for problem in &problems {
        writeln!(out, "error: {problem}")?;
    }
    if !problems.is_empty() {
        writeln!(out, "{origin}: NOT OK")?;
        return Ok(false);
    }
    summary(&config, web, hub.as_ref(), out)?;
    writeln!(
        out,
        "{origin}: OK (devices, the outbox and the hub were not contacted)"
    )?;
    Ok(true)
}

/// What the daemon would run with `config`.
fn summary(
    config: &Config,
    web: Option<std::net::SocketAddr>,
    hub: Option<&HubSettings>,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    writeln!(out, "daemon: {}", config.daemon.name)?;
    writeln!(out, "outbox: {}", config.store.path.display())?;
    writeln!(
        out,
        "hub: {} (CA file: {}, token: {})",
        config.hub.address,
        yes_no(hub.is_some_and(|h| h.ca_pem.is_some())),
        yes_no(hub.is_some_and(|h| h.token.is_some())),
    )?;
    writeln!(
        out,
        "control API: {} (TLS: {}, tokens required: {})",
        config.control.listen,
        yes_no(!config.control.missing_tls()),
        yes_no(config.control_requires_tokens()),
    )?;
    match web {
        Some(at) => writeln!(
            out,
            "web monitor: {at} (tokens required: {})",
            yes_no(config.web_requires_tokens())
        )?,
        None => writeln!(out, "web monitor: off")?,
    }
    for d in &config.devices {
        let at = d
            .address
            .map(|a| a.to_string())
            .or_else(|| d.port.clone())
            .unwrap_or_default();
        writeln!(out, "device {}: {} at {at}", d.name, d.family.name())?;
    }
    let ids: Vec<&str> = config.channels.iter().map(|c| c.id.as_str()).collect();
    writeln!(out, "channels ({}): {}", ids.len(), ids.join(", "))?;
    for c in &config.chambers {
        writeln!(
            out,
            "chamber {}: {} with {}",
            c.name,
            c.family.name(),
            c.channels.join(", ")
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commented default configuration the package installs as /etc/cyclerd/cyclerd.toml.
    fn packaged() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/packaging/cyclerd.toml")
    }

    #[test]
    fn the_packaged_default_configuration_passes_the_check() {
        let mut out = Vec::new();
        let ok = check(&packaged(), &mut out).unwrap();
        let report = String::from_utf8(out).unwrap();
        assert!(ok, "{report}");
        assert!(report.contains("OK (devices, the outbox and the hub were not contacted)"));
        assert!(
            report.contains("outbox: /var/lib/cyclerd/outbox.sqlite"),
            "{report}"
        );
    }

    #[test]
    fn every_problem_after_parsing_is_reported_not_just_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("hub-token");
        std::fs::write(&token, "\n").unwrap();
        let text = std::fs::read_to_string(packaged()).unwrap().replace(
            "[limits]",
            &format!(
                "[limits]\n# appended by the test\n{}",
                "voltage_min_unused = 0\n"
            ),
        );
        // An unknown key is a parse error, reported alone and naming the key.
        let unknown = dir.path().join("unknown.toml");
        std::fs::write(&unknown, &text).unwrap();
        let mut out = Vec::new();
        assert!(!check(&unknown, &mut out).unwrap());
        let report = String::from_utf8(out).unwrap();
        assert!(report.contains("voltage_min_unused"), "{report}");
        // Files that cannot be read: the control API's certificate and the hub's token.
        let text = std::fs::read_to_string(packaged())
            .unwrap()
            .replace(
                "# tls_cert = \"/etc/cyclerd/cyclerd.pem\"\n# tls_key = \"/etc/cyclerd/cyclerd-key.pem\"",
                "tls_cert = \"/nonexistent/cyclerd.pem\"\ntls_key = \"/nonexistent/cyclerd-key.pem\"",
            )
            .replace(
                "# token_file = \"/etc/cyclerd/hub-token\"",
                &format!("token_file = {:?}", token.display().to_string()),
            );
        let files = dir.path().join("files.toml");
        std::fs::write(&files, text).unwrap();
        let mut out = Vec::new();
        assert!(!check(&files, &mut out).unwrap());
        let report = String::from_utf8(out).unwrap();
        assert!(
            report.contains("control.tls_cert = /nonexistent/cyclerd.pem"),
            "{report}"
        );
        assert!(report.contains("hub.token_file"), "{report}");
        assert!(report.contains("is empty"), "{report}");
        assert!(report.ends_with("NOT OK\n"), "{report}");
    }
}
