//! Who may see and do what on the monitor: the control API's rule and tokens file
//! ([`crate::control::access`]), presented as `Authorization: Bearer TOKEN` or through the
//! sign-in form, which sets a session cookie (HttpOnly, SameSite=Strict, Secure under TLS).
//!
//! A session keeps the token's public id, never its text, and is checked against the tokens
//! file on every request, so a revoked token's sessions end at once. Every POST passes a
//! same-origin check (the `Origin` and `Sec-Fetch-Site` headers browsers send), so another
//! site cannot post a form to the monitor, not even to an open loopback one.

use crate::control::tokens::{Caller, Role, TokenStore};
use axum::http::{HeaderMap, header};
use rand::Rng;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The session cookie's name.
pub const COOKIE: &str = "cyclerd_session";

/// How long a session lasts after sign-in.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Sessions kept at most; signing in beyond it forgets the oldest.
const MAX_SESSIONS: usize = 1000;

/// A signed-in browser.
#[derive(Debug, Clone)]
struct Session {
    /// The public id of the token it signed in with (checked again on every request).
    token_id: String,
    /// When it was made, for its lifetime.
    created: Instant,
}

/// Why a request is refused.
#[derive(Debug, PartialEq)]
pub enum Refused {
    /// No credential at all: a page sends the browser to the sign-in form.
    SignIn,
    /// A credential that is not valid (unknown, revoked, expired session): 401 with why.
    Invalid(String),
    /// A valid reader's token for an operator's action: 403 with why.
    Forbidden(String),
}

/// The monitor's access check and its sessions.
pub struct Auth {
    /// The tokens file; `None`: an open listener, everything allowed without a credential.
    tokens: Option<TokenStore>,
    /// Session id (the cookie's value) to its session.
    sessions: Mutex<HashMap<String, Session>>,
    /// Whether cookies get `Secure` (the monitor serves TLS).
    secure: bool,
}

impl Auth {
    pub fn new(tokens: Option<TokenStore>, secure: bool) -> Auth {
        Auth {
            tokens,
            sessions: Mutex::new(HashMap::new()),
            secure,
        }
    }

    /// Whether pages and actions need a token.
    pub fn requires_tokens(&self) -> bool {
        self.tokens.is_some()
    }

    /// Lets a request that needs `need` through (with its caller, `None` when open) or says
    /// why not. Logs name a token by its public id at most, never its text.
    pub fn check(&self, headers: &HeaderMap, need: Role) -> Result<Option<Caller>, Refused> {
        let Some(tokens) = &self.tokens else {
            return Ok(None);
        };
        let caller = if let Some(presented) = bearer(headers) {
            tokens.authenticate(presented).map_err(|refusal| {
                tracing::warn!("web monitor: {refusal}");
                Refused::Invalid(refusal.to_string())
            })?
        } else if let Some(id) = cookie(headers, COOKIE) {
            self.session_caller(tokens, id)?
        } else {
            return Err(Refused::SignIn);
        };
        if !caller.role.allows(need) {
            tracing::warn!(token = %caller.id, name = %caller.name, "web monitor: refused a {} token", caller.role.as_str());
            return Err(Refused::Forbidden(format!(
                "this needs an operator's token; you signed in with {:?}, a {}'s",
                caller.name,
                caller.role.as_str()
            )));
        }
        Ok(Some(caller))
    }

    fn session_caller(&self, tokens: &TokenStore, id: &str) -> Result<Caller, Refused> {
        let expired = || Refused::Invalid("your session ended; sign in again".into());
        let session = {
            let mut sessions = self.sessions.lock().map_err(|_| expired())?;
            sessions.retain(|_, s| s.created.elapsed() < SESSION_LIFETIME);
            sessions.get(id).cloned().ok_or_else(expired)?
        };
        let records = tokens
            .list()
            .map_err(|e| Refused::Invalid(format!("the daemon cannot read its tokens: {e:#}")))?;
        let record = records
            .iter()
            .find(|t| t.id == session.token_id && t.is_valid())
            .ok_or_else(|| {
                Refused::Invalid("the token you signed in with was revoked; sign in again".into())
            })?;
        Ok(Caller {
            id: record.id.clone(),
            name: record.name.clone(),
            role: record.role,
        })
    }

