//! What a registry exchange parses from outside: image references (from
//! the user), `WWW-Authenticate` challenges and platforms. Never a panic;
//! a reference that parses prints back to one that parses the same; a
//! refused one names a part that is in it.
#![no_main]
use kcell::image::registry::{client, reference::Reference, Platform, RegistryError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = client::parse_challenge(text);
    let _ = Platform::parse(text);
    match Reference::parse(text) {
        Ok(r) => {
            let again = Reference::parse(&r.to_string()).expect("a printed reference parses");
            assert_eq!(again, r, "{text:?} printed as {r}");
            let _ = (r.target(), r.api_host(), r.store_tag());
        }
        Err(RegistryError::BadReference { part, .. }) => {
            assert!(text.contains(&part), "{text:?}: part {part:?} is not in it");
        }
        Err(e) => panic!("{text:?}: not a BadReference: {e}"),
    }
});
