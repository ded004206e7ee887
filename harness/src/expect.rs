//! Checking observations against a case's expectations. Pure: observations
//! and checks in, a report per check out.

use crate::case::{Comparison, Expect, OnFail, Operand};
use crate::observation::Observations;
use serde_json::Value;

/// The outcome of one check, with both sides, for the report.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckReport {
    /// The observation checked.
    pub that: String,
    /// The comparison ("equals", "approx", ...).
    pub op: String,
    /// The expected side, resolved (with the tolerance for approx).
    pub expected: String,
    /// What was observed (null when missing).
    pub observed: Value,
    /// Whether it held.
    pub ok: bool,
    /// What a failure means.
    pub on_fail: OnFail,
    /// The case's reason for the check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// A value as a number, when it is one (numbers, or text that is a
/// plain finite number).
pub fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => crate::observation::typed(s.trim()).as_f64(),
        Value::Bool(_) | Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// A value as text: strings bare, everything else as JSON.
pub fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn resolve(op: &Operand, obs: &Observations) -> Result<Value, String> {
    match op {
        Operand::Literal(v) => Ok(v.clone()),
        Operand::Ref { of, times, plus } => {
            let v = obs
                .get(of)
                .ok_or_else(|| format!("observation '{of}' is missing"))?;
            if times.is_none() && plus.is_none() {
                return Ok(v.clone());
            }
            let n =
                as_number(v).ok_or_else(|| format!("observation '{of}' = {v} is not a number"))?;
            let r = n * times.unwrap_or(1.0) + plus.unwrap_or(0.0);
            Ok(serde_json::json!(r))
        }
    }
}

fn describe(op: &Operand, resolved: &Value) -> String {
    match op {
        Operand::Literal(_) => as_text(resolved),
        Operand::Ref { of, times, plus } => {
            let mut s = of.clone();
            if let Some(t) = times {
                s = format!("{s} x {t}");
            }
            if let Some(p) = plus {
                s = format!("{s} + {p}");
            }
            format!("{s} (= {})", as_text(resolved))
        }
    }
}

/// Equality as the check's types say: two numbers numerically, anything
/// with text as text (an ID is compared as the text it is).
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => match (as_number(a), as_number(b)) {
            (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
            _ => false,
        },
        (Value::String(s), Value::Number(_)) | (Value::Number(_), Value::String(s)) => {
            // A literal "137" in a case against an observed 137.
            match (
                crate::observation::typed(s.trim()).as_f64(),
                as_number(if matches!(a, Value::Number(_)) { a } else { b }),
            ) {
                (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
                _ => as_text(a) == as_text(b),
            }
        }
        _ => as_text(a) == as_text(b),
    }
}

/// Checks one expectation.
pub fn check(e: &Expect, obs: &Observations) -> CheckReport {
    let operand = e.comparison.operand();
    let op_name = e.comparison.name();
    let observed = obs.get(&e.that).cloned();
    let mut report = CheckReport {
        that: e.that.clone(),
        op: op_name.to_string(),
        expected: String::new(),
        observed: observed.clone().unwrap_or(Value::Null),
        ok: false,
        on_fail: e.on_fail,
        why: e.why.clone(),
    };
    let expected = match resolve(operand, obs) {
        Ok(v) => v,
        Err(msg) => {
            report.expected = msg;
            return report;
        }
    };
    report.expected = describe(operand, &expected);
    let Some(observed) = observed else {
        report.expected = format!("{} (observation missing)", report.expected);
        return report;
    };
    let num = |v: &Value| as_number(v);
    // A relative epsilon absorbs float representation (2176.03 vs 2176.0299999).
    let close = |x: f64| 1e-9 * x.abs().max(1.0);
    report.ok = match &e.comparison {
        Comparison::Equals(_) => equal(&observed, &expected),
        Comparison::NotEquals(_) => !equal(&observed, &expected),
        Comparison::AtLeast(_) => {
            matches!((num(&observed), num(&expected)), (Some(o), Some(x)) if o >= x - close(x))
        }
        Comparison::AtMost(_) => {
            matches!((num(&observed), num(&expected)), (Some(o), Some(x)) if o <= x + close(x))
        }
        Comparison::Contains(_) => as_text(&observed).contains(&as_text(&expected)),
        Comparison::NotContains(_) => !as_text(&observed).contains(&as_text(&expected)),
        Comparison::Approx {
            tolerance,
            tolerance_pct,
            ..
        } => match (num(&observed), num(&expected)) {
            (Some(o), Some(x)) => {
                let tol = tolerance
                    .unwrap_or(0.0)
                    .max(tolerance_pct.map_or(0.0, |p| x.abs() * p / 100.0));
                report.expected = format!("{} ± {}", report.expected, round(tol));
                (o - x).abs() <= tol
            }
            _ => false,
        },
    };
    report
}

