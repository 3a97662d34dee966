//! Bans across restarts (`[guard] persist`): the ban list as a small JSON file.
//!
//! [`BanFile::load`] reads it at start (a missing file is an empty list); the server puts the
//! bans back with [`super::Guard::restore_bans`], which drops the ones that expired meanwhile.
//! A [`BanPersister`] thread then looks at [`super::Guard::ban_generation`] once a second and
//! writes the whole list ([`BanFile::save`]: a temporary file renamed over the old one, so a
//! crash leaves the old list or the new one, never half of one) when it moved, and once more
//! when it is stopped at shutdown. The packet path never touches the file: a ban only bumps
//! an atomic counter.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};

use super::{BanInfo, Guard};

/// How often the writer thread checks for changes.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Why the ban file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PersistError {
    #[error("guard.persist: cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("guard.persist: {path} is not a ban list (fix or delete it): {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("guard.persist: cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("guard.persist: cannot start the writer thread: {0}")]
    Spawn(std::io::Error),
}

/// What the file holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct Document {
    /// When it was written (ms since the UNIX epoch), for people reading it.
    saved_ms: u64,
    bans: Vec<BanInfo>,
}

/// The `persist` file.
#[derive(Debug, Clone)]
pub struct BanFile {
    path: PathBuf,
}

impl BanFile {
    pub fn new(path: impl Into<PathBuf>) -> BanFile {
        BanFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bans in the file; none when it does not exist yet.
    pub fn load(&self) -> Result<Vec<BanInfo>, PersistError> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(PersistError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let doc: Document =
            serde_json::from_slice(&text).map_err(|source| PersistError::Parse {
                path: self.path.clone(),
                source,
            })?;
        Ok(doc.bans)
    }

    /// Replace the file with `bans` (written to `PATH.tmp`, then renamed over `PATH`).
    pub fn save(&self, bans: &[BanInfo], now_ms: u64) -> Result<(), PersistError> {
        let write_err = |source| PersistError::Write {
            path: self.path.clone(),
            source,
        };
        let doc = Document {
            saved_ms: now_ms,
            bans: bans.to_vec(),
        };
        let text = serde_json::to_vec_pretty(&doc)
            .map_err(|e| write_err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, text).map_err(write_err)?;
        std::fs::rename(&tmp, &self.path).map_err(write_err)
    }
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The thread keeping the file up to date; [`BanPersister::stop`] writes it a last time.
pub struct BanPersister {
    stop: Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl BanPersister {
    /// Start watching `guard`'s bans (already restored from `file`).
    pub fn start(file: BanFile, guard: Arc<Guard>) -> Result<BanPersister, PersistError> {
        let (stop, stopped) = bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("ban-persist".into())
            .spawn(move || {
                let mut saved = guard.ban_generation();
                loop {
                    let last = match stopped.recv_timeout(CHECK_INTERVAL) {
                        Err(RecvTimeoutError::Timeout) => false,
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
                    };
                    let now = guard.ban_generation();
                    if now != saved || last {
                        let at = wall_ms();
                        match file.save(&guard.bans(at), at) {
                            Ok(()) => saved = now,
                            Err(e) => tracing::warn!(error = %e, "bans not saved"),
                        }
                    }
                    if last {
                        return;
                    }
                }
            })
            .map_err(PersistError::Spawn)?;
        Ok(BanPersister {
            stop,
            thread: Some(thread),
        })
    }

    /// Write the file a last time and stop the thread.
    pub fn stop(mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for BanPersister {
    fn drop(&mut self) {
        let _ = self.stop.try_send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::{BanReason, GuardConfig};
    use std::net::IpAddr;

    const T0: u64 = 1_700_000_000_000;

    fn guard() -> Arc<Guard> {
        let cfg = GuardConfig {
            ban_secs: 60,
            ..GuardConfig::default()
        };
        Arc::new(Guard::new(&cfg, &[]).expect("guard"))
    }

    #[test]
    fn round_trip_drops_expired_and_exempt() {
        let dir = tempfile::tempdir().expect("dir");
        let file = BanFile::new(dir.path().join("bans.json"));
        assert!(file.load().expect("missing is empty").is_empty());
        let g = guard();
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let v6: IpAddr = "2001:db8:1:2::99".parse().unwrap();
        assert!(g.ban(v4, T0));
        for _ in 0..10 {
            g.on_auth_failure(v6, "1001", T0 + 1000);
        }
        let before = g.bans(T0 + 2000);
        assert_eq!(before.len(), 2);
        file.save(&before, T0 + 2000).expect("save");

        // A fresh guard (a restart) gets them back, with their times and reasons.
        let g2 = guard();
        assert_eq!(g2.restore_bans(&file.load().expect("load"), T0 + 3000), 2);
        assert!(g2.is_banned(v4, T0 + 3000));
        assert!(g2.is_banned("2001:db8:1:2::1".parse().unwrap(), T0 + 3000));
        assert_eq!(g2.bans(T0 + 3000), before);
        assert!(matches!(
            g2.bans(T0 + 3000)[1].reason,
            BanReason::IpFailures { failures: 10 }
        ));
        // Past their end (60 s): not restored.
        let g3 = guard();
        assert_eq!(g3.restore_bans(&before, T0 + 61_001 + 1000), 0);
        assert!(!g3.is_banned(v4, T0 + 62_000));
        // An address now exempt is not banned again.
        let exempt = Guard::new(&GuardConfig::default(), &[v4]).expect("guard");
        assert_eq!(exempt.restore_bans(&before, T0 + 3000), 1);
    }

    #[test]
    fn a_broken_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("bans.json");
        std::fs::write(&path, b"{not json").expect("write");
        let err = BanFile::new(&path).load().expect_err("parse error");
        assert!(matches!(err, PersistError::Parse { .. }));
        assert!(err.to_string().contains("bans.json"), "{err}");
        let dir_as_file = BanFile::new(dir.path());
        assert!(matches!(dir_as_file.load(), Err(PersistError::Read { .. })));
    }

    #[test]
    fn the_writer_saves_changes_and_a_last_time_at_stop() {
        let dir = tempfile::tempdir().expect("dir");
        let file = BanFile::new(dir.path().join("bans.json"));
        let g = guard();
        let p = BanPersister::start(file.clone(), g.clone()).expect("start");
        let now = wall_ms();
        assert!(g.ban("198.51.100.1".parse().unwrap(), now));
        p.stop();
        let saved = file.load().expect("load");
        assert_eq!(saved.len(), 1);
        assert_eq!(saved[0].ip, "198.51.100.1".parse::<IpAddr>().unwrap());
    }
}
