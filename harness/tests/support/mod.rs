//! What the harness's integration tests share: kcell's binary, which the
//! harness does not depend on (it judges kcell as it judges any runtime),
//! built from this workspace when a test asks for it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// kcell's binary (its CLI; named kcell-oci, its OCI command line), built
/// by cargo beside the agent once per test binary.
#[allow(dead_code)]
pub fn kcell() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let agent = Path::new(env!("CARGO_BIN_EXE_kcell-agent"));
            kcell_harness::data::build_kcell(Path::new(env!("CARGO")), agent)
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .clone()
}
