//! Routing and the JSON endpoints of the admin API. Every handler takes the shared
//! [`AdminState`] and a parsed request and returns a [`Response`]; bad parameters answer 400,
//! unknown paths 404, a known path with the wrong method 405.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::{json, Value};

use super::http::{Method, Request, Response, PROMETHEUS, TEXT};
use super::{prometheus, report, AdminState};
use crate::db::system_now_ms;
use crate::db::RefreshError;

/// How long `POST /v1/credentials/reload` waits for the refresher.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Dispatch one request.
pub fn route(state: &AdminState, req: &Request) -> Response {
    let get = matches!(req.method, Method::Get | Method::Head);
    let del = req.method == Method::Delete;
    let post = req.method == Method::Post;
    match req.path.as_str() {
        "/metrics" if get => {
            Response::new(200, PROMETHEUS, prometheus::render(&report::collect(state)))
        }
        "/healthz" if get => Response::new(200, TEXT, "ok\n".to_owned()),
        "/v1/stats" if get => match serde_json::to_value(report::collect(state)) {
            Ok(v) => Response::json(200, &v),
            Err(e) => Response::error(500, &e.to_string()),
        },
        "/v1/registrations" if get => registrations(state, req),
        "/v1/registrations" if del => unregister(state, req),
        "/v1/credentials/reload" if post => reload(state),
        "/v1/credentials" if del => flush(state, req),
        "/v1/bans" if get => bans(state),
        "/v1/bans" if del => unban(state, req),
        "/metrics" | "/healthz" | "/v1/stats" => not_allowed("GET, HEAD"),
        "/v1/registrations" | "/v1/bans" => not_allowed("GET, HEAD, DELETE"),
        "/v1/credentials/reload" => not_allowed("POST"),
        "/v1/credentials" => not_allowed("DELETE"),
        _ => Response::error(404, "no such endpoint"),
    }
}

fn not_allowed(allow: &'static str) -> Response {
    let mut r = Response::error(405, "method not allowed");
    r.allow = Some(allow);
    r
}

/// The required, non-empty query parameter `name`.
fn required<'r>(req: &'r Request, name: &str) -> Result<&'r str, Response> {
    match req.param(name) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(Response::error(400, &format!("missing parameter `{name}`"))),
    }
}

/// The AOR of a user name (`user@realm`), or the name itself when it already has a domain.
fn aor(state: &AdminState, user: &str) -> String {
    if user.contains('@') {
        user.to_owned()
    } else {
        format!("{user}@{}", state.realm)
    }
}

/// The live bindings of `aor` as JSON.
fn bindings(state: &AdminState, aor: &str, now_ms: u64) -> Vec<Value> {
    let mut out = Vec::new();
    state.registrar.lookup(aor, now_ms, |b| {
        out.push(json!({
            "uri": b.uri,
            "dest": b.dest.to_string(),
            "source": b.source.to_string(),
            "transport": b.transport.as_str(),
            "expires_in": b.remaining_secs(now_ms),
            "q": b.q.map(|q| f64::from(q) / 1000.0),
            "user_agent": b.user_agent,
            "call_id": b.call_id,
            "cseq": b.cseq,
            "worker": b.worker,
            "nated": b.nated,
            "registered_at": b.registered_at_s,
        }));
    });
    out
}

fn registrations(state: &AdminState, req: &Request) -> Response {
    let now = system_now_ms();
    match req.param("user").filter(|u| !u.is_empty()) {
        None => {
            let (aors, contacts) = state.registrar.counts();
            Response::json(200, &json!({ "aors": aors, "contacts": contacts }))
        }
        Some(user) => {
            let aor = aor(state, user);
            let list = bindings(state, &aor, now);
            Response::json(200, &json!({ "user": user, "aor": aor, "bindings": list }))
        }
    }
}

fn unregister(state: &AdminState, req: &Request) -> Response {
    let user = match required(req, "user") {
        Ok(u) => u,
        Err(r) => return r,
    };
    let uri = req.param("uri").filter(|u| !u.is_empty());
    let aor = aor(state, user);
    let now = system_now_ms();
    let before = bindings(state, &aor, now).len();
    state.registrar.remove(&aor, uri);
    let after = bindings(state, &aor, now).len();
    let removed = before.saturating_sub(after);
    if removed == 0 {
        return Response::error(404, &format!("no matching binding for {aor}"));
    }
    tracing::info!(%aor, removed, "bindings removed by the admin API");
    Response::json(
        200,
        &json!({ "user": user, "aor": aor, "removed": removed, "remaining": after }),
    )
}

fn reload(state: &AdminState) -> Response {
    let Some(r) = &state.credentials else {
        return Response::error(503, "no credential refresher");
    };
    match r.reload(RELOAD_TIMEOUT) {
        Ok(s) => {
            tracing::info!(users = s.users, "credentials reloaded by the admin API");
            Response::json(
                200,
                &json!({
                    "rows": s.rows, "users": s.users, "changed": s.changed,
                    "removed": s.removed, "elapsed_ms": s.elapsed_ms,
                }),
            )
        }
        Err(e @ RefreshError::Timeout) => Response::error(504, &e.to_string()),
        Err(e) => Response::error(503, &e.to_string()),
    }
}

fn flush(state: &AdminState, req: &Request) -> Response {
    let user = match required(req, "user") {
        Ok(u) => u,
        Err(r) => return r,
    };
    let cached = matches!(
        state.cache.lookup(user, system_now_ms()),
        crate::db::Lookup::Found(_) | crate::db::Lookup::Unknown
    );
    state.cache.remove(user);
    tracing::info!(user, "credential flushed by the admin API");
    Response::json(200, &json!({ "user": user, "was_cached": cached }))
}

fn bans(state: &AdminState) -> Response {
    let Some(b) = &state.bans else {
        return Response::json(200, &json!({ "enabled": false, "bans": [] }));
    };
    let now = system_now_ms();
    let list: Vec<Value> = b
        .bans()
        .into_iter()
        .map(|(ip, until, reason)| {
            json!({
                "ip": ip.to_string(), "until_ms": until,
                "remaining_secs": until.saturating_sub(now) / 1000, "reason": reason,
            })
        })
        .collect();
    Response::json(200, &json!({ "enabled": true, "bans": list }))
}

fn unban(state: &AdminState, req: &Request) -> Response {
    let ip = match required(req, "ip").map(str::parse::<IpAddr>) {
        Ok(Ok(ip)) => ip,
        Ok(Err(_)) => return Response::error(400, "parameter `ip` is not an IP address"),
        Err(r) => return r,
    };
    match &state.bans {
        Some(b) if b.unban(ip) => {
            tracing::info!(%ip, "ban lifted by the admin API");
            Response::json(200, &json!({ "ip": ip.to_string(), "unbanned": true }))
        }
        _ => Response::error(404, &format!("{ip} is not banned")),
    }
}
