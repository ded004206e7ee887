//! A container's cgroup limits, parsed when the case is loaded: a size, a
//! throttle or a device rule that does not parse is an error naming the
//! file, the line and the value, never an error verdict at run time.

use serde::{de::Error as _, Deserialize, Deserializer, Serialize, Serializer};

/// A size in bytes, written as bytes or a number with k, m or g ("64k").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_size(&text).map_err(D::Error::custom)
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

fn parse_size(text: &str) -> Result<Size, String> {
    crate::text::size(text).map(Size).map_err(|_| {
        format!(
            "size '{text}' is not allowed: bytes, or a number with k, m or g (\"64k\", \"10m\")"
        )
    })
}

/// The device a throttle names: numbers, or a fixture's variable
/// (`{block_device.majmin}`) replaced when the case runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceNumber {
    /// MAJ:MIN.
    Fixed {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// `{fixture.key}`, which the fixture sets to MAJ:MIN.
    Variable(String),
}

impl DeviceNumber {
    /// MAJ:MIN of `text`.
    pub fn parse_fixed(text: &str) -> Option<(u32, u32)> {
        let (a, b) = text.split_once(':')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    }
}

/// A block I/O throttle: "MAJ:MIN:RATE" or "{fixture.key}:RATE".
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Throttle {
    /// The device.
    pub device: DeviceNumber,
    /// Bytes per second.
    pub rate: Size,
    /// As written (for the config of a mutant, and for errors).
    pub text: String,
}

impl TryFrom<String> for Throttle {
    type Error = String;
    fn try_from(text: String) -> Result<Throttle, String> {
        let bad = |why: &str| {
            format!("throttle '{text}' is not allowed: {why} (write MAJ:MIN:RATE or {{fixture.key}}:RATE, e.g. \"8:0:1m\")")
        };
        let (device, rate) = text.rsplit_once(':').ok_or_else(|| bad("no RATE"))?;
        let rate = parse_size(rate).map_err(|e| bad(&e))?;
        let device = if device.starts_with('{') && device.ends_with('}') {
            DeviceNumber::Variable(device.to_string())
        } else {
            let (major, minor) = DeviceNumber::parse_fixed(device)
                .ok_or_else(|| bad("the device is not MAJ:MIN"))?;
            DeviceNumber::Fixed { major, minor }
        };
        Ok(Throttle { device, rate, text })
    }
}

impl From<Throttle> for String {
    fn from(t: Throttle) -> String {
        t.text
    }
}

/// A device access rule a case denies: "TYPE MAJ:MIN ACCESS" ("c 10:229 rw";
/// `*` for any number).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceRule {
    /// c, b or a.
    pub kind: char,
    /// None for `*`.
    pub major: Option<i64>,
    /// None for `*`.
    pub minor: Option<i64>,
    /// Some of r, w, m.
    pub access: String,
    /// As written.
    pub text: String,
}

impl TryFrom<String> for DeviceRule {
    type Error = String;
    fn try_from(text: String) -> Result<DeviceRule, String> {
        let bad = |why: &str| {
            format!("device rule '{text}' is not allowed: {why} (write TYPE MAJ:MIN ACCESS, e.g. \"c 10:229 rw\")")
        };
        let parts: Vec<&str> = text.split_whitespace().collect();
        let [kind, numbers, access] = parts.as_slice() else {
            return Err(bad("three words are needed"));
        };
        let kind = match *kind {
            "c" | "b" | "a" => kind.chars().next().unwrap_or('a'),
            _ => return Err(bad("TYPE is c, b or a")),
        };
        let (major, minor) = numbers.split_once(':').ok_or_else(|| bad("no MAJ:MIN"))?;
        let number = |s: &str| -> Result<Option<i64>, String> {
            match s {
                "*" => Ok(None),
                n => n
                    .parse()
                    .map(Some)
                    .map_err(|_| bad(&format!("'{n}' is not a number or *"))),
            }
        };
        if access.is_empty() || !access.chars().all(|c| "rwm".contains(c)) {
            return Err(bad("ACCESS is some of r, w and m"));
        }
        let (major, minor) = (number(major)?, number(minor)?);
        let access = access.to_string();
        Ok(DeviceRule {
            kind,
            major,
            minor,
            access,
            text,
        })
    }
}

