//! Runs the workloads: builds one [`Worker`] per thread, runs phases on scoped threads (each
//! worker gets `rate / threads` and `count / threads`), merges their [`Stats`], prints the
//! report and writes `.hgrm` files. `--find-max` runs short steps, doubling the rate until a
//! step has a failure, then bisects between the last clean and the first failing rate. With
//! `--json FILE` every phase and the outcome are also written as one JSON object (see
//! [`Runner::json`]).

use super::op::Kind;
use super::stats::Stats;
use super::summary::{json_num, json_str, Role};
use super::users::Users;
use super::worker::{Bind, Params, Phase, Progress, Worker};
use crate::cpu::process_cpu_ns;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Why a run could not be done.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RunError {
    #[error("cannot bind the generator's sockets: {0}")]
    Bind(std::io::Error),
    #[error("cannot write the .hgrm files: {0}")]
    Output(std::io::Error),
    #[error(
        "the phones could not register ({failed} of {total} failed: {causes}); is sipfront up?"
    )]
    Registration {
        failed: u64,
        total: u64,
        causes: String,
    },
    #[error("invalid setting: {0}")]
    Invalid(&'static str),
    #[error("cannot write the JSON summary: {0}")]
    Json(std::io::Error),
}

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Register,
    Call,
    AsteriskCall,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Register => "register",
            Workload::Call => "call",
            Workload::AsteriskCall => "asterisk-call",
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            Workload::Register => Kind::Register,
            Workload::Call => Kind::Call,
            Workload::AsteriskCall => Kind::AsteriskCall,
        }
    }
}

/// How to drive it.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    Fixed {
        rate: f64,
        count: u64,
    },
    FindMax {
        start: f64,
        step_secs: f64,
        max_rate: f64,
        max_steps: u32,
        precision: f64,
        /// A step must complete operations at >= this fraction of the offered rate.
        keep_up: f64,
    },
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub params: Params,
    pub users: Users,
    pub bind: Bind,
    pub workload: Workload,
    pub mode: Mode,
    pub max_inflight: usize,
    /// Rate of the registration phase of `asterisk-call`.
    pub reg_rate: f64,
    pub out_dir: Option<PathBuf>,
    pub label: String,
    /// Print one line per second while a phase runs.
    pub progress: bool,
    /// Write the machine-readable summary here at the end (also after an error).
    pub json: Option<PathBuf>,
}

