//! Webhook delivery: one JSON POST per alert. `text` is what Slack, Mattermost and Teams
//! incoming webhooks show; the other fields are for receivers that read them. The alert's id is
//! in the payload and the `Idempotency-Key` header: a retry after a lost reply repeats it.

use super::Origin;
use super::store::StoredAlert;
use crate::config::{Secret, WebhookConfig, check_webhook_url};
use std::time::Duration;

/// A configured webhook; its URL (which holds the webhook's secret) never reaches a log.
#[derive(Debug)]
pub struct Webhook {
    /// Connections are kept between alerts.
    client: reqwest::Client,
    url: Secret,
}

/// The payload for `alert`.
pub fn payload(alert: &StoredAlert, origin: &Origin) -> serde_json::Value {
    serde_json::json!({
        "text": super::headline(alert, origin),
        "id": alert.uuid,
        "kind": alert.kind.name(),
        "daemon": origin.daemon,
        "lab": origin.lab,
        "channel": alert.channel,
        "test_id": alert.test_id,
        "reason": alert.reason,
        "raised_at": super::rfc3339(alert.raised_unix_ms),
    })
}

impl Webhook {
    /// Reads the URL (from `url` or `url_file`) and the CA file; errors name the key, never
    /// the URL.
    pub fn new(config: &WebhookConfig) -> anyhow::Result<Webhook> {
        let url = match (&config.url, &config.url_file) {
            (Some(url), _) => url.clone(),
            (None, Some(path)) => Secret::new(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        anyhow::anyhow!("alerts.webhook.url_file {}: {e}", path.display())
                    })?
                    .trim(),
            ),
            (None, None) => anyhow::bail!("alerts.webhook needs url or url_file"),
        };
        check_webhook_url(url.expose(), config.insecure).map_err(anyhow::Error::msg)?;
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms.unwrap_or(10_000)))
            // A redirect would carry the alert where the configuration did not say.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("alerts.webhook.ca_file {}: {e}", path.display()))?;
            let ca = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| anyhow::anyhow!("alerts.webhook.ca_file {}: {e}", path.display()))?;
            builder = builder.add_root_certificate(ca);
        }
        let client = builder
            .build()
            .map_err(|e| anyhow::anyhow!("alerts.webhook: {}", e.without_url()))?;
        Ok(Webhook { client, url })
    }

    /// POSTs `alert`; the error says why it was not taken (never the URL).
    pub async fn send(&self, alert: &StoredAlert, origin: &Origin) -> Result<(), String> {
        let body = payload(alert, origin).to_string();
        let response = self
            .client
            .post(self.url.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", alert.uuid.as_str())
            .body(body)
            .send()
            .await
            .map_err(|e| describe(e.without_url()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let text: String = text.chars().take(200).collect();
        Err(format!("the webhook answered {status}: {}", text.trim()))
    }
}

/// An error with its causes (reqwest's own text is often just "error sending request").
fn describe(e: reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
