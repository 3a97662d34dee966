//! Prometheus text exposition (format 0.0.4) of a [`StatsReport`]. Every family gets its
//! `# HELP` and `# TYPE`; latencies are summaries in seconds with quantiles 0.5, 0.9, 0.99
//! and 0.999 (cumulative since start), `_sum` (from the histogram mean) and `_count`.
//! The metric names are listed with their meaning in `docs/operations.md`.

use std::fmt::Write;

use super::report::{LatencyReport, StatsReport};

struct Out(String);

/// Escape a label value (backslash, double quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// A family with one unlabelled sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A family with one sample per `(label value, value)`.
    fn labelled(&mut self, name: &str, kind: &str, help: &str, label: &str, rows: &[(&str, u64)]) {
        self.family(name, kind, help);
        for (v, n) in rows {
            self.sample(name, &[(label, v)], n);
        }
    }

    fn summary(&mut self, name: &str, labels: &[(&str, &str)], l: &LatencyReport) {
        for (q, v) in [
            ("0.5", l.p50_us),
            ("0.9", l.p90_us),
            ("0.99", l.p99_us),
            ("0.999", l.p999_us),
        ] {
            let mut with_q = labels.to_vec();
            with_q.push(("quantile", q));
            self.sample(name, &with_q, v / 1e6);
        }
        self.sample(
            &format!("{name}_sum"),
            labels,
            l.mean_us * l.count as f64 / 1e6,
        );
        self.sample(&format!("{name}_count"), labels, l.count);
    }
}

