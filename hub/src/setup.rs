//! `cyclerhub setup`: a lab's hub, secure in one command.
//!
//! Makes the lab's certificate authority, the hub's certificate for the names daemons reach it
//! by, and the first tokens (one per daemon, one per person who reads), so that the secure way
//! (`serve` with TLS and required tokens) is also the easy one. Secrets are written readable by
//! their owner only; nothing that exists is overwritten (a lab's CA is not replaced by mistake).

use crate::store::HubStore;
use crate::token::Role;
use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What to set up.
pub struct Setup<'a> {
    /// Where the certificates, keys and tokens go.
    pub dir: &'a Path,
    pub lab: &'a str,
    /// The names and addresses daemons connect to the hub by (the certificate's subject names).
    pub hosts: &'a [String],
    /// A daemon token per name, and a reader token per name.
    pub daemons: &'a [String],
    pub readers: &'a [String],
}

/// The files written: the lab CA (for daemons' `hub.ca_file`), the hub's certificate and key
/// (for `serve --tls-cert --tls-key`), and each token's file.
pub struct Written {
    pub ca: PathBuf,
    pub ca_key: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub tokens: Vec<(String, Role, PathBuf)>,
}

/// Sets up `s.lab` in `store`; see the module doc.
pub fn setup(store: &HubStore, s: &Setup<'_>) -> Result<Written> {
    if s.hosts.is_empty() {
        bail!("give the name daemons reach the hub by: --host hub.lab (and --host ADDRESS)");
    }
    let tokens_dir = s.dir.join("tokens");
    let written = Written {
        ca: s.dir.join("lab-ca.pem"),
        ca_key: s.dir.join("lab-ca-key.pem"),
        cert: s.dir.join("hub.pem"),
        key: s.dir.join("hub-key.pem"),
        tokens: s
            .daemons
            .iter()
            .map(|n| (n.clone(), Role::Daemon))
            .chain(s.readers.iter().map(|n| (n.clone(), Role::Reader)))
            .map(|(n, role)| {
                let file = tokens_dir.join(format!("{n}.token"));
                (n, role, file)
            })
            .collect(),
    };
    let files = [&written.ca, &written.ca_key, &written.cert, &written.key]
        .into_iter()
        .chain(written.tokens.iter().map(|(_, _, f)| f));
    if let Some(taken) = files.into_iter().find(|f| f.exists()) {
        bail!(
            "{} exists: setup never overwrites a lab's keys; choose another --dir",
            taken.display()
        );
    }
    std::fs::create_dir_all(&tokens_dir)
        .with_context(|| format!("cannot create {}", tokens_dir.display()))?;

    let tls = |e: rcgen::Error| anyhow::anyhow!("cannot make the lab's certificates: {e}");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{} lab CA", s.lab));
    let ca_key = rcgen::KeyPair::generate().map_err(tls)?;
    let ca = ca_params.self_signed(&ca_key).map_err(tls)?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().map_err(tls)?;
    let mut params = rcgen::CertificateParams::new(s.hosts.to_vec()).map_err(tls)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{} hub", s.lab));
    let cert = params.signed_by(&key, &issuer).map_err(tls)?;

    write_new(&written.ca, ca.pem().as_bytes(), false)?;
    write_new(&written.ca_key, ca_key_pem.as_bytes(), true)?;
    write_new(&written.cert, cert.pem().as_bytes(), false)?;
    write_new(&written.key, key.serialize_pem().as_bytes(), true)?;
    for (name, role, file) in &written.tokens {
        let token = store.issue_token(s.lab, name, *role)?;
        write_new(file, format!("{token}\n").as_bytes(), true)?;
    }
    Ok(written)
}

/// Writes a file that must not exist yet; `private` ones are readable by their owner only.
fn write_new(path: &Path, bytes: &[u8], private: bool) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    options
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .with_context(|| format!("cannot write {}", path.display()))
}
