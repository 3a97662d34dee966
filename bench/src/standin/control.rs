//! The control interface tests and scripts use to read the stand-in's state: one text command
//! per UDP datagram to the `--control` address, one JSON object back to the sender.
//!
//! Commands: `ping`, `stats` (every counter plus `registrations` and `calls`), `regs` (every
//! binding, capped at ~60 kB with `"truncated":true`), `reg USER` (one binding or `null`),
//! `reset` (zero the counters), `route EXT=MODE` (change one extension's mode at run time),
//! `mode MODE` (change the default mode), `silent on|off` (drop every SIP datagram
//! unanswered, like a dead Asterisk, or answer again), `mwi USER NEW [OLD]` (set USER's
//! voicemail counts and send it an unsolicited message-summary NOTIFY), `quit` (reply, then
//! the server exits 0). SIP messages a command sends go into the engine's outbox.

use std::fmt::Write as _;

use super::config::{Config, Mode};
use super::engine::{Engine, Outbox};
use super::events::json_str;
use super::register::Binding;

/// What the server does after replying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlAction {
    Continue,
    Quit,
}

/// Replies larger than this are truncated (they must fit a UDP datagram).
const MAX_REPLY: usize = 60_000;

fn write_binding(out: &mut String, b: &Binding, now_ms: u64) {
    out.push_str("{\"contact\":");
    json_str(out, &b.contact);
    let left = b.expires_at_ms.saturating_sub(now_ms) / 1000;
    let _ = write!(
        out,
        ",\"target\":\"{}\",\"source\":\"{}\",\"expires_in_s\":{left},\"count\":{}}}",
        b.target, b.source, b.count
    );
}

impl Engine {
    /// Runs one control command, writing the JSON reply into `out` and what it sends into
    /// `sip`.
    pub fn control(
        &mut self,
        now_ms: u64,
        cmd: &str,
        out: &mut String,
        sip: &mut Outbox,
    ) -> ControlAction {
        out.clear();
        let cmd = cmd.trim();
        let (verb, arg) = cmd
            .split_once(' ')
            .map_or((cmd, ""), |(v, a)| (v, a.trim()));
        match verb {
            "ping" => out.push_str("{\"ok\":true}"),
            "stats" => {
                self.stats.write_json(out);
                out.pop();
                let live = self
                    .regs
                    .iter()
                    .filter(|(_, b)| b.expires_at_ms > now_ms)
                    .count();
                let _ = write!(
                    out,
                    ",\"registrations\":{live},\"calls\":{}}}",
                    self.calls.len()
                );
            }
            "regs" => {
                out.push('{');
                let mut first = true;
                for (user, b) in self.regs.iter().filter(|(_, b)| b.expires_at_ms > now_ms) {
                    if out.len() > MAX_REPLY {
                        out.push_str(",\"truncated\":true");
                        break;
                    }
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    json_str(out, user);
                    out.push(':');
                    write_binding(out, b, now_ms);
                }
                out.push('}');
            }
            "reg" => match self.regs.get(arg, now_ms) {
                Some(b) => write_binding(out, b, now_ms),
                None => out.push_str("null"),
            },
            "reset" => {
                let active = self.stats.calls_active;
                self.stats = Default::default();
                self.stats.calls_active = active;
                out.push_str("{\"ok\":true}");
            }
            "route" => match Config::parse_route(arg) {
                Ok((ext, mode)) => {
                    self.cfg.routes.insert(ext, mode);
                    out.push_str("{\"ok\":true}");
                }
                Err(_) => out
                    .push_str("{\"error\":\"expected route EXT=answer|noanswer|busy|drop|dial\"}"),
            },
            "mode" => match arg.parse::<Mode>() {
                Ok(mode) => {
                    self.cfg.default_mode = mode;
                    out.push_str("{\"ok\":true}");
                }
                Err(_) => {
                    out.push_str("{\"error\":\"expected mode answer|noanswer|busy|drop|dial\"}")
                }
            },
            "silent" => match arg {
                "on" | "off" => {
                    self.silent = arg == "on";
                    out.push_str("{\"ok\":true}");
                }
                _ => out.push_str("{\"error\":\"expected silent on|off\"}"),
            },
            "mwi" => {
                let mut words = arg.split_whitespace();
                let user = words.next().unwrap_or_default();
                let counts: Vec<Option<u32>> = words.map(|w| w.parse().ok()).collect();
                match (user.is_empty(), counts.as_slice()) {
                    (false, [Some(new)]) => self.mwi_reply(now_ms, user, (*new, 0), out, sip),
                    (false, [Some(new), Some(old)]) => {
                        self.mwi_reply(now_ms, user, (*new, *old), out, sip)
                    }
                    _ => out.push_str("{\"error\":\"expected mwi USER NEW [OLD]\"}"),
                }
            }
            "quit" => {
                out.push_str("{\"ok\":true}");
                return ControlAction::Quit;
            }
            _ => out.push_str("{\"error\":\"unknown command\"}"),
        }
        ControlAction::Continue
    }
}

impl Engine {
    fn mwi_reply(
        &mut self,
        now_ms: u64,
        user: &str,
        counts: (u32, u32),
        out: &mut String,
        sip: &mut Outbox,
    ) {
        match self.send_mwi(now_ms, user, counts, sip) {
            Ok(dst) => {
                let _ = write!(out, "{{\"ok\":true,\"sent_to\":\"{dst}\"}}");
            }
            Err(why) => {
                out.push_str("{\"error\":");
                json_str(out, why);
                out.push('}');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(e: &mut Engine, cmd: &str) -> String {
        let mut out = String::new();
        e.control(0, cmd, &mut out, &mut Outbox::new());
        out
    }

    #[test]
    fn commands() {
        let mut e = Engine::new(Config::default(), "127.0.0.2:5080".parse().unwrap(), 1);
        assert_eq!(run(&mut e, "ping"), "{\"ok\":true}");
        assert_eq!(run(&mut e, "reg nobody"), "null");
        assert_eq!(run(&mut e, "regs"), "{}");
        assert!(run(&mut e, "stats").ends_with(",\"registrations\":0,\"calls\":0}"));
        assert_eq!(run(&mut e, "route 600=busy"), "{\"ok\":true}");
        assert_eq!(e.config().mode_for("600"), Mode::Busy);
        assert!(run(&mut e, "route 600").starts_with("{\"error\""));
        assert_eq!(run(&mut e, "mode answer"), "{\"ok\":true}");
        assert_eq!(e.config().mode_for("601"), Mode::Answer);
        assert!(run(&mut e, "bogus").contains("unknown command"));
        assert_eq!(run(&mut e, "silent on"), "{\"ok\":true}");
        assert!(e.silent);
        assert!(run(&mut e, "silent maybe").starts_with("{\"error\""));
        assert_eq!(run(&mut e, "silent off"), "{\"ok\":true}");
        assert!(!e.silent);
        assert_eq!(
            run(&mut e, "mwi 1001 2"),
            "{\"error\":\"user not registered\"}"
        );
        assert!(run(&mut e, "mwi 1001 x").starts_with("{\"error\":\"expected mwi"));
        let mut out = String::new();
        let quit = e.control(0, "quit", &mut out, &mut Outbox::new());
        assert_eq!(quit, ControlAction::Quit);
    }
}
