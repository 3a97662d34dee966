//! Prometheus text exposition (format 0.0.4) of a [`StatsReport`]. Every family gets its
//! `# HELP` and `# TYPE`; latencies are summaries in seconds with quantiles 0.5, 0.9, 0.99
//! and 0.999 (cumulative since start), `_sum` (from the histogram mean) and `_count`.
//! The metric names are listed with their meaning in `docs/operations.md`.

//! `/metrics`: a [`StatsReport`] in the OpenMetrics text format, encoded by the official
//! `prometheus-client` crate. Every family gets its `# HELP` and `# TYPE`; counters end in
//! `_total`; latencies are histograms in seconds (`_bucket{le=..}`, `_sum`, `_count`,
//! cumulative since start) with the bounds of [`crate::metrics::BOUNDS_NS`], so Prometheus
//! can window them with `rate()` and aggregate them across instances with `sum by (le)`.
//! The metric names are listed with their meaning in `docs/operations.md`.
//!
//! Flow: a scrape collects the report, wraps it in a [`Collector`] registered in a fresh
//! [`Registry`], and `prometheus_client::encoding::text::encode` writes it (ending with
//! `# EOF`). Nothing here runs on a worker.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::report::{LatencyReport, StatsReport};

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Writes families through one [`DescriptorEncoder`]; names are given as exposed
/// (`..._total` for counters), the suffix is left to the encoder.
struct Out<'a, 'e>(&'a mut DescriptorEncoder<'e>);

impl Out<'_, '_> {
    fn counter(&mut self, name: &str, help: &str, v: u64) -> fmt::Result {
        let base = name.strip_suffix("_total").unwrap_or(name);
        let mut m = self
            .0
            .encode_descriptor(base, help, None, MetricType::Counter)?;
        m.encode_counter::<NoLabelSet, _, u64>(&v, None)
    }

    fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
        &mut self,
        name: &str,
        help: &str,
        v: V,
    ) -> fmt::Result {
        let mut m = self
            .0
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        m.encode_gauge(&v)
    }

    /// A counter family with one sample per `(label value, value)`.
    fn counters(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        rows: &[(&str, u64)],
    ) -> fmt::Result {
        let base = name.strip_suffix("_total").unwrap_or(name);
        let mut m = self
            .0
            .encode_descriptor(base, help, None, MetricType::Counter)?;
        for (v, n) in rows {
            m.encode_family(&[(label, *v)])?
                .encode_counter::<NoLabelSet, _, u64>(n, None)?;
        }
        Ok(())
    }

    /// A family with one sample per worker.
    fn per_worker(
        &mut self,
        name: &str,
        kind: MetricType,
        help: &str,
        rows: &[(String, u64)],
    ) -> fmt::Result {
        self.labelled(name, kind, help, "worker", rows)
    }

    /// A counter or gauge family with one sample per value of `label`.
    fn labelled(
        &mut self,
        name: &str,
        kind: MetricType,
        help: &str,
        label: &str,
        rows: &[(String, u64)],
    ) -> fmt::Result {
        let base = match kind {
            MetricType::Counter => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        let mut m = self.0.encode_descriptor(base, help, None, kind)?;
        for (w, n) in rows {
            let labels = [(label, w.as_str())];
            let mut f = m.encode_family(&labels)?;
            match kind {
                MetricType::Counter => f.encode_counter::<NoLabelSet, _, u64>(n, None)?,
                _ => f.encode_gauge(n)?,
            }
        }
        Ok(())
    }

    /// A histogram family: one series per report row, labelled by `labels(row)`.
    fn histograms<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        rows: &[LatencyReport],
        labels: impl Fn(&LatencyReport) -> L,
    ) -> fmt::Result {
        let mut m = self
            .0
            .encode_descriptor(name, help, None, MetricType::Histogram)?;
        for l in rows {
            let set = labels(l);
            let b = &l.buckets;
            m.encode_family(&set)?.encode_histogram::<NoLabelSet>(
                b.sum_ns as f64 / 1e9,
                b.count(),
                &b.seconds(),
                None,
            )?;
        }
        Ok(())
    }
}

