//! The console's verifier in the browser: [`palisade_audit::console`] behind two
//! functions, JSON in and JSON out, which the page's script calls with the bytes
//! it fetched from the log. The gateway serves the compiled module with the page.
#![forbid(unsafe_code)]

use palisade_audit::console::{Input, PlanInput};
use wasm_bindgen::prelude::wasm_bindgen;

/// Checks a checkpoint against the keys the customer trusts and names the entry
/// bundles to fetch: a JSON [`PlanInput`] in, a JSON `Plan` out.
#[wasm_bindgen]
pub fn plan(input: &str) -> String {
    match serde_json::from_str::<PlanInput>(input) {
        Ok(i) => to_json(&palisade_audit::console::plan(&i)),
        Err(e) => failed(&e),
    }
}

/// Verifies the log and every entry: a JSON [`Input`] in, a JSON `Report` out.
#[wasm_bindgen]
pub fn verify(input: &str) -> String {
    match serde_json::from_str::<Input>(input) {
        Ok(i) => to_json(&palisade_audit::console::verify(&i)),
        Err(e) => failed(&e),
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| failed(&e))
}

fn failed(e: &dyn std::fmt::Display) -> String {
    serde_json::json!({"ok": false, "failures": [format!("the page's request to the verifier is malformed: {e}")]}).to_string()
}
