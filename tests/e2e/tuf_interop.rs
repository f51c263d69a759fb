//! Interoperability: the TUF repository that `palisade policy init/propose/approve/
//! publish` and `palisade release ...` write is loaded by python-tuf's reference
//! client (`tuf.ngclient.Updater`), which checks the same root chain, thresholds,
//! delegations, hashes and expiry independently of tough.
//!
//! Needs python-tuf: `python3 -m pip install tuf` (scripts/install-deps.sh does it).

mod common;

use common::palisade;
use std::path::Path;
use std::process::Command;

const CLIENT: &str = r#"
import os, sys
from tuf.ngclient import Updater, FetcherInterface
from tuf.api.exceptions import DownloadHTTPError

class FileFetcher(FetcherInterface):
    """Reads file:// URLs; a missing file is a 404, as from an HTTP mirror."""
    def _fetch(self, url):
        path = url[len("file://"):]
        try:
            with open(path, "rb") as f:
                return iter([f.read()])
        except FileNotFoundError:
            raise DownloadHTTPError("not found: " + path, 404)

repo, root, work = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(os.path.join(work, "meta"), exist_ok=True)
os.makedirs(os.path.join(work, "dl"), exist_ok=True)
with open(root, "rb") as f:
    trusted_root = f.read()
u = Updater(
    bootstrap=trusted_root,
    metadata_dir=os.path.join(work, "meta"),
    metadata_base_url="file://" + repo + "/metadata/",
    target_dir=os.path.join(work, "dl"),
    target_base_url="file://" + repo + "/targets/",
    fetcher=FileFetcher(),
)
u.refresh()
for name in sys.argv[4:]:
    info = u.get_targetinfo(name)
    if info is None:
        sys.exit("python-tuf: target not found: " + name)
    path = u.download_target(info)
    custom = info.custom or {}
    print(name, info.length, custom.get("version"), custom.get("author"), os.path.getsize(path))
# The root python-tuf verified (walking from the trusted one) carries the reviewers.
from tuf.api.metadata import Metadata
verified = Metadata.from_file(os.path.join(work, "meta", "root.json"))
trust = verified.signed.unrecognized_fields["x-palisade-trust"]
print("root version", verified.signed.version)
print("reviewers:", ",".join(r["name"] for r in trust["reviewers"]), "threshold", trust["threshold"])
"#;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run palisade");
    assert!(
        out.status.success(),
        "{:?} failed:\n{}\n{}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn proposal_id(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("proposal: "))
        .expect("proposal id in output")
        .trim()
        .to_string()
}

#[test]
fn repository_written_by_palisade_loads_with_python_tuf() {
    let has_tuf = Command::new("python3")
        .args(["-c", "import tuf.ngclient"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(has_tuf, "install python-tuf: python3 -m pip install tuf");

    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    let keys = tmp.path().join("keys");
    run(palisade()
        .args(["policy", "init", "--dev", "--repo"])
        .arg(&repo)
        .arg("--keys")
        .arg(&keys));

    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/policy/default.yaml");
    let text = std::fs::read_to_string(&policy).expect("default policy");
    let v2 = tmp.path().join("policy.yaml");
    std::fs::write(&v2, text.replacen("  version: 1\n", "  version: 2\n", 1)).expect("write");
    let out = run(palisade()
        .args(["policy", "propose", "--repo"])
        .arg(&repo)
        .arg("--key")
        .arg(keys.join("reviewers/alice.key"))
        .arg("--file")
        .arg(&v2));
    let id = proposal_id(&out);
    for who in ["bob", "carol"] {
        run(palisade()
            .args(["policy", "approve", "--proposal", &id, "--repo"])
            .arg(&repo)
            .arg("--key")
            .arg(keys.join("reviewers").join(format!("{who}.key")))
            .arg("--root")
            .arg(repo.join("metadata/1.root.json"))
            .arg("--datastore")
            .arg(tmp.path().join(format!("reviewer-{who}"))));
    }
    run(palisade()
        .args(["policy", "publish", "--proposal", &id, "--repo"])
        .arg(&repo)
        .arg("--keys")
        .arg(&keys));

    let artifact = tmp.path().join("etcd");
    std::fs::write(&artifact, b"etcd build").expect("artifact");
    let att = tmp.path().join("etcd.intoto.json");
    run(palisade()
        .args(["release", "attest", "--result", "PASSED", "--artifact"])
        .arg(&artifact)
        .arg("--key")
        .arg(keys.join("ci/ci.key"))
        .arg("--out")
        .arg(&att));
    let out = run(palisade()
        .args([
            "release",
            "propose",
            "--component",
            "etcd",
            "--version",
            "3.5.17",
            "--repo",
        ])
        .arg(&repo)
        .arg("--key")
        .arg(keys.join("reviewers/alice.key"))
        .arg("--artifact")
        .arg(&artifact)
        .arg("--attestation")
        .arg(&att));
    let rid = proposal_id(&out);
    for who in ["bob", "carol"] {
        run(palisade()
            .args(["release", "approve", "--proposal", &rid, "--repo"])
            .arg(&repo)
            .arg("--key")
            .arg(keys.join("reviewers").join(format!("{who}.key")))
            .arg("--root")
            .arg(repo.join("metadata/1.root.json"))
            .arg("--datastore")
            .arg(tmp.path().join(format!("reviewer-{who}"))));
    }
    run(palisade()
        .args(["release", "publish", "--proposal", &rid, "--repo"])
        .arg(&repo)
        .arg("--keys")
        .arg(&keys));

    // Reviewer dave joins through a root update signed by the root key.
    run(palisade()
        .args(["policy", "keygen", "--name", "dave", "--out"])
        .arg(keys.join("reviewers")));
    let mut update = palisade();
    update
        .args(["policy", "update-root", "--threshold", "2", "--repo"])
        .arg(&repo)
        .arg("--keys")
        .arg(&keys);
    for who in ["alice", "bob", "carol", "dave"] {
        update
            .arg("--reviewer")
            .arg(keys.join("reviewers").join(format!("{who}.pub")));
    }
    let out = run(&mut update);
    assert!(out.contains("root version 2 written"), "{out}");

    // Palisade's own verifiers accept it, starting from the first root...
    let root = repo.join("metadata/1.root.json");
    let ds = tmp.path().join("ds");
    let shown = run(palisade()
        .args(["policy", "show", "--repo"])
        .arg(&repo)
        .arg("--root")
        .arg(&root)
        .arg("--datastore")
        .arg(&ds));
    assert!(shown.contains("approvers: bob, carol"), "{shown}");
    run(palisade()
        .args([
            "release",
            "verify",
            "--component",
            "etcd",
            "--version",
            "3.5.17",
            "--repo",
        ])
        .arg(&repo)
        .arg("--root")
        .arg(&root)
        .arg("--artifact")
        .arg(&artifact)
        .arg("--datastore")
        .arg(&ds));

    // ...and so does python-tuf.
    let out = Command::new("python3")
        .arg("-c")
        .arg(CLIENT)
        .arg(&repo)
        .arg(&root)
        .arg(tmp.path().join("python-client"))
        .args(["policy/policy.yaml", "components/etcd/3.5.17/etcd"])
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python-tuf refused the repository:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("policy/policy.yaml") && stdout.contains(" 2 alice "),
        "{stdout}"
    );
    assert!(stdout.contains("components/etcd/3.5.17/etcd"), "{stdout}");
    assert!(stdout.contains("root version 2"), "{stdout}");
    assert!(
        stdout.contains("reviewers: alice,bob,carol,dave threshold 2"),
        "{stdout}"
    );
}