/// Render the whole report.
pub fn render(r: &StatsReport) -> String {
    let mut o = Out(String::with_capacity(8192));
    o.family("sipfront_info", "gauge", "Build information.");
    o.sample("sipfront_info", &[("version", r.version)], 1);
    o.single(
        "sipfront_uptime_seconds",
        "gauge",
        "Seconds since the admin API started.",
        r.uptime_secs,
    );

    let s = &r.sip;
    o.single(
        "sipfront_sip_requests_received_total",
        "counter",
        "SIP requests received (all workers).",
        s.requests_received,
    );
    o.single(
        "sipfront_sip_responses_received_total",
        "counter",
        "SIP responses received.",
        s.responses_received,
    );
    let classes: Vec<(&str, u64)> = s.responses_sent.iter().map(|(k, v)| (*k, *v)).collect();
    o.labelled(
        "sipfront_sip_responses_sent_total",
        "counter",
        "SIP responses sent (generated or forwarded), by class.",
        "class",
        &classes,
    );
    o.single(
        "sipfront_sip_forwarded_requests_total",
        "counter",
        "Requests forwarded statefully (to Asterisk or to phones).",
        s.forwarded_requests,
    );
    o.single(
        "sipfront_sip_forwarded_responses_total",
        "counter",
        "Responses forwarded downstream.",
        s.forwarded_responses,
    );
    o.labelled(
        "sipfront_sip_retransmissions_total",
        "counter",
        "Retransmissions absorbed (answered from a transaction) and sent (timers).",
        "kind",
        &[
            ("absorbed", s.retransmissions_absorbed),
            ("sent", s.retransmissions_sent),
        ],
    );
    o.single(
        "sipfront_sip_transaction_timeouts_total",
        "counter",
        "Client transactions that timed out.",
        s.timeouts,
    );
    o.family(
        "sipfront_transactions_in_flight",
        "gauge",
        "Live transactions.",
    );
    o.sample(
        "sipfront_transactions_in_flight",
        &[("kind", "server")],
        r.transactions.server,
    );
    o.sample(
        "sipfront_transactions_in_flight",
        &[("kind", "client")],
        r.transactions.client,
    );
    let d = &r.drops;
    o.labelled(
        "sipfront_dropped_total",
        "counter",
        "Datagrams dropped, by reason.",
        "reason",
        &[
            ("malformed", d.malformed),
            ("unmatched", d.unmatched),
            ("overload", d.overload),
            ("banned", d.banned),
            ("rate_limited", d.rate_limited),
            ("scanner", d.scanner),
            ("outbox_full", d.outbox),
            ("transport", d.transport),
            ("kernel", d.kernel),
        ],
    );
    let ov = &r.overload;
    o.single(
        "sipfront_overload_shed_total",
        "counter",
        "New requests answered 503 + Retry-After because a worker's receive backlog was over [limits] shed_backlog_bytes.",
        ov.shed,
    );
    o.single(
        "sipfront_overload_shedding_workers",
        "gauge",
        "Workers shedding new requests right now.",
        ov.shedding_workers,
    );

    let a = &r.auth;
    o.labelled(
        "sipfront_auth_total",
        "counter",
        "Digest authentication outcomes.",
        "result",
        &[
            ("ok", a.ok),
            ("failed", a.failed),
            ("challenge", a.challenges),
        ],
    );

    let c = &r.credentials;
    o.single(
        "sipfront_credential_cache_users",
        "gauge",
        "Users in the credential cache.",
        c.cached_users,
    );
    o.single(
        "sipfront_credential_cache_negative_users",
        "gauge",
        "Unknown users remembered (negative cache).",
        c.negative_cached,
    );
    o.single(
        "sipfront_credential_cache_misses_total",
        "counter",
        "Credential cache misses sent to the lookup pool.",
        c.cache_misses,
    );
    o.single(
        "sipfront_credential_db_queries_total",
        "counter",
        "Single-user queries the lookup pool ran.",
        c.db_queries,
    );
    o.single(
        "sipfront_credential_db_coalesced_total",
        "counter",
        "Misses that joined a query already running for the same user.",
        c.db_coalesced,
    );
    o.single(
        "sipfront_credential_db_errors_total",
        "counter",
        "Lookup pool queries that failed (database errors).",
        c.db_errors,
    );
    o.single(
        "sipfront_credential_db_connects_total",
        "counter",
        "Database connections the lookup pool opened.",
        c.db_connects,
    );
    o.single(
        "sipfront_credential_pool_queue",
        "gauge",
        "Lookups waiting for a database thread.",
        c.pool_queue,
    );
    o.labelled(
        "sipfront_credential_refresh_total",
        "counter",
        "Full credential reloads.",
        "result",
        &[("ok", c.refresh_ok), ("failed", c.refresh_failed)],
    );
    o.single(
        "sipfront_credential_last_refresh_timestamp_seconds",
        "gauge",
        "UNIX time of the last successful full reload (0: none).",
        c.last_refresh_ms as f64 / 1000.0,
    );

    let g = &r.registrar;
    o.single(
        "sipfront_registrar_aors",
        "gauge",
        "Addresses of record with bindings.",
        g.aors,
    );
    o.single(
        "sipfront_registrar_contacts",
        "gauge",
        "Bindings (contacts) in the location table.",
        g.contacts,
    );
    o.single(
        "sipfront_registrar_registrations_total",
        "counter",
        "REGISTER requests accepted.",
        g.registrations,
    );
    o.single(
        "sipfront_registrar_admin_unregisters_dropped_total",
        "counter",
        "Users removed by the admin API that Asterisk was not told about (queue full).",
        g.unregisters_dropped,
    );
    let f = &r.regfwd;
    o.labelled("sipfront_regfwd_total", "counter", "REGISTERs forwarded to Asterisk: sent, answered 2xx, failed, and refreshes not forwarded (throttled).", "result", &[("sent", f.sent), ("ok", f.ok), ("failed", f.failed), ("throttled", f.throttled)]);
    o.single(
        "sipfront_regfwd_unregistered_total",
        "counter",
        "Expires: 0 REGISTERs sent to Asterisk for AORs left without binding.",
        f.unregistered,
    );
    if let Some(n) = r.bans {
        o.single(
            "sipfront_bans",
            "gauge",
            "Source addresses currently banned.",
            n,
        );
    }
    if let Some((ok, failed)) = r.config_reloads {
        o.labelled(
            "sipfront_config_reloads_total",
            "counter",
            "Configuration reloads (SIGHUP, ctl reload): applied, or refused (invalid file).",
            "result",
            &[("ok", ok), ("failed", failed)],
        );
    }
    if let Some(g) = &r.guard {
        o.single(
            "sipfront_guard_bans_issued_total",
            "counter",
            "Bans issued (failed authentications and manual).",
            g.bans_issued,
        );
        o.single(
            "sipfront_guard_tracked_ips",
            "gauge",
            "Source addresses with a rate-limit bucket.",
            g.tracked_ips,
        );
        o.single(
            "sipfront_guard_evicted_ips_total",
            "counter",
            "Rate-limit buckets forgotten to stay within max_tracked_ips.",
            g.evicted_ips,
        );
    }

    type Field = fn(&super::report::WorkerReport) -> u64;
    let per_worker: [(&str, &str, Field); 7] = [
        (
            "sipfront_worker_rx_datagrams_total",
            "Datagrams received by the worker's sockets.",
            |w| w.rx,
        ),
        (
            "sipfront_worker_tx_datagrams_total",
            "Datagrams the worker passed to the kernel.",
            |w| w.tx,
        ),
        (
            "sipfront_worker_send_errors_total",
            "Sends the kernel refused.",
            |w| w.send_errors,
        ),
        (
            "sipfront_worker_handed_off_total",
            "Datagrams passed to the worker owning their Call-ID or branch.",
            |w| w.handed_off,
        ),
        (
            "sipfront_worker_handoff_in_total",
            "Datagrams received from other workers.",
            |w| w.handoff_in,
        ),
        (
            "sipfront_worker_dropped_total",
            "Datagrams the worker's transport dropped.",
            |w| w.dropped,
        ),
        (
            "sipfront_worker_turns_total",
            "Event loop turns (liveness).",
            |w| w.turns,
        ),
    ];
    let per_worker_more: [(&str, &str, &str, Field); 3] = [
        (
            "sipfront_socket_drops_total",
            "counter",
            "Datagrams the kernel dropped at the worker's sockets because a receive buffer was full (SO_MEMINFO).",
            |w| w.kernel_drops,
        ),
        (
            "sipfront_socket_rx_backlog_bytes",
            "gauge",
            "Received bytes waiting for the worker (kernel receive queues plus datagrams taken off them and not processed) at its last reading.",
            |w| w.rx_backlog_bytes,
        ),
        (
            "sipfront_worker_shedding",
            "gauge",
            "1 while the worker answers new requests 503 (receive backlog over the threshold).",
            |w| u64::from(w.shedding),
        ),
    ];
    let per_worker = per_worker.map(|(name, help, get)| (name, "counter", help, get));
    for (name, kind, help, get) in per_worker.into_iter().chain(per_worker_more) {
        o.family(name, kind, help);
        for w in &r.workers {
            o.sample(name, &[("worker", &w.worker.to_string())], get(w));
        }
    }

    let name = "sipfront_processing_seconds";
    o.family(name, "summary", "Time a worker spent in the proxy core per datagram, by message class (cumulative since start).");
    for l in &r.latency {
        o.summary(name, &[("kind", l.kind), ("method", l.method)], l);
    }
    let name = "sipfront_upstream_response_seconds";
    o.family(name, "summary", "Time from a request sent to an Asterisk node to its first and final response (cumulative since start).");
    for l in &r.upstream {
        o.summary(name, &[("upstream", &l.name), ("response", l.kind)], l);
    }
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::report::{WorkerReport, RESPONSE_CLASSES};

    fn report() -> StatsReport {
        let mut r = StatsReport {
            version: "1.2.3",
            ..StatsReport::default()
        };
        r.sip.requests_received = 42;
        r.sip.responses_sent = RESPONSE_CLASSES.iter().map(|c| (*c, 1)).collect();
        r.auth.challenges = 7;
        r.registrar.aors = 3;
        r.drops.overload = 2;
        r.bans = Some(1);
        r.guard = Some(crate::guard::GuardStats {
            bans_issued: 5,
            ..Default::default()
        });
        r.workers = vec![
            WorkerReport {
                worker: 0,
                rx: 10,
                ..WorkerReport::default()
            },
            WorkerReport {
                worker: 1,
                rx: 11,
                kernel_drops: 12,
                rx_backlog_bytes: 4096,
                shedding: true,
                ..WorkerReport::default()
            },
        ];
        r.drops.kernel = 12;
        r.overload.shed = 13;
        r.overload.shedding_workers = 1;
        r.latency = vec![LatencyReport {
            name: "request_invite".into(),
            kind: "request",
            method: "INVITE",
            count: 4,
            mean_us: 5.0,
            p50_us: 4.0,
            p90_us: 8.0,
            p99_us: 9.0,
            p999_us: 9.5,
            max_us: 10.0,
        }];
        r.upstream = vec![LatencyReport {
            name: "127.0.0.2:5080".into(),
            kind: "final",
            count: 1,
            p50_us: 1500.0,
            ..LatencyReport::default()
        }];
        r
    }

    #[test]
    fn renders_counters_gauges_and_summaries() {
        let t = render(&report());
        for line in [
            "sipfront_info{version=\"1.2.3\"} 1",
            "sipfront_sip_requests_received_total 42",
            "sipfront_sip_responses_sent_total{class=\"2xx\"} 1",
            "sipfront_auth_total{result=\"challenge\"} 7",
            "sipfront_registrar_aors 3",
            "sipfront_dropped_total{reason=\"overload\"} 2",
            "sipfront_bans 1",
            "sipfront_guard_bans_issued_total 5",
            "sipfront_worker_rx_datagrams_total{worker=\"1\"} 11",
            "sipfront_socket_drops_total{worker=\"1\"} 12",
            "sipfront_socket_rx_backlog_bytes{worker=\"1\"} 4096",
            "sipfront_worker_shedding{worker=\"1\"} 1",
            "sipfront_worker_shedding{worker=\"0\"} 0",
            "sipfront_dropped_total{reason=\"kernel\"} 12",
            "sipfront_overload_shed_total 13",
            "sipfront_overload_shedding_workers 1",
            "sipfront_processing_seconds{kind=\"request\",method=\"INVITE\",quantile=\"0.99\"} 0.000009",
            "sipfront_processing_seconds_count{kind=\"request\",method=\"INVITE\"} 4",
            "sipfront_processing_seconds_sum{kind=\"request\",method=\"INVITE\"} 0.00002",
            "sipfront_upstream_response_seconds{upstream=\"127.0.0.2:5080\",response=\"final\",quantile=\"0.5\"} 0.0015",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
    }

    #[test]
    fn every_sample_has_help_and_type_and_valid_syntax() {
        let t = render(&report());
        let mut typed = std::collections::HashSet::new();
        for l in t.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                typed.insert(it.next().unwrap().to_owned());
                assert!(matches!(it.next(), Some("counter" | "gauge" | "summary")));
                continue;
            }
            if l.starts_with("# HELP ") {
                continue;
            }
            let (name_labels, value) = l.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{l}");
            let name = name_labels.split('{').next().unwrap();
            let base = name.trim_end_matches("_sum").trim_end_matches("_count");
            assert!(
                typed.contains(name) || typed.contains(base),
                "untyped {name}"
            );
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        }
        // No bans line when there is no ban list.
        let mut r = report();
        r.bans = None;
        assert!(!render(&r).contains("sipfront_bans"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
