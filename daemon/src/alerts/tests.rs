//! The alert service against a local HTTP receiver (axum) and a local SMTP sink written here,
//! over real loopback sockets, with the store in a real SQLite file.

use super::*;
use crate::config::Config;
use crate::config::alerts::Secret;
use base64::Engine as _;
use std::sync::Arc;
use std::sync::Mutex as StdMutex;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(60);

/// One POST the receiver took.
#[derive(Debug)]
struct Hook {
    idempotency_key: String,
    body: serde_json::Value,
}

/// A local webhook receiver on `listener`: every POST to `/hook` is passed on and answered 200.
fn receiver(listener: TcpListener) -> mpsc::UnboundedReceiver<Hook> {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let tx = tx.clone();
            async move {
                let key = headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let body = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
                let _ = tx.send(Hook {
                    idempotency_key: key,
                    body,
                });
                "ok"
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    rx
}

/// What the SMTP sink saw of one session.
#[derive(Debug, Default, Clone)]
struct Session {
    /// Every command line (AUTH lines included, as sent).
    commands: Vec<String>,
    /// The decoded credentials of AUTH PLAIN or LOGIN: `user\0password`.
    login: Option<String>,
    /// Whether the login came after STARTTLS.
    login_encrypted: bool,
    /// The message (headers and body) after DATA, if one was sent.
    data: String,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A local SMTP sink on `listener`; with `tls`, it offers STARTTLS and takes AUTH only after
/// it. Every session is passed on when it ends.
fn smtp_sink(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> mpsc::UnboundedReceiver<Session> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (tx, tls) = (tx.clone(), tls.clone());
            tokio::spawn(async move {
                let mut session = Session::default();
                let _ = smtp_session(Box::new(stream), tls, &mut session).await;
                let _ = tx.send(session);
            });
        }
    });
    rx
}

async fn smtp_session(
    stream: Box<dyn Io>,
    mut tls: Option<tokio_rustls::TlsAcceptor>,
    s: &mut Session,
) -> std::io::Result<()> {
    let mut io = BufReader::new(stream);
    let mut encrypted = false;
    io.write_all(b"220 sink ESMTP\r\n").await?;
    let decode = |b64: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    loop {
        let mut line = String::new();
        if io.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let line = line.trim_end().to_string();
        s.commands.push(line.clone());
        let upper = line.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            if tls.is_some() {
                "250-sink\r\n250-STARTTLS\r\n250 8BITMIME\r\n".into()
            } else {
                "250-sink\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n".into()
            }
        } else if upper == "STARTTLS" {
            let Some(acceptor) = tls.take() else {
                io.write_all(b"502 no\r\n").await?;
                continue;
            };
            io.write_all(b"220 go ahead\r\n").await?;
            let plain = io.into_inner();
            let secured = acceptor.accept(plain).await?;
            io = BufReader::new(Box::new(secured));
            encrypted = true;
            continue;
        } else if let Some(rest) = upper.strip_prefix("AUTH PLAIN") {
            let b64 = if rest.trim().is_empty() {
                io.write_all(b"334 \r\n").await?;
                let mut next = String::new();
                io.read_line(&mut next).await?;
                next
            } else {
                line["AUTH PLAIN".len()..].to_string()
            };
            s.login = Some(decode(&b64).trim_start_matches('\0').to_string());
            s.login_encrypted = encrypted;
            "235 ok\r\n".into()
        } else if upper.starts_with("AUTH LOGIN") {
            io.write_all(b"334 VXNlcm5hbWU6\r\n").await?;
            let mut user = String::new();
            io.read_line(&mut user).await?;
            io.write_all(b"334 UGFzc3dvcmQ6\r\n").await?;
            let mut password = String::new();
            io.read_line(&mut password).await?;
            s.login = Some(format!("{}\0{}", decode(&user), decode(&password)));
            s.login_encrypted = encrypted;
            "235 ok\r\n".into()
        } else if upper == "DATA" {
            io.write_all(b"354 go on\r\n").await?;
            loop {
                let mut data = String::new();
                if io.read_line(&mut data).await? == 0 {
                    return Ok(());
                }
                if data == ".\r\n" {
                    break;
                }
                s.data.push_str(&data);
            }
            "250 queued\r\n".into()
        } else if upper == "QUIT" {
            io.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            "250 ok\r\n".into()
        };
        io.write_all(reply.as_bytes()).await?;
    }
}

