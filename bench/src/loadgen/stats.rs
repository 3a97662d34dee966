//! Results of one load phase: per-step latency histograms (hdrhistogram, µs), outcome
//! counters and failure causes; merging across threads; the percentile table and the `.hgrm`
//! files (HdrHistogram's percentile-distribution text format, readable by its plotters).

use hdrhistogram::Histogram;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

/// A measured step: from sending a request to receiving a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// REGISTER → 401.
    RegChallenge,
    /// REGISTER with Authorization → 200.
    RegAuth,
    /// INVITE → 407.
    InvChallenge,
    /// (authenticated) INVITE → 100.
    Inv100,
    /// (authenticated) INVITE → first 180/183.
    Inv180,
    /// (authenticated) INVITE → 200.
    Inv200,
    /// BYE → 200.
    Bye,
    /// The whole operation, first request to last response.
    Total,
}

impl Step {
    pub const ALL: [Step; 8] = [
        Step::RegChallenge,
        Step::RegAuth,
        Step::InvChallenge,
        Step::Inv100,
        Step::Inv180,
        Step::Inv200,
        Step::Bye,
        Step::Total,
    ];

    /// Short name, used in the table and the `.hgrm` file names.
    pub fn name(self) -> &'static str {
        match self {
            Step::RegChallenge => "register-401",
            Step::RegAuth => "register-auth-200",
            Step::InvChallenge => "invite-407",
            Step::Inv100 => "invite-100",
            Step::Inv180 => "invite-180",
            Step::Inv200 => "invite-200",
            Step::Bye => "bye-200",
            Step::Total => "total",
        }
    }
}

/// What a timed-out operation was still waiting for: tells a dead proxy from a dead
/// Asterisk behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// Nothing at all answered the first request (REGISTER or INVITE).
    FirstResponse,
    /// The challenge was answered, but the authenticated request got no response.
    AuthResponse,
    /// The proxy took the INVITE (a provisional response came) but no final response followed.
    Final,
    /// Asterisk's INVITE was taken by the proxy but never reached the called phone.
    Phone,
    /// The BYE got no final response.
    Bye,
}

impl Waiting {
    /// The cause's name in `timeout-NAME=n`.
    pub fn name(self) -> &'static str {
        match self {
            Waiting::FirstResponse => "no-response",
            Waiting::AuthResponse => "auth",
            Waiting::Final => "final",
            Waiting::Phone => "phone",
            Waiting::Bye => "bye",
        }
    }

    /// What usually causes it, printed under the failures.
    pub fn hint(self) -> &'static str {
        match self {
            Waiting::FirstResponse => {
                "nothing answered the first request: is the proxy up at --proxy, and \
                 not overloaded (see retransmits)?"
            }
            Waiting::AuthResponse => {
                "the authenticated request got no response: the proxy stalls after the \
                 challenge (credential lookup?)"
            }
            Waiting::Final => {
                "the proxy took the INVITE (1xx) but no final response came: does the \
                 Asterisk (stand-in) at the proxy's Asterisk address answer extension --target?"
            }
            Waiting::Phone => {
                "the proxy took Asterisk's INVITE but never delivered it to the phone: is \
                 --asterisk-ip trusted as Asterisk by the proxy, and are the phones registered?"
            }
            Waiting::Bye => "the BYE got no final response through the proxy's route set",
        }
    }
}

/// Why an operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No final answer within the op timeout; what was still awaited.
    Timeout(Waiting),
    /// An unexpected final status code.
    Status(u16),
    /// A 401/407 whose challenge could not be answered (not Digest/MD5, no nonce).
    BadChallenge,
    /// Not started: the in-flight limit was reached (the proxy falls behind the rate).
    Backlog,
}

