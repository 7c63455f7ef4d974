//! A headless Chromium driven over WebDriver (`chromedriver` on a free loopback port, the
//! `fantoccini` client), with the few waits and screenshots the scenarios need.

use std::{
    io::Write,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator, elements::Element};
use serde_json::json;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long a page may take to show what a scenario waits for.
const PATIENCE: Duration = Duration::from_secs(15);

/// One browser at a time: each is a few hundred MB, and the machine has two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `HOOKD_REQUIRE_BROWSER=1` (set by CI) turns a missing browser into a failure.
fn browser_required() -> bool {
    std::env::var("HOOKD_REQUIRE_BROWSER").is_ok_and(|v| v == "1")
}

pub struct Browser {
    pub client: Client,
    /// The hookd under test, e.g. `http://127.0.0.1:41234`.
    base: String,
    /// Names the screenshots: `<scenario>-<page>.png`.
    scenario: &'static str,
    driver: Child,
    _profile: tempfile::TempDir,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

impl Browser {
    /// A fresh browser (empty profile) for `scenario` against the hookd at `base`, or `None`
    /// when Chromium is not installed and not required (the skip is said on stderr).
    pub async fn open(scenario: &'static str, base: &str) -> Option<Browser> {
        Browser::open_with(scenario, base, &[]).await
    }

    /// As [`Browser::open`], with extra Chromium flags (e.g. a dark colour scheme).
    pub async fn open_with(scenario: &'static str, base: &str, flags: &[&str]) -> Option<Browser> {
        if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
            assert!(
                !browser_required(),
                "HOOKD_REQUIRE_BROWSER=1 but {CHROMIUM} or {CHROMEDRIVER} is missing"
            );
            // Past the harness's capture, so a passing run says plainly what it did not test.
            let _ = writeln!(
                std::io::stderr(),
                "\nSKIPPED: browser tests need chromium and chromium-driver \
                 (apt-get install chromium chromium-driver); scenario {scenario}\n"
            );
            return None;
        }
        let turn = ONE_AT_A_TIME.lock().await;
        let port = free_port();
        // Its own process group, so that Chromium, its child, goes down with it.
        let driver = Command::new(CHROMEDRIVER)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().expect("profile dir");
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
        ]
        .iter()
        .chain(flags)
        .map(|flag| flag.to_string())
        .collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        });
        let capabilities = match capabilities {
            serde_json::Value::Object(map) => map,
            _ => unreachable!("built as an object"),
        };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + PATIENCE;
        let client = loop {
            match ClientBuilder::rustls()
                .expect("client builder")
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "chromedriver never answered: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        Some(Browser {
            client,
            base: base.to_string(),
            scenario,
            driver,
            _profile: profile,
            _turn: turn,
        })
    }

    pub async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .expect("page loads");
    }

    pub async fn path(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("current url")
            .path()
            .to_string()
    }

    pub async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|error| panic!("no element {css}: {error}"))
    }

    /// Replaces the text of the input or textarea `css`.
    pub async fn fill(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        element.clear().await.expect("clear");
        element.send_keys(text).await.expect("type");
    }

    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("click");
    }

    /// Waits until the element `css` shows `needle`, and returns its text.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await
                && let Ok(text) = element.text().await
                && text.contains(needle)
            {
                return text;
            }
            if Instant::now() > deadline {
                let page = self.client.source().await.unwrap_or_default();
                panic!("{css} never showed {needle:?}; page:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Signs in through the form with `key`.
    /// Sets the window's size, e.g. a phone's width.
    pub async fn resize(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("resize");
    }

    /// Returns once the form answered: the dashboard left the sign-in page, or the key's error
    /// shows. (Returning at the click let a test's next `goto` race the sign-in's own redirect,
    /// which then replaced the page the test went to.)
    pub async fn sign_in(&self, key: &str) {
        self.goto("/ui/signin").await;
        self.fill("#key", key).await;
        self.click("button[type=submit]").await;
        let deadline = Instant::now() + PATIENCE;
        loop {
            if self.path().await != "/ui/signin" {
                return;
            }
            if let Ok(error) = self.client.find(Locator::Css("#key-error")).await
                && let Ok(text) = error.text().await
                && !text.trim().is_empty()
            {
                return;
            }
            assert!(Instant::now() < deadline, "signing in never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves the whole page as `target/ui-screenshots/<scenario>-<page>.png`: the window grows
    /// to the page's height for the shot (WebDriver captures only the window), then shrinks back.
    pub async fn screenshot(&self, page: &str) {
        let (width, height) = self.client.get_window_size().await.expect("window size");
        let (width, height) = (width as u32, height as u32);
        let full = self
            .client
            .execute(
                "window.scrollTo(0, 0); return document.documentElement.scrollHeight \
                 + window.outerHeight - window.innerHeight;",
                vec![],
            )
            .await
            .ok()
            .and_then(|h| h.as_u64())
            .map_or(height, |h| (h as u32).clamp(height, 5_000));
        self.client
            .set_window_size(width, full)
            .await
            .expect("resize");
        let png = self.client.screenshot().await.expect("screenshot");
        self.client
            .set_window_size(width, height)
            .await
            .expect("resize back");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{}-{page}.png", self.scenario)), png)
            .expect("screenshot written");
    }

    /// Ends the WebDriver session (Chromium exits with it); the driver goes on drop.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

/// Where screenshots land: `target/ui-screenshots` (or under `CARGO_TARGET_DIR`).
pub fn screenshot_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("ui-screenshots")
}

impl Drop for Browser {
    /// Ends the driver's whole process group: a scenario that panicked never reached `close`,
    /// and its Chromium must not outlive it.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
    }
}
