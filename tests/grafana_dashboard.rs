//! The Grafana dashboard (`deploy/grafana/sipfront.json`) queries only metrics that sipfront
//! exports: every `sipfront_*` name in a panel query or template variable must be a series
//! of the `/metrics` exposition (rendered from a report with every optional part present:
//! bans, guard, reloads, HEP, a latency row and an upstream node), and every label a query
//! groups by (`by (...)`) must be a label of that metric's samples (or `instance`/`le`,
//! which Prometheus and histograms add).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use sipfront::admin::prometheus::render;
use sipfront::admin::report::{HepReport, LatencyReport, StatsReport, WorkerReport};
use sipfront::metrics::Latency;

const DASHBOARD: &str = include_str!("../deploy/grafana/sipfront.json");

/// Every string under a key named `expr`, `query` or `definition`.
fn queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => queries(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

/// `sipfront_*` identifiers in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("sipfront_") {
        let start = i + at;
        let end = start
            + bytes[start..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                .count();
        out.push(expr[start..end].to_owned());
        i = end;
    }
    out
}

/// The label lists of `by (...)` clauses.
fn grouped_labels(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("by (") {
        let after = &rest[at + 4..];
        let end = after.find(')').unwrap_or(after.len());
        out.extend(after[..end].split(',').map(|l| l.trim().to_owned()));
        rest = &after[end..];
    }
    out
}

fn full_report() -> StatsReport {
    let mut l = Latency::default();
    l.record(12_000);
    let mut r = StatsReport {
        version: "test",
        bans: Some(2),
        config_reloads: Some((1, 0)),
        guard: Some(Default::default()),
        hep: Some(HepReport::default()),
        workers: vec![WorkerReport::default()],
        ..StatsReport::default()
    };
    r.sip.responses_sent = [("2xx", 1)].into_iter().collect();
    r.latency = vec![LatencyReport {
        name: "request_invite".into(),
        kind: "request",
        method: "INVITE",
        buckets: l.buckets,
        ..LatencyReport::default()
    }];
    r.upstream = ["first", "final"]
        .into_iter()
        .map(|kind| LatencyReport {
            name: "127.0.0.2:5080".into(),
            kind,
            buckets: l.buckets,
            ..LatencyReport::default()
        })
        .collect();
    r
}

/// Series name -> the label names seen on its samples.
fn exported() -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in render(&full_report()).lines() {
        if line.starts_with('#') {
            continue;
        }
        let series = line.rsplit_once(' ').map_or(line, |(s, _)| s);
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let set = out.entry(name.to_owned()).or_default();
        for pair in labels.trim_end_matches('}').split(',') {
            if let Some((k, _)) = pair.split_once('=') {
                set.insert(k.to_owned());
            }
        }
    }
    out
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let dash: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    assert_eq!(dash["uid"], "sipfront");
    let mut exprs = Vec::new();
    queries(&dash, &mut exprs);
    assert!(exprs.len() >= 20, "only {} queries found", exprs.len());
    let exported = exported();
    let mut used = BTreeSet::new();
    for expr in &exprs {
        let names = metric_names(expr);
        for name in &names {
            let labels = exported
                .get(name)
                .unwrap_or_else(|| panic!("{name} (in {expr:?}) is not exported"));
            for l in grouped_labels(expr) {
                assert!(
                    l == "instance" || l == "le" || labels.contains(&l),
                    "{expr:?} groups {name} by {l:?}, which it does not have ({labels:?})"
                );
            }
            used.insert(name.clone());
        }
    }
    // The dashboard covers the latency histograms and the headline families.
    for needed in [
        "sipfront_processing_seconds_bucket",
        "sipfront_upstream_response_seconds_bucket",
        "sipfront_sip_requests_received_total",
        "sipfront_auth_total",
        "sipfront_registrar_contacts",
        "sipfront_dropped_total",
        "sipfront_hep_packets_total",
    ] {
        assert!(
            used.contains(needed),
            "the dashboard does not show {needed}"
        );
    }
}

#[test]
fn panels_are_well_formed() {
    let dash: Value = serde_json::from_str(DASHBOARD).unwrap();
    let panels = dash["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().expect("numeric id")),
            "duplicate id"
        );
        let g = &p["gridPos"];
        assert!(
            g["w"].as_u64().unwrap() + g["x"].as_u64().unwrap() <= 24,
            "{p}"
        );
        if p["type"] != "row" {
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{}", p["title"]);
            for t in targets {
                assert!(t["expr"].as_str().is_some_and(|e| e.contains("sipfront_")));
            }
        }
    }
}
