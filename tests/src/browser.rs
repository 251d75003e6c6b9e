//! A real browser for the UI tests: Debian's headless Chromium, driven
//! over the Chrome DevTools Protocol (a websocket, JSON commands) by a small
//! synchronous client.
//!
//! [`Browser::launch`] starts `chromium --headless=new` on a free debugging
//! port with a profile in a temporary dir, opens one page and attaches to
//! it. Commands wait for their answer (events are skipped); every read has
//! a timeout, so a browser that stops answering fails the test instead of
//! hanging it. `window.confirm` answers yes on every page (the UI asks
//! before destructive actions). Dropping the browser closes and kills it.
//!
//! [`require_browser`] decides whether a UI test runs: with `CI=true` a
//! missing Chromium fails the test (`.ci/run` installs it); elsewhere the
//! test is skipped with a printed reason.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::wait::DEADLINE;

/// How long one DevTools command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The Chromium binary, if one is installed.
pub fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MESETA_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// A browser for `what`, or `None` (printed) when none is installed outside
/// CI. Panics in CI without one.
pub fn require_browser(what: &str) -> Option<Browser> {
    if chromium().is_none() {
        if crate::in_ci() {
            panic!("{what} needs Chromium in CI (.ci/run installs Debian's chromium)");
        }
        println!("skipping {what}: no chromium installed (apt-get install chromium)");
        return None;
    }
    match Browser::launch() {
        Ok(b) => Some(b),
        Err(e) => panic!("{what}: chromium did not start: {e:#}"),
    }
}

/// Where a test's screenshots go: `$CARGO_TARGET_DIR/ui-screenshots/<test>/`
/// (kept after the run, so a person can look at them).
pub fn screenshot_dir(test: &str) -> PathBuf {
    let dir = crate::binary::target_dir()
        .join("ui-screenshots")
        .join(test);
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A headless Chromium with one page attached.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
}

impl Browser {
    /// Starts Chromium and attaches to a fresh page (1280×800).
    pub fn launch() -> Result<Browser> {
        let binary = chromium().ok_or_else(|| anyhow!("no chromium installed"))?;
        let profile = tempfile::Builder::new()
            .prefix("meseta-chromium-")
            .tempdir()
            .context("creating the browser profile dir")?;
        let mut child = Command::new(&binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--remote-debugging-port=0",
                "--window-size=1280,800",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stderr = child.stderr.take().context("chromium's stderr")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Read until the DevTools address shows, then keep draining.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("ws://") {
                    let _ = tx.send(line[i..].trim().to_string());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("chromium printed no DevTools address within 30 s");
            }
        };
        let (ws, _) = tungstenite::connect(url.as_str())
            .with_context(|| format!("connecting to the DevTools websocket {url}"))?;
        if let MaybeTlsStream::Plain(tcp) = ws.get_ref() {
            tcp.set_read_timeout(Some(COMMAND_TIMEOUT))
                .context("setting the websocket read timeout")?;
        }
        let mut browser = Browser {
            child,
            _profile: profile,
            ws,
            session: String::new(),
            next_id: 0,
        };
        let target = browser.command("Target.createTarget", json!({"url": "about:blank"}))?;
        let target_id = target["targetId"]
            .as_str()
            .ok_or_else(|| anyhow!("Target.createTarget gave no targetId: {target}"))?
            .to_string();
        let attached = browser.command(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        )?;
        browser.session = attached["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("Target.attachToTarget gave no sessionId: {attached}"))?
            .to_string();
        browser.call("Page.enable", json!({}))?;
        browser.call(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({"source": "window.confirm = function () { return true; };"}),
        )?;
        browser.viewport(1280, 800, false)?;
        Ok(browser)
    }

    /// A command to the browser itself (no session).
    fn command(&mut self, method: &str, params: Value) -> Result<Value> {
        self.send(method, params, None)
    }

    /// A command to the attached page.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        let session = self.session.clone();
        self.send(method, params, Some(session))
    }

    fn send(&mut self, method: &str, params: Value, session: Option<String>) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .with_context(|| format!("sending {method}"))?;
        let start = Instant::now();
        loop {
            if start.elapsed() > COMMAND_TIMEOUT {
                bail!("{method}: no answer within {COMMAND_TIMEOUT:?}");
            }
            let frame = self
                .ws
                .read()
                .with_context(|| format!("waiting for the answer to {method}"))?;
            let Message::Text(text) = frame else { continue };
            let v: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
            if v["id"] != id {
                continue; // an event, or another answer
            }
            if let Some(e) = v.get("error") {
                bail!("{method}: {e}");
            }
            return Ok(v["result"].clone());
        }
    }

    /// The page's viewport size (`mobile` for a phone-sized window).
    pub fn viewport(&mut self, width: u32, height: u32, mobile: bool) -> Result<()> {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        )?;
        Ok(())
    }

    /// Evaluates `js` in the page (promises awaited); its value as JSON.
    pub fn eval(&mut self, js: &str) -> Result<Value> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        )?;
        if let Some(e) = r.get("exceptionDetails") {
            bail!("evaluating {js}: {e}");
        }
        Ok(r["result"]["value"].clone())
    }

    /// Loads `url` and waits until the document is complete.
    pub fn goto(&mut self, url: &str) -> Result<()> {
        let r = self.call("Page.navigate", json!({"url": url}))?;
        if let Some(e) = r.get("errorText").and_then(Value::as_str) {
            bail!("navigating to {url}: {e}");
        }
        self.wait_true(
            &format!("{url} to load"),
            "document.readyState === 'complete'",
        )?;
        Ok(())
    }

    /// Waits until `js` evaluates truthy; returns its value.
    pub fn wait_true(&mut self, what: &str, js: &str) -> Result<Value> {
        let start = Instant::now();
        let mut last = Value::Null;
        while start.elapsed() < DEADLINE {
            match self.eval(js) {
                Ok(v) if truthy(&v) => return Ok(v),
                Ok(v) => last = v,
                Err(e) => last = json!(format!("{e:#}")),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("timed out after {DEADLINE:?} waiting for {what} ({js}); last value: {last}")
    }

    /// The page's text (`document.body.innerText`).
    pub fn text(&mut self) -> Result<String> {
        Ok(self
            .eval("document.body ? document.body.innerText : ''")?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Time from navigation start to the load event of the current page, ms.
    pub fn load_ms(&mut self) -> Result<f64> {
        let v = self.eval(
            "(() => { const n = performance.getEntriesByType('navigation')[0]; \
             return n ? n.loadEventEnd - n.startTime : -1; })()",
        )?;
        Ok(v.as_f64().unwrap_or(-1.0))
    }

    /// A PNG of the viewport, written to `path`.
    pub fn screenshot(&mut self, path: &Path) -> Result<()> {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}))?;
        let data = r["data"]
            .as_str()
            .ok_or_else(|| anyhow!("Page.captureScreenshot gave no data"))?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .context("decoding the screenshot")?;
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))?;
        println!("screenshot: {}", path.display());
        Ok(())
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Asked, not awaited: the answer may never come once it closes.
        let close = json!({"id": u64::MAX, "method": "Browser.close", "params": {}});
        let _ = self.ws.send(Message::text(close.to_string()));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