/// Prints per-second deltas of `progress` until every handle finished (bounded by the phase:
/// workers end at their hard deadline).
fn print_progress<T>(
    progress: &Progress,
    handles: &[std::thread::ScopedJoinHandle<'_, T>],
    t0: Instant,
) {
    let mut last = [0u64; 4];
    let mut tick = 1u64;
    while !handles.iter().all(|h| h.is_finished()) {
        let due = t0 + Duration::from_secs(tick);
        while Instant::now() < due && !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let now = progress.snapshot();
        let d: Vec<u64> = now
            .iter()
            .zip(&last)
            .map(|(a, b)| a.saturating_sub(*b))
            .collect();
        println!(
            "   [{tick:>3}s] started {:>7} ok {:>7} failed {:>6} retransmits {:>6}",
            d.first().unwrap_or(&0),
            d.get(1).unwrap_or(&0),
            d.get(2).unwrap_or(&0),
            d.get(3).unwrap_or(&0)
        );
        last = now;
        tick += 1;
    }
}

/// One finished phase.
#[derive(Debug)]
pub struct PhaseResult {
    pub offered: f64,
    pub count: u64,
    pub stats: Stats,
    pub wall_s: f64,
    pub cpu_ns: u64,
}

impl PhaseResult {
    /// Successful operations per second, first start to last success.
    pub fn achieved(&self) -> f64 {
        let span = self
            .stats
            .last_ok_us
            .saturating_sub(self.stats.first_start_us) as f64
            / 1e6;
        if span > 0.0 {
            self.stats.ok as f64 / span
        } else {
            0.0
        }
    }

    /// Started operations per second (what the generator actually offered).
    pub fn start_rate(&self) -> f64 {
        let span = self
            .stats
            .last_start_us
            .saturating_sub(self.stats.first_start_us) as f64
            / 1e6;
        if span > 0.0 {
            (self.stats.started.saturating_sub(1)) as f64 / span
        } else {
            0.0
        }
    }

    /// No failure at all (fixed-rate runs).
    pub fn clean(&self) -> bool {
        self.stats.failed() == 0 && self.stats.ok > 0
    }

    /// A search step passes when nothing failed AND the proxy kept up: operations completed
    /// at >= `keep_up` of the offered rate. Without the second condition a 5 s op timeout lets
    /// retransmissions hide an overload (queues growing for the whole step).
    pub fn sustained(&self, keep_up: f64) -> bool {
        self.clean() && self.achieved() >= keep_up * self.offered
    }

    /// The human report plus one `RESULT k=v ...` line for scripts.
    pub fn report(&self, what: &str) -> String {
        let s = &self.stats;
        let mut r = format!(
            "== {what}: offered {:.0}/s x {}\n",
            self.offered, self.count
        );
        let _ = writeln!(
            r,
            "   started {}  ok {}  failed {} ({})  retransmits {}  stray {}{}",
            s.started,
            s.ok,
            s.failed(),
            s.failure_causes(),
            s.retransmits,
            s.stray,
            if s.send_errors > 0 {
                format!("  send errors {}", s.send_errors)
            } else {
                String::new()
            }
        );
        r.push_str(&s.hints());
        let per_op = if s.ok > 0 {
            self.cpu_ns as f64 / 1e3 / s.ok as f64
        } else {
            0.0
        };
        let _ = writeln!(
            r,
            "   wall {:.2} s  start rate {:.1}/s  achieved {:.1}/s  loadgen CPU {:.2} s = {:.1} µs/op",
            self.wall_s,
            self.start_rate(),
            self.achieved(),
            self.cpu_ns as f64 / 1e9,
            per_op
        );
        r.push_str(&s.table());
        let q = |step, p| {
            s.hist(step)
                .map(|h: &hdrhistogram::Histogram<u64>| h.value_at_quantile(p))
                .unwrap_or(0)
        };
        let _ = writeln!(
            r,
            "RESULT what={} offered={:.0} count={} ok={} failed={} achieved={:.1} wall={:.3} \
             loadgen_cpu_us_per_op={:.2} total_p50_us={} total_p99_us={} total_p999_us={}",
            what.replace(' ', "_"),
            self.offered,
            self.count,
            s.ok,
            s.failed(),
            self.achieved(),
            self.wall_s,
            per_op,
            q(super::stats::Step::Total, 0.5),
            q(super::stats::Step::Total, 0.99),
            q(super::stats::Step::Total, 0.999)
        );
        r
    }
}

/// The generator: its workers and settings.
pub struct Runner {
    cfg: RunConfig,
    workers: Vec<Worker>,
    phase: u32,
    /// The JSON objects of the phases run so far (for `--json`).
    phases_json: Vec<String>,
    /// `--find-max`: the search's outcome (max clean rate, first failing rate).
    search: Option<(f64, Option<f64>)>,
}

impl Runner {
    pub fn new(cfg: RunConfig) -> Result<Runner, RunError> {
        if cfg.params.threads == 0 || cfg.users.is_empty() {
            return Err(RunError::Invalid("threads and users must be at least 1"));
        }
        let params = Arc::new(cfg.params.clone());
        let users = Arc::new(cfg.users.clone());
        let mut bind = cfg.bind;
        if cfg.workload != Workload::AsteriskCall {
            bind.asterisk_ip = None;
        }
        let workers = (0..cfg.params.threads)
            .map(|t| Worker::new(t, Arc::clone(&params), Arc::clone(&users), bind))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(RunError::Bind)?;
        Ok(Runner {
            cfg,
            workers,
            phase: 0,
            phases_json: Vec::new(),
            search: None,
        })
    }

    /// Runs `kind` at `rate` for `count` operations over every thread. `per_thread_count`
    /// overrides the split (registration of every thread's users).
    pub fn phase(
        &mut self,
        kind: Kind,
        rate: f64,
        count: u64,
        stop_on_failure: bool,
        per_thread: Option<Vec<u64>>,
    ) -> PhaseResult {
        self.phase += 1;
        let n = self.workers.len() as u64;
        let abort = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Progress::default());
        let phases: Vec<Phase> = (0..n)
            .map(|t| Phase {
                id: self.phase,
                kind,
                rate: rate / n as f64,
                count: per_thread
                    .as_ref()
                    .and_then(|v| v.get(t as usize).copied())
                    .unwrap_or(count / n + u64::from(t < count % n)),
                max_inflight: self.cfg.max_inflight / n as usize + 1,
                stop_on_failure,
                abort: Arc::clone(&abort),
                progress: Arc::clone(&progress),
            })
            .collect();
        let show_progress = self.cfg.progress;
        let cpu0 = process_cpu_ns();
        let t0 = Instant::now();
        let results: Vec<Stats> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .workers
                .iter_mut()
                .zip(&phases)
                .enumerate()
                .map(|(i, (w, ph))| {
                    std::thread::Builder::new()
                        .name(format!("loadgen-{i}"))
                        .spawn_scoped(s, move || w.run(ph))
                        .expect("spawning a generator thread")
                })
                .collect();
            if show_progress {
                print_progress(&progress, &handles, t0);
            }
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        let mut stats = Stats::new();
        for r in &results {
            stats.merge(r);
        }
        PhaseResult {
            offered: rate,
            count: phases.iter().map(|p| p.count).sum(),
            stats,
            wall_s: t0.elapsed().as_secs_f64(),
            cpu_ns: process_cpu_ns().saturating_sub(cpu0),
        }
    }

    fn write_hgrm(&self, r: &PhaseResult, rate: f64) -> Result<(), RunError> {
        if let Some(dir) = &self.cfg.out_dir {
            let prefix = format!(
                "{}-{}-{:.0}",
                self.cfg.label,
                self.cfg.workload.name(),
                rate
            );
            let paths = r.stats.write_hgrm(dir, &prefix).map_err(RunError::Output)?;
            println!("   hgrm: {}", paths.join(" "));
        }
        Ok(())
    }

    /// Probes with 100 operations at 200/s every 2 s (at most 30 times) until one probe is
    /// clean; prints how long the proxy took to recover from the overload.
    fn wait_recovery(&mut self, kind: Kind) {
        let t0 = Instant::now();
        for _ in 0..30 {
            let p = self.phase(kind, 200.0, 100, true, None);
            self.phases_json.push(p.json(Role::Probe, None));
            if p.clean() {
                println!(
                    "   recovered: a probe is clean {:.1} s after the step",
                    t0.elapsed().as_secs_f64() + 1.0
                );
                return;
            }
            let causes = p.stats.failure_causes();
            println!("   probe failed ({causes}); waiting");
            std::thread::sleep(Duration::from_secs(2));
        }
        println!(
            "   not recovered after {:.0} s; going on",
            t0.elapsed().as_secs_f64()
        );
    }

    /// Registers every phone once (the `asterisk-call` preparation).
    pub fn register_all(&mut self) -> Result<PhaseResult, RunError> {
        let counts: Vec<u64> = self.workers.iter().map(|w| w.user_count()).collect();
        let total = counts.iter().sum();
        let r = self.phase(
            Kind::Register,
            self.cfg.reg_rate,
            total,
            false,
            Some(counts),
        );
        print!(
            "{}",
            r.report("register phones (asterisk-call preparation)")
        );
        self.phases_json.push(r.json(Role::Prepare, None));
        if !r.clean() {
            return Err(RunError::Registration {
                failed: r.stats.failed(),
                total,
                causes: r.stats.failure_causes(),
            });
        }
        Ok(r)
    }

    /// Runs the configured workload and mode; prints as it goes. Returns the max clean rate
    /// for `--find-max`, else the achieved rate. Writes the JSON summary when asked, also
    /// when the run fails (then with an `error`).
    pub fn run(&mut self) -> Result<f64, RunError> {
        let r = self.run_phases();
        if let Some(path) = self.cfg.json.clone() {
            let err = r.as_ref().err().map(|e| e.to_string());
            std::fs::write(&path, self.json(err.as_deref())).map_err(RunError::Json)?;
        }
        r
    }

    /// The summary of the run so far as one JSON object:
    /// `{"workload", "transport", "proxy", "users", "threads", "mode", "phases": [..]}` plus,
    /// for `--find-max`, `"max_clean_rate"` and `"first_failing_rate"` (null: none up to the
    /// cap), and `"error"` when the run could not be done. Each phase: see
    /// [`PhaseResult::json`].
    pub fn json(&self, error: Option<&str>) -> String {
        let mode = match self.cfg.mode {
            Mode::Fixed { .. } => "fixed",
            Mode::FindMax { .. } => "find-max",
        };
        let mut o = format!(
            "{{\"workload\":{},\"transport\":{},\"proxy\":{},\"users\":{},\"threads\":{},\
             \"mode\":{},\"phases\":[{}]",
            json_str(self.cfg.workload.name()),
            json_str(self.cfg.params.wire.name()),
            json_str(&self.cfg.params.proxy.to_string()),
            self.cfg.users.len(),
            self.cfg.params.threads,
            json_str(mode),
            self.phases_json.join(",")
        );
        if let Some((max, first_fail)) = self.search {
            let _ = write!(
                o,
                ",\"max_clean_rate\":{},\"first_failing_rate\":{}",
                json_num(max),
                first_fail.map(json_num).unwrap_or_else(|| "null".into())
            );
        }
        if let Some(e) = error {
            let _ = write!(o, ",\"error\":{}", json_str(e));
        }
        o.push_str("}\n");
        o
    }

    fn run_phases(&mut self) -> Result<f64, RunError> {
        let w = self.cfg.workload;
        if w == Workload::AsteriskCall {
            self.register_all()?;
        }
        match self.cfg.mode {
            Mode::Fixed { rate, count } => {
                let r = self.phase(w.kind(), rate, count, false, None);
                print!("{}", r.report(w.name()));
                self.phases_json.push(r.json(Role::Fixed, None));
                self.write_hgrm(&r, rate)?;
                Ok(r.achieved())
            }
            Mode::FindMax {
                start,
                step_secs,
                max_rate,
                max_steps,
                precision,
                keep_up,
            } => self.find_max(start, step_secs, max_rate, max_steps, precision, keep_up),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn find_max(
        &mut self,
        start: f64,
        secs: f64,
        max_rate: f64,
        max_steps: u32,
        precision: f64,
        keep_up: f64,
    ) -> Result<f64, RunError> {
        let w = self.cfg.workload;
        let (mut lo, mut hi): (f64, Option<f64>) = (0.0, None);
        let mut best: Option<PhaseResult> = None;
        let mut rate = start.max(1.0);
        for step in 1..=max_steps.max(1) {
            let count = (rate * secs).ceil().max(1.0) as u64;
            let r = self.phase(w.kind(), rate, count, true, None);
            let clean = r.sustained(keep_up);
            self.phases_json.push(r.json(Role::Step, Some(keep_up)));
            print!(
                "{}",
                r.report(&format!(
                    "{} step {step} {}",
                    w.name(),
                    if clean {
                        "clean"
                    } else if r.clean() {
                        "FELL-BEHIND"
                    } else {
                        "FAILED"
                    }
                ))
            );
            if clean {
                lo = rate;
                best = Some(r);
            } else {
                hi = Some(rate);
            }
            rate = match hi {
                None if rate * 2.0 <= max_rate => rate * 2.0,
                None if rate < max_rate => max_rate,
                None => break,
                Some(h) if h / lo.max(1.0) <= 1.0 + precision || lo == 0.0 => break,
                Some(h) => (lo + h) / 2.0,
            };
            // Let the proxy's transactions of the last step finish before the next one; after
            // an overloaded step, wait until it serves a light probe cleanly again.
            std::thread::sleep(Duration::from_millis(1000));
            if !clean {
                self.wait_recovery(w.kind());
            }
        }
        println!(
            "== find-max {}: max clean rate {:.0}/s (first failing rate: {})",
            w.name(),
            lo,
            hi.map(|h| format!("{h:.0}/s"))
                .unwrap_or_else(|| "none up to the cap".into())
        );
        println!(
            "RESULT what=find-max-{} max_rate={:.0} first_fail={:.0}",
            w.name(),
            lo,
            hi.unwrap_or(0.0)
        );
        self.search = Some((lo, hi));
        if let Some(b) = &best {
            self.write_hgrm(b, lo)?;
        }
        Ok(lo)
    }
}