/// The report as a `prometheus_client` collector (encoded once per scrape).
#[derive(Debug)]
struct Report(StatsReport);

impl Collector for Report {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        write(&self.0, &mut Out(&mut encoder))
    }
}

/// Render the whole report (OpenMetrics text, ending with `# EOF`).
pub fn render(r: &StatsReport) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Report(r.clone())));
    let mut out = String::with_capacity(16 * 1024);
    // Writing into a String cannot fail; a family that could not be encoded would only
    // shorten the answer.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::warn!(error = %e, "metrics encoding failed");
    }
    out
}

fn write(r: &StatsReport, o: &mut Out<'_, '_>) -> fmt::Result {
    {
        let mut m =
            o.0.encode_descriptor("sipfront", "Build information.", None, MetricType::Info)?;
        m.encode_info(&[("version", r.version)])?;
    }
    o.gauge(
        "sipfront_uptime_seconds",
        "Seconds since the admin API started.",
        r.uptime_secs,
    )?;

    let s = &r.sip;
    o.counter(
        "sipfront_sip_requests_received_total",
        "SIP requests received (all workers).",
        s.requests_received,
    )?;
    o.counter(
        "sipfront_sip_responses_received_total",
        "SIP responses received.",
        s.responses_received,
    )?;
    let classes: Vec<(&str, u64)> = s.responses_sent.iter().map(|(k, v)| (*k, *v)).collect();
    o.counters(
        "sipfront_sip_responses_sent_total",
        "SIP responses sent (generated or forwarded), by class.",
        "class",
        &classes,
    )?;
    o.counter(
        "sipfront_sip_forwarded_requests_total",
        "Requests forwarded statefully (to Asterisk or to phones).",
        s.forwarded_requests,
    )?;
    o.counter(
        "sipfront_sip_forwarded_responses_total",
        "Responses forwarded downstream.",
        s.forwarded_responses,
    )?;
    o.counters(
        "sipfront_sip_retransmissions_total",
        "Retransmissions absorbed (answered from a transaction) and sent (timers).",
        "kind",
        &[
            ("absorbed", s.retransmissions_absorbed),
            ("sent", s.retransmissions_sent),
        ],
    )?;
    o.counter(
        "sipfront_sip_transaction_timeouts_total",
        "Client transactions that timed out.",
        s.timeouts,
    )?;
    o.counter(
        "sipfront_nat_keepalives_sent_total",
        "NAT keepalives sent to registered phones (OPTIONS or CRLF).",
        r.nat.keepalives_sent,
    )?;
    o.counter(
        "sipfront_nat_keepalives_answered_total",
        "Keepalive OPTIONS a phone answered.",
        r.nat.keepalives_answered,
    )?;
    o.counter(
        "sipfront_nat_keepalive_removed_total",
        "Bindings removed because their phone stopped answering keepalives or its connection closed.",
        r.nat.bindings_removed,
    )?;
    {
        let mut m = o.0.encode_descriptor(
            "sipfront_transactions_in_flight",
            "Live transactions.",
            None,
            MetricType::Gauge,
        )?;
        m.encode_family(&[("kind", "server")])?
            .encode_gauge(&r.transactions.server)?;
        m.encode_family(&[("kind", "client")])?
            .encode_gauge(&r.transactions.client)?;
    }
    let d = &r.drops;
    o.counters(
        "sipfront_dropped_total",
        "Datagrams dropped, by reason.",
        "reason",
        &[
            ("malformed", d.malformed),
            ("unmatched", d.unmatched),
            ("overload", d.overload),
            ("banned", d.banned),
            ("rate_limited", d.rate_limited),
            ("scanner", d.scanner),
            ("forged", d.forged),
            ("spoofed", d.spoofed),
            ("outbox_full", d.outbox),
            ("transport", d.transport),
            ("kernel", d.kernel),
        ],
    )?;
    let ov = &r.overload;
    o.counter(
        "sipfront_overload_shed_total",
        "New requests answered 503 + Retry-After because a worker's receive backlog was over [limits] shed_backlog_bytes.",
        ov.shed,
    )?;
    o.gauge(
        "sipfront_overload_shedding_workers",
        "Workers shedding new requests right now.",
        ov.shedding_workers,
    )?;

    let a = &r.auth;
    o.counters(
        "sipfront_auth_total",
        "Digest authentication outcomes.",
        "result",
        &[
            ("ok", a.ok),
            ("failed", a.failed),
            ("challenge", a.challenges),
        ],
    )?;

    let c = &r.credentials;
    o.gauge(
        "sipfront_credential_cache_users",
        "Users in the credential cache.",
        c.cached_users,
    )?;
    o.gauge(
        "sipfront_credential_cache_negative_users",
        "Unknown users remembered (negative cache).",
        c.negative_cached,
    )?;
    o.counter(
        "sipfront_credential_cache_misses_total",
        "Credential cache misses sent to the lookup pool.",
        c.cache_misses,
    )?;
    o.counter(
        "sipfront_credential_db_queries_total",
        "Single-user queries the lookup pool ran.",
        c.db_queries,
    )?;
    o.counter(
        "sipfront_credential_db_coalesced_total",
        "Misses that joined a query already running for the same user.",
        c.db_coalesced,
    )?;
    o.counter(
        "sipfront_credential_db_errors_total",
        "Lookup pool queries that failed (database errors).",
        c.db_errors,
    )?;
    o.counter(
        "sipfront_credential_db_connects_total",
        "Database connections the lookup pool opened.",
        c.db_connects,
    )?;
    o.gauge(
        "sipfront_credential_pool_queue",
        "Lookups waiting for a database thread.",
        c.pool_queue,
    )?;
    o.counters(
        "sipfront_credential_refresh_total",
        "Full credential reloads.",
        "result",
        &[("ok", c.refresh_ok), ("failed", c.refresh_failed)],
    )?;
    o.gauge(
        "sipfront_credential_last_refresh_timestamp_seconds",
        "UNIX time of the last successful full reload (0: none).",
        c.last_refresh_ms as f64 / 1000.0,
    )?;

    let g = &r.registrar;
    o.gauge(
        "sipfront_registrar_aors",
        "Addresses of record with bindings.",
        g.aors,
    )?;
    o.gauge(
        "sipfront_registrar_contacts",
        "Bindings (contacts) in the location table.",
        g.contacts,
    )?;
    o.counter(
        "sipfront_registrar_registrations_total",
        "REGISTER requests accepted.",
        g.registrations,
    )?;
    o.counter(
        "sipfront_registrar_admin_unregisters_dropped_total",
        "Users removed by the admin API that Asterisk was not told about (queue full).",
        g.unregisters_dropped,
    )?;
    let f = &r.regfwd;
    o.counters(
        "sipfront_regfwd_total",
        "REGISTERs forwarded to Asterisk: sent, answered 2xx, failed, and refreshes not forwarded (throttled).",
        "result",
        &[
            ("sent", f.sent),
            ("ok", f.ok),
            ("failed", f.failed),
            ("throttled", f.throttled),
        ],
    )?;
    o.counter(
        "sipfront_regfwd_unregistered_total",
        "Expires: 0 REGISTERs sent to Asterisk for AORs left without binding.",
        f.unregistered,
    )?;
    if let Some(n) = r.bans {
        o.gauge("sipfront_bans", "Source addresses currently banned.", n)?;
    }
    if let Some((ok, failed)) = r.config_reloads {
        o.counters(
            "sipfront_config_reloads_total",
            "Configuration reloads (SIGHUP, ctl reload): applied, or refused (invalid file).",
            "result",
            &[("ok", ok), ("failed", failed)],
        )?;
    }
    if let Some(g) = &r.guard {
        o.counter(
            "sipfront_guard_bans_issued_total",
            "Bans issued (failed authentications and manual).",
            g.bans_issued,
        )?;
        o.gauge(
            "sipfront_guard_tracked_ips",
            "Source addresses with a rate-limit bucket.",
            g.tracked_ips,
        )?;
        o.counter(
            "sipfront_guard_evicted_ips_total",
            "Rate-limit buckets forgotten to stay within max_tracked_ips.",
            g.evicted_ips,
        )?;
    }
    if let Some(h) = &r.hep {
        o.counters(
            "sipfront_hep_packets_total",
            "HEP capture: copies of SIP messages sent to the collector, dropped rather than delaying SIP (capture queue full, or larger than [hep] max_message_bytes), and refused by the kernel.",
            "result",
            &[("sent", h.sent), ("dropped", h.dropped), ("failed", h.failed)],
        )?;
    }
    if let Some(c) = &r.cluster {
        o.gauge(
            "sipfront_cluster_redis_up",
            "1 while this node's last heartbeat reached Redis ([cluster]).",
            u64::from(c.redis_up),
        )?;
        o.gauge(
            "sipfront_cluster_nodes_live",
            "Cluster nodes whose heartbeat is alive, this one included.",
            c.live.len() as u64,
        )?;
        o.gauge(
            "sipfront_cluster_pending_aors",
            "AORs changed on this node waiting to be written to Redis.",
            c.pending,
        )?;
        o.counter(
            "sipfront_cluster_aors_written_total",
            "AORs written to Redis (one script run each).",
            c.aors_written,
        )?;
        o.counter(
            "sipfront_cluster_resyncs_total",
            "Full rewrites of this node's bindings (Redis restarted or flushed, write queue full).",
            c.resyncs,
        )?;
        o.counter(
            "sipfront_cluster_redis_errors_total",
            "Failed Redis operations of the cluster threads.",
            c.redis_errors,
        )?;
        o.counter(
            "sipfront_cluster_updates_received_total",
            "Location changes of other nodes applied to this node's table.",
            c.updates_received,
        )?;
        o.counter(
            "sipfront_cluster_aors_loaded_total",
            "AORs read from Redis by start-up loads and resyncs.",
            c.aors_loaded,
        )?;
        o.counters(
            "sipfront_cluster_requests_total",
            "Requests for phones of other nodes sent there (forwarded), bindings skipped because their node is dead (unreachable), requests from other nodes for this node's phones (delivered).",
            "result",
            &[
                ("forwarded", c.forwarded),
                ("unreachable", c.unreachable),
                ("delivered", c.delivered),
            ],
        )?;
    }

    type Field = fn(&super::report::WorkerReport) -> u64;
    let per_worker: [(&str, MetricType, &str, Field); 10] = [
        (
            "sipfront_worker_rx_datagrams_total",
            MetricType::Counter,
            "Datagrams received by the worker's sockets.",
            |w| w.rx,
        ),
        (
            "sipfront_worker_tx_datagrams_total",
            MetricType::Counter,
            "Datagrams the worker passed to the kernel.",
            |w| w.tx,
        ),
        (
            "sipfront_worker_send_errors_total",
            MetricType::Counter,
            "Sends the kernel refused.",
            |w| w.send_errors,
        ),
        (
            "sipfront_worker_handed_off_total",
            MetricType::Counter,
            "Datagrams passed to the worker owning their Call-ID or branch.",
            |w| w.handed_off,
        ),
        (
            "sipfront_worker_handoff_in_total",
            MetricType::Counter,
            "Datagrams received from other workers.",
            |w| w.handoff_in,
        ),
        (
            "sipfront_worker_dropped_total",
            MetricType::Counter,
            "Datagrams the worker's transport dropped.",
            |w| w.dropped,
        ),
        (
            "sipfront_worker_turns_total",
            MetricType::Counter,
            "Event loop turns (liveness).",
            |w| w.turns,
        ),
        (
            "sipfront_socket_drops_total",
            MetricType::Counter,
            "Datagrams the kernel dropped at the worker's sockets because a receive buffer was full (SO_MEMINFO).",
            |w| w.kernel_drops,
        ),
        (
            "sipfront_socket_rx_backlog_bytes",
            MetricType::Gauge,
            "Received bytes waiting for the worker (kernel receive queues plus datagrams taken off them and not processed) at its last reading.",
            |w| w.rx_backlog_bytes,
        ),
        (
            "sipfront_worker_shedding",
            MetricType::Gauge,
            "1 while the worker answers new requests 503 (receive backlog over the threshold).",
            |w| u64::from(w.shedding),
        ),
    ];
    for (name, kind, help, get) in per_worker {
        let rows: Vec<(String, u64)> = r
            .workers
            .iter()
            .map(|w| (w.worker.to_string(), get(w)))
            .collect();
        o.per_worker(name, kind, help, &rows)?;
    }

    type ConnField = fn(&super::report::ConnectionReport) -> u64;
    let per_transport: [(&str, MetricType, &str, ConnField); 8] = [
        (
            "sipfront_connections_open",
            MetricType::Gauge,
            "Stream connections open now, by transport.",
            |c| c.open,
        ),
        (
            "sipfront_connections_accepted_total",
            MetricType::Counter,
            "Stream connections accepted, by transport.",
            |c| c.accepted,
        ),
        (
            "sipfront_connections_refused_total",
            MetricType::Counter,
            "Stream connections refused at accept (connection limits, bans, rate limits), by transport.",
            |c| c.refused,
        ),
        (
            "sipfront_connections_closed_total",
            MetricType::Counter,
            "Stream connections closed for any reason, by transport.",
            |c| c.closed,
        ),
        (
            "sipfront_connections_errors_total",
            MetricType::Counter,
            "Stream connections closed for an error (bad framing, TLS, timeouts, limits), by transport.",
            |c| c.errors,
        ),
        (
            "sipfront_tls_handshake_failures_total",
            MetricType::Counter,
            "TLS handshakes that failed, by transport.",
            |c| c.handshake_failures,
        ),
        (
            "sipfront_connection_received_bytes_total",
            MetricType::Counter,
            "Bytes received on stream connections, by transport.",
            |c| c.bytes_in,
        ),
        (
            "sipfront_connection_sent_bytes_total",
            MetricType::Counter,
            "Bytes written to stream connections, by transport.",
            |c| c.bytes_out,
        ),
    ];
    for (name, kind, help, get) in per_transport {
        let rows: Vec<(String, u64)> = r
            .connections
            .iter()
            .map(|c| (c.transport.to_owned(), get(c)))
            .collect();
        o.labelled(name, kind, help, "transport", &rows)?;
    }

    o.histograms(
        "sipfront_processing_seconds",
        "Time a worker spent in the proxy core per datagram, by message class (cumulative since start).",
        &r.latency,
        |l| [("kind", l.kind), ("method", l.method)],
    )?;
    o.histograms(
        "sipfront_upstream_response_seconds",
        "Time from a request sent to an Asterisk node to its first and final response (cumulative since start).",
        &r.upstream,
        |l| [("upstream", l.name.clone()), ("response", l.kind.to_owned())],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::report::{HepReport, WorkerReport, RESPONSE_CLASSES};
    use crate::metrics::Latency;

    fn latency(values_ns: &[u64]) -> crate::metrics::Buckets {
        let mut l = Latency::default();
        for v in values_ns {
            l.record(*v);
        }
        l.buckets
    }

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
        r.hep = Some(HepReport {
            sent: 9,
            dropped: 4,
            failed: 0,
        });
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
        r.connections = vec![crate::admin::report::ConnectionReport {
            transport: "tls",
            open: 3,
            handshake_failures: 2,
            bytes_in: 900,
            ..Default::default()
        }];
        r.drops.kernel = 12;
        r.overload.shed = 13;
        r.overload.shedding_workers = 1;
        r.latency = vec![LatencyReport {
            name: "request_invite".into(),
            kind: "request",
            method: "INVITE",
            count: 4,
            buckets: latency(&[4_000, 8_000, 9_000, 2_000_000]),
            ..LatencyReport::default()
        }];
        r.upstream = vec![LatencyReport {
            name: "127.0.0.2:5080".into(),
            kind: "final",
            count: 1,
            buckets: latency(&[1_500_000]),
            ..LatencyReport::default()
        }];
        r
    }

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let t = render(&report());
        for line in [
            "sipfront_info{version=\"1.2.3\"} 1",
            "sipfront_sip_requests_received_total 42",
            "sipfront_sip_responses_sent_total{class=\"2xx\"} 1",
            "sipfront_auth_total{result=\"challenge\"} 7",
            "sipfront_registrar_aors 3",
            "sipfront_dropped_total{reason=\"overload\"} 2",
            "sipfront_bans 1",
            "sipfront_hep_packets_total{result=\"sent\"} 9",
            "sipfront_hep_packets_total{result=\"dropped\"} 4",
            "sipfront_guard_bans_issued_total 5",
            "sipfront_worker_rx_datagrams_total{worker=\"1\"} 11",
            "sipfront_socket_drops_total{worker=\"1\"} 12",
            "sipfront_socket_rx_backlog_bytes{worker=\"1\"} 4096",
            "sipfront_worker_shedding{worker=\"1\"} 1",
            "sipfront_worker_shedding{worker=\"0\"} 0",
            "sipfront_dropped_total{reason=\"kernel\"} 12",
            "sipfront_overload_shed_total 13",
            "sipfront_overload_shedding_workers 1",
            "sipfront_connections_open{transport=\"tls\"} 3",
            "sipfront_tls_handshake_failures_total{transport=\"tls\"} 2",
            "sipfront_connection_received_bytes_total{transport=\"tls\"} 900",
            "# TYPE sipfront_processing_seconds histogram",
            // Cumulative buckets: 4 µs in le=5e-6; 8 and 9 µs in le=1e-5; 2 ms in le=0.0025.
            "sipfront_processing_seconds_bucket{le=\"0.000005\",kind=\"request\",method=\"INVITE\"} 1",
            "sipfront_processing_seconds_bucket{le=\"0.00001\",kind=\"request\",method=\"INVITE\"} 3",
            "sipfront_processing_seconds_bucket{le=\"0.001\",kind=\"request\",method=\"INVITE\"} 3",
            "sipfront_processing_seconds_bucket{le=\"0.0025\",kind=\"request\",method=\"INVITE\"} 4",
            "sipfront_processing_seconds_bucket{le=\"+Inf\",kind=\"request\",method=\"INVITE\"} 4",
            "sipfront_processing_seconds_count{kind=\"request\",method=\"INVITE\"} 4",
            "sipfront_processing_seconds_sum{kind=\"request\",method=\"INVITE\"} 0.002021",
            "sipfront_upstream_response_seconds_bucket{le=\"0.0025\",upstream=\"127.0.0.2:5080\",response=\"final\"} 1",
            "sipfront_upstream_response_seconds_count{upstream=\"127.0.0.2:5080\",response=\"final\"} 1",
            "# EOF",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
        assert!(!t.contains("quantile"), "no summaries any more");
    }

    #[test]
    fn every_sample_has_help_and_type_and_valid_syntax() {
        let t = render(&report());
        let mut typed = std::collections::HashMap::new();
        let mut helped = std::collections::HashSet::new();
        for l in t.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(
                    matches!(kind, "counter" | "gauge" | "histogram" | "info"),
                    "{l}"
                );
                typed.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if let Some(rest) = l.strip_prefix("# HELP ") {
                helped.insert(rest.split(' ').next().unwrap().to_owned());
                continue;
            }
            if l == "# EOF" {
                continue;
            }
            let (name_labels, value) = l.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{l}");
            let name = name_labels.split('{').next().unwrap();
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
            let family = ["_total", "_bucket", "_sum", "_count", "_info"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains_key(*f)))
                .unwrap_or(name);
            assert!(typed.contains_key(family), "untyped {name}");
            assert!(helped.contains(family), "no help for {name}");
            if name.ends_with("_total") {
                assert_eq!(typed[family], "counter", "{name}");
            }
        }
        // No bans or HEP lines without a ban list or capture.
        let mut r = report();
        r.bans = None;
        r.hep = None;
        let t = render(&r);
        assert!(!t.contains("sipfront_bans") && !t.contains("sipfront_hep"));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut r = report();
        r.upstream[0].name = "a\"b\\c".into();
        let t = render(&r);
        assert!(
            t.contains("upstream=\"a\\\"b\\\\c\""),
            "{}",
            t.lines().find(|l| l.contains("upstream=")).unwrap_or("")
        );
    }
}