fn round(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Checks every expectation of a case.
pub fn check_all(expects: &[Expect], obs: &Observations) -> Vec<CheckReport> {
    expects.iter().map(|e| check(e, obs)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    fn obs() -> Observations {
        let mut o = Observations::default();
        o.insert("a.hostname", json!("container"));
        o.insert("a.share", json!(0.201));
        o.insert("a.text", json!("0x1234,0x99"));
        o.insert("b.rate", json!("1048576"));
        o.insert("c.rate", json!(10_000_000));
        o.insert("a.up", json!(true));
        // A container ID that a float parser reads as 427 x 10^6706803.
        o.insert("a.id", json!("427e06706803"));
        o.insert("a.seen", json!("427e06706803"));
        o
    }

    fn expect(toml_text: &str) -> Expect {
        toml::from_str(toml_text).expect("valid expect")
    }

    #[rstest]
    #[case("that = \"a.hostname\"\nequals = \"container\"", true)]
    #[case("that = \"a.hostname\"\nequals = \"host\"", false)]
    #[case("that = \"a.hostname\"\nnot_equals = \"host\"", true)]
    #[case("that = \"a.share\"\napprox = 0.2\ntolerance = 0.01", true)]
    #[case("that = \"a.share\"\napprox = 0.1\ntolerance = 0.01", false)]
    #[case("that = \"a.share\"\napprox = 0.2\ntolerance_pct = 1", true)]
    #[case("that = \"a.share\"\napprox = 0.2\ntolerance_pct = 0.1", false)]
    #[case("that = \"a.text\"\ncontains = \"0x99\"", true)]
    #[case("that = \"a.text\"\nnot_contains = \"0x99\"", false)]
    #[case("that = \"b.rate\"\nequals = 1048576", true)]
    #[case("that = \"c.rate\"\nat_least = { of = \"b.rate\", times = 5 }", true)]
    #[case(
        "that = \"b.rate\"\nat_least = { of = \"c.rate\", times = 0.5 }",
        false
    )]
    #[case(
        "that = \"a.share\"\nat_most = { of = \"a.share\", plus = -0.1 }",
        false
    )]
    #[case("that = \"a.up\"\nequals = true", true)]
    #[case("that = \"a.missing\"\nequals = 1", false)]
    #[case("that = \"a.share\"\nequals = { of = \"a.missing\" }", false)]
    #[case("that = \"a.hostname\"\nat_least = 1", false)]
    #[case("that = \"a.seen\"\nequals = { of = \"a.id\" }", true)]
    #[case("that = \"a.seen\"\nequals = \"427e06706804\"", false)]
    fn checks(#[case] text: &str, #[case] ok: bool) {
        let report = check(&expect(text), &obs());
        assert_eq!(report.ok, ok, "{report:?}");
    }

    #[test]
    fn report_names_both_sides() {
        let r = check(
            &expect("that = \"c.rate\"\nat_least = { of = \"b.rate\", times = 5 }"),
            &obs(),
        );
        assert_eq!(r.expected, "b.rate x 5 (= 5242880.0)");
        assert_eq!(r.observed, json!(10_000_000));
        let r = check(&expect("that = \"a.missing\"\nequals = 1"), &obs());
        assert!(r.expected.contains("missing"), "{}", r.expected);
    }
}
