//! Device access rules (`--device-deny`, an OCI config's
//! linux.resources.devices): as v1 writes them (devices.allow/deny, in
//! order) and as the effective list a v2 BPF program tests (cgroup v2 has
//! no device files: [`super::bpf`]).
//!
//! Semantics are v1's, which the OCI spec adopts: rules apply in order, a
//! later one overriding an earlier one; a rule for every device (`a`, or
//! `*:*` of both types) resets the default to its own allow or deny.

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rule {
    /// Allow (true) or deny.
    pub allow: bool,
    /// 'a' (all), 'c' (character) or 'b' (block).
    pub kind: char,
    /// Major number; None for any.
    pub major: Option<u32>,
    /// Minor number; None for any.
    pub minor: Option<u32>,
    /// Any of r, w, m.
    pub access: String,
}

/// A rule that did not parse.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("device rule '{0}' is malformed: expected TYPE MAJOR:MINOR ACCESS, e.g. 'c 1:3 rwm' (TYPE a, b or c; MAJOR/MINOR a number or *; ACCESS of r, w, m)")]
pub struct RuleError(pub String);

impl Rule {
    /// Parses `TYPE MAJ:MIN ACCESS` (v1's devices.deny syntax; `a` alone too).
    pub fn parse(text: &str, allow: bool) -> Result<Rule, RuleError> {
        let bad = || RuleError(text.to_string());
        let parts: Vec<&str> = text.split_whitespace().collect();
        let (kind, numbers, access) = match parts.as_slice() {
            ["a"] => ("a", "*:*", "rwm"),
            [k, n, a] => (*k, *n, *a),
            _ => return Err(bad()),
        };
        let kind = match kind {
            "a" | "b" | "c" => kind.chars().next().ok_or_else(bad)?,
            _ => return Err(bad()),
        };
        let number = |s: &str| -> Result<Option<u32>, RuleError> {
            if s == "*" {
                Ok(None)
            } else {
                s.parse().map(Some).map_err(|_| bad())
            }
        };
        let (major, minor) = numbers.split_once(':').ok_or_else(bad)?;
        if access.is_empty() || !access.chars().all(|c| "rwm".contains(c)) {
            return Err(bad());
        }
        Ok(Rule {
            allow,
            kind,
            major: number(major)?,
            minor: number(minor)?,
            access: access.to_string(),
        })
    }

    /// Whether it covers every device (type `a`): v1 then resets its
    /// default behaviour to this rule's and drops every exception.
    pub fn is_wildcard(&self) -> bool {
        self.kind == 'a'
    }

    /// v1's line: `c 1:3 rwm`.
    pub fn line(&self) -> String {
        let n = |x: Option<u32>| x.map_or("*".to_string(), |v| v.to_string());
        if self.kind == 'a' {
            return "a".to_string();
        }
        format!(
            "{} {}:{} {}",
            self.kind,
            n(self.major),
            n(self.minor),
            self.access
        )
    }
}

/// r=read, w=write, m=mknod as BPF_DEVCG_ACC_* bits (read 2, write 4, mknod 1).
pub fn access_bits(access: &str) -> u32 {
    access.chars().fold(0, |b, c| {
        b | match c {
            'm' => 1,
            'r' => 2,
            'w' => 4,
            _ => 0,
        }
    })
}

/// The file writes of v1, in order: devices.allow or devices.deny each.
pub fn v1_writes(rules: &[Rule]) -> Vec<(&'static str, String)> {
    rules
        .iter()
        .map(|r| {
            let file = if r.allow {
                "devices.allow"
            } else {
                "devices.deny"
            };
            (file, r.line())
        })
        .collect()
}

/// What a v2 program tests: the default after the last reset, and the
/// rules after it (to be tested last one first: the last match wins).
/// Rules of one device and one decision are merged, so `c 1:3 r` and
/// `c 1:3 w` allow an O_RDWR open as v1 does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// Allow everything not matched.
    pub default_allow: bool,
    /// The exceptions, in order.
    pub rules: Vec<Rule>,
}

/// The effective list of `rules` (v1 starts allowing everything).
pub fn effective(rules: &[Rule]) -> Effective {
    let mut e = Effective {
        default_allow: true,
        rules: Vec::new(),
    };
    for r in rules {
        if r.is_wildcard() {
            e.default_allow = r.allow;
            e.rules.clear();
            continue;
        }
        if let Some(last) = e.rules.last_mut() {
            if (last.allow, last.kind, last.major, last.minor)
                == (r.allow, r.kind, r.major, r.minor)
            {
                for c in r.access.chars() {
                    if !last.access.contains(c) {
                        last.access.push(c);
                    }
                }
                continue;
            }
        }
        e.rules.push(r.clone());
    }
    e
}

/// The devices every container may use whatever its config denies (runc's
/// and crun's built-in allow list): mknod of any node, the standard
/// character devices, the pty multiplexer and its slaves.
pub fn default_allowed() -> Vec<Rule> {
    let r = |kind: char, major: Option<u32>, minor: Option<u32>, access: &str| Rule {
        allow: true,
        kind,
        major,
        minor,
        access: access.into(),
    };
    vec![
        r('c', None, None, "m"),
        r('b', None, None, "m"),
        r('c', Some(1), Some(3), "rwm"),
        r('c', Some(1), Some(8), "rwm"),
        r('c', Some(1), Some(7), "rwm"),
        r('c', Some(5), Some(0), "rwm"),
        r('c', Some(1), Some(5), "rwm"),
        r('c', Some(1), Some(9), "rwm"),
        r('c', Some(136), None, "rwm"),
        r('c', Some(5), Some(2), "rwm"),
        r('c', Some(10), Some(200), "rwm"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("c 1:3 rwm", true)]
    #[case("b *:* r", true)]
    #[case("a", true)]
    #[case("x 1:3 rwm", false)]
    #[case("c 1:3 rwx", false)]
    #[case("c 13 rwm", false)]
    fn rules_parse_or_are_named(#[case] text: &str, #[case] ok: bool) {
        let parsed = Rule::parse(text, false);
        assert_eq!(parsed.is_ok(), ok);
        if let Err(e) = parsed {
            assert!(e.to_string().contains(text));
        }
    }

    #[test]
    fn v1_writes_keep_the_order_and_files() {
        let rules = vec![
            Rule::parse("a", false).expect("rule"),
            Rule::parse("c 1:3 rwm", true).expect("rule"),
        ];
        assert_eq!(
            v1_writes(&rules),
            [
                ("devices.deny", "a".to_string()),
                ("devices.allow", "c 1:3 rwm".to_string())
            ]
        );
    }

    #[test]
    fn a_reset_clears_what_came_before_and_split_access_merges() {
        let rules = vec![
            Rule::parse("c 1:5 rwm", false).expect("rule"),
            Rule::parse("a *:* rwm", false).expect("rule"),
            Rule::parse("c 1:3 r", true).expect("rule"),
            Rule::parse("c 1:3 w", true).expect("rule"),
        ];
        let e = effective(&rules);
        assert!(!e.default_allow);
        assert_eq!(e.rules.len(), 1);
        assert_eq!(access_bits(&e.rules[0].access), 2 | 4);
    }

    #[test]
    fn without_a_reset_everything_else_stays_allowed() {
        let e = effective(&[Rule::parse("c 1:3 rwm", false).expect("rule")]);
        assert!(e.default_allow);
        assert_eq!(e.rules[0].line(), "c 1:3 rwm");
    }
}
