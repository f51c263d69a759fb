//! A headless Chromium (Debian's `chromium`) driven through WebDriver
//! (`chromedriver`): what the console's browser tests and its benchmark need of it.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a page may take to verify its log.
pub const VERIFIED: Duration = Duration::from_secs(60);

/// Fails, naming the package, when a browser tool is missing.
pub fn require(tool: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(tool))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("the console tests need {tool}: apt-get install {package} (./dev test installs it)")
    })
}

/// A chromedriver and one headless Chromium session of it.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub fn start() -> Browser {
        let chromium = require("chromium", "chromium");
        let chromedriver = require("chromedriver", "chromium-driver");
        let port = palisade_core::ports::free_loopback_block(1).expect("a free port");
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        // Plain HTTP to chromedriver; reqwest still wants a TLS provider installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().expect("profile dir");
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            http,
            rt,
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while browser.call("GET", "/status", None).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        // As root, Chromium needs --no-sandbox; the network flags keep it from
        // reaching for hosts this machine cannot reach.
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,1000",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!(
            "--user-data-dir={}",
            browser._profile.path().display()
        )])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            // The stack's CA is not the system's: the test trusts it by accepting
            // the gateway's certificate, as a user who imported the CA would.
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let session = browser
            .call("POST", "/session", Some(caps))
            .expect("a browser session");
        browser.session = session["sessionId"]
            .as_str()
            .expect("session id")
            .to_string();
        browser
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        self.rt.block_on(async {
            let req = match method {
                "GET" => self.http.get(&url),
                "DELETE" => self.http.delete(&url),
                _ => self
                    .http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.unwrap_or(json!({})).to_string()),
            };
            let r = req.send().await.map_err(|e| e.to_string())?;
            let ok = r.status().is_success();
            let v: Value = serde_json::from_slice(&r.bytes().await.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
            if ok {
                Ok(v.get("value").cloned().unwrap_or(v))
            } else {
                Err(v.to_string())
            }
        })
    }

    pub fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    pub fn open(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn script(&self, script: &str) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// The element `css` selects (its WebDriver reference).
    pub fn find(&self, css: &str) -> String {
        let e = self.session_call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        e.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {e}"))
            .to_string()
    }

    /// Types `text` into the element `css` selects (for a file input: a path).
    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.session_call(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.session_call("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    /// Runs `script` as an asynchronous WebDriver script: it ends by calling
    /// `arguments[0]` with its value.
    pub fn script_async(&self, script: &str) -> Value {
        self.session_call(
            "POST",
            "/execute/async",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Waits until the page has verified the log (or failed to) and returns the
    /// outcome: `ok` or `failed`.
    pub fn verification(&self) -> String {
        let deadline = Instant::now() + VERIFIED;
        loop {
            let v = self.script("return document.body.dataset.verification || ''");
            if let Some(s) = v.as_str().filter(|s| !s.is_empty()) {
                return s.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "the page did not finish verifying within {VERIFIED:?}: {}",
                self.text("body")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn text(&self, selector: &str) -> String {
        let s = serde_json::to_string(selector).expect("selector");
        self.script(&format!(
            "const e = document.querySelector({s}); return e ? e.innerText : '';"
        ))
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    pub fn press(&self, key: &str) {
        let actions = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]}]});
        self.session_call("POST", "/actions", Some(actions));
    }

    pub fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("PALISADE_CONSOLE_SCREENSHOTS") else {
            return;
        };
        use base64::Engine as _;
        let png = self.session_call("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64 screenshot"))
            .expect("png");
        // A relative directory is the workspace's (tests run in their package's).
        let dir = workspace_root().join(dir);
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(name), png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The workspace's root: the nearest directory above this package whose Cargo.toml
/// declares the workspace.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|d| {
            std::fs::read_to_string(d.join("Cargo.toml")).is_ok_and(|t| t.contains("[workspace]"))
        })
        .expect("a workspace above the package")
        .to_path_buf()
}