/// A lab configuration with `alerts` (TOML) and one channel `a/1`, its files in `dir`.
fn config(dir: &Path, alerts: &str) -> Config {
    let text = format!(
        "[store]\npath = {store:?}\n[hub]\naddress = \"http://127.0.0.1:1\"\nlab = \"lab-a\"\n\
         [daemon]\nname = \"bench-3\"\n\
         [limits]\nvoltage_min = 2.5\nvoltage_max = 4.25\ncurrent_max = 10.0\n\
         [[device]]\nname = \"a\"\nfamily = \"ea-psb\"\naddress = \"127.0.0.1:502\"\n\
         [[channel]]\nid = \"a/1\"\n{alerts}",
        store = dir.join("outbox.sqlite").display().to_string(),
    );
    Config::from_toml(&text, "lab.toml").unwrap()
}

fn open(config: &Config) -> Alerts {
    Alerts::open(
        &config.alerts,
        &config.alerts_store_path(),
        Origin {
            daemon: config.daemon.name.clone(),
            lab: config.hub.lab.clone().unwrap_or_default(),
        },
    )
    .unwrap()
    .expect("rules are configured")
}

/// Alert settings for a webhook at `hook` and a plain loopback SMTP sink at `smtp`, logging in
/// with the password in `password_file`.
fn both(hook: std::net::SocketAddr, smtp: std::net::SocketAddr, password_file: &Path) -> String {
    format!(
        "[[alerts.rule]]\nkind = \"test_faulted\"\n\
         [alerts.webhook]\nurl = \"http://{hook}/hook\"\n\
         [alerts.email]\nserver = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
         username = \"cyclerd\"\npassword_file = {password:?}\n\
         from = \"cyclerd <cyclerd@lab.example>\"\nto = [\"oncall@lab.example\"]\n",
        port = smtp.port(),
        password = password_file.display().to_string(),
    )
}

fn faulted() -> Observation {
    Observation {
        channels: vec![ChannelSnapshot {
            channel_id: "a/1".into(),
            state: "faulted".into(),
            test_id: "t-0042".into(),
            cell_id: "cell-7".into(),
            reason: "voltage 4.31 V above limit 4.25 V".into(),
            ..Default::default()
        }],
        hub_connected: true,
        ..Default::default()
    }
}

/// Waits until the newest alert's deliveries satisfy `done`.
async fn until(alerts: &Alerts, done: impl Fn(&[store::Delivery]) -> bool) {
    let mut recent = alerts.watch();
    tokio::time::timeout(
        WAIT,
        recent.wait_for(|r| r.first().is_some_and(|a| done(&a.deliveries))),
    )
    .await
    .expect("in time")
    .expect("the service runs");
}

fn all_delivered(d: &[store::Delivery]) -> bool {
    !d.is_empty() && d.iter().all(|d| d.delivered_unix_ms.is_some())
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("in time")
        .expect("the receiver runs")
}

