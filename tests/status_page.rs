//! The status page in a real headless browser (Debian's Chromium): after its
//! script ran, the DOM holds the ring as SVG arcs and a row for every
//! member, and a member that stops answering shows as dead. Also writes a
//! screenshot (to `STATUS_PAGE_SCREENSHOT` when set; the README's is
//! `tests/screenshots/status-page.png`, made this way).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::http::get;
use common::{NodeProc, run_tool, start_ring, wait_until};

const CHROMIUM: &str = "/usr/bin/chromium";

/// How long one browser run may take before the test gives up on it.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);

/// Runs headless Chromium on `url` with `extra` arguments (a fresh profile
/// each time, nothing fetched but the page); returns its standard output.
fn chromium(url: &str, extra: &[&str]) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "this test needs a real browser at {CHROMIUM}: apt-get install chromium"
    );
    let profile = tempfile::tempdir().unwrap();
    let out = tempfile::NamedTempFile::new().unwrap();
    let err = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(out.reopen().unwrap())
        .stderr(err.reopen().unwrap())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium {extra:?} {url} did not finish within {BROWSER_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(err.path()).unwrap_or_default();
    assert!(
        status.success(),
        "chromium {extra:?} {url} exited with {status}; its last words:\n{}",
        log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    std::fs::read_to_string(out.path()).unwrap()
}

/// The DOM after the page's script ran.
fn rendered(url: &str) -> String {
    chromium(url, &["--dump-dom"])
}

/// Takes a 1200x800 screenshot of `url` into `path` and checks it is a PNG.
fn screenshot(url: &str, path: &Path) {
    let _ = std::fs::remove_file(path);
    chromium(
        url,
        &[
            &format!("--screenshot={}", path.display()),
            "--window-size=1200,800",
        ],
    );
    let png = std::fs::read(path).expect("chromium wrote no screenshot");
    assert!(png.len() > 1000, "a screenshot of {} bytes", png.len());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
}

/// Members shown with `status` in the table (the legend says each once, in
/// another form).
fn badges(dom: &str, status: &str) -> usize {
    dom.matches(&format!("background: var(--{status})\">{status}</span>"))
        .count()
}

/// `/status.json` of `node`, as text.
fn status_of(node: &NodeProc) -> String {
    get(node.http.unwrap(), "/status.json")
        .map(|a| a.body)
        .unwrap_or_default()
}

#[test]
fn the_status_page_draws_the_ring_and_every_member_and_shows_a_dead_one() {
    let nodes = start_ring(3, &["--http", "127.0.0.1:0", "--failure-timeout", "2"]);
    let first = nodes[0].addr.to_string();
    assert_eq!(run_tool("storeprimer", &["--peer", &first], None).0, 0);
    // 26 keys, 3 copies each, every member answering.
    assert!(
        wait_until(Duration::from_secs(20), || {
            let status = status_of(&nodes[0]);
            status.contains("\"reachable\":3") && status.contains("\"keys\":78")
        }),
        "{}",
        status_of(&nodes[0])
    );
    let url = format!("http://{}/", nodes[0].http.unwrap());

    let dom = rendered(&url);
    for node in &nodes {
        assert!(
            dom.contains(&node.addr.to_string()),
            "no {} in\n{dom}",
            node.addr
        );
    }
    assert!(dom.contains("<svg"), "{dom}");
    // The arcs are drawn by the script from /status.json: it ran.
    assert!(dom.matches("<path").count() >= 3, "no arcs drawn:\n{dom}");
    assert_eq!(badges(&dom, "alive"), 3, "{dom}");
    assert!(dom.contains(">78<"), "no total of 78 copies:\n{dom}");
    assert!(dom.contains("updated "), "{dom}");

    let dir = tempfile::tempdir().unwrap();
    screenshot(&url, &dir.path().join("healthy.png"));

    // A member stops answering: the page shows it dead, its arcs red.
    let paused = nodes[2].pause();
    let dead = format!("{{\"addr\":\"{}\",\"status\":\"dead\"", nodes[2].addr);
    assert!(
        wait_until(Duration::from_secs(20), || status_of(&nodes[0])
            .contains(&dead)),
        "{}",
        status_of(&nodes[0])
    );
    let dom = rendered(&url);
    assert_eq!(badges(&dom, "dead"), 1, "{dom}");
    assert!(dom.contains("declared dead"), "{dom}");
    assert_eq!(badges(&dom, "alive"), 2, "{dom}");
    let shot = std::env::var_os("STATUS_PAGE_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.path().join("one-dead.png"));
    screenshot(&url, &shot);
    paused.resume();
}
