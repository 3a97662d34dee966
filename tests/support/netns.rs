//! A network namespace a test makes for a real client (`tests/e2e_baresip_tls.rs`): a veth
//! pair with the host end at 10.77.N.1/24 and the namespace end at 10.77.N.2/24, so the
//! client reaches the proxy over a real interface, never a loopback shortcut, and no traffic
//! leaves the machine. Deleted when dropped, also when the test fails (needs root, as `ip netns`
//! does).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A network namespace with one veth pair into it; `ip netns del` when dropped.
pub struct NetNs {
    /// The namespace's name (`ip netns exec NAME ...`).
    pub name: String,
    /// The host end's address (the proxy listens here).
    pub host_ip: Ipv4Addr,
    /// The namespace end's address (the client's).
    pub ns_ip: Ipv4Addr,
}

/// `program` when an executable of that name is on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Runs `ip ARGS` and panics with its stderr when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` (iproute2 missing?): {e}"));
    assert!(
        out.status.success(),
        "`ip {}` failed ({}): {} (network namespaces need root)",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

impl NetNs {
    /// Creates namespace `PREFIX<pid>` (interfaces `PREFIX<pid>h` on the host and
    /// `PREFIX<pid>n` inside, so parallel test runs do not collide; `prefix` at most 4
    /// characters to keep interface names within 15). The subnet 10.77.N.0/24 takes N from
    /// the process id too, so two runs at once do not claim the same addresses either.
    pub fn create(prefix: &str) -> NetNs {
        let pid = std::process::id();
        let name = format!("{prefix}{pid}");
        let host_if = format!("{name}h");
        let ns_if = format!("{name}n");
        assert!(host_if.len() <= 15, "interface name {host_if} too long");
        let n = u8::try_from(pid % 250).expect("below 250") + 1;
        let host_ip = Ipv4Addr::new(10, 77, n, 1);
        let ns_ip = Ipv4Addr::new(10, 77, n, 2);
        ip(&["netns", "add", &name]);
        // From here on the guard exists: a failing step below still deletes the namespace
        // (which takes the veth pair with it).
        let ns = NetNs {
            name,
            host_ip,
            ns_ip,
        };
        let host_cidr = format!("{host_ip}/24");
        let ns_cidr = format!("{ns_ip}/24");
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", &ns.name]);
        ip(&["addr", "add", &host_cidr, "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&["-n", &ns.name, "addr", "add", &ns_cidr, "dev", &ns_if]);
        ip(&["-n", &ns.name, "link", "set", &ns_if, "up"]);
        // The client's RTP goes to the stand-in's SDP address (127.0.0.2), which inside the
        // namespace is the namespace's own loopback: it stays there.
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// A command that runs `program` inside the namespace (`ip netns exec` execs it, so the
    /// child's PID is the program's own).
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace destroys the veth end inside it and so the pair. Never
        // panics (this also runs while a failed test unwinds).
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
