#!/usr/bin/env bash
# Installs what building and testing Palisade needs, only where it is missing,
# and says what it installs. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: <command or file that proves it is there>=<package>
apt_needs=(
    "protoc=protobuf-compiler"      # etcd-client and tonic generate code with it
    "openssl=openssl"               # tests check certificates with `openssl verify`
    "etcd=etcd-server"              # a real etcd for the agent, backups and gateway state
    "etcdctl=etcd-client"           # the standard etcd tool (baselines, restores)
    "softhsm2-util=softhsm2"        # a PKCS#11 HSM for the KMS plugin
    "chromium=chromium"             # the console's browser tests run it headless
    "chromedriver=chromium-driver"  # ... driven through WebDriver
)
# Python packages: <module>=<pip requirement>
pip_needs=(
    "moto=moto[server]"             # S3- and KMS-compatible endpoints on loopback
    "tuf=tuf"                       # python-tuf: the TUF interop test loads our repository with it
    "openapi_spec_validator=openapi-spec-validator"  # validates the gateway's OpenAPI document
)

missing_apt=()
for entry in "${apt_needs[@]}"; do
    probe=${entry%%=*}
    pkg=${entry#*=}
    command -v "$probe" >/dev/null 2>&1 || missing_apt+=("$pkg")
done
if [ ${#missing_apt[@]} -gt 0 ]; then
    echo "install-deps: installing Debian packages: ${missing_apt[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing_apt[@]}" >/dev/null
fi

missing_pip=()
for entry in "${pip_needs[@]}"; do
    module=${entry%%=*}
    req=${entry#*=}
    python3 -c "import $module" >/dev/null 2>&1 || missing_pip+=("$req")
done
if [ ${#missing_pip[@]} -gt 0 ]; then
    echo "install-deps: installing Python packages: ${missing_pip[*]}"
    python3 -m pip install --quiet "${missing_pip[@]}"
fi

if ! command -v cargo-nextest >/dev/null 2>&1; then
    echo "install-deps: installing cargo-nextest"
    cargo install --locked --quiet cargo-nextest
fi

# The console's verifier is Rust built for the browser (WebAssembly); the gateway's
# build compiles it and binds it with wasm-bindgen, the CLI of exactly the version
# crates/console pins. It goes to $PALISADE_TOOLS (set by ./dev) when that is set.
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    echo "install-deps: adding the Rust target wasm32-unknown-unknown"
    rustup target add wasm32-unknown-unknown
fi
bindgen_version=$(sed -n 's/^wasm-bindgen = { version = "=\([0-9.]*\)".*/\1/p' crates/console/Cargo.toml)
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $bindgen_version" ]; then
    echo "install-deps: installing wasm-bindgen-cli $bindgen_version"
    cargo install --quiet ${PALISADE_TOOLS:+--root "$PALISADE_TOOLS"} wasm-bindgen-cli --version "$bindgen_version"
fi