#[tokio::test]
async fn a_faulted_test_sends_one_webhook_and_one_logged_in_email_to_local_receivers() {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("smtp-password");
    std::fs::write(&password, "s3cret-pw\n").unwrap();
    let hook_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let smtp_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = config(
        dir.path(),
        &both(
            hook_listener.local_addr().unwrap(),
            smtp_listener.local_addr().unwrap(),
            &password,
        ),
    );
    let mut hooks = receiver(hook_listener);
    let mut mails = smtp_sink(smtp_listener, None);
    let alerts = open(&config);
    let (stop, stopped) = watch::channel(false);
    let delivery = tokio::spawn(alerts.clone().deliver(stopped));
    let mut engine = alerts.engine().unwrap();
    assert_eq!(alerts.observe(&mut engine, &faulted()), 1);
    // Seen again (the channel stays faulted): nothing new.
    assert_eq!(alerts.observe(&mut engine, &faulted()), 0);

    let hook = next(&mut hooks).await;
    let body = &hook.body;
    assert_eq!(body["kind"], "test_faulted");
    assert_eq!(body["channel"], "a/1");
    assert_eq!(body["test_id"], "t-0042");
    assert_eq!(body["daemon"], "bench-3");
    assert_eq!(body["lab"], "lab-a");
    assert_eq!(body["reason"], "voltage 4.31 V above limit 4.25 V");
    assert_eq!(
        body["text"],
        "[lab-a / bench-3] test t-0042 on a/1 faulted (cell cell-7): voltage 4.31 V above \
         limit 4.25 V"
    );
    assert_eq!(body["id"], hook.idempotency_key.as_str());
    let raised_at = body["raised_at"].as_str().unwrap();
    assert!(
        raised_at.len() == 24 && raised_at.ends_with('Z'),
        "{raised_at}"
    );

    let mail = next(&mut mails).await;
    assert_eq!(mail.login.as_deref(), Some("cyclerd\0s3cret-pw"));
    assert!(
        mail.data.contains("Subject: [lab-a / bench-3] test t-0042"),
        "{}",
        mail.data
    );
    assert!(
        mail.data.contains("To: oncall@lab.example"),
        "{}",
        mail.data
    );
    assert!(
        mail.data
            .contains(&format!("<{}@cyclerd>", hook.idempotency_key)),
        "{}",
        mail.data
    );
    assert!(
        mail.data.contains("reason: voltage 4.31 V"),
        "{}",
        mail.data
    );

    until(&alerts, all_delivered).await;
    let _ = stop.send(true);
    delivery.await.unwrap();
    assert!(hooks.try_recv().is_err(), "one webhook only");
    assert!(mails.try_recv().is_err(), "one mail only");
    assert_eq!(alerts.recent().len(), 1);
}

#[tokio::test]
async fn an_alert_raised_while_the_receivers_are_down_arrives_once_when_they_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("smtp-password");
    std::fs::write(&password, "pw").unwrap();
    // Two free ports, closed again: nothing listens there yet.
    let (hook_addr, smtp_addr) = {
        let a = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b = TcpListener::bind("127.0.0.1:0").await.unwrap();
        (a.local_addr().unwrap(), b.local_addr().unwrap())
    };
    let config = config(dir.path(), &both(hook_addr, smtp_addr, &password));
    let alerts = open(&config);
    let (stop, stopped) = watch::channel(false);
    let delivery = tokio::spawn(alerts.clone().deliver(stopped));
    let mut engine = alerts.engine().unwrap();
    assert_eq!(alerts.observe(&mut engine, &faulted()), 1);
    until(&alerts, |d| {
        d.len() == 2
            && d.iter()
                .all(|d| d.attempts >= 1 && !d.last_error.is_empty())
    })
    .await;

    // The receivers come back; the retries (1 s later) find them.
    let mut hooks = receiver(TcpListener::bind(hook_addr).await.unwrap());
    let mut mails = smtp_sink(TcpListener::bind(smtp_addr).await.unwrap(), None);
    until(&alerts, all_delivered).await;
    let hook = next(&mut hooks).await;
    assert_eq!(hook.body["test_id"], "t-0042");
    assert!(next(&mut mails).await.data.contains("t-0042"));
    let _ = stop.send(true);
    delivery.await.unwrap();
    drop(alerts);

    // A restarted daemon sees the same fault again: nothing is raised or sent twice.
    let alerts = open(&config);
    let (stop, stopped) = watch::channel(false);
    let delivery = tokio::spawn(alerts.clone().deliver(stopped));
    let mut engine = alerts.engine().unwrap();
    assert_eq!(alerts.observe(&mut engine, &faulted()), 0);
    assert!(all_delivered(&alerts.recent()[0].deliveries));
    assert_eq!(alerts.delivery.store().pending().unwrap().len(), 0);
    let _ = stop.send(true);
    delivery.await.unwrap();
    assert!(hooks.try_recv().is_err(), "one webhook only");
    assert!(mails.try_recv().is_err(), "one mail only");
}

