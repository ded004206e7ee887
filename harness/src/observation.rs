//! Observations: typed values a case's runs, fixtures and measurements
//! produced, keyed "<run>.<key>" or "<fixture>.<key>".

use serde_json::Value;
use std::collections::BTreeMap;

/// Everything a case observed.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Observations(pub BTreeMap<String, Value>);

impl Observations {
    /// Records a value.
    pub fn insert(&mut self, key: impl Into<String>, value: Value) {
        self.0.insert(key.into(), value);
    }
    /// Looks a value up.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }
    /// Records every `key=value` line of `text` under `prefix.`, typed:
    /// integers, floats and true/false become numbers and booleans.
    pub fn insert_key_values(&mut self, prefix: &str, text: &str) {
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                let k = k.trim();
                if !k.is_empty() && !k.contains(char::is_whitespace) {
                    self.insert(format!("{prefix}.{k}"), typed(v.trim()));
                }
            }
        }
    }
}

/// Parses text as the most specific JSON value it can be: a plain
/// integer or decimal becomes a number (never an exponent form: a hex ID
/// such as 427e06706803 stays the text it is), true/false a boolean.
pub fn typed(text: &str) -> Value {
    if let Ok(i) = text.parse::<i64>() {
        return Value::from(i);
    }
    let decimal = {
        let t = text.strip_prefix('-').unwrap_or(text);
        let (int, frac) = t.split_once('.').unwrap_or((t, "0"));
        !int.is_empty()
            && !frac.is_empty()
            && int.bytes().all(|b| b.is_ascii_digit())
            && frac.bytes().all(|b| b.is_ascii_digit())
    };
    if decimal {
        if let Ok(f) = text.parse::<f64>() {
            return Value::from(f);
        }
    }
    match text {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_value_lines_are_typed() {
        let mut o = Observations::default();
        o.insert_key_values(
            "r",
            "pid=1\nshare=0.2\nup=true\nname=lo\nnot a pair\n x y=1\n=bad\nkeys=\n",
        );
        assert_eq!(o.get("r.pid"), Some(&json!(1)));
        assert_eq!(o.get("r.share"), Some(&json!(0.2)));
        assert_eq!(o.get("r.up"), Some(&json!(true)));
        assert_eq!(o.get("r.name"), Some(&json!("lo")));
        assert_eq!(o.get("r.keys"), Some(&json!("")));
        assert_eq!(o.0.len(), 5);
        // An ID that reads as a float in exponent form stays an ID.
        assert_eq!(typed("427e06706803"), json!("427e06706803"));
        assert_eq!(typed("1e5"), json!("1e5"));
        assert_eq!(typed("-0.25"), json!(-0.25));
    }
}