/// Counters and histograms of one thread (or of all, after [`Stats::merge`]).
#[derive(Debug)]
pub struct Stats {
    hists: Vec<Histogram<u64>>,
    pub started: u64,
    pub ok: u64,
    pub retransmits: u64,
    /// Datagrams that could not be parsed or matched no live operation (late duplicates;
    /// OPTIONS pings to the phones are answered and not counted).
    pub stray: u64,
    /// Datagrams the socket refused (buffer full): lost like on a network, the retransmission
    /// timers recover; not an operation failure by themselves.
    pub send_errors: u64,
    pub failures: Vec<(Failure, u64)>,
    /// µs (phase clock) of the first start and the last success.
    pub first_start_us: u64,
    pub last_start_us: u64,
    pub last_ok_us: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    pub fn new() -> Self {
        let hist =
            || Histogram::new_with_bounds(1, 120_000_000, 3).expect("static bounds are valid");
        Stats {
            hists: Step::ALL.iter().map(|_| hist()).collect(),
            started: 0,
            ok: 0,
            retransmits: 0,
            stray: 0,
            send_errors: 0,
            failures: Vec::new(),
            first_start_us: u64::MAX,
            last_start_us: 0,
            last_ok_us: 0,
        }
    }

    fn idx(step: Step) -> usize {
        Step::ALL.iter().position(|s| *s == step).unwrap_or(0)
    }

    pub fn record(&mut self, step: Step, us: u64) {
        if let Some(h) = self.hists.get_mut(Self::idx(step)) {
            h.saturating_record(us.max(1));
        }
    }

    pub fn hist(&self, step: Step) -> Option<&Histogram<u64>> {
        self.hists.get(Self::idx(step)).filter(|h| !h.is_empty())
    }

    pub fn fail(&mut self, f: Failure) {
        match self.failures.iter_mut().find(|(k, _)| *k == f) {
            Some((_, n)) => *n += 1,
            None => self.failures.push((f, 1)),
        }
    }

    pub fn failed(&self) -> u64 {
        self.failures.iter().map(|(_, n)| n).sum()
    }

    pub fn merge(&mut self, o: &Stats) {
        for (a, b) in self.hists.iter_mut().zip(&o.hists) {
            let _ = a.add(b);
        }
        self.started += o.started;
        self.ok += o.ok;
        self.retransmits += o.retransmits;
        self.stray += o.stray;
        self.send_errors += o.send_errors;
        for &(f, n) in &o.failures {
            match self.failures.iter_mut().find(|(k, _)| *k == f) {
                Some((_, m)) => *m += n,
                None => self.failures.push((f, n)),
            }
        }
        self.first_start_us = self.first_start_us.min(o.first_start_us);
        self.last_start_us = self.last_start_us.max(o.last_start_us);
        self.last_ok_us = self.last_ok_us.max(o.last_ok_us);
    }

    /// `timeout-final=3 status-503=2 ...`, or `none`.
    pub fn failure_causes(&self) -> String {
        let mut s = String::new();
        for (f, n) in &self.failures {
            let _ = match f {
                Failure::Timeout(w) => write!(s, "timeout-{}={n} ", w.name()),
                Failure::Status(c) => write!(s, "status-{c}={n} "),
                Failure::BadChallenge => write!(s, "bad-challenge={n} "),
                Failure::Backlog => write!(s, "backlog={n} "),
            };
        }
        if s.is_empty() {
            s.push_str("none");
        }
        s.trim_end().to_owned()
    }

    /// One `hint: ...` line per kind of timeout seen (empty when none).
    pub fn hints(&self) -> String {
        let mut s = String::new();
        for (f, _) in &self.failures {
            if let Failure::Timeout(w) = f {
                let _ = writeln!(s, "   hint: timeout-{}: {}", w.name(), w.hint());
            }
        }
        s
    }

    /// The percentile table (µs), one line per recorded step.
    pub fn table(&self) -> String {
        let mut s = format!(
            "  {:<18} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}   (µs)\n",
            "step", "n", "p50", "p90", "p99", "p99.9", "max"
        );
        for step in Step::ALL {
            if let Some([n, p50, p90, p99, p999, max]) = self.summary(step) {
                let _ = writeln!(
                    s,
                    "  {:<18} {n:>8} {p50:>8} {p90:>8} {p99:>8} {p999:>8} {max:>8}",
                    step.name(),
                );
            }
        }
        s
    }