#[tokio::test]
async fn starttls_is_required_by_default_so_a_server_without_it_gets_no_mail() {
    let dir = tempfile::tempdir().unwrap();
    let smtp_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = smtp_listener.local_addr().unwrap().port();
    let config = config(
        dir.path(),
        &format!(
            "[[alerts.rule]]\nkind = \"test_faulted\"\n[alerts.email]\nserver = \"127.0.0.1\"\n\
             port = {port}\nfrom = \"c@lab.example\"\nto = [\"o@lab.example\"]\n"
        ),
    );
    let mut sessions = smtp_sink(smtp_listener, None);
    let alerts = open(&config);
    let (stop, stopped) = watch::channel(false);
    let delivery = tokio::spawn(alerts.clone().deliver(stopped));
    let mut engine = alerts.engine().unwrap();
    alerts.observe(&mut engine, &faulted());
    until(&alerts, |d| d.iter().any(|d| d.attempts >= 1)).await;
    let _ = stop.send(true);
    delivery.await.unwrap();
    let session = next(&mut sessions).await;
    assert!(
        !session
            .commands
            .iter()
            .any(|c| c.starts_with("MAIL") || c.starts_with("AUTH")),
        "{:?}",
        session.commands
    );
    let d = &alerts.recent()[0].deliveries[0];
    assert!(d.delivered_unix_ms.is_none());
    assert!(
        d.last_error.to_ascii_lowercase().contains("starttls"),
        "{}",
        d.last_error
    );
}

/// A CA and a certificate for `localhost` it signed: the CA's PEM and the server's TLS
/// acceptor.
fn tls_for_localhost() -> (String, tokio_rustls::TlsAcceptor) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "alert test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(["localhost".to_owned()])
        .and_then(|p| p.signed_by(&key, &issuer))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    (ca.pem(), tokio_rustls::TlsAcceptor::from(Arc::new(server)))
}

#[tokio::test]
async fn the_email_goes_over_starttls_with_the_labs_ca_and_logs_in_only_inside_it() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, acceptor) = tls_for_localhost();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let password = dir.path().join("smtp-password");
    std::fs::write(&password, "tls-pw").unwrap();
    let smtp_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = smtp_listener.local_addr().unwrap().port();
    let config = config(
        dir.path(),
        &format!(
            "[[alerts.rule]]\nkind = \"test_faulted\"\n[alerts.email]\nserver = \"localhost\"\n\
             port = {port}\nca_file = {ca:?}\nusername = \"u\"\npassword_file = {pw:?}\n\
             from = \"c@lab.example\"\nto = [\"o@lab.example\"]\n",
            ca = ca_file.display().to_string(),
            pw = password.display().to_string(),
        ),
    );
    let mut sessions = smtp_sink(smtp_listener, Some(acceptor));
    let alerts = open(&config);
    let (stop, stopped) = watch::channel(false);
    let delivery = tokio::spawn(alerts.clone().deliver(stopped));
    let mut engine = alerts.engine().unwrap();
    alerts.observe(&mut engine, &faulted());
    let session = next(&mut sessions).await;
    assert!(
        session.commands.iter().any(|c| c == "STARTTLS"),
        "{:?}",
        session.commands
    );
    assert_eq!(session.login.as_deref(), Some("u\0tls-pw"));
    assert!(session.login_encrypted);
    assert!(session.data.contains("t-0042"));
    until(&alerts, all_delivered).await;
    let _ = stop.send(true);
    delivery.await.unwrap();
}

