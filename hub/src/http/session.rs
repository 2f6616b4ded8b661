//! The web app's sessions, kept on the server: signing in with a reader token creates one
//! under a random id, which the browser holds in an `HttpOnly`, `SameSite=Strict` cookie
//! (`Secure` over TLS). The token stays on the server and is checked again on every request, so
//! revoking it ends the session's access at once; a session expires after [`SESSION_TTL`] of
//! inactivity, and signing out forgets it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};

/// The session cookie's name.
pub const COOKIE: &str = "cyclerhub_session";
/// How long a session lasts without a request.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Most sessions held at once: the oldest goes when one more signs in.
const MAX_SESSIONS: usize = 10_000;

/// One signed-in browser.
struct Session {
    /// The token it signed in with, presented on its behalf.
    token: String,
    /// When it was last used: it expires [`SESSION_TTL`] later.
    used: Instant,
}

/// Every signed-in session, by id.
#[derive(Clone, Default)]
pub struct Sessions {
    /// Session id (64 hex digits) -> session.
    inner: Arc<Mutex<HashMap<String, Session>>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session for `token`; its id, for the cookie.
    pub fn create(&self, token: String) -> String {
        let id: String = rand::random::<[u8; 32]>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut sessions = self.lock();
        sessions.retain(|_, s| s.used.elapsed() < SESSION_TTL);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(id, _)| id.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            id.clone(),
            Session {
                token,
                used: Instant::now(),
            },
        );
        id
    }

    /// The token of the live session the request's cookie names, if any (and marks it used).
    pub fn token(&self, headers: &HeaderMap) -> Option<String> {
        let id = cookie_value(headers, COOKIE)?;
        let mut sessions = self.lock();
        let session = sessions.get_mut(&id)?;
        if session.used.elapsed() >= SESSION_TTL {
            sessions.remove(&id);
            return None;
        }
        session.used = Instant::now();
        Some(session.token.clone())
    }

    /// Whether the request's cookie names a live session.
    pub fn signed_in(&self, headers: &HeaderMap) -> bool {
        self.token(headers).is_some()
    }

    /// Forgets the session the request's cookie names (signing out).
    pub fn remove(&self, headers: &HeaderMap) {
        if let Some(id) = cookie_value(headers, COOKIE) {
            self.lock().remove(&id);
        }
    }
}

/// The `Set-Cookie` value that gives the browser session `id`.
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that makes the browser drop its session cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The value of cookie `name` in the request, if sent.
fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}
