//! Logging in to the console and protecting its forms.
//!
//! - The login page takes the daemon's API token (the same bearer token as the API) and
//!   answers with a random session cookie: `HttpOnly` (no script can read it),
//!   `SameSite=Strict` (no other site's page can make the browser send it), scoped to
//!   `/console`. Only its SHA-256 is kept, in memory, for [`SESSION_TTL`]; restarting the
//!   daemon logs everyone out.
//! - `worktrain console` asks `POST /console/login-links` (bearer token) for a one-time
//!   login link, valid for [`LINK_TTL`] and consumed by its first use.
//! - Every POST must carry the session's CSRF token (form field `csrf` or header
//!   `x-csrf-token`), compared in constant time; the login form itself uses a
//!   double-submit cookie. A POST without it is refused with `403` before any handler runs.
//! - Anything else without a valid cookie is redirected to the login page.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use crate::layout;
use crate::{BASE, Console, FORM_LIMIT};

/// How long a login lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long a one-time login link stays valid.
pub const LINK_TTL: Duration = Duration::from_secs(300);
/// At most this many logged-in browsers (and as many unused links); the oldest go first.
const MAX_ENTRIES: usize = 1024;
/// The session cookie.
pub const COOKIE: &str = "wt_console";
/// The login form's double-submit cookie.
const LOGIN_COOKIE: &str = "wt_login";
/// The CSRF header scripts send.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A logged-in browser, as handlers see it.
#[derive(Debug, Clone)]
pub struct Browser {
    /// The CSRF token every form of this browser carries.
    pub csrf: String,
}

#[derive(Debug)]
struct Entry {
    csrf: String,
    expires: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    browsers: HashMap<[u8; 32], Entry>,
    links: HashMap<[u8; 32], Instant>,
}

/// Logged-in browsers and unused login links (digests only).
#[derive(Debug)]
pub struct Sessions {
    ttl: Duration,
    inner: Mutex<Inner>,
}

/// A random secret (256 bits), hex.
fn secret() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)?;
    Ok(hex::encode(b))
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Keep at most `MAX_ENTRIES - 1` entries: drop expired ones, then the soonest to expire.
fn prune<V>(map: &mut HashMap<[u8; 32], V>, expires: impl Fn(&V) -> Instant) {
    let now = Instant::now();
    map.retain(|_, v| expires(v) > now);
    while map.len() >= MAX_ENTRIES {
        let Some(oldest) = map.iter().min_by_key(|(_, v)| expires(v)).map(|(k, _)| *k) else {
            break;
        };
        map.remove(&oldest);
    }
}

impl Sessions {
    /// No one logged in; logins last `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update leaves the maps consistent; a panic elsewhere cannot tear them.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Log a browser in: its cookie value.
    pub fn login(&self) -> Result<String, getrandom::Error> {
        let cookie = secret()?;
        let csrf = secret()?;
        let mut inner = self.lock();
        prune(&mut inner.browsers, |e| e.expires);
        inner.browsers.insert(
            digest(&cookie),
            Entry {
                csrf,
                expires: Instant::now() + self.ttl,
            },
        );
        Ok(cookie)
    }

    /// The browser holding `cookie`, if logged in.
    pub fn browser(&self, cookie: &str) -> Option<Browser> {
        let inner = self.lock();
        inner
            .browsers
            .get(&digest(cookie))
            .filter(|e| e.expires > Instant::now())
            .map(|e| Browser {
                csrf: e.csrf.clone(),
            })
    }

    /// Log the browser holding `cookie` out.
    pub fn logout(&self, cookie: &str) {
        self.lock().browsers.remove(&digest(cookie));
    }

    /// A new one-time login link secret.
    pub fn new_link(&self) -> Result<String, getrandom::Error> {
        let ticket = secret()?;
        let mut inner = self.lock();
        prune(&mut inner.links, |e| *e);
        inner
            .links
            .insert(digest(&ticket), Instant::now() + LINK_TTL);
        Ok(ticket)
    }

    /// Use a login link: true once, when it exists and has not expired.
    pub fn redeem_link(&self, ticket: &str) -> bool {
        let mut inner = self.lock();
        matches!(inner.links.remove(&digest(ticket)), Some(exp) if exp > Instant::now())
    }
}