    /// Checks a token typed into the sign-in form; on success the `Set-Cookie` value of a new
    /// session and who signed in.
    pub fn sign_in(&self, presented: &str) -> Result<(String, Caller), String> {
        let Some(tokens) = &self.tokens else {
            return Err("this monitor needs no sign-in".into());
        };
        let caller = tokens.authenticate(presented.trim()).map_err(|refusal| {
            tracing::warn!("web monitor: sign-in refused: {refusal}");
            refusal.to_string()
        })?;
        let id: String = {
            let bytes: [u8; 32] = rand::rng().random();
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        };
        let mut sessions = self.sessions.lock().map_err(|_| "sessions unavailable")?;
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            id.clone(),
            Session {
                token_id: caller.id.clone(),
                created: Instant::now(),
            },
        );
        tracing::info!(token = %caller.id, name = %caller.name, "web monitor: signed in");
        let cookie = format!(
            "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
            SESSION_LIFETIME.as_secs(),
            if self.secure { "; Secure" } else { "" }
        );
        Ok((cookie, caller))
    }

    /// Forgets the request's session; the `Set-Cookie` value that clears the cookie.
    pub fn sign_out(&self, headers: &HeaderMap) -> String {
        if let (Some(id), Ok(mut sessions)) = (cookie(headers, COOKIE), self.sessions.lock()) {
            sessions.remove(id);
        }
        format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
    }
}

/// The token of an `Authorization: Bearer TOKEN` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The value of cookie `name`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Refuses a POST another site's page made: browsers say where a request comes from
/// (`Sec-Fetch-Site`, `Origin`); a client that says neither (curl, a script) is no browser a
/// foreign page could drive.
pub fn same_origin(headers: &HeaderMap) -> Result<(), String> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site != "same-origin"
        && site != "none"
    {
        return Err(format!(
            "refused: the form was sent from another site ({site})"
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let same = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| !host.is_empty() && o == host);
        if !same {
            return Err(format!(
                "refused: the form was sent from {origin:?}, not from this monitor ({host})"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_post_from_another_site_is_refused_and_one_from_this_page_passes() {
        let here = headers(&[
            ("host", "127.0.0.1:8620"),
            ("origin", "http://127.0.0.1:8620"),
        ]);
        assert_eq!(same_origin(&here), Ok(()));
        let there = headers(&[
            ("host", "127.0.0.1:8620"),
            ("origin", "https://evil.example"),
        ]);
        assert!(same_origin(&there).is_err());
        let cross = headers(&[("host", "127.0.0.1:8620"), ("sec-fetch-site", "cross-site")]);
        assert!(same_origin(&cross).is_err());
        assert_eq!(same_origin(&headers(&[("host", "h")])), Ok(()));
    }

    #[test]
    fn tokens_come_from_a_bearer_header_or_the_session_cookie() {
        let h = headers(&[("authorization", "Bearer cyd_a_b")]);
        assert_eq!(bearer(&h), Some("cyd_a_b"));
        let h = headers(&[("cookie", "x=1; cyclerd_session=abc; y=2")]);
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
    }

    #[test]
    fn sessions_follow_the_tokens_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path().join("tokens.toml"));
        let (_, reader) = store.issue("ro", Role::Reader).unwrap();
        let auth = Auth::new(Some(store.clone()), false);
        assert_eq!(
            auth.check(&HeaderMap::new(), Role::Reader),
            Err(Refused::SignIn)
        );
        assert!(auth.sign_in("cyd_nope_nope").is_err());
        let (set_cookie, _) = auth.sign_in(&reader).unwrap();
        assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"));
        let value = set_cookie.split(';').next().unwrap().to_string();
        let h = headers(&[("cookie", &value)]);
        assert!(auth.check(&h, Role::Reader).is_ok());
        assert!(matches!(
            auth.check(&h, Role::Operator),
            Err(Refused::Forbidden(_))
        ));
        store.revoke("ro").unwrap();
        assert!(matches!(
            auth.check(&h, Role::Reader),
            Err(Refused::Invalid(_))
        ));
    }
}
