//! Any bytes as the parameters of any action of the default policy: the validator
//! never panics, and whatever it accepts obeys the always-on string rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_core::event::ParamValue;
use palisade_policy::Policy;
use std::sync::OnceLock;

static POLICY: OnceLock<Option<Policy>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some(policy) = POLICY
        .get_or_init(|| {
            Policy::parse_yaml(include_str!("../../../../deploy/policy/default.yaml")).ok()
        })
        .as_ref()
    else {
        return;
    };
    // The first byte picks the action; the rest is the parameters object.
    let Some((pick, params)) = data.split_first() else {
        return;
    };
    let names: Vec<String> = policy.actions().map(|a| a.name.to_string()).collect();
    let Some(action) = names.get(usize::from(*pick) % names.len().max(1)) else {
        return;
    };
    if let Ok(valid) = policy.validate(action, params) {
        for value in valid.params().values() {
            if let ParamValue::Str(s) = value {
                assert!(s.is_ascii(), "non-ASCII accepted: {s:?}");
                assert!(!s.starts_with('-'), "leading dash accepted: {s:?}");
                assert!(!s.chars().any(char::is_control), "control accepted: {s:?}");
            }
        }
    }
});
