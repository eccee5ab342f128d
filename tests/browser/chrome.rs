//! Debian's headless Chromium, driven over WebDriver by a chromedriver started for one test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::{Semaphore, SemaphorePermit};

use test_support::{Supervised, free_port};

/// What `apt-get install -y chromium chromium-driver` puts on a Debian machine.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const INSTALL_HINT: &str = "install them with `apt-get install -y chromium chromium-driver` \
                            (scripts/test does this when they are missing)";
/// How long chromedriver may take to report itself ready.
const DRIVER_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a page (argon2 in a debug build makes sign-ups slow) or an element on it.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(60);
/// The viewport: a phone's, so the pages are judged where space is tight. `--window-size` alone
/// does not get there (Chromium keeps windows at least 500 pixels wide), so the session also
/// emulates a phone screen of this size.
pub const VIEWPORT: (u32, u32) = (420, 900);

/// Browsers at once across the tests of this binary (two cores; each test also runs a dev host).
static BROWSERS: Semaphore = Semaphore::const_new(2);

/// Panics, naming the install command, when Chromium or chromedriver is missing: these tests
/// run in CI and must never pass by skipping.
pub fn require_installed() {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|path| !Path::new(path).is_file())
        .collect();
    assert!(
        missing.is_empty(),
        "the browser tests need Debian's Chromium and chromedriver, but {} missing: {INSTALL_HINT}",
        missing
            .iter()
            .map(|m| format!("{m} is"))
            .collect::<Vec<_>>()
            .join(" and ")
    );
}

