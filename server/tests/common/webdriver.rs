//! A small W3C WebDriver client over the real `chromedriver` and headless Chromium (Debian's
//! `chromium` and `chromium-driver`): navigate, find, click, type, read, run a script, and
//! save a screenshot of each step under `target/e2e/`. Waits are bounded polls.

use base64::Engine;
use serde_json::{json, Value};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// WebDriver's codes for special keys.
pub mod keys {
    pub const ENTER: &str = "\u{E007}";
    pub const LEFT: &str = "\u{E012}";
    pub const UP: &str = "\u{E013}";
    pub const RIGHT: &str = "\u{E014}";
    pub const DOWN: &str = "\u{E015}";
    pub const HOME: &str = "\u{E011}";
}

pub struct Browser {
    http: reqwest::Client,
    url: String,
    driver: Child,
    _profile: tempfile::TempDir,
    shots: PathBuf,
    step: u32,
}

/// Ends the session first (chromedriver then closes Chromium; killed alone, it would leave
/// the browser running), also when a test panicked: a plain blocking HTTP request, as drop
/// cannot wait on async work.
impl Drop for Browser {
    fn drop(&mut self) {
        use std::io::{Read, Write};
        if let Some((addr, path)) = self
            .url
            .strip_prefix("http://")
            .and_then(|u| u.split_once('/'))
        {
            if let Ok(mut conn) = std::net::TcpStream::connect(addr) {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(20)));
                let _ = write!(
                    conn,
                    "DELETE /{path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                // Until the whole answer is in (chromedriver may keep the connection open).
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = conn.read(&mut buf) {
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got);
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            break;
                        }
                    }
                }
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn need(bin: &str, package: &str) -> String {
    let path = format!("/usr/bin/{bin}");
    assert!(
        std::path::Path::new(&path).is_file(),
        "{path} is missing: `cargo xtask prereqs` installs Debian's {package}"
    );
    path
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium session; the
    /// screenshots go to `target/e2e/NAME/`.
    pub async fn start(name: &str) -> Browser {
        let chromium = need("chromium", "chromium");
        // Its default: connections from this machine only.
        let mut driver = Command::new(need("chromedriver", "chromium-driver"))
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let out = driver.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Read on for as long as it runs: a closed pipe would end it at its next line.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(p) = line.strip_prefix("ChromeDriver was started successfully on port ")
                {
                    let _ = tx.send(p.trim_end_matches('.').parse::<u16>().unwrap());
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("chromedriver says its port within 20 s");
        let profile = tempfile::tempdir().unwrap();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                format!("--user-data-dir={}", profile.path().display()),
            ]}
        }}});
        let base = format!("http://127.0.0.1:{port}");
        let session: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .unwrap();
        let id = session["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {session}"))
            .to_string();
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap()
            .join("e2e")
            .join(name);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            http,
            url: format!("{base}/session/{id}"),
            driver,
            _profile: profile,
            shots,
            step: 0,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        v["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// The element matching `css`, once there is one (at most 20 s).
    pub async fn find(&self, css: &str) -> String {
        let start = Instant::now();
        loop {
            let v = self
                .call(
                    reqwest::Method::POST,
                    "/element",
                    Some(json!({"using": "css selector", "value": css})),
                )
                .await;
            if let Some(id) = v[ELEMENT].as_str() {
                return id.to_string();
            }
            if start.elapsed() > Duration::from_secs(20) {
                let page = self.call(reqwest::Method::GET, "/source", None).await;
                panic!("no element {css} within 20 s ({v}); the page:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How many elements match `css` now.
    pub async fn count(&self, css: &str) -> usize {
        let v = self
            .call(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v.as_array().map_or(0, Vec::len)
    }

    pub async fn click(&self, css: &str) {
        let el = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{el}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Types `text` into the element (WebDriver focuses it first).
    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{el}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Empties an input.
    pub async fn clear(&self, css: &str) {
        let el = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{el}/clear"),
            Some(json!({})),
        )
        .await;
    }

    pub async fn text(&self, css: &str) -> String {
        let el = self.find(css).await;
        self.call(reqwest::Method::GET, &format!("/element/{el}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn attribute(&self, css: &str, name: &str) -> Option<String> {
        let el = self.find(css).await;
        self.call(
            reqwest::Method::GET,
            &format!("/element/{el}/attribute/{name}"),
            None,
        )
        .await
        .as_str()
        .map(String::from)
    }

    /// Waits (at most 20 s) until the text of `css` contains `want`; returns it.
    pub async fn wait_text(&self, css: &str, want: &str) -> String {
        let start = Instant::now();
        loop {
            if self.count(css).await > 0 {
                let t = self.text(css).await;
                if t.contains(want) {
                    return t;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "{css} says {t:?}, not {want:?}"
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no {css} within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `script` in the page (`return …` for a value; async via the last argument).
    pub async fn run_async(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/async",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Saves a screenshot as `target/e2e/NAME/NN-what.png`.
    pub async fn shot(&mut self, what: &str) {
        self.step += 1;
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or_default())
            .expect("a PNG in base64");
        std::fs::write(
            self.shots.join(format!("{:02}-{what}.png", self.step)),
            bytes,
        )
        .unwrap();
    }
}
