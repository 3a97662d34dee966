//! The Asterisk farm in the admin API: `GET /v1/asterisk` (every node's state),
//! `POST /v1/asterisk/drain?node=IP:PORT` and `POST /v1/asterisk/undrain?node=IP:PORT`
//! (what `sipfront ctl asterisk` calls), and the node families appended to `/metrics`.

use std::fmt::Write as _;
use std::net::SocketAddr;

use serde_json::{json, Value};

use super::message::{Request, Response};
use super::AdminState;
use crate::asterisk::NodeView;

fn node_json(n: &NodeView) -> Value {
    json!({
        "node": n.addr.to_string(),
        "state": if n.up { "up" } else { "down" },
        "drained": n.drained,
        "busy_ms": n.busy_ms,
        "weight": n.weight,
        "last_ping_ms": n.last_ping_ms,
        "latency_ms": n.latency_ms,
        "pings": {
            "sent": n.pings_sent, "answered": n.pings_answered, "failed": n.pings_failed,
        },
        "went_down": n.went_down,
        "came_up": n.came_up,
        "busy_count": n.busy_count,
        "since_ms": n.since_ms,
        "replaying": n.replaying,
        "replayed": n.replayed,
    })
}

/// `GET /v1/asterisk`.
pub fn list(state: &AdminState) -> Response {
    let Some(farm) = &state.farm else {
        return Response::error(503, "no Asterisk farm");
    };
    let nodes: Vec<Value> = farm.nodes().iter().map(node_json).collect();
    Response::json(200, &json!({ "nodes": nodes }))
}

/// `POST /v1/asterisk/drain` (`drained`) or `/undrain`.
pub fn drain(state: &AdminState, req: &Request, drained: bool) -> Response {
    let Some(farm) = &state.farm else {
        return Response::error(503, "no Asterisk farm");
    };
    let node = match req.param("node").map(str::parse::<SocketAddr>) {
        Some(Ok(n)) => n,
        Some(Err(_)) => return Response::error(400, "parameter `node` is not an IP:PORT"),
        None => return Response::error(400, "missing parameter `node`"),
    };
    match farm.set_drained(node, drained) {
        None => Response::error(404, &format!("{node} is not an Asterisk node")),
        Some(changed) => Response::json(
            200,
            &json!({ "node": node.to_string(), "drained": drained, "changed": changed }),
        ),
    }
}

/// One per-node family of `/metrics`: its value for a node (`None`: no sample).
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&NodeView) -> Option<f64>,
}

const FAMILIES: [Family; 7] = [
    Family {
        name: "sipfront_asterisk_node_up",
        kind: "gauge",
        help: "1 while the node answers its pings (calls and REGISTERs go to it), 0 while down.",
        value: |n| Some(f64::from(u8::from(n.up))),
    },
    Family {
        name: "sipfront_asterisk_node_drained",
        kind: "gauge",
        help: "1 while the node is drained (no new calls, its dialogs go on).",
        value: |n| Some(f64::from(u8::from(n.drained))),
    },
    Family {
        name: "sipfront_asterisk_node_busy",
        kind: "gauge",
        help: "1 while the node gets no new calls because it answered 503 or slowly.",
        value: |n| Some(f64::from(u8::from(n.busy_ms > 0))),
    },
    Family {
        name: "sipfront_asterisk_ping_seconds",
        kind: "gauge",
        help: "Round trip of the node's last answered OPTIONS ping.",
        value: |n| n.last_ping_ms.map(|ms| ms as f64 / 1e3),
    },
    Family {
        name: "sipfront_asterisk_answer_seconds",
        kind: "gauge",
        help: "Smoothed time from a request (call or ping) to the node's first answer.",
        value: |n| Some(n.latency_ms as f64 / 1e3),
    },
    Family {
        name: "sipfront_asterisk_busy_total",
        kind: "counter",
        help: "Times the node was held back from new calls (503 or slow answers).",
        value: |n| Some(n.busy_count as f64),
    },
    Family {
        name: "sipfront_asterisk_replayed_registrations_total",
        kind: "counter",
        help: "REGISTERs replayed to the node after it came (back) up or was added.",
        value: |n| Some(n.replayed as f64),
    },
];

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    // OpenMetrics names a counter family without its `_total` suffix.
    let base = match kind {
        "counter" => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    };
    let _ = writeln!(out, "# HELP {base} {help}\n# TYPE {base} {kind}");
}

/// Append the farm's families (Prometheus text format) to `out`.
pub fn render_metrics(state: &AdminState, out: &mut String) {
    let Some(farm) = &state.farm else {
        return;
    };
    let nodes = farm.nodes();
    for f in &FAMILIES {
        family(out, f.name, f.kind, f.help);
        for n in &nodes {
            if let Some(v) = (f.value)(n) {
                let _ = writeln!(out, "{}{{node=\"{}\"}} {v}", f.name, n.addr);
            }
        }
    }
    family(
        out,
        "sipfront_asterisk_pings_total",
        "counter",
        "OPTIONS pings sent to the node, answered, and failed (unanswered or 503).",
    );
    for n in &nodes {
        for (result, v) in [
            ("sent", n.pings_sent),
            ("answered", n.pings_answered),
            ("failed", n.pings_failed),
        ] {
            let _ = writeln!(
                out,
                "sipfront_asterisk_pings_total{{node=\"{}\",result=\"{result}\"}} {v}",
                n.addr
            );
        }
    }
    family(
        out,
        "sipfront_asterisk_node_transitions_total",
        "counter",
        "Times the node went down and came back up.",
    );
    for n in &nodes {
        for (to, v) in [("down", n.went_down), ("up", n.came_up)] {
            let _ = writeln!(
                out,
                "sipfront_asterisk_node_transitions_total{{node=\"{}\",to=\"{to}\"}} {v}",
                n.addr
            );
        }
    }
}
