//! A case's checks: what an observation is compared with, how, and what
//! a failure means. Parsed from the case file's `[[expect]]` tables with
//! exactly one comparison each.

use serde::Deserialize;
use serde_json::Value;

/// The right-hand side of a check: a literal, or another observation
/// (optionally scaled: `{ of = "control.rate", times = 0.2 }`).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum Operand {
    /// Another observation, times a factor, plus an offset.
    Ref {
        /// The observation's key.
        of: String,
        /// Multiplier (default 1).
        #[serde(default)]
        times: Option<f64>,
        /// Added after multiplying (default 0).
        #[serde(default)]
        plus: Option<f64>,
    },
    /// A literal value.
    Literal(Value),
}

/// What a failed check makes of the verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFail {
    /// The case fails.
    #[default]
    Fail,
    /// The case is inconclusive: the control showed the machine could not
    /// have told the difference.
    Inconclusive,
}

/// One check of an observation.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(try_from = "ExpectFile", into = "ExpectFile")]
pub struct Expect {
    /// The observation's key, "<run>.<key>" or "<fixture>.<key>".
    pub that: String,
    /// How it is compared, with what.
    pub comparison: Comparison,
    /// Why this is expected, and why the tolerance is what it is.
    pub why: Option<String>,
    /// What a failure means.
    pub on_fail: OnFail,
}

/// How an observation is compared: the one registry of comparisons.
#[derive(Debug, Clone)]
pub enum Comparison {
    /// Equal (numbers compare numerically).
    Equals(Operand),
    /// Not equal.
    NotEquals(Operand),
    /// >= (numbers).
    AtLeast(Operand),
    /// <= (numbers).
    AtMost(Operand),
    /// Substring of the observation's text.
    Contains(Operand),
    /// Not a substring.
    NotContains(Operand),
    /// Within an absolute tolerance, or a relative one in percent (the
    /// larger when both are given), of the operand.
    Approx {
        /// The value approximated.
        operand: Operand,
        /// Absolute tolerance.
        tolerance: Option<f64>,
        /// Relative tolerance, in percent.
        tolerance_pct: Option<f64>,
    },
}

/// The comparisons' names, as case files write them.
pub const COMPARISONS: &[&str] = &[
    "equals",
    "not_equals",
    "at_least",
    "at_most",
    "contains",
    "not_contains",
    "approx",
];

impl Comparison {
    /// The name a case file writes.
    pub fn name(&self) -> &'static str {
        match self {
            Comparison::Equals(_) => "equals",
            Comparison::NotEquals(_) => "not_equals",
            Comparison::AtLeast(_) => "at_least",
            Comparison::AtMost(_) => "at_most",
            Comparison::Contains(_) => "contains",
            Comparison::NotContains(_) => "not_contains",
            Comparison::Approx { .. } => "approx",
        }
    }

    /// What the observation is compared with.
    pub fn operand(&self) -> &Operand {
        match self {
            Comparison::Equals(o)
            | Comparison::NotEquals(o)
            | Comparison::AtLeast(o)
            | Comparison::AtMost(o)
            | Comparison::Contains(o)
            | Comparison::NotContains(o)
            | Comparison::Approx { operand: o, .. } => o,
        }
    }

    /// The same, to substitute variables in.
    pub fn operand_mut(&mut self) -> &mut Operand {
        match self {
            Comparison::Equals(o)
            | Comparison::NotEquals(o)
            | Comparison::AtLeast(o)
            | Comparison::AtMost(o)
            | Comparison::Contains(o)
            | Comparison::NotContains(o)
            | Comparison::Approx { operand: o, .. } => o,
        }
    }
}

/// A check as a case file writes it: one key per comparison, exactly one given.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct ExpectFile {
    that: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    equals: Option<Operand>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    not_equals: Option<Operand>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at_least: Option<Operand>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at_most: Option<Operand>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    contains: Option<Operand>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    not_contains: Option<Operand>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    approx: Option<Operand>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tolerance: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tolerance_pct: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    why: Option<String>,
    #[serde(default)]
    on_fail: OnFail,
}

impl TryFrom<ExpectFile> for Expect {
    type Error = String;
    fn try_from(f: ExpectFile) -> Result<Expect, String> {
        let mut given = Vec::new();
        let mut take = |o: Option<Operand>, make: fn(Operand) -> Comparison| {
            if let Some(o) = o {
                given.push(make(o));
            }
        };
        take(f.equals, Comparison::Equals);
        take(f.not_equals, Comparison::NotEquals);
        take(f.at_least, Comparison::AtLeast);
        take(f.at_most, Comparison::AtMost);
        take(f.contains, Comparison::Contains);
        take(f.not_contains, Comparison::NotContains);
        if let Some(operand) = f.approx {
            if f.tolerance.is_none() && f.tolerance_pct.is_none() {
                return Err(format!(
                    "approx check of '{}' needs tolerance or tolerance_pct",
                    f.that
                ));
            }
            given.push(Comparison::Approx {
                operand,
                tolerance: f.tolerance,
                tolerance_pct: f.tolerance_pct,
            });
        }
        if given.len() != 1 {
            return Err(format!(
                "check of '{}' has {} comparisons: give exactly one of {}",
                f.that,
                given.len(),
                COMPARISONS.join(", ")
            ));
        }
        Ok(Expect {
            that: f.that,
            comparison: given.remove(0),
            why: f.why,
            on_fail: f.on_fail,
        })
    }
}

impl From<Expect> for ExpectFile {
    fn from(e: Expect) -> ExpectFile {
        let mut f = ExpectFile {
            that: e.that,
            why: e.why,
            on_fail: e.on_fail,
            ..ExpectFile::default()
        };
        match e.comparison {
            Comparison::Equals(o) => f.equals = Some(o),
            Comparison::NotEquals(o) => f.not_equals = Some(o),
            Comparison::AtLeast(o) => f.at_least = Some(o),
            Comparison::AtMost(o) => f.at_most = Some(o),
            Comparison::Contains(o) => f.contains = Some(o),
            Comparison::NotContains(o) => f.not_contains = Some(o),
            Comparison::Approx {
                operand,
                tolerance,
                tolerance_pct,
            } => {
                f.approx = Some(operand);
                f.tolerance = tolerance;
                f.tolerance_pct = tolerance_pct;
            }
        }
        f
    }
}
