//! Builds the console's verifier (`crates/console`) for the browser and writes its
//! JavaScript binding, so that the gateway embeds the page, its script and the
//! WebAssembly module it serves at `/console/`.
//!
//! Needs the `wasm32-unknown-unknown` target and `wasm-bindgen` (the CLI of the
//! same version as the `wasm-bindgen` crate); `./dev` installs both. The module is
//! built in a target directory of its own under `OUT_DIR`, with `--locked`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest
        .parent()
        .and_then(Path::parent)
        .expect("the gateway crate sits in crates/ of the workspace")
        .to_path_buf();
    for watched in [
        "crates/console",
        "crates/audit",
        "crates/tlog",
        "crates/core",
        "Cargo.toml",
        "Cargo.lock",
        "rust-toolchain.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    println!("cargo:rerun-if-changed=console");
    println!("cargo:rerun-if-env-changed=WASM_BINDGEN");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    // Its own target directory, under this build's: no other build or checkout
    // writes the module this one embeds.
    let wasm_target = out.join("wasm-target");

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(&root)
        .args([
            "build",
            "-p",
            "palisade-console",
            "--lib",
            "--target",
            "wasm32-unknown-unknown",
            "--profile",
            "console",
            "--locked",
            "--target-dir",
        ])
        .arg(&wasm_target);
    // A clean environment for the inner build: nothing of the outer build's
    // configuration (its profile, target, wrappers such as clippy's) applies to it.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if (key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_MAKEFLAGS")
            || key == "RUSTC_WORKSPACE_WRAPPER"
            || key == "RUSTFLAGS"
        {
            build.env_remove(&key);
        }
    }
    let status = build
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the console's verifier: {e}"));
    if !status.success() {
        panic!(
            "building the console's verifier for the browser failed ({status}). It needs the \
             WebAssembly target: `rustup target add wasm32-unknown-unknown` (./dev installs it)."
        );
    }
    let module = wasm_target.join("wasm32-unknown-unknown/console/palisade_console.wasm");

    // The CLI must be the very version of the crate `crates/console` pins.
    let pinned = std::fs::read_to_string(root.join("crates/console/Cargo.toml"))
        .expect("crates/console/Cargo.toml");
    let version_of_crate = pinned
        .lines()
        .find_map(|l| l.strip_prefix("wasm-bindgen = { version = \"="))
        .and_then(|l| l.split('"').next())
        .expect("crates/console/Cargo.toml pins wasm-bindgen as `version = \"=X.Y.Z\"`");
    // `$WASM_BINDGEN`, else the one `./dev` installs beside the build
    // (`<target>/tools/bin`, OUT_DIR being <target>/<profile>/build/<pkg>/out), else
    // the one on PATH.
    let beside = out
        .ancestors()
        .nth(4)
        .map(|t| t.join("tools/bin/wasm-bindgen"))
        .filter(|p| p.is_file());
    let bindgen = std::env::var("WASM_BINDGEN").unwrap_or_else(|_| {
        beside.map_or_else(|| "wasm-bindgen".into(), |p| p.display().to_string())
    });
    let install = format!(
        "`cargo install wasm-bindgen-cli --version {version_of_crate}` (./dev installs it)"
    );
    let version = Command::new(&bindgen)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bindgen} ({e}): the console needs {install}"));
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    if version != format!("wasm-bindgen {version_of_crate}") {
        panic!("the console needs wasm-bindgen {version_of_crate}, and {bindgen} is {version:?}: {install}");
    }
    let dist = out.join("console");
    let status = Command::new(&bindgen)
        .args([
            "--target",
            "web",
            "--no-typescript",
            "--out-name",
            "palisade_console",
            "--out-dir",
        ])
        .arg(&dist)
        .arg(&module)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {bindgen}: {e}"));
    if !status.success() {
        panic!("{bindgen} could not bind the console's verifier ({status})");
    }
}
