//! Any text: the linter returns a policy or errors, never panics, and a policy it
//! accepts has a stable digest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_policy::Policy;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(policy) = Policy::parse_yaml(text) {
        let again = Policy::parse_yaml(text).map(|p| p.digest());
        assert_eq!(again.ok(), Some(policy.digest()));
    }
});