/// The value of cookie `name`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn set_cookie(name: &str, value: &str, max_age: Duration) -> HeaderValue {
    let v = format!(
        "{name}={value}; Path={BASE}; HttpOnly; SameSite=Strict; Max-Age={}",
        max_age.as_secs()
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn ct_eq(a: &str, b: &str) -> bool {
    bool::from(digest(a).ct_eq(&digest(b)))
}

/// Where to go after logging in: only console pages (no other origin, no `//host`).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with(BASE)
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.contains("://") =>
        {
            n.to_owned()
        }
        _ => format!("{BASE}/sessions"),
    }
}

fn internal(e: impl std::fmt::Display) -> Response {
    warn!(error = %e, "console: cannot make a secret");
    (StatusCode::INTERNAL_SERVER_ERROR, "cannot make a secret").into_response()
}

/// Middleware on every page: a logged-in browser, and on POST its CSRF token.
pub async fn require_login(State(c): State<Console>, req: Request, next: Next) -> Response {
    let browser = cookie(req.headers(), COOKIE).and_then(|v| c.auth.browser(v));
    let Some(browser) = browser else {
        let target = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        let next = if req.method() == Method::GET {
            format!(
                "?next={}",
                url::form_urlencoded::byte_serialize(target.as_bytes()).collect::<String>()
            )
        } else {
            String::new()
        };
        return Redirect::to(&format!("{BASE}/login{next}")).into_response();
    };
    let req = if req.method() == Method::GET || req.method() == Method::HEAD {
        req
    } else {
        match check_csrf(req, &browser.csrf).await {
            Ok(req) => req,
            Err(resp) => return resp,
        }
    };
    let mut req = req;
    req.extensions_mut().insert(browser);
    next.run(req).await
}

/// Refuse a state-changing request without the browser's CSRF token.
async fn check_csrf(req: Request, expected: &str) -> Result<Request, Response> {
    if let Some(h) = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()) {
        return if ct_eq(h, expected) {
            Ok(req)
        } else {
            Err(csrf_refused())
        };
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, FORM_LIMIT)
        .await
        .map_err(|_| (StatusCode::PAYLOAD_TOO_LARGE, "form too large").into_response())?;
    let presented = url::form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned());
    match presented {
        Some(p) if ct_eq(&p, expected) => Ok(Request::from_parts(parts, Body::from(bytes))),
        _ => Err(csrf_refused()),
    }
}

fn csrf_refused() -> Response {
    warn!("console: POST without a valid CSRF token refused");
    let page = layout::bare(
        "Refused",
        html! {
            h1 { "Refused" }
            p { "This form did not come from this console (its CSRF token is missing or wrong). "
                "Reload the page and try again." }
        },
    );
    (StatusCode::FORBIDDEN, page).into_response()
}

/// `GET /console/login` query.
#[derive(Debug, Default, Deserialize)]
pub struct LoginQuery {
    /// A one-time login link's secret.
    pub ticket: Option<String>,
    /// Where to go afterwards.
    pub next: Option<String>,
}

fn logged_in(c: &Console, next: &str) -> Response {
    match c.auth.login() {
        Ok(cookie) => {
            let mut resp = Redirect::to(next).into_response();
            resp.headers_mut()
                .append(header::SET_COOKIE, set_cookie(COOKIE, &cookie, SESSION_TTL));
            resp.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(LOGIN_COOKIE, "", Duration::ZERO),
            );
            resp
        }
        Err(e) => internal(e),
    }
}

/// The login page, or — with a valid `ticket` — straight in.
pub async fn login_page(State(c): State<Console>, Query(q): Query<LoginQuery>) -> Response {
    let next = safe_next(q.next.as_deref());
    if let Some(t) = &q.ticket {
        if c.auth.redeem_link(t) {
            info!("console: login through a one-time link");
            return logged_in(&c, &next);
        }
        return login_form(
            &c,
            &next,
            Some(
                "This login link was already used or has expired. Run `worktrain console` for a new one, or paste the API token.",
            ),
            StatusCode::UNAUTHORIZED,
        );
    }
    login_form(&c, &next, None, StatusCode::OK)
}

