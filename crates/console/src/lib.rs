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

/// The payload and DSSE message an approver signs for a decision: a JSON
/// `palisade_audit::approval::Decision` in, `{payload_type, payload, pae}` out (or
/// `{"error"}`).
#[wasm_bindgen]
pub fn approval_to_sign(input: &str) -> String {
    match serde_json::from_str(input)
        .map_err(|e| e.to_string())
        .and_then(|d| palisade_audit::approval::to_sign(&d))
    {
        Ok(t) => to_json(&t),
        Err(e) => serde_json::json!({ "error": e }).to_string(),
    }
}

/// The key id (hex) of a raw Ed25519 public key given as standard base64, or an
/// empty string.
#[wasm_bindgen]
pub fn key_id(public_base64: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(public_base64)
        .map_err(|e| e.to_string())
        .and_then(|raw| palisade_audit::approval::key_id(&raw))
        .unwrap_or_default()
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| failed(&e))
}

fn failed(e: &dyn std::fmt::Display) -> String {
    serde_json::json!({"ok": false, "failures": [format!("the page's request to the verifier is malformed: {e}")]}).to_string()
}
