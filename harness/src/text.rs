//! Small helpers every layer shares, with no knowledge of any of them:
//! sizes as cases write them (`64k`, `10m`) and sorted directory listings.

use std::path::Path;

/// Bytes of a size written as a number with an optional k, m or g suffix.
pub fn size(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let (digits, shift) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 10),
        Some('m') => (&t[..t.len() - 1], 20),
        Some('g') => (&t[..t.len() - 1], 30),
        _ => (t.as_str(), 0),
    };
    digits
        .parse::<u64>()
        .map(|n| n << shift)
        .map_err(|_| format!("size '{text}' is not a number with k, m or g"))
}

/// The entry names of `dir`, sorted (none when it cannot be read).
pub fn sorted_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
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
