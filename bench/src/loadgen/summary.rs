//! The machine-readable summary of a run (`sipfront-loadgen --json FILE`): each phase as one
//! JSON object ([`PhaseResult::json`]), written by hand (a few numbers and fixed strings, no
//! serde needed); [`super::runner::Runner::json`] wraps the phases with the run's settings and
//! the outcome of a `--find-max` search.

use super::runner::PhaseResult;
use super::stats::Step;
use std::fmt::Write as _;

/// What a phase was for, in the JSON summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `asterisk-call`'s registration of every phone.
    Prepare,
    /// The fixed-rate run.
    Fixed,
    /// A step of `--find-max`.
    Step,
    /// A light probe after an overloaded step.
    Probe,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Prepare => "prepare",
            Role::Fixed => "fixed",
            Role::Step => "step",
            Role::Probe => "probe",
        }
    }
}

/// `s` as a JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", u32::from(c));
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// A finite number for JSON (NaN and infinities are not JSON).
pub fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.1}")
    } else {
        "null".into()
    }
}

impl PhaseResult {
    /// The phase as one JSON object: rates, counts, failure causes, and the latency
    /// percentiles (µs) of every recorded step (`total` is the whole operation).
    pub fn json(&self, role: Role, keep_up: Option<f64>) -> String {
        let s = &self.stats;
        let mut o = String::new();
        let _ = write!(
            o,
            "{{\"role\":{},\"offered\":{},\"count\":{},\"started\":{},\"ok\":{},\"failed\":{},\
             \"failure_causes\":{},\"retransmits\":{},\"stray\":{},\"send_errors\":{},\
             \"start_rate\":{},\"achieved\":{},\"wall_s\":{:.3},\"loadgen_cpu_s\":{:.3},\
             \"clean\":{}",
            json_str(role.name()),
            json_num(self.offered),
            self.count,
            s.started,
            s.ok,
            s.failed(),
            json_str(&s.failure_causes()),
            s.retransmits,
            s.stray,
            s.send_errors,
            json_num(self.start_rate()),
            json_num(self.achieved()),
            self.wall_s,
            self.cpu_ns as f64 / 1e9,
            self.clean()
        );
        if let Some(k) = keep_up {
            let _ = write!(o, ",\"sustained\":{}", self.sustained(k));
        }
        o.push_str(",\"latency_us\":{");
        let mut first = true;
        for step in Step::ALL {
            if let Some([n, p50, p90, p99, p999, max]) = s.summary(step) {
                let _ = write!(
                    o,
                    "{}{}:{{\"n\":{n},\"p50\":{p50},\"p90\":{p90},\"p99\":{p99},\"p999\":{p999},\"max\":{max}}}",
                    if first { "" } else { "," },
                    json_str(step.name()),
                );
                first = false;
            }
        }
        o.push_str("}}");
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::stats::{Failure, Stats, Step, Waiting};

    #[test]
    fn json_strings_and_numbers() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
        assert_eq!(json_num(1687.5), "1687.5");
        assert_eq!(json_num(f64::NAN), "null");
    }

    #[test]
    fn a_phase_as_json() {
        let mut stats = Stats::new();
        stats.started = 3;
        stats.ok = 2;
        stats.fail(Failure::Timeout(Waiting::Final));
        for us in [100, 200] {
            stats.record(Step::Total, us);
        }
        let p = PhaseResult {
            offered: 10.0,
            count: 3,
            stats,
            wall_s: 1.0,
            cpu_ns: 5_000_000,
        };
        let j = p.json(Role::Step, Some(0.95));
        assert!(
            j.starts_with(
                "{\"role\":\"step\",\"offered\":10.0,\"count\":3,\"started\":3,\"ok\":2,\"failed\":1,\
                 \"failure_causes\":\"timeout-final=1\","
            ),
            "{j}"
        );
        assert!(j.contains("\"clean\":false,\"sustained\":false"), "{j}");
        assert!(
            j.ends_with(
                "\"latency_us\":{\"total\":{\"n\":2,\"p50\":100,\"p90\":200,\"p99\":200,\"p999\":200,\"max\":200}}}"
            ),
            "{j}"
        );
    }
}