/// A headless Chromium session with a fresh profile; its chromedriver and Chromium are killed
/// on drop (call [`Browser::close`] to end the session politely first).
pub struct Browser {
    pub client: Client,
    driver: Supervised,
    _profile: TempDir,
    _permit: SemaphorePermit<'static>,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a Chromium session through it.
    pub async fn open() -> Self {
        require_installed();
        let permit = BROWSERS
            .acquire()
            .await
            .expect("the browser gate is never closed");
        let profile = tempfile::tempdir().expect("create a Chromium profile directory");
        let port = free_port();
        let mut command = Command::new(CHROMEDRIVER);
        command.arg(format!("--port={port}"));
        let mut driver = Supervised::spawn(
            "chromedriver",
            command,
            &profile.path().join("chromedriver.log"),
        );
        let driver_url = format!("http://127.0.0.1:{port}");
        wait_until_ready(&mut driver, &driver_url).await;
        let capabilities = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": {"pageLoad": PAGE_TIMEOUT.as_millis() as u64, "script": 10_000, "implicit": 0},
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    format!("--window-size={},{}", VIEWPORT.0, VIEWPORT.1),
                    format!("--user-data-dir={}", profile.path().join("chromium").display()),
                ],
                "mobileEmulation": {
                    "deviceMetrics": {
                        "width": VIEWPORT.0,
                        "height": VIEWPORT.1,
                        "pixelRatio": 1.0,
                        "mobile": true,
                        "touch": true,
                    },
                },
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object")
        };
        let connect = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver_url)
            .await;
        let client = match connect {
            Ok(client) => client,
            Err(e) => panic!(
                "chromedriver could not start {CHROMIUM}: {e}; chromedriver's output:\n{}",
                driver.log_tail(40)
            ),
        };
        let browser = Self {
            client,
            driver,
            _profile: profile,
            _permit: permit,
        };
        let [screen, _, _] = browser.widths().await;
        assert_eq!(
            screen,
            u64::from(VIEWPORT.0),
            "the emulated screen is not a phone's width"
        );
        browser
    }

    /// `[screen, layout viewport, document]` widths in CSS pixels: the viewport matches the
    /// screen only on a page that asks for `width=device-width`, and the document is wider than
    /// the viewport when the page scrolls sideways.
    pub async fn widths(&self) -> [u64; 3] {
        let sizes = self
            .client
            .execute(
                "return [screen.width, window.innerWidth, document.documentElement.scrollWidth]",
                vec![],
            )
            .await
            .expect("measure the page");
        let size = |i: usize| {
            sizes[i]
                .as_u64()
                .unwrap_or_else(|| panic!("a width: {sizes}"))
        };
        [size(0), size(1), size(2)]
    }

    /// Opens `url` and waits for it to load.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The current URL.
    pub async fn url(&self) -> url::Url {
        self.client
            .current_url()
            .await
            .expect("read the current URL")
    }

    /// Waits (bounded) for an element matching `css`.
    pub async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(PAGE_TIMEOUT)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(e) => {
                let url = self.client.current_url().await.map(|u| u.to_string());
                let source = self.client.source().await.unwrap_or_default();
                let shot = self.screenshot("failure").await;
                panic!(
                    "no element matches {css:?} within {PAGE_TIMEOUT:?} ({e}); the window is in {}; \
                     at {url:?}:\n{source}",
                    shot.display()
                )
            }
        }
    }

    /// Elements matching `css` right now.
    pub async fn find_all(&self, css: &str) -> Vec<fantoccini::elements::Element> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find {css:?}: {e}"))
    }

    /// The visible text of the element matching `css` (waiting for it, bounded).
    pub async fn text(&self, css: &str) -> String {
        self.wait_for(css)
            .await
            .text()
            .await
            .unwrap_or_else(|e| panic!("read the text of {css:?}: {e}"))
    }

    /// The current value of the input matching `css`.
    pub async fn value(&self, css: &str) -> String {
        self.wait_for(css)
            .await
            .prop("value")
            .await
            .unwrap_or_else(|e| panic!("read the value of {css:?}: {e}"))
            .unwrap_or_default()
    }

    /// A computed style of the element matching `css`.
    pub async fn style(&self, css: &str, property: &str) -> String {
        self.wait_for(css)
            .await
            .css_value(property)
            .await
            .unwrap_or_else(|e| panic!("read {property} of {css:?}: {e}"))
    }

    /// Types `text` into the input matching `css`, as a person would.
    pub async fn type_into(&self, css: &str, text: &str) {
        let input = self.wait_for(css).await;
        input
            .clear()
            .await
            .unwrap_or_else(|e| panic!("clear {css:?}: {e}"));
        input
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into {css:?}: {e}"));
    }

    /// Clicks the element matching `css`.
    pub async fn click(&self, css: &str) {
        self.wait_for(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css:?}: {e}"));
    }

    /// Saves what the window shows to `target/screenshots/<name>.png` and returns the path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("take the {name} screenshot: {e}"));
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Ends the session (Chromium quits); the driver is stopped when `self` drops.
    pub async fn close(self) {
        if let Err(e) = self.client.clone().close().await {
            eprintln!(
                "closing the browser session failed: {e}; chromedriver's output:\n{}",
                self.driver.log_tail(20)
            );
        }
    }
}

/// `target/screenshots` (or under `CARGO_TARGET_DIR` when set).
pub fn screenshots_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("screenshots")
}

/// Polls chromedriver's `GET /status` until it reports ready (bounded).
async fn wait_until_ready(driver: &mut Supervised, url: &str) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("build an HTTP client");
    let started = Instant::now();
    loop {
        if let Some(status) = driver.exited() {
            panic!(
                "chromedriver exited ({status}) before it was ready; its output:\n{}",
                driver.log()
            );
        }
        let last = match client.get(format!("{url}/status")).send().await {
            Ok(res) => match res.json::<Value>().await {
                Ok(body) if body["value"]["ready"] == json!(true) => return,
                Ok(body) => body.to_string(),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        assert!(
            started.elapsed() < DRIVER_READY_TIMEOUT,
            "chromedriver was not ready within {DRIVER_READY_TIMEOUT:?} (last: {last}); its output:\n{}",
            driver.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