/// A log writer the test reads back.
#[derive(Clone, Default)]
struct Logs(Arc<StdMutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

#[tokio::test]
async fn the_webhook_url_and_the_smtp_password_never_appear_in_debug_or_logs() {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("smtp-password");
    std::fs::write(&password, "pw-SECRET-9").unwrap();
    // Nothing listens on either port: every attempt fails and is logged.
    let (hook, smtp) = {
        let a = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b = TcpListener::bind("127.0.0.1:0").await.unwrap();
        (a.local_addr().unwrap(), b.local_addr().unwrap())
    };
    let text = both(hook, smtp, &password).replace("/hook", "/hooks/T0/B0/url-SECRET-7");
    let config = config(dir.path(), &text);
    let alerts = open(&config);
    let (stop, stopped) = watch::channel(false);
    let delivery = tokio::spawn(alerts.clone().deliver(stopped));
    let mut engine = alerts.engine().unwrap();
    alerts.observe(&mut engine, &faulted());
    until(&alerts, |d| {
        d.len() == 2 && d.iter().all(|d| d.attempts >= 1)
    })
    .await;
    let _ = stop.send(true);
    delivery.await.unwrap();

    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("alert not delivered"), "{logged}");
    let debug = format!("{config:?} {:?} {:?}", alerts.delivery, alerts.recent());
    for secret in ["SECRET", "url-SECRET-7", "pw-SECRET-9"] {
        assert!(!logged.contains(secret), "{secret} in the logs: {logged}");
        assert!(!debug.contains(secret), "{secret} in Debug: {debug}");
    }
    assert_eq!(format!("{:?}", Secret::new("x")), "<redacted>");
}

#[test]
fn alert_settings_that_would_leak_or_go_nowhere_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("outbox.sqlite").display().to_string();
    let base = format!(
        "[store]\npath = {store:?}\n[hub]\naddress = \"http://127.0.0.1:1\"\n\
         [limits]\nvoltage_min = 2.5\nvoltage_max = 4.25\ncurrent_max = 10.0\n\
         [[device]]\nname = \"a\"\nfamily = \"ea-psb\"\naddress = \"127.0.0.1:502\"\n\
         [[channel]]\nid = \"a/1\"\n[[alerts.rule]]\nkind = \"test_faulted\"\n"
    );
    let refused = |extra: &str| {
        Config::from_toml(&format!("{base}{extra}"), "lab.toml")
            .unwrap_err()
            .to_string()
    };
    let mail = "from = \"c@lab.example\"\nto = [\"o@lab.example\"]\n";
    let e = refused(&format!(
        "[alerts.email]\nserver = \"smtp.lab.example\"\ntls = \"none\"\n{mail}"
    ));
    assert!(e.contains("alerts.email.tls"), "{e}");
    let e = refused("[alerts.webhook]\nurl = \"http://hooks.example/T0/url-SECRET\"\n");
    assert!(e.contains("https") && !e.contains("SECRET"), "{e}");
    let e = refused("");
    assert!(e.contains("[alerts.webhook]"), "{e}");
    let e = refused(&format!(
        "[alerts.email]\nserver = \"smtp.lab.example\"\npassword_file = \"pw\"\n{mail}"
    ));
    assert!(e.contains("username"), "{e}");
    let e = refused(
        "[[alerts.rule]]\nkind = \"channel_offline\"\nchannels = [\"b/1\"]\n\
         [alerts.webhook]\nurl = \"https://hooks.example/x\"\n",
    );
    assert!(e.contains("alerts.rule[1]") && e.contains("b/1"), "{e}");
    let e = refused(
        "[[alerts.rule]]\nkind = \"outbox_full\"\n[alerts.webhook]\nurl = \"https://h.example/x\"\n",
    );
    assert!(e.contains("store.max_bytes"), "{e}");
    let e = refused("[[alerts.rule]]\nkind = \"test_faild\"\n");
    assert!(e.contains("test_faild"), "{e}");
}

