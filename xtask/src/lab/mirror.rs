//! Finds the Debian mirror this machine's own apt uses, so that debootstrap fetches from the
//! same place and no mirror host name is ever written into the repository.
//! `CANOPY_LAB_MIRROR` overrides it.

use anyhow::{bail, Result};
use std::fs;
use std::path::Path;

/// The URI of the first enabled `deb` source that carries `suite` with component `main`.
pub fn debian_mirror(suite: &str) -> Result<String> {
    if let Ok(m) = std::env::var("CANOPY_LAB_MIRROR") {
        if !m.trim().is_empty() {
            return Ok(m.trim().to_string());
        }
    }
    let mut candidates = Vec::new();
    if let Ok(text) = fs::read_to_string("/etc/apt/sources.list") {
        candidates.extend(one_line_sources(&text));
    }
    let dir = Path::new("/etc/apt/sources.list.d");
    let mut files: Vec<_> = fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        match file.extension().and_then(|e| e.to_str()) {
            Some("list") => candidates.extend(one_line_sources(&text)),
            Some("sources") => candidates.extend(deb822_sources(&text)),
            _ => {}
        }
    }
    for src in candidates {
        if src.suites.iter().any(|s| s == suite) && src.components.iter().any(|c| c == "main") {
            return Ok(src.uri);
        }
    }
    bail!("no apt source for suite {suite:?} (component main) in /etc/apt; set CANOPY_LAB_MIRROR")
}

#[derive(Debug, PartialEq)]
struct Source {
    uri: String,
    suites: Vec<String>,
    components: Vec<String>,
}

/// `deb [opts] URI SUITE COMP...` lines.
fn one_line_sources(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line.strip_prefix("deb ") else {
            continue;
        };
        let mut rest = rest.trim();
        if rest.starts_with('[') {
            match rest.find(']') {
                Some(end) => rest = rest[end + 1..].trim(),
                None => continue,
            }
        }
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        out.push(Source {
            uri: uri.to_string(),
            suites: vec![suite.to_string()],
            components: words.map(str::to_string).collect(),
        });
    }
    out
}

/// deb822 stanzas (`Types:`, `URIs:`, `Suites:`, `Components:`, `Enabled:`).
fn deb822_sources(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| -> Vec<String> {
            stanza
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.split_whitespace().map(str::to_string).collect())
                })
                .unwrap_or_default()
        };
        if !field("Types").iter().any(|t| t == "deb") || field("Enabled").iter().any(|e| e == "no")
        {
            continue;
        }
        for uri in field("URIs") {
            out.push(Source {
                uri,
                suites: field("Suites"),
                components: field("Components"),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_deb822_and_skips_comments() {
        let text = "Types: deb\n# http://snapshot.example/archive\nURIs: http://mirror.example/debian\n\
                    Suites: bookworm bookworm-updates\nComponents: main\n\n\
                    Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n";
        let s = deb822_sources(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].uri, "http://mirror.example/debian");
        assert_eq!(s[0].suites, ["bookworm", "bookworm-updates"]);
    }

    #[test]
    fn parses_one_line_with_options() {
        let s = one_line_sources("deb [arch=amd64] http://m.example/debian bookworm main contrib # x\n#deb http://no/ x y");
        assert_eq!(
            s,
            vec![Source {
                uri: "http://m.example/debian".into(),
                suites: vec!["bookworm".into()],
                components: vec!["main".into(), "contrib".into()],
            }]
        );
    }
}
