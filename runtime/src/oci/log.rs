//! The log of `kcell-oci` as runc writes it (`--log FILE`, `--log-format
//! text|json`): on an error one line with level error and the message
//! (containerd reads the last such JSON line, podman the whole file as one
//! object), and the bare message on stderr when the log is a file.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

/// Where the log goes.
pub struct Log {
    file: Option<Mutex<std::fs::File>>,
    json: bool,
    debug: bool,
}

fn now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    crate::lifecycle::rfc3339(d.as_secs() as i64, 0)
}

impl Log {
    /// The log at `path` (appended), else stderr; json when `format` says so.
    pub fn open(path: Option<&Path>, format: &str, debug: bool) -> Log {
        let file = path.and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .ok()
                .map(Mutex::new)
        });
        Log {
            file,
            json: format == "json",
            debug,
        }
    }

    fn line(&self, level: &str, msg: &str) -> String {
        if self.json {
            serde_json::json!({"level": level, "msg": msg, "time": now()}).to_string()
        } else {
            format!("time=\"{}\" level={level} msg={:?}", now(), msg)
        }
    }

    fn write(&self, level: &str, msg: &str) {
        let line = self.line(level, msg);
        match &self.file {
            Some(f) => {
                if let Ok(mut f) = f.lock() {
                    let _ = writeln!(f, "{line}");
                }
            }
            None => eprintln!("{line}"),
        }
    }

    /// An error: in the log, and bare on stderr when the log is a file.
    pub fn error(&self, msg: &str) {
        self.write("error", msg);
        if self.file.is_some() {
            eprintln!("{msg}");
        }
    }

    /// A warning: in the log (stderr when there is no log file).
    pub fn warn(&self, msg: &str) {
        self.write("warning", msg);
    }

    /// A debug line, with --debug.
    pub fn debug(&self, msg: &str) {
        if self.debug {
            self.write("debug", msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_one_json_line_with_level_and_msg() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.json");
        Log::open(Some(&path), "json", false).error("container 'x' does not exist");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(text.trim()).expect("json");
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "container 'x' does not exist");
        assert!(v["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
}
