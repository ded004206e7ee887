//! The flag parsers (sizes, id maps, CPU quotas and lists, device rates and
//! rules, subnets, capabilities): never a panic, and an error quotes the value.
#![no_main]
use kcell::cgroup::resources;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = resources::parse_size(text);
    let _ = resources::parse_cpus(text);
    let _ = resources::parse_shares(text);
    let _ = resources::parse_cpu_list(text, &[0, 1, 2, 3]);
    let _ = resources::parse_device_rate(text);
    let _ = resources::parse_device_rule(text);
    let _ = kcell::idmap::IdMapping::parse(text);
    let _ = kcell::net::Ipv4Net::parse_subnet(text);
    let _ = kcell::caps::parse(text);
    if let Err(e) = resources::parse_size(text) {
        // Bad input is named in the error (trimmed, as the parser reads it).
        let msg = e.to_string();
        assert!(msg.contains(text.trim()), "{msg} does not quote {text:?}");
    }
});
