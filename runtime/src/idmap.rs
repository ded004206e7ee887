//! User and group id maps (`--uid-map IN:OUT:LEN`), as written to
//! `/proc/PID/uid_map` by the parent while the child waits (user_namespaces(7)).

use std::fmt;

/// Errors in an id map given on the command line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdMapError {
    /// Not of the form `IN:OUT:LEN` with three unsigned numbers.
    #[error("id map '{0}' is malformed: expected INSIDE:OUTSIDE:LENGTH, three unsigned numbers, e.g. 0:1000:1")]
    Malformed(String),
    /// Zero length maps nothing and the kernel rejects it.
    #[error("id map '{0}' has length 0: the length must be at least 1")]
    ZeroLength(String),
    /// The range runs past the largest id (2^32 - 2; 4294967295 is the invalid id).
    #[error("id map '{0}' runs past the largest id 4294967294")]
    Overflow(String),
    /// Two lines map overlapping ranges on the inside or the outside.
    #[error("id maps '{0}' and '{1}' overlap on the {2} side: ranges must be disjoint")]
    Overlap(String, String, &'static str),
    /// The kernel takes at most 340 lines (since 4.15); 5 before that.
    #[error("{0} id map lines given: the kernel accepts at most 340")]
    TooMany(usize),
}

/// One line of a uid_map or gid_map: `inside outside length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdMapping {
    /// First id inside the namespace.
    pub inside: u32,
    /// First id in the parent namespace it maps to.
    pub outside: u32,
    /// Number of consecutive ids.
    pub length: u32,
}

impl IdMapping {
    /// Parses `IN:OUT:LEN`.
    pub fn parse(text: &str) -> Result<Self, IdMapError> {
        let parts: Vec<&str> = text.split(':').collect();
        let [inside, outside, length] = parts.as_slice() else {
            return Err(IdMapError::Malformed(text.to_string()));
        };
        let num = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| IdMapError::Malformed(text.to_string()))
        };
        let mapping = IdMapping {
            inside: num(inside)?,
            outside: num(outside)?,
            length: num(length)?,
        };
        if mapping.length == 0 {
            return Err(IdMapError::ZeroLength(text.to_string()));
        }
        let last = |start: u32| u64::from(start) + u64::from(mapping.length) - 1;
        if last(mapping.inside) >= u64::from(u32::MAX)
            || last(mapping.outside) >= u64::from(u32::MAX)
        {
            return Err(IdMapError::Overflow(text.to_string()));
        }
        Ok(mapping)
    }

    fn overlaps(start_a: u32, start_b: u32, len_a: u32, len_b: u32) -> bool {
        let (a0, b0) = (u64::from(start_a), u64::from(start_b));
        a0 < b0 + u64::from(len_b) && b0 < a0 + u64::from(len_a)
    }
}

impl fmt::Display for IdMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.inside, self.outside, self.length)
    }
}

/// A whole map: the lines written in one `write(2)` to uid_map or gid_map.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdMap(pub Vec<IdMapping>);

impl IdMap {
    /// Builds a map from its lines, refusing what the kernel would refuse with
    /// a bare EINVAL: overlapping ranges and too many lines.
    pub fn new(lines: Vec<IdMapping>) -> Result<Self, IdMapError> {
        if lines.len() > 340 {
            return Err(IdMapError::TooMany(lines.len()));
        }
        for (i, a) in lines.iter().enumerate() {
            for b in &lines[i + 1..] {
                let side = if IdMapping::overlaps(a.inside, b.inside, a.length, b.length) {
                    Some("inside")
                } else if IdMapping::overlaps(a.outside, b.outside, a.length, b.length) {
                    Some("outside")
                } else {
                    None
                };
                if let Some(side) = side {
                    return Err(IdMapError::Overlap(a.to_string(), b.to_string(), side));
                }
            }
        }
        Ok(IdMap(lines))
    }

    /// Parses each `IN:OUT:LEN` argument and validates the whole.
    pub fn parse_all<S: AsRef<str>>(args: &[S]) -> Result<Self, IdMapError> {
        let lines = args
            .iter()
            .map(|a| IdMapping::parse(a.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        IdMap::new(lines)
    }

    /// The map that gives one outside id the inside id 0 (what `unshare -r` does).
    pub fn root_to(outside: u32) -> Self {
        IdMap(vec![IdMapping {
            inside: 0,
            outside,
            length: 1,
        }])
    }

    /// True when nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The text the kernel expects in `/proc/PID/uid_map`: one `IN OUT LEN` per line.
    pub fn to_proc_format(&self) -> String {
        self.0
            .iter()
            .map(|m| format!("{} {} {}\n", m.inside, m.outside, m.length))
            .collect()
    }

    /// The outside id that inside id `inside` maps to, if mapped.
    pub fn outside_of(&self, inside: u32) -> Option<u32> {
        self.0.iter().find_map(|m| {
            (inside >= m.inside && u64::from(inside) < u64::from(m.inside) + u64::from(m.length))
                .then(|| m.outside + (inside - m.inside))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("0:1000:1", 0, 1000, 1)]
    #[case("0:100000:65536", 0, 100000, 65536)]
    #[case(" 5 : 6 : 7 ", 5, 6, 7)]
    fn parses_valid_lines(#[case] text: &str, #[case] i: u32, #[case] o: u32, #[case] l: u32) {
        assert_eq!(
            IdMapping::parse(text),
            Ok(IdMapping {
                inside: i,
                outside: o,
                length: l
            })
        );
    }

    #[rstest]
    #[case("0:1000")]
    #[case("0:1000:1:2")]
    #[case("a:1000:1")]
    #[case("-1:1000:1")]
    #[case("")]
    #[case("0:1000:99999999999")]
    fn rejects_malformed(#[case] text: &str) {
        assert_eq!(
            IdMapping::parse(text),
            Err(IdMapError::Malformed(text.into()))
        );
    }

    #[rstest]
    #[case("0:0:0", IdMapError::ZeroLength("0:0:0".into()))]
    #[case("4294967294:0:2", IdMapError::Overflow("4294967294:0:2".into()))]
    fn rejects_bad_ranges(#[case] text: &str, #[case] err: IdMapError) {
        assert_eq!(IdMapping::parse(text), Err(err));
    }

    #[rstest]
    #[case(&["0:1000:10", "5:2000:1"], Some("inside"))]
    #[case(&["0:1000:10", "20:1009:1"], Some("outside"))]
    #[case(&["0:1000:10", "10:1010:5"], None)]
    #[case(&["0:1000:1"], None)]
    fn detects_overlap(#[case] args: &[&str], #[case] side: Option<&str>) {
        let result = IdMap::parse_all(args);
        match side {
            None => assert!(result.is_ok(), "{result:?}"),
            Some(s) => assert!(
                matches!(result, Err(IdMapError::Overlap(_, _, got)) if got == s),
                "{result:?}"
            ),
        }
    }

    #[test]
    fn formats_for_proc_and_looks_up() {
        let map = IdMap::parse_all(&["0:1000:1", "1:100000:65536"]).expect("valid");
        assert_eq!(map.to_proc_format(), "0 1000 1\n1 100000 65536\n");
        assert_eq!(map.outside_of(0), Some(1000));
        assert_eq!(map.outside_of(2), Some(100001));
        assert_eq!(map.outside_of(70000), None);
    }
}
