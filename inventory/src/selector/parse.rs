//! The selector parser: hand-written recursive descent so every error names the character
//! position and what was expected there (the CLI prints it under the user's input).

use super::{Filter, Key, Segment, SelectorError, Term, Value};
use crate::path::{is_name_byte, parse_vmid, validate_name, Kind};

/// Longest accepted selector, in bytes.
pub(crate) const MAX_LEN: usize = 4096;
/// Glob positions across a union (segments + 1 per term): the evaluator's bitmask width.
pub(crate) const MAX_POSITIONS: usize = 128;
/// Segments in the deepest path (`cluster/c/node/n/lxc/1/docker/d`).
const MAX_DEPTH_SEGMENTS: usize = 8;

pub(super) fn parse(input: &str) -> Result<Vec<Term>, SelectorError> {
    let mut p = Parser {
        s: input,
        b: input.as_bytes(),
        i: 0,
    };
    if input.len() > MAX_LEN {
        let at = (0..=MAX_LEN)
            .rev()
            .find(|&i| input.is_char_boundary(i))
            .unwrap_or(0);
        return Err(p.error(at, format!("at most {MAX_LEN} characters")));
    }
    let mut terms = Vec::new();
    let mut positions = 0;
    p.ws();
    loop {
        let start = p.i;
        let term = p.term()?;
        positions += term.glob.len() + 1;
        if positions > MAX_POSITIONS {
            return Err(p.error(
                start,
                format!("fewer path segments (at most {MAX_POSITIONS} across a union)"),
            ));
        }
        terms.push(term);
        p.ws();
        match p.peek() {
            None => return Ok(terms),
            Some(b',') => {
                p.i += 1;
                p.ws();
            }
            Some(_) => return Err(p.error(p.i, "`,`, `/`, `[` or the end")),
        }
    }
}

struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    /// An error at byte `at`, showing the character found there.
    fn error(&self, at: usize, expected: impl Into<String>) -> SelectorError {
        let found = self.s[at..].chars().next().map(String::from);
        self.error_found(at, expected, found)
    }

    fn error_found(
        &self,
        at: usize,
        expected: impl Into<String>,
        found: Option<String>,
    ) -> SelectorError {
        SelectorError {
            position: self.s[..at].chars().count(),
            expected: expected.into(),
            found,
        }
    }

    /// Consumes bytes while `ok` holds; returns the span.
    fn take(&mut self, ok: impl Fn(u8) -> bool) -> (usize, &'a str) {
        let start = self.i;
        while self.peek().is_some_and(&ok) {
            self.i += 1;
        }
        (start, &self.s[start..self.i])
    }

    fn term(&mut self) -> Result<Term, SelectorError> {
        let glob = if self.peek() == Some(b'[') {
            vec![Segment::AnyDepth]
        } else {
            self.glob()?
        };
        let mut filters = Vec::new();
        loop {
            self.ws();
            if self.peek() != Some(b'[') {
                return Ok(Term { glob, filters });
            }
            filters.push(self.filter()?);
        }
    }

    fn glob(&mut self) -> Result<Vec<Segment>, SelectorError> {
        let mut segs = Vec::new();
        let mut fixed = true; // no `**` yet: positions are known
        loop {
            let (start, text) = self.take(|c| is_name_byte(c) || c == b'*');
            if text.is_empty() {
                return Err(self.error(start, "a path segment (a name, `*` or `**`)"));
            }
            let seg = if text == "**" {
                fixed = false;
                Segment::AnyDepth
            } else if text.contains("**") {
                return Err(self.error_found(
                    start,
                    "`**` only as a whole segment",
                    Some(text.to_owned()),
                ));
            } else if text.contains('*') {
                Segment::Pattern(text.to_owned())
            } else {
                Segment::Literal(text.to_owned())
            };
            if fixed {
                self.check_position(segs.len(), start, &seg)?;
            }
            segs.push(seg);
            self.ws();
            if self.peek() != Some(b'/') {
                return Ok(segs);
            }
            self.i += 1;
            self.ws();
        }
    }

    /// Before any `**`, segment `k` of a glob can only match segment `k` of a path.
    fn check_position(&self, k: usize, start: usize, seg: &Segment) -> Result<(), SelectorError> {
        let found = || match seg {
            Segment::Literal(s) | Segment::Pattern(s) => Some(s.clone()),
            Segment::AnyDepth => None,
        };
        if k >= MAX_DEPTH_SEGMENTS {
            return Err(self.error_found(
                start,
                "the end of the path (a path has at most 8 segments) or `**` earlier",
                found(),
            ));
        }
        let Segment::Literal(text) = seg else {
            return Ok(());
        };
        let depth = k / 2;
        let is_kind_word = depth * 2 == k;
        let problem = if is_kind_word {
            let ok = match depth {
                0 => text == "cluster",
                1 => text == "node",
                2 => text == "lxc" || text == "vm",
                _ => text == "docker",
            };
            (!ok).then_some(["`cluster`", "`node`", "`lxc` or `vm`", "`docker`"][depth])
        } else if depth == 2 {
            parse_vmid(text)
                .is_err()
                .then_some("a vmid (100 to 999999999)")
        } else {
            validate_name(text)
                .is_err()
                .then_some("a name starting with a letter or digit")
        };
        if let Some(expected) = problem {
            return Err(self.error_found(start, expected, found()));
        }
        Ok(())
    }

    fn filter(&mut self) -> Result<Filter, SelectorError> {
        self.i += 1; // '['
        self.ws();
        let (key_at, word) = self.take(|c| c.is_ascii_alphabetic());
        let key = Key::ALL
            .iter()
            .find(|(_, name)| *name == word)
            .map(|(k, _)| *k);
        let Some(key) = key else {
            let expected = "a filter key (tag, status, kind, os, image, name, vmid, node or agent)";
            return Err(if word.is_empty() {
                self.error(key_at, expected)
            } else {
                self.error_found(key_at, expected, Some(word.to_owned()))
            });
        };
        self.ws();
        let negated = if self.s[self.i..].starts_with("!=") {
            self.i += 2;
            true
        } else if self.peek() == Some(b'=') {
            self.i += 1;
            false
        } else {
            return Err(self.error(self.i, "`=` or `!=`"));
        };
        self.ws();
        let (value_at, raw) = self.take(|c| is_name_byte(c) || b"*:/@+".contains(&c));
        if raw.is_empty() {
            return Err(self.error(value_at, "a value"));
        }
        let raw = raw.to_owned();
        let value = self.value(key, value_at, &raw)?;
        self.ws();
        if self.peek() != Some(b']') {
            return Err(self.error(self.i, "`]`"));
        }
        self.i += 1;
        Ok(Filter {
            key,
            negated,
            raw,
            value,
        })
    }

    fn value(&self, key: Key, at: usize, raw: &str) -> Result<Value, SelectorError> {
        let fail = |expected: &str| Err(self.error_found(at, expected, Some(raw.to_owned())));
        Ok(match key {
            Key::Kind => match raw.parse::<Kind>() {
                Ok(kind) => Value::Kind(kind),
                Err(_) => return fail("a kind (cluster, node, lxc, vm or docker)"),
            },
            Key::Vmid => match parse_vmid(raw) {
                Ok(n) => Value::Vmid(n),
                Err(_) => return fail("a vmid (100 to 999999999)"),
            },
            Key::Image => {
                let (path, tag) = super::filter::split_image(raw);
                if path.is_empty() || tag == Some("") {
                    return fail(
                        "an image name such as `nginx`, `linuxserver/nginx` or `nginx:1.25`",
                    );
                }
                Value::Image {
                    path: path.to_owned(),
                    tag: tag.map(str::to_owned),
                }
            }
            _ => Value::Text(raw.to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::Selector;

    fn err(s: &str) -> (usize, String) {
        let e = Selector::parse(s).unwrap_err();
        (e.position, e.to_string())
    }

    #[test]
    fn round_trips_and_tolerates_whitespace() {
        for (input, canonical) in [
            ("cluster/home", "cluster/home"),
            (
                " cluster / home / node/pve1/lxc/* ,cluster/lab/** [ tag = prod ][status!=stopped] ",
                "cluster/home/node/pve1/lxc/*, cluster/lab/**[tag=prod][status!=stopped]",
            ),
            ("[image=nginx:1.25]", "**[image=nginx:1.25]"),
            ("cluster/*/node/pve*/**/docker/*", "cluster/*/node/pve*/**/docker/*"),
            ("**[kind=lxc][vmid=101][name=web*][os=debian][node=pve1][agent=missing]",
             "**[kind=lxc][vmid=101][name=web*][os=debian][node=pve1][agent=missing]"),
        ] {
            let sel = Selector::parse(input).unwrap();
            assert_eq!(sel.to_string(), canonical);
            assert_eq!(Selector::parse(canonical).unwrap(), sel);
        }
    }

    #[test]
    fn errors_name_position_and_expectation() {
        assert_eq!(
            err("cluster/home/nodes/pve1"),
            (
                13,
                "invalid selector at position 13: expected `node`, found `nodes`".into()
            )
        );
        assert_eq!(
            err("cluster/home[tag=prod"),
            (
                21,
                "invalid selector at position 21: expected `]`, found the end".into()
            )
        );
        assert_eq!(err("cluster/home,").0, 13);
        assert!(err("cluster/home,").1.contains("a path segment"));
        assert_eq!(err("").0, 0);
        assert_eq!(err("cluster/home[colour=red]").1,
            "invalid selector at position 13: expected a filter key (tag, status, kind, os, image, name, vmid, node or agent), found `colour`");
        assert!(err("cluster/h[tag~prod]").1.contains("`=` or `!=`"));
        assert!(err("cluster/h[kind=box]").1.contains("a kind"));
        assert!(err("cluster/h/node/n/lxc/10x").1.contains("a vmid"));
        assert!(err("cluster/h/node/n/lxc/101/docker/d/x")
            .1
            .contains("at most 8"));
        assert!(err("cluster/a**").1.contains("whole segment"));
        assert_eq!(err("cluster/é").0, 8);
        assert!(err("cluster/home node")
            .1
            .contains("`,`, `/`, `[` or the end"));
        assert!(
            Selector::parse("**/x/y/z/w/v/u/t/s/r").is_ok(),
            "after ** anything goes"
        );
        let long = vec!["**"; 200].join("/");
        assert!(err(&long).1.contains("fewer path segments"));
    }
}