impl From<DeviceRule> for String {
    fn from(d: DeviceRule) -> String {
        d.text
    }
}

/// A CPU list, "1" or "0-2,4".
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String")]
pub struct CpuList(pub String);

impl TryFrom<String> for CpuList {
    type Error = String;
    fn try_from(text: String) -> Result<CpuList, String> {
        let ok = !text.is_empty()
            && text.split(',').all(|part| {
                let mut ends = part.splitn(2, '-');
                ends.all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            });
        if ok {
            Ok(CpuList(text))
        } else {
            Err(format!(
                "cpu list '{text}' is not allowed: CPU numbers and ranges, e.g. \"1\" or \"0-2,4\""
            ))
        }
    }
}

/// The cgroup limits of a container (each optional).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// CPUs of bandwidth (0.2 = 20000 of every 100000 µs).
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Relative weight in v1 shares (2..262144).
    #[serde(default)]
    pub cpu_shares: Option<u64>,
    /// Allowed CPUs, e.g. "1".
    #[serde(default)]
    pub cpuset: Option<CpuList>,
    /// Memory limit, e.g. "64k", "10m".
    #[serde(default)]
    pub memory: Option<Size>,
    /// Swap on top of the memory limit, e.g. "0".
    #[serde(default)]
    pub swap: Option<Size>,
    /// Most tasks.
    #[serde(default)]
    pub pids: Option<u64>,
    /// Read throttles.
    #[serde(default)]
    pub read_bps: Vec<Throttle>,
    /// Write throttles.
    #[serde(default)]
    pub write_bps: Vec<Throttle>,
    /// Device rules denied.
    #[serde(default)]
    pub device_deny: Vec<DeviceRule>,
}

impl Limits {
    /// No limit set.
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_to_their_values() {
        let l: Limits = toml::from_str(
            "memory = \"10m\"\nswap = \"0\"\nread_bps = [\"{block_device.majmin}:1m\", \"8:0:512k\"]\ndevice_deny = [\"c 10:229 rw\", \"a *:* m\"]\ncpuset = \"0-1,3\"",
        )
        .expect("limits");
        assert_eq!(l.memory, Some(Size(10 << 20)));
        assert_eq!(l.swap, Some(Size(0)));
        assert_eq!(
            l.read_bps[0].device,
            DeviceNumber::Variable("{block_device.majmin}".into())
        );
        assert_eq!(
            l.read_bps[1].device,
            DeviceNumber::Fixed { major: 8, minor: 0 }
        );
        assert_eq!(l.read_bps[1].rate, Size(512 << 10));
        assert_eq!((l.device_deny[1].major, l.device_deny[1].kind), (None, 'a'));
    }

    #[rstest::rstest]
    #[case("memory = \"10x\"", "size '10x'")]
    #[case("read_bps = [\"8:0\"]", "throttle '8:0'")]
    #[case("write_bps = [\"8:x:1m\"]", "throttle '8:x:1m'")]
    #[case("device_deny = [\"q 1:3 rw\"]", "device rule 'q 1:3 rw'")]
    #[case("device_deny = [\"c 1:3 rwx\"]", "device rule 'c 1:3 rwx'")]
    #[case("cpuset = \"one\"", "cpu list 'one'")]
    fn a_bad_limit_is_refused_naming_its_value(#[case] text: &str, #[case] named: &str) {
        let e = toml::from_str::<Limits>(text)
            .expect_err("refused")
            .to_string();
        assert!(e.contains(named) && e.contains("not allowed"), "{e}");
    }
}
