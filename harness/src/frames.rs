//! The framing of what a guest's agent says on its second serial port:
//! a progress line before each trial, a verdict line after it
//! ([`crate::verdict::FRAME`]). Framed so console noise on the same channel
//! can never be read as one. Shared by the agent that writes them and the
//! VM transport that reads them.

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
