//! `docs/configuration.md` documents exactly the keys the configuration accepts: every key in
//! its tables (`| \`key\` | default | meaning |` under a `## \`[section]\`` heading) must be
//! accepted by the config structs, and every key they accept must be in the tables.
//!
//! The accepted keys come from the structs themselves: every section is
//! `deny_unknown_fields`, so parsing an unknown key makes serde list the expected ones
//! (`unknown field \`__probe\`, expected one of ...`), for the top level (the sections) and
//! for each section.

use std::collections::BTreeSet;

use sipfront::config::Config;

const DOC: &str = include_str!("../docs/configuration.md");

/// The names serde lists as expected after an unknown key in `toml_text`.
fn expected_fields(toml_text: &str) -> Vec<String> {
    let err = match toml::from_str::<Config>(toml_text) {
        Ok(_) => panic!("{toml_text:?} was accepted"),
        Err(e) => e.message().to_owned(),
    };
    let list = err
        .split_once("expected one of ")
        .or_else(|| err.split_once("expected "))
        .unwrap_or_else(|| panic!("no expected fields in {err:?}"))
        .1;
    // serde writes `a`, `b`, `c` (or `a` or `b` for two).
    list.split([',', ' '])
        .filter(|w| *w != "or")
        .map(|f| f.trim().trim_matches('`').to_owned())
        .filter(|f| !f.is_empty())
        .collect()
}

/// `section.key` for every key the config structs accept.
fn accepted() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for section in expected_fields("__probe = 1\n") {
        for key in expected_fields(&format!("[{section}]\n__probe = 1\n")) {
            keys.insert(format!("{section}.{key}"));
        }
    }
    keys
}

/// `section.key` for every key in the documentation's tables. A table row's first cell may
/// name several keys (`` `a` / `b` ``).
fn documented() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut section: Option<String> = None;
    for line in DOC.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            section = h
                .split_once("`[")
                .and_then(|(_, rest)| rest.split_once("]`"))
                .map(|(name, _)| name.to_owned());
            continue;
        }
        let Some(section) = &section else { continue };
        let Some(row) = line.strip_prefix('|') else {
            continue;
        };
        let first = row.split('|').next().unwrap_or("").trim();
        if first == "key" || first.starts_with("---") {
            continue;
        }
        for name in first.split('/') {
            let name = name.trim();
            if let Some(key) = name.strip_prefix('`').and_then(|n| n.strip_suffix('`')) {
                keys.insert(format!("{section}.{key}"));
            }
        }
    }
    keys
}

#[test]
fn every_config_key_is_documented_and_every_documented_key_exists() {
    let accepted = accepted();
    let documented = documented();
    assert!(
        accepted.len() > 80,
        "only {} keys accepted?",
        accepted.len()
    );
    let undocumented: Vec<_> = accepted.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&accepted).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "docs/configuration.md is out of date:\n  accepted but not documented: {undocumented:?}\n  documented but not accepted: {unknown:?}"
    );
}

#[test]
fn the_probe_sees_real_keys() {
    // The probe itself: known keys are found, a made-up one is not.
    let accepted = accepted();
    for key in [
        "listen.udp",
        "admin.token_file",
        "hep.collector",
        "log.format",
    ] {
        assert!(accepted.contains(key), "{key}");
    }
    assert!(!accepted.contains("admin.allow_non_loopback"));
    let documented = documented();
    assert!(
        documented.contains("transport.send_buffer_bytes"),
        "a / b rows"
    );
}
