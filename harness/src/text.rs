//! Small helpers every layer shares, with no knowledge of any of them:
//! sizes as cases write them (`64k`, `10m`) and sorted directory listings
//! (read as the probe reads them: its crate's), and unique names.

pub use kcell_probe::text::{size, sorted_names};

/// Twelve hex digits from /dev/urandom, for the names of what the harness
/// makes (fixtures, scratch directories, staged files); time and process ID
/// when there is no /dev/urandom (an early guest), still unique per run.
pub fn unique_id() -> String {
    let mut bytes = [0u8; 6];
    let filled = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if filled.is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let mix = (nanos as u64) ^ (u64::from(std::process::id()) << 32);
        bytes.copy_from_slice(&mix.to_le_bytes()[..6]);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[rstest::rstest]
    #[case("64k", Some(65536))]
    #[case("10m", Some(10 << 20))]
    #[case("1G", Some(1 << 30))]
    #[case("4096", Some(4096))]
    #[case("x", None)]
    fn sizes(#[case] text: &str, #[case] bytes: Option<u64>) {
        assert_eq!(super::size(text).ok(), bytes);
    }
}
