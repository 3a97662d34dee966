//! Routing and the JSON endpoints of the admin API. Every handler takes the shared
//! [`AdminState`] and a parsed request and returns a [`Response`]; bad parameters answer 400,
//! unknown paths 404, a known path with the wrong method 405.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::{json, Value};

use super::message::{Method, Request, Response, TEXT};
use super::{asterisk, prometheus, report, AdminState};
use crate::db::system_now_ms;
use crate::db::RefreshError;
use crate::registrar::{aor_user, Binding, MAX_PAGE};

/// How long `POST /v1/credentials/reload` waits for the refresher.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Dispatch one request.
pub fn route(state: &AdminState, req: &Request) -> Response {
    let get = matches!(req.method, Method::Get | Method::Head);
    let del = req.method == Method::Delete;
    let post = req.method == Method::Post;
    match req.path.as_str() {
        "/metrics" if get => {
            // The farm's families go before the exposition's closing `# EOF`.
            let mut body = prometheus::render(&report::collect(state));
            let end = body.rfind("# EOF").unwrap_or(body.len());
            let mut farm = String::new();
            asterisk::render_metrics(state, &mut farm);
            body.insert_str(end, &farm);
            Response::new(200, prometheus::CONTENT_TYPE, body)
        }
        "/healthz" if get => Response::new(200, TEXT, "ok\n".to_owned()),
        "/v1/stats" if get => match serde_json::to_value(report::collect(state)) {
            Ok(v) => Response::json(200, &v),
            Err(e) => Response::error(500, &e.to_string()),
        },
        "/v1/registrations" if get => registrations(state, req),
        "/v1/registrations" if del => unregister(state, req),
        "/v1/credentials/reload" if post => reload(state),
        "/v1/reload" if post => reload_config(state),
        "/v1/credentials" if del => flush(state, req),
        "/v1/bans" if get => bans(state),
        "/v1/bans" if del => unban(state, req),
        "/v1/asterisk" if get => asterisk::list(state),
        "/v1/cluster" if get => match &state.cluster {
            Some(c) => Response::json(200, &serde_json::to_value(c.cluster()).unwrap_or_default()),
            None => Response::error(404, "this node runs alone (no [cluster] section)"),
        },
        "/v1/asterisk/drain" if post => asterisk::drain(state, req, true),
        "/v1/asterisk/undrain" if post => asterisk::drain(state, req, false),
        "/metrics" | "/healthz" | "/v1/stats" | "/v1/asterisk" | "/v1/cluster" => {
            not_allowed("GET, HEAD")
        }
        "/v1/asterisk/drain" | "/v1/asterisk/undrain" => not_allowed("POST"),
        "/v1/registrations" | "/v1/bans" => not_allowed("GET, HEAD, DELETE"),
        "/v1/credentials/reload" | "/v1/reload" => not_allowed("POST"),
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

/// One binding as JSON (the same object in the per-user and the full listing).
fn binding_json(b: &Binding<'_>, now_ms: u64) -> Value {
    json!({
        "uri": b.uri,
        "dest": b.dest.to_string(),
        "transport": b.transport.as_str(),
        "expires_in": b.remaining_secs(now_ms),
        "q": b.q.map(|q| f64::from(q) / 1000.0),
        "user_agent": b.user_agent(),
        "call_id": b.call_id,
        "cseq": b.cseq,
        "socket": b.socket.to_string(),
        "nated": b.nated,
        "registered_at": b.registered_at_s(),
    })
}

/// The live bindings of `aor` as JSON.
fn bindings(state: &AdminState, aor: &str, now_ms: u64) -> Vec<Value> {
    let mut out = Vec::new();
    state
        .registrar
        .lookup(aor, now_ms, |b| out.push(binding_json(b, now_ms)));
    out
}

/// Default page size of `GET /v1/registrations?all=1`.
const DEFAULT_PAGE: usize = 100;

fn registrations(state: &AdminState, req: &Request) -> Response {
    let now = system_now_ms();
    let all = match req.param("all") {
        None | Some("" | "0" | "false") => false,
        Some("1" | "true") => true,
        Some(_) => return Response::error(400, "parameter `all` must be 1, true, 0 or false"),
    };
    let user = req.param("user").filter(|u| !u.is_empty());
    match (user, all) {
        (Some(_), true) => Response::error(400, "give either `user` or `all`, not both"),
        (None, true) => list_all(state, req, now),
        (None, false) => {
            let (aors, contacts) = state.registrar.counts();
            Response::json(200, &json!({ "aors": aors, "contacts": contacts }))
        }
        (Some(user), false) => {
            let aor = aor(state, user);
            let list = bindings(state, &aor, now);
            Response::json(200, &json!({ "user": user, "aor": aor, "bindings": list }))
        }
    }
}

/// `GET /v1/registrations?all=1[&limit=N][&after=CURSOR]`: one page of every AOR with
/// live bindings; `next` is the `after` of the following page (null at the end).
fn list_all(state: &AdminState, req: &Request, now_ms: u64) -> Response {
    let limit = match req.param("limit").filter(|l| !l.is_empty()) {
        None => DEFAULT_PAGE,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if n > 0 => n.min(MAX_PAGE),
            _ => return Response::error(400, "parameter `limit` must be a positive integer"),
        },
    };
    let after = req.param("after").filter(|a| !a.is_empty());
    let mut regs: Vec<Value> = Vec::with_capacity(limit);
    let mut current: Option<(String, Vec<Value>)> = None;
    let flush = |cur: Option<(String, Vec<Value>)>, regs: &mut Vec<Value>| {
        if let Some((key, list)) = cur {
            regs.push(json!({
                "user": aor_user(&key),
                "aor": aor(state, &key),
                "bindings": list,
            }));
        }
    };
    let page = state
        .registrar
        .list(after, limit, now_ms, |key, b| match &mut current {
            Some((k, list)) if k == key => list.push(binding_json(b, now_ms)),
            _ => {
                let prev = current.replace((key.to_owned(), vec![binding_json(b, now_ms)]));
                flush(prev, &mut regs);
            }
        });
    flush(current, &mut regs);
    Response::json(
        200,
        &json!({ "registrations": regs, "limit": limit, "next": page.next.as_deref() }),
    )
}

fn unregister(state: &AdminState, req: &Request) -> Response {
    let user = match required(req, "user") {
        Ok(u) => u,
        Err(r) => return r,
    };
    let uri = req.param("uri").filter(|u| !u.is_empty());
    let aor = aor(state, user);
    let r = state.registrar.remove(&aor, uri, system_now_ms());
    if r.removed == 0 {
        return Response::error(404, &format!("no matching binding for {aor}"));
    }
    tracing::info!(
        %aor,
        removed = r.removed,
        remaining = r.remaining,
        "bindings removed by the admin API"
    );
    Response::json(
        200,
        &json!({
            "user": user, "aor": aor, "removed": r.removed, "remaining": r.remaining,
            "unregistered": r.emptied,
        }),
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

/// Read the config file again: 200 with what was applied and what needs a restart, 422 when
/// the file is invalid (nothing changed), 503 without a reloader.
fn reload_config(state: &AdminState) -> Response {
    let Some(r) = &state.config else {
        return Response::error(503, "no config file to reload");
    };
    match r.reload() {
        Ok(report) => match serde_json::to_value(&report) {
            Ok(v) => Response::json(200, &v),
            Err(e) => Response::error(500, &e.to_string()),
        },
        Err(e @ super::ReloadRefused::NoConfigFile) => Response::error(503, &e.to_string()),
        Err(e) => {
            tracing::warn!(error = %e, "configuration reload refused; nothing changed");
            Response::error(422, &format!("{e}; nothing changed"))
        }
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use super::*;
    use crate::admin::BanList;
    use crate::auth::Credential;
    use crate::db::CredentialCache;
    use crate::metrics::MetricsRegistry;
    use crate::registrar::{ContactInput, RegisterRequest, Registrar, RegistrarConfig};
    use crate::sip::Transport;

    struct Bans(Mutex<Vec<(IpAddr, u64, String)>>);

    impl BanList for Bans {
        fn bans(&self) -> Vec<(IpAddr, u64, String)> {
            self.0.lock().unwrap().clone()
        }
        fn unban(&self, ip: IpAddr) -> bool {
            let mut v = self.0.lock().unwrap();
            let before = v.len();
            v.retain(|b| b.0 != ip);
            v.len() != before
        }
    }

    fn state(bans: Option<Arc<dyn BanList>>) -> AdminState {
        let registrar = Arc::new(Registrar::new(RegistrarConfig::default()).unwrap());
        let source: SocketAddr = "192.0.2.10:5062".parse().unwrap();
        let contacts = [ContactInput {
            uri: "sip:bob@192.0.2.10:5062",
            expires: Some(600),
            q: None,
        }];
        registrar
            .register(
                &RegisterRequest {
                    aor: "bob@r",
                    call_id: "c1",
                    cseq: 1,
                    expires_header: None,
                    star: false,
                    contacts: &contacts,
                    source,
                    transport: Transport::Udp,
                    socket: "127.0.0.1:5060".parse().unwrap(),
                    conn: 0,
                    path: &[],
                    user_agent: Some("UA/1"),
                },
                system_now_ms(),
                &mut Vec::new(),
            )
            .unwrap();
        let cache = Arc::new(CredentialCache::new(1000, 10));
        cache.insert("bob", Credential::from_plain("bob", "r", "pw", false));
        AdminState {
            metrics: MetricsRegistry::new(Vec::new()),
            registrar,
            realm: "r".into(),
            cache,
            pool: None,
            credentials: None,
            transport: None,
            regfwd: None,
            farm: None,
            bans,
            config: None,
            hep: None,
            cluster: None,
            started: Instant::now(),
        }
    }

    fn req(method: Method, path: &str, query: &[(&str, &str)]) -> Request {
        Request {
            method,
            path: path.into(),
            query: query
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        }
    }

    fn body(r: &Response) -> Value {
        serde_json::from_str(&r.body).unwrap()
    }

    #[test]
    fn registrations_list_and_remove() {
        let st = state(None);
        let r = route(&st, &req(Method::Get, "/v1/registrations", &[]));
        assert_eq!(body(&r), json!({"aors": 1, "contacts": 1}));
        let r = route(
            &st,
            &req(Method::Get, "/v1/registrations", &[("user", "bob")]),
        );
        let v = body(&r);
        assert_eq!(v["aor"], "bob@r");
        assert_eq!(v["bindings"][0]["uri"], "sip:bob@192.0.2.10:5062");
        assert_eq!(v["bindings"][0]["user_agent"], "UA/1");
        assert!(v["bindings"][0]["expires_in"].as_u64().unwrap() > 590);
        let del = |q: &[(&str, &str)]| route(&st, &req(Method::Delete, "/v1/registrations", q));
        assert_eq!(del(&[]).status, 400);
        assert_eq!(del(&[("user", "bob"), ("uri", "sip:other@x")]).status, 404);
        let r = del(&[("user", "bob@r"), ("uri", "sip:bob@192.0.2.10:5062")]);
        assert_eq!(r.status, 200);
        assert_eq!(
            body(&r),
            json!({"user": "bob@r", "aor": "bob@r", "removed": 1, "remaining": 0,
                   "unregistered": true})
        );
        assert_eq!(del(&[("user", "bob")]).status, 404);
        // The emptied user is handed to the next expiry sweep (REGFWD: Expires: 0).
        let mut emptied = Vec::new();
        st.registrar
            .expire(system_now_ms(), |a| emptied.push(a.to_owned()));
        assert_eq!(emptied, ["bob"]);
    }

    fn register(st: &AdminState, user: &str, uri: &str) {
        let contacts = [ContactInput {
            uri,
            expires: Some(600),
            q: None,
        }];
        let aor = format!("{user}@r");
        st.registrar
            .register(
                &RegisterRequest {
                    aor: &aor,
                    call_id: uri,
                    cseq: 1,
                    expires_header: None,
                    star: false,
                    contacts: &contacts,
                    source: "198.51.100.1:5060".parse().unwrap(),
                    transport: Transport::Udp,
                    socket: "127.0.0.1:5061".parse().unwrap(),
                    conn: 0,
                    path: &[],
                    user_agent: None,
                },
                system_now_ms(),
                &mut Vec::new(),
            )
            .unwrap();
    }

    #[test]
    fn unregister_one_of_two_bindings_keeps_the_user() {
        let st = state(None);
        register(&st, "bob", "sip:bob@192.0.2.11:5060");
        let r = route(
            &st,
            &req(
                Method::Delete,
                "/v1/registrations",
                &[("user", "bob"), ("uri", "sip:bob@192.0.2.11:5060")],
            ),
        );
        assert_eq!(
            (
                body(&r)["remaining"].clone(),
                body(&r)["unregistered"].clone()
            ),
            (json!(1), json!(false))
        );
        let mut emptied = Vec::new();
        st.registrar
            .expire(system_now_ms(), |a| emptied.push(a.to_owned()));
        assert!(emptied.is_empty(), "{emptied:?}");
    }

    #[test]
    fn list_every_registration_page_by_page() {
        let st = state(None);
        for i in 0..25 {
            register(
                &st,
                &format!("u{i:02}"),
                &format!("sip:u{i}@192.0.2.20:5060"),
            );
        }
        // bob has a second binding: one entry, two bindings.
        register(&st, "bob", "sip:bob@192.0.2.11:5060");
        let get = |q: &[(&str, &str)]| route(&st, &req(Method::Get, "/v1/registrations", q));
        let mut after: Option<String> = None;
        let mut users = Vec::new();
        let mut pages = 0;
        loop {
            let mut q = vec![("all", "1"), ("limit", "4")];
            if let Some(a) = &after {
                q.push(("after", a));
            }
            let r = get(&q);
            assert_eq!(r.status, 200, "{}", r.body);
            let v = body(&r);
            pages += 1;
            assert_eq!(v["limit"], 4);
            let regs = v["registrations"].as_array().unwrap();
            assert!(regs.len() <= 4);
            for e in regs {
                let user = e["user"].as_str().unwrap().to_owned();
                assert_eq!(e["aor"], format!("{user}@r"));
                let b = e["bindings"].as_array().unwrap();
                assert_eq!(b.len(), if user == "bob" { 2 } else { 1 }, "{e}");
                assert!(b[0]["expires_in"].as_u64().unwrap() > 590);
                assert!(b[0]["dest"].as_str().unwrap().contains(':'));
                users.push(user);
            }
            match v["next"].as_str() {
                Some(n) => after = Some(n.to_owned()),
                None => {
                    assert!(v["next"].is_null());
                    break;
                }
            }
        }
        assert_eq!(pages, 7);
        users.sort();
        let mut want: Vec<String> = (0..25).map(|i| format!("u{i:02}")).collect();
        want.push("bob".into());
        want.sort();
        assert_eq!(users, want);
        // Page size: default, clamped to the maximum, bad values refused.
        assert_eq!(body(&get(&[("all", "1")]))["limit"], 100);
        assert_eq!(
            body(&get(&[("all", "true"), ("limit", "999999")]))["limit"],
            MAX_PAGE
        );
        for bad in [
            vec![("all", "1"), ("limit", "0")],
            vec![("all", "1"), ("limit", "x")],
            vec![("all", "yes")],
            vec![("all", "1"), ("user", "bob")],
        ] {
            assert_eq!(get(&bad).status, 400, "{bad:?}");
        }
        // all=0 is the plain counts answer.
        assert_eq!(
            body(&get(&[("all", "0")])),
            json!({"aors": 26, "contacts": 27})
        );
    }

    #[test]
    fn credentials_flush_and_reload_without_refresher() {
        let st = state(None);
        let r = route(
            &st,
            &req(Method::Delete, "/v1/credentials", &[("user", "bob")]),
        );
        assert_eq!(body(&r)["was_cached"], true);
        assert!(matches!(st.cache.lookup("bob", 0), crate::db::Lookup::Miss));
        let r = route(
            &st,
            &req(Method::Delete, "/v1/credentials", &[("user", "bob")]),
        );
        assert_eq!(body(&r)["was_cached"], false);
        let r = route(&st, &req(Method::Post, "/v1/credentials/reload", &[]));
        assert_eq!(r.status, 503);
    }

    #[test]
    fn bans_list_and_lift() {
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let bans = Arc::new(Bans(Mutex::new(vec![(ip, u64::MAX, "brute force".into())])));
        let st = state(Some(bans));
        let v = body(&route(&st, &req(Method::Get, "/v1/bans", &[])));
        assert_eq!(v["bans"][0]["ip"], "203.0.113.7");
        assert_eq!(v["bans"][0]["reason"], "brute force");
        let unban = |ip: &str| route(&st, &req(Method::Delete, "/v1/bans", &[("ip", ip)])).status;
        assert_eq!(unban("nope"), 400);
        assert_eq!(unban("203.0.113.7"), 200);
        assert_eq!(unban("203.0.113.7"), 404);
        let none = state(None);
        let v = body(&route(&none, &req(Method::Get, "/v1/bans", &[])));
        assert_eq!(v["enabled"], false);
    }

    #[test]
    fn asterisk_nodes_drain_and_metrics() {
        use crate::asterisk::{Farm, FarmSettings};
        struct Control(Farm);
        impl crate::admin::FarmControl for Control {
            fn nodes(&self) -> Vec<crate::asterisk::NodeView> {
                self.0.views(0)
            }
            fn set_drained(&self, node: SocketAddr, drained: bool) -> Option<bool> {
                self.0.set_drained(node, drained)
            }
        }
        let mut st = state(None);
        assert_eq!(
            route(&st, &req(Method::Get, "/v1/asterisk", &[])).status,
            503
        );
        let settings = FarmSettings {
            nodes: vec![
                "10.0.0.5:5060".parse().unwrap(),
                "10.0.0.6:5060".parse().unwrap(),
            ],
            ..FarmSettings::default()
        };
        st.farm = Some(Arc::new(Control(Farm::new(&settings).unwrap())));
        let drain = |q: &[(&str, &str)]| route(&st, &req(Method::Post, "/v1/asterisk/drain", q));
        assert_eq!(drain(&[]).status, 400);
        assert_eq!(drain(&[("node", "nope")]).status, 400);
        assert_eq!(drain(&[("node", "10.0.0.9:5060")]).status, 404);
        let r = drain(&[("node", "10.0.0.5:5060")]);
        assert_eq!(
            body(&r),
            json!({"node": "10.0.0.5:5060", "drained": true, "changed": true})
        );
        let v = body(&route(&st, &req(Method::Get, "/v1/asterisk", &[])));
        assert_eq!(v["nodes"][0]["state"], "up");
        assert_eq!(v["nodes"][0]["drained"], true);
        assert_eq!(v["nodes"][1]["drained"], false);
        assert!(v["nodes"][0]["last_ping_ms"].is_null());
        let r = route(
            &st,
            &req(
                Method::Post,
                "/v1/asterisk/undrain",
                &[("node", "10.0.0.5:5060")],
            ),
        );
        assert_eq!(body(&r)["changed"], true);
        let m = route(&st, &req(Method::Get, "/metrics", &[])).body;
        assert!(
            m.contains("sipfront_asterisk_node_up{node=\"10.0.0.6:5060\"} 1\n"),
            "{m}"
        );
        assert!(m.contains("sipfront_asterisk_node_drained{node=\"10.0.0.5:5060\"} 0\n"));
        assert!(
            m.contains("sipfront_asterisk_pings_total{node=\"10.0.0.5:5060\",result=\"sent\"} 0\n")
        );
        assert!(
            !m.contains("sipfront_asterisk_ping_seconds{"),
            "no ping answered yet"
        );
        let r = route(&st, &req(Method::Get, "/v1/asterisk/drain", &[]));
        assert_eq!((r.status, r.allow), (405, Some("POST")));
    }

    #[test]
    fn unknown_paths_and_wrong_methods() {
        let st = state(None);
        assert_eq!(route(&st, &req(Method::Get, "/nope", &[])).status, 404);
        let r = route(&st, &req(Method::Post, "/metrics", &[]));
        assert_eq!((r.status, r.allow), (405, Some("GET, HEAD")));
        assert_eq!(route(&st, &req(Method::Other, "/v1/bans", &[])).status, 405);
        let m = route(&st, &req(Method::Get, "/metrics", &[]));
        assert!(m.body.contains("sipfront_registrar_aors 1\n"));
        assert!(m.body.contains("sipfront_credential_cache_users 1\n"));
        let s = body(&route(&st, &req(Method::Head, "/v1/stats", &[])));
        assert_eq!(s["registrar"]["contacts"], 1);
    }
}
