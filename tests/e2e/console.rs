//! The customer's console in a real browser: headless Chromium (Debian's `chromium`)
//! driven through WebDriver (`chromedriver`), against the stack `palisade up`
//! runs. The demo tenant signs in with the link `up` prints, sees the actions the
//! test ran verified in the page (by the WebAssembly verifier), finds a pending
//! approval request with the command that approves it, and sees the red banner when
//! the log's server serves a tampered entry or a log other than the one this browser
//! verified before.
//!
//! With `PALISADE_CONSOLE_SCREENSHOTS=DIR`, the main views are saved there as PNG
//! (docs/console/ keeps them: see docs/operations.md#the-console).

#[path = "../e2e/common.rs"]
mod common;
#[path = "../agent/harness.rs"]
mod harness;
#[path = "../e2e/webdriver.rs"]
mod webdriver;

use common::palisade;
use harness::Stack;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};
use webdriver::Browser;

fn op(stack: &Stack, args: &[&str]) -> Output {
    palisade()
        .arg("op")
        .arg("--credentials")
        .arg(stack.dir.join("op/credentials.json"))
        .args(args)
        .output()
        .expect("run palisade op")
}

fn said(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `etcd.defragment` on demo-0 with `ticket`: it waits for the customer's approval.
/// What `op run` said.
fn defragment_awaiting_approval(stack: &Stack, ticket: &str) -> String {
    let waiting = op(
        stack,
        &[
            "run",
            "etcd.defragment",
            "--cluster",
            "demo",
            "--instance",
            "demo-0",
            "--ticket",
            ticket,
            "--reason",
            "reclaim space after the compaction",
        ],
    );
    let text = said(&waiting);
    assert!(text.contains("awaiting_approval"), "{text}");
    text
}

/// Reloads the page, so that the next `verification()` is the new page's.
fn reload(browser: &Browser) {
    browser.script("delete document.body.dataset.verification; location.reload()");
}

/// Waits until the element `css` selects shows `needle`; returns its text.
fn wait_text(browser: &Browser, css: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let t = browser.text(css);
        if t.contains(needle) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "{css} never showed {needle:?}: {t:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The console's login link `palisade up` printed.
fn login_link(stack: &mut Stack) -> String {
    let up = stack.up.as_mut().expect("palisade up runs");
    up.drain();
    up.seen
        .iter()
        .find_map(|l| {
            l.trim()
                .strip_prefix("https://")
                .filter(|l| l.contains("/console/#"))
        })
        .map(|l| format!("https://{l}"))
        .unwrap_or_else(|| panic!("no console link in:\n{}", up.seen.join("\n")))
}

/// What the relay changes: in answers to paths containing `.0`, `.1` becomes `.2`
/// (in place when of the same length, so an entry bundle's framing stays valid).
type Rules = std::sync::Arc<std::sync::Mutex<Vec<(&'static str, &'static str, &'static str)>>>;

/// A relay in front of the gateway, on plain HTTP (a loopback page is a secure
/// context): it passes everything through, except what `rules` say to change. The
/// page then sees a gateway and log that serve what an insider wants it to see.
fn tampering_relay(gateway: &str, ca: &Path, rules: Rules) -> u16 {
    let http = harness::GatewayClient::new(gateway, ca).http();
    let gateway = gateway.to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr").port())
                .expect("port");
            let relay = move |req: axum::extract::Request| {
                let (http, gateway, rules) = (http.clone(), gateway.clone(), rules.clone());
                async move {
                    let path = req
                        .uri()
                        .path_and_query()
                        .map(|p| p.as_str().to_string())
                        .unwrap_or_default();
                    let method = req.method().clone();
                    let mut out = http.request(method, format!("{gateway}{path}"));
                    for h in ["authorization", "content-type"] {
                        if let Some(v) = req.headers().get(h) {
                            out = out.header(h, v.as_bytes());
                        }
                    }
                    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                        .await
                        .expect("request body");
                    out = out.body(body.to_vec());
                    let r = out.send().await.expect("the gateway answers");
                    let status = r.status().as_u16();
                    let headers: Vec<(String, Vec<u8>)> = r
                        .headers()
                        .iter()
                        .filter(|(k, _)| {
                            ["content-type", "content-security-policy"].contains(&k.as_str())
                        })
                        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                        .collect();
                    let mut body = r.bytes().await.expect("body").to_vec();
                    let rules = rules.lock().expect("rules").clone();
                    for (on, from, to) in rules {
                        if !path.contains(on) {
                            continue;
                        }
                        let (from, to) = (from.as_bytes(), to.as_bytes());
                        if from.len() == to.len() {
                            let mut i = 0;
                            while i + from.len() <= body.len() {
                                if &body[i..i + from.len()] == from {
                                    body[i..i + from.len()].copy_from_slice(to);
                                }
                                i += 1;
                            }
                        } else {
                            body = String::from_utf8_lossy(&body)
                                .replace(
                                    std::str::from_utf8(from).expect("text"),
                                    std::str::from_utf8(to).expect("text"),
                                )
                                .into_bytes();
                        }
                    }
                    let mut resp = axum::response::Response::builder().status(status);
                    for (k, v) in headers {
                        resp = resp.header(k, v);
                    }
                    resp.body(axum::body::Body::from(body)).expect("response")
                }
            };
            let app = axum::Router::new().fallback(relay);
            axum::serve(listener, app).await.expect("serve");
        });
    });
    rx.recv().expect("the relay's port")
}