#[test]
fn times_are_rfc3339_utc_with_milliseconds() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339(1_700_000_000_100), "2023-11-14T22:13:20.100Z");
    assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
}

#[test]
fn the_wait_between_attempts_doubles_up_to_the_maximum() {
    let max = Duration::from_secs(300);
    let waits: Vec<u64> = (1..=11).map(|a| backoff(a, max).as_secs()).collect();
    assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    assert_eq!(backoff(u32::MAX, max), max);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_whose_test_trips_a_safety_limit_posts_one_webhook_and_shows_it_in_status() {
    use cyclerd_drivers::cell::{CellParams, Chemistry};
    use cyclerd_drivers::maccor;
    let dir = tempfile::tempdir().unwrap();
    let clock = cyclerd_drivers::Clock::scaled(50.0);
    let cell = CellParams {
        initial_soc: 0.5,
        ..CellParams::new(Chemistry::Nmc, 2.5)
    };
    let json = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let binary = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim =
        maccor::MaccorSim::spawn(json, binary, maccor::SimConfig::new(2, cell), clock.clone())
            .unwrap();
    let hook_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = hook_listener.local_addr().unwrap();
    let mut hooks = receiver(hook_listener);
    let text = format!(
        "[store]\npath = {store:?}\ncommit_interval_ms = 50\n[hub]\naddress = \"http://127.0.0.1:1\"\n\
         [limits]\nvoltage_min = 2.5\nvoltage_max = 4.3\ncurrent_max = 10.0\n\
         [[device]]\nname = \"mdirect\"\nfamily = \"maccor-direct\"\naddress = \"{json}\"\n\
         binary_port = {binary}\nnominal_current = 10.0\nnominal_voltage = 5.0\n\
         [[channel]]\nid = \"mdirect/2\"\npoll_interval_ms = 1000\n\
         [[alerts.rule]]\nkind = \"test_faulted\"\n[[alerts.rule]]\nkind = \"test_ended\"\n\
         [alerts.webhook]\nurl = \"http://{hook}/hook\"\n",
        store = dir.path().join("outbox.sqlite").display().to_string(),
        json = sim.json_addr(),
        binary = sim.binary_addr().port(),
    );
    let config = Config::from_toml(&text, "lab.toml").unwrap();
    let daemon = crate::Daemon::start(config, "lab.toml", clock)
        .await
        .unwrap();
    let metadata = crate::metadata::PRIMARY_METADATA
        .iter()
        .map(|k| {
            let v = if *k == "nominal_capacity_ah" {
                "2.5".into()
            } else {
                format!("{k}-1")
            };
            (k.to_string(), v)
        })
        .collect();
    let protocol = "protocol: Trip\nversion: 1\nsafety:\n  voltage: [2.5 V, 3.9 V]\n  \
                    current: 7 A\nsteps:\n  - \"Charge at 5 A for 2 hr\"\n";
    let test_id = daemon
        .start_test("mdirect/2", protocol, "trip.yaml", metadata)
        .await
        .unwrap();

    let hook = next(&mut hooks).await;
    assert_eq!(hook.body["kind"], "test_faulted", "{:?}", hook.body);
    assert_eq!(hook.body["channel"], "mdirect/2");
    assert_eq!(hook.body["test_id"], test_id.as_str());
    assert!(
        hook.body["reason"].as_str().unwrap().contains("V"),
        "{:?}",
        hook.body
    );
    until(daemon.alerts().unwrap(), all_delivered).await;
    let status = daemon.status();
    assert_eq!(status.alerts.len(), 1, "{:?}", status.alerts);
    assert_eq!(status.alerts[0].id, hook.idempotency_key);
    assert!(status.alerts[0].deliveries[0].delivered);
    daemon.shutdown(Duration::ZERO).await;
    assert!(
        hooks.try_recv().is_err(),
        "one webhook only (a fault is not also an end)"
    );
}