fn login_form(_c: &Console, next: &str, error: Option<&str>, status: StatusCode) -> Response {
    let pre = match secret() {
        Ok(s) => s,
        Err(e) => return internal(e),
    };
    let page = layout::bare(
        "Log in",
        html! {
            main class="login" {
                h1 { "worktrain console" }
                @if let Some(e) = error { p class="error" role="alert" { (e) } }
                form method="post" action={(BASE) "/login"} {
                    input type="hidden" name="csrf" value=(pre);
                    input type="hidden" name="next" value=(next);
                    label for="token" { "API token" }
                    input id="token" name="token" type="password" autocomplete="current-password" required autofocus;
                    p class="hint" { "The content of " code { "$WORKTRAIN_HOME/api-token" }
                        ", or run " code { "worktrain console" } " for a one-time login link." }
                    button type="submit" { "Log in" }
                }
            }
        },
    );
    let mut resp = (status, page).into_response();
    resp.headers_mut()
        .append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, &pre, LINK_TTL));
    resp
}

/// `POST /console/login`: check the token, set the cookie.
pub async fn login(State(c): State<Console>, headers: HeaderMap, body: String) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let next = safe_next(form.get("next").map(String::as_str));
    let pre_ok = match (cookie(&headers, LOGIN_COOKIE), form.get("csrf")) {
        (Some(a), Some(b)) if !a.is_empty() => ct_eq(a, b),
        _ => false,
    };
    if !pre_ok {
        return csrf_refused();
    }
    let token = form.get("token").map(String::as_str).unwrap_or("");
    if !c.app.token.matches(token) {
        warn!("console: login with a wrong token");
        return login_form(
            &c,
            &next,
            Some("That is not this daemon's API token."),
            StatusCode::UNAUTHORIZED,
        );
    }
    info!("console: login with the API token");
    logged_in(&c, &next)
}

/// `POST /console/logout`.
pub async fn logout(State(c): State<Console>, headers: HeaderMap) -> Response {
    if let Some(v) = cookie(&headers, COOKIE) {
        c.auth.logout(v);
    }
    let mut resp = Redirect::to(&format!("{BASE}/login")).into_response();
    resp.headers_mut()
        .append(header::SET_COOKIE, set_cookie(COOKIE, "", Duration::ZERO));
    resp
}

/// `POST /console/login-links` answer.
#[derive(Debug, Serialize)]
pub struct LoginLink {
    /// Path (with the one-time secret) to open on the daemon's address.
    pub path: String,
    /// Seconds it stays valid.
    pub expires_in_secs: u64,
}

/// `POST /console/login-links` (bearer token): a one-time login link.
pub async fn create_link(State(c): State<Console>) -> Response {
    match c.auth.new_link() {
        Ok(t) => Json(LoginLink {
            path: format!("{BASE}/login?ticket={t}"),
            expires_in_secs: LINK_TTL.as_secs(),
        })
        .into_response(),
        Err(e) => internal(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_inside_the_console() {
        assert_eq!(
            safe_next(Some("/console/sessions/ses_1")),
            "/console/sessions/ses_1"
        );
        assert_eq!(
            safe_next(Some("//evil.example/console")),
            "/console/sessions"
        );
        assert_eq!(
            safe_next(Some("https://evil.example/console")),
            "/console/sessions"
        );
        assert_eq!(safe_next(Some("/api/v1/sessions")), "/console/sessions");
        assert_eq!(safe_next(None), "/console/sessions");
    }

    #[test]
    fn links_work_once_and_logins_are_bounded() {
        let s = Sessions::new(Duration::from_secs(60));
        let t = s.new_link().unwrap();
        assert!(s.redeem_link(&t));
        assert!(!s.redeem_link(&t));
        assert!(!s.redeem_link("nope"));
        let first = s.login().unwrap();
        assert!(s.browser(&first).is_some());
        for _ in 0..MAX_ENTRIES {
            s.login().unwrap();
        }
        assert!(s.lock().browsers.len() <= MAX_ENTRIES);
        s.logout(&first);
        assert!(s.browser(&first).is_none());
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; wt_console=abc; b=2"),
        );
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "zz"), None);
    }
}
