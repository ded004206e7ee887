//! The framing of what a guest's agent says on its second serial port:
//! a progress line before each trial, a verdict line after it
//! ([`crate::verdict::FRAME`]). Framed so console noise on the same channel
//! can never be read as one. Shared by the agent that writes them and the
//! VM transport that reads them.

/// The prefix of an output frame: `KCELL-OUT <1|2> <JSON string>`.
pub const OUT: &str = "KCELL-OUT ";
/// The prefix of the exit frame: `KCELL-EXIT <status>`.
pub const EXIT: &str = "KCELL-EXIT ";

/// The prefix of a progress line: `KCELL-PROGRESS <n> <total> <trial> <timeout>`.
pub const PROGRESS: &str = "KCELL-PROGRESS ";

/// The progress line of trial `n` of `total` (a trial is `runtime::CASE`),
/// announcing its timeout in seconds (the host's watchdog keys on it).
pub fn progress(n: usize, total: usize, trial: &str, timeout: u64) -> String {
    format!("{PROGRESS}{n} {total} {trial} {timeout}")
}

/// Parses a progress line: (n, total, trial, timeout).
pub fn parse_progress(line: &str) -> Option<(usize, usize, String, u64)> {
    let rest = line.trim().split_once(PROGRESS)?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    match f.as_slice() {
        [n, total, trial, timeout] => Some((
            n.parse().ok()?,
            total.parse().ok()?,
            trial.to_string(),
            timeout.parse().unwrap_or(60),
        )),
        _ => None,
    }
}

/// An output frame of a `kcell vm` program.
pub fn out_frame(stream: u8, text: &str) -> String {
    format!(
        "{OUT}{stream} {}",
        serde_json::to_string(text).unwrap_or_default()
    )
}

/// Parses an output frame: (stream, text).
pub fn parse_out(line: &str) -> Option<(u8, String)> {
    let rest = line.trim_end_matches('\n').split_once(OUT)?.1;
    let (stream, json) = rest.split_once(' ')?;
    Some((stream.parse().ok()?, serde_json::from_str(json).ok()?))
}

/// Parses the exit frame.
pub fn parse_exit(line: &str) -> Option<i32> {
    line.trim().split_once(EXIT)?.1.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trips_through_noise() {
        let line = progress(3, 9, "runc::NS-UTS-1", 60);
        assert_eq!(
            parse_progress(&format!("[ 2.1] x {line}")),
            Some((3, 9, "runc::NS-UTS-1".into(), 60))
        );
        assert_eq!(parse_progress("KCELL-PROGRESS 1 2"), None);
    }
}
