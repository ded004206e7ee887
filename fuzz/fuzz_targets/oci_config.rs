//! A bundle's config.json, from whoever wrote the bundle: whatever
//! oci-spec accepts becomes a container spec or a refusal, never a panic;
//! a refusal is one line (kcell-oci prints it as the one error line), and
//! a spec that validates turns into cgroup writes on v1 and v2 or a
//! refusal naming the setting. The root is / so that root.path resolves.
#![no_main]
use kcell::cgroup::layout::Version;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(loaded) = kcell::oci::config::parse(text, Path::new("config.json")) else {
        return;
    };
    match kcell::oci::config::to_spec("fuzz", Path::new("/"), &loaded) {
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "not one line: {msg:?}");
        }
        Ok(accepted) => {
            let spec = accepted.spec;
            if spec.validate().is_ok() && spec.resources.validate().is_ok() {
                for v in [Version::V1, Version::V2] {
                    if let Err(e) = spec.resources.settings(v) {
                        assert!(!e.to_string().contains('\n'), "{e}");
                    }
                }
            }
        }
    }
});