    /// A recorded step's count, p50, p90, p99, p99.9 and max (µs): the figures the text
    /// table and the JSON summary report.
    pub fn summary(&self, step: Step) -> Option<[u64; 6]> {
        let h = self.hist(step)?;
        Some([
            h.len(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
        ])
    }

    /// Writes `<dir>/<prefix>-<step>.hgrm` for every recorded step; returns the paths.
    pub fn write_hgrm(&self, dir: &Path, prefix: &str) -> std::io::Result<Vec<String>> {
        std::fs::create_dir_all(dir)?;
        let mut paths = Vec::new();
        for step in Step::ALL {
            if let Some(h) = self.hist(step) {
                let path = dir.join(format!("{prefix}-{}.hgrm", step.name()));
                let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
                f.write_all(hgrm(h).as_bytes())?;
                f.flush()?;
                paths.push(path.display().to_string());
            }
        }
        Ok(paths)
    }
}

/// HdrHistogram's percentile distribution (values in µs, 5 ticks per half distance), the format
/// of `outputPercentileDistribution` and of the online plotter.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut s = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let value = h.highest_equivalent(v.value_iterated_to()) as f64;
        if q < 1.0 {
            let _ = writeln!(
                s,
                "{value:12.3} {q:14.12} {total:10} {:14.2}",
                1.0 / (1.0 - q)
            );
        } else {
            let _ = writeln!(s, "{value:12.3} {q:14.12} {total:10}");
        }
    }
    let _ = writeln!(
        s,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean(),
        h.stdev()
    );
    let _ = writeln!(
        s,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64,
        h.len()
    );
    let _ = writeln!(
        s,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets(h)
    );
    s
}

/// HdrHistogram's sub-bucket count for the histogram's precision (2048 at 3 digits).
fn sub_buckets(h: &Histogram<u64>) -> u64 {
    (2.0 * 10f64.powi(i32::from(h.sigfig())))
        .log2()
        .ceil()
        .exp2() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_formats() {
        let mut a = Stats::new();
        let mut b = Stats::new();
        for us in 1..=1000 {
            a.record(Step::RegAuth, us);
        }
        b.record(Step::RegAuth, 5000);
        b.fail(Failure::Timeout(Waiting::Final));
        b.fail(Failure::Timeout(Waiting::Final));
        b.fail(Failure::Status(503));
        a.fail(Failure::Timeout(Waiting::Final));
        a.fail(Failure::Timeout(Waiting::Bye));
        a.merge(&b);
        assert_eq!(a.failed(), 5);
        assert_eq!(
            a.failure_causes(),
            "timeout-final=3 timeout-bye=1 status-503=1"
        );
        let hints = a.hints();
        assert_eq!(hints.lines().count(), 2, "{hints}");
        assert!(
            hints.contains("timeout-final: the proxy took the INVITE"),
            "{hints}"
        );
        let h = a.hist(Step::RegAuth).expect("recorded");
        assert_eq!(h.len(), 1001);
        assert!(a.hist(Step::Bye).is_none());
        let t = a.table();
        assert!(t.contains("register-auth-200"), "{t}");
        let g = hgrm(h);
        assert!(g.starts_with("       Value     Percentile"));
        assert!(g.contains("Total count    =         1001"), "{g}");
        let last = g
            .lines()
            .rfind(|l| !l.starts_with('#') && !l.is_empty())
            .expect("rows");
        assert!(last.contains("1.000000000000"), "{last}");
        assert!(
            last.trim_end().ends_with("1001"),
            "cumulative count: {last}"
        );
        assert!(g.contains("SubBuckets     =         2048"), "{g}");
    }
}