#[test]
fn the_console_verifies_the_log_in_the_browser_and_names_what_fails() {
    let mut stack = Stack::start_with_customer_approval();
    let link = login_link(&mut stack);
    let ran = op(
        &stack,
        &[
            "run",
            "etcd.status",
            "--cluster",
            "demo",
            "--ticket",
            "CONSOLE-1",
            "--reason",
            "the console shows this",
        ],
    );
    assert!(ran.status.success(), "{}", said(&ran));
    let waiting_text = defragment_awaiting_approval(&stack, "CONSOLE-2");

    let browser = Browser::start();
    assert!(
        link.contains("#code="),
        "a one-time code, not the token: {link}"
    );
    browser.open(&link);
    assert_eq!(browser.verification(), "ok", "{}", browser.text("body"));
    // The code left the address bar with the fragment, and works once.
    let url = browser.script("return location.href");
    assert!(!url.as_str().unwrap_or_default().contains("code="), "{url}");
    browser.open("about:blank");
    browser.open(&link);
    assert_eq!(browser.verification(), "failed");
    let banner = browser.text("#banner");
    assert!(banner.contains("used already"), "{banner}");
    // The session it opened goes on in this tab.
    reload(&browser);
    assert_eq!(browser.verification(), "ok", "{}", browser.text("body"));
    // It reads, but cannot change the tenant's settings nor make itself new links.
    let session = browser
        .script("return JSON.parse(sessionStorage.getItem('palisade.session')).token")
        .as_str()
        .expect("a session token")
        .to_string();
    assert!(session.starts_with("pcs_"), "{session}");
    let gw = harness::GatewayClient::new(
        &format!("https://127.0.0.1:{}", stack.base),
        &stack.dir.join("pki/ca.crt"),
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let t = "/v1/tenants/demo/clusters/demo";
    for (method, path, body) in [
        ("GET", format!("{t}/events?limit=1"), None),
        (
            "PUT",
            format!("{t}/webhook"),
            Some(serde_json::json!({"url": "https://attacker.example/"})),
        ),
        ("DELETE", format!("{t}/webhook"), None),
        ("POST", format!("{t}/console-link"), None),
    ] {
        let (status, answer) = rt.block_on(gw.call(method, &path, Some(&session), body));
        let want = if method == "GET" { 200 } else { 403 };
        assert_eq!(
            status, want,
            "{method} {path} with a console session: {answer}"
        );
    }
    let status = browser.text("#status");
    assert!(status.contains("Verified in this browser"), "{status}");
    let list = browser.text("#list");
    assert!(list.contains("etcd.status"), "{list}");
    assert!(list.contains("CONSOLE-1"), "{list}");
    assert!(
        list.contains("verified: the agent's signature"),
        "the agent's signature on the result is checked in the page: {list}"
    );
    assert!(list.contains("approval_request"), "{list}");
    assert!(list.contains("pending"), "{list}");
    let panel = browser.text("#verification");
    assert!(panel.contains("palisade.local/witness"), "{panel}");
    assert!(panel.contains("tenant-demo.example/witness"), "{panel}");
    assert!(panel.contains("every one a tree of this log"), "{panel}");
    assert!(
        panel.contains("1 signed by your tenant key (verified here)"),
        "{panel}"
    );
    let approvals = browser.text("#approvals");
    assert!(
        approvals.contains("etcd.defragment on demo-0"),
        "{approvals}"
    );
    assert!(approvals.contains("(verified)"), "{approvals}");
    assert!(
        approvals.contains("palisade customer approve"),
        "{approvals}"
    );
    browser.screenshot("overview.png");

    // Filters and the keyboard.
    browser.script(
        "const f = document.getElementById('f-text'); f.value = 'CONSOLE-1'; \
         f.dispatchEvent(new Event('input'));",
    );
    let count = browser.text("#count");
    assert!(count.starts_with("2 of "), "intent and result: {count}");
    browser.script("document.getElementById('list').focus()");
    let selected =
        || browser.script("return document.querySelector('[aria-selected=true]').dataset.index");
    let first = selected();
    browser.press("\u{E015}"); // ArrowDown
    assert_ne!(selected(), first, "ArrowDown moves the selection");
    assert!(
        browser.text("#detail").contains("Entry "),
        "{}",
        browser.text("#detail")
    );
    browser.script("document.getElementById('timeline').scrollIntoView()");
    browser.screenshot("timeline.png");
    browser.script(
        "const f = document.getElementById('f-text'); f.value = ''; \
         f.dispatchEvent(new Event('input'));",
    );

    // The customer approves in the page, with an approver key imported into the
    // browser's key store, and sees the action run.
    let id = waiting_text
        .split_whitespace()
        .find(|w| w.len() == 32 && w.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("an operation id in: {waiting_text}"))
        .to_string();
    assert!(approvals.contains(&id), "{approvals}");
    let wrong_key = stack.dir.join("gateway/keys/gateway.key");
    browser.type_into(&format!("#key-{id}"), &wrong_key.display().to_string());
    browser.click(&format!("#approve-{id}"));
    let shown = wait_text(&browser, &format!("#result-{id}"), "Not sent");
    assert!(
        shown.contains("none of the approvers"),
        "a key that is not an approver's is refused in the page: {shown}"
    );
    let key = stack.dir.join("tenant-demo/approvers/ana.key");
    browser.script(&format!("document.getElementById('key-{id}').value = ''"));
    browser.type_into(&format!("#key-{id}"), &key.display().to_string());
    browser.click(&format!("#approve-{id}"));
    let shown = wait_text(&browser, &format!("#result-{id}"), "Approved");
    assert!(shown.contains("as ana"), "{shown}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        reload(&browser);
        assert_eq!(browser.verification(), "ok", "{}", browser.text("body"));
        let list = browser.text("#list");
        if list.contains("approved") && list.contains("etcd.defragment") {
            break;
        }
        assert!(Instant::now() < deadline, "never approved: {list}");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(browser.text("#approvals").contains("No request awaits"));

    // A browser that verified another log before sees a fork.
    browser.script(
        "for (const k of Object.keys(localStorage)) if (k.startsWith('palisade.seen.')) \
         localStorage.setItem(k, JSON.stringify({size: 2, root: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='}));",
    );
    reload(&browser);
    assert_eq!(browser.verification(), "failed");
    let banner = browser.text("#banner");
    assert!(banner.contains("consistency"), "{banner}");
    assert!(banner.contains("a fork"), "{banner}");
    // ... and one that verified a larger log sees it rolled back.
    browser.script(
        "for (const k of Object.keys(localStorage)) if (k.startsWith('palisade.seen.')) \
         localStorage.setItem(k, JSON.stringify({size: 100000, root: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='}));",
    );
    reload(&browser);
    assert_eq!(browser.verification(), "failed");
    let banner = browser.text("#banner");
    assert!(banner.contains("rolled back"), "{banner}");
    browser.script(
        "for (const k of Object.keys(localStorage)) if (k.startsWith('palisade.seen.')) \
         localStorage.removeItem(k);",
    );

    // Through a relay an insider controls, on one origin: first honest.
    let rules: Rules = Default::default();
    let relay = tampering_relay(
        &format!("https://127.0.0.1:{}", stack.base),
        &stack.dir.join("pki/ca.crt"),
        rules.clone(),
    );
    defragment_awaiting_approval(&stack, "CONSOLE-3");
    // A new one-time link (the first is spent), made by the tenant's command with
    // the log's keys: it carries the same keys `up`'s link did.
    let d = stack.dir.display().to_string();
    let minted = palisade()
        .args(["customer", "console-link"])
        .args(["--gateway", &format!("https://127.0.0.1:{}", stack.base)])
        .args(["--ca", &format!("{d}/pki/ca.crt")])
        .args(["--token", &format!("@{d}/tenant-demo.token")])
        .args(["--tenant", "demo", "--cluster", "demo"])
        .args(common::demo_log_trust(&stack.dir))
        .args([
            "--witness-key",
            &format!("@{d}/tenant-demo/witness/keys/tenant-demo.example_witness.pub"),
        ])
        .args(["--tenant-key", &format!("{d}/tenant-demo/tenant.pub")])
        .output()
        .expect("customer console-link");
    assert!(minted.status.success(), "{}", said(&minted));
    let minted = String::from_utf8_lossy(&minted.stdout).trim().to_string();
    let fragment = minted.split_once('#').expect("a fragment").1;
    let (code, trust) = fragment.split_once("&trust=").expect("keys in the link");
    let trust = format!("trust={trust}");
    assert!(
        link.ends_with(&format!("&{trust}")),
        "the tenant's link pins what up's did:\n{link}\n{minted}"
    );
    browser.open(&format!("http://127.0.0.1:{relay}/console/#{code}&{trust}"));
    assert_eq!(browser.verification(), "ok", "{}", browser.text("body"));
    let rows = || {
        browser
            .script("return document.querySelectorAll('#list .row').length")
            .as_u64()
            .unwrap_or_default()
    };
    assert!(rows() > 0, "the honest log's entries are shown");
    let offered = browser.text("#approvals");
    assert!(offered.contains("CONSOLE-3"), "{offered}");

    // The gateway's list of requests names another entry: the page offers nothing
    // to approve, whatever the list says.
    rules.lock().expect("rules").push((
        "/approvals",
        "\"digest\":\"sha256:",
        "\"digest\":\"sha256:0",
    ));
    reload(&browser);
    assert_eq!(browser.verification(), "ok", "{}", browser.text("body"));
    let offered = wait_text(&browser, "#approvals", "NOT in the verified log");
    assert!(!offered.contains("CONSOLE-3"), "{offered}");
    assert_eq!(
        browser.script("return document.querySelectorAll('#approvals button').length"),
        0,
        "no approve button for a request the log does not hold"
    );
    rules.lock().expect("rules").clear();

    // The log's entry, changed on its way to the page (the ticket of the first
    // action): the page refuses the whole log, says why, and shows no entry.
    rules
        .lock()
        .expect("rules")
        .push(("/log/tile/entries/", "CONSOLE-1", "CONSOLE-9"));
    reload(&browser);
    assert_eq!(browser.verification(), "failed", "{}", browser.text("body"));
    let banner = browser.text("#banner");
    assert!(banner.contains("Verification failed"), "{banner}");
    assert!(banner.contains("inclusion"), "{banner}");
    assert!(banner.contains("an entry was changed"), "{banner}");
    assert_eq!(rows(), 0, "a log that does not verify shows no entries");
    assert!(
        browser.text("#approvals").is_empty() || !browser.text("#approvals").contains("CONSOLE-3")
    );
    browser.screenshot("tampered.png");
}
