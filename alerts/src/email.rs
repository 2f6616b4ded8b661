//! E-mail delivery through SMTP submission: STARTTLS (required) by default, TLS from the first
//! byte, or plain only to a relay on this machine; login when configured.

use super::Origin;
use super::store::StoredAlert;
use crate::config::{EmailConfig, EmailTls, Secret, is_loopback_host};
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

/// A configured mailer; the password never reaches a log.
pub struct Mailer {
    /// Holds the credentials; not `Debug` (see below).
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    /// For `Debug`: where mail goes, without the credentials.
    server: String,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("server", &self.server)
            .field("from", &self.from.to_string())
            .field("to", &self.to.len())
            .finish_non_exhaustive()
    }
}

/// The SMTP password, from `password_file` or `password_env`.
fn password(config: &EmailConfig) -> anyhow::Result<Option<Secret>> {
    if let Some(path) = &config.password_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("alerts.email.password_file {}: {e}", path.display()))?;
        return Ok(Some(Secret::new(text.trim_end_matches(['\r', '\n']))));
    }
    if let Some(name) = &config.password_env {
        let value = std::env::var(name).map_err(|_| {
            anyhow::anyhow!("alerts.email.password_env: the environment has no {name}")
        })?;
        return Ok(Some(Secret::new(value)));
    }
    Ok(None)
}

impl Mailer {
    /// Reads the password and the CA file and prepares the transport (no connection yet).
    pub fn new(config: &EmailConfig) -> anyhow::Result<Mailer> {
        let mailbox = |key: &str, text: &str| {
            text.parse::<Mailbox>()
                .map_err(|e| anyhow::anyhow!("alerts.email.{key} {text:?}: {e}"))
        };
        let from = mailbox("from", &config.from)?;
        let to = config
            .to
            .iter()
            .map(|t| mailbox("to", t))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let host = config.server.trim();
        let tls = match config.tls {
            EmailTls::None => {
                anyhow::ensure!(
                    is_loopback_host(host),
                    "alerts.email.tls = \"none\" is only for a relay on this machine"
                );
                Tls::None
            }
            mode => {
                let mut params = TlsParameters::builder(host.to_string());
                if let Some(path) = &config.ca_file {
                    let pem = std::fs::read(path).map_err(|e| {
                        anyhow::anyhow!("alerts.email.ca_file {}: {e}", path.display())
                    })?;
                    let ca = Certificate::from_pem(&pem).map_err(|e| {
                        anyhow::anyhow!("alerts.email.ca_file {}: {e}", path.display())
                    })?;
                    params = params.add_root_certificate(ca);
                }
                let params = params
                    .build_rustls()
                    .map_err(|e| anyhow::anyhow!("alerts.email: TLS: {e}"))?;
                if mode == EmailTls::Tls {
                    Tls::Wrapper(params)
                } else {
                    Tls::Required(params)
                }
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(config.port())
            .tls(tls)
            .hello_name(ClientId::Domain("cyclerd".into()))
            .timeout(Some(Duration::from_millis(
                config.timeout_ms.unwrap_or(10_000),
            )));
        if let (Some(user), Some(password)) = (&config.username, password(config)?) {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose().to_string(),
            ));
        }
        Ok(Mailer {
            transport: builder.build(),
            from,
            to,
            server: format!("{host}:{}", config.port()),
        })
    }

    /// Sends `alert` to every recipient; the error says why the server did not take it.
    pub async fn send(&self, alert: &StoredAlert, origin: &Origin) -> Result<(), String> {
        let mut message = Message::builder()
            .from(self.from.clone())
            // A retry after a lost reply carries the same id, which mail clients group by.
            .message_id(Some(format!("<{}@cyclerd>", alert.uuid)))
            .subject(super::headline(alert, origin))
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            message = message.to(to.clone());
        }
        let body = super::email_body(alert, origin);
        let message = message.body(body).map_err(|e| e.to_string())?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| describe(&e))
    }
}

/// An error with its causes.
fn describe(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
