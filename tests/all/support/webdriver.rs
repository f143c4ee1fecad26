//! A headless Chromium driven over WebDriver (W3C), for the dashboard's
//! tests: Debian's `chromium` and `chromium-driver`, which `make test`
//! installs, on a free port.
//!
//! The few commands the tests use, as JSON over HTTP with the tests' own
//! client. (fantoccini would pull ICU through its `webdriver` crate, whose
//! derives change syn's features, so that `make build` after `make test`
//! would compile every proc-macro and the host again.)

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::Method;
use serde_json::{Value, json};

use super::Client;

/// The key of an element reference in WebDriver's answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    client: Client,
    session: String,
}

/// A WebDriver error: its `error` code and message.
#[derive(Debug)]
pub struct Refused(pub String);

impl Browser {
    pub async fn open() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("no chromedriver: `make test` installs chromium and chromium-driver");
        // Made before the session, so that a failure to get one stops the
        // driver too (dropping the browser does).
        let mut browser = Browser {
            driver,
            client: Client::new(),
            session: String::new(),
        };
        let base = format!("http://127.0.0.1:{port}");
        let capabilities = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {"args": [
            "--headless=new", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", "--window-size=1400,900",
        ]}}}});
        let started = Instant::now();
        loop {
            let answer = browser
                .client
                .request(Method::POST, format!("{base}/session"))
                .body(capabilities.to_string())
                .send()
                .await;
            if let Ok(answer) = answer
                && let Ok(answer) = answer.json::<Value>().await
                && let Some(session) = answer["value"]["sessionId"].as_str()
            {
                browser.session = format!("{base}/session/{session}");
                return browser;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromedriver at {base} gave no session"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One command; its `value`, or the driver's refusal.
    async fn command(&self, method: Method, path: &str, body: Value) -> Result<Value, Refused> {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.session));
        if method != Method::GET && method != Method::DELETE {
            request = request.body(body.to_string());
        }
        let answer = request.send().await.map_err(|e| Refused(format!("{e}")))?;
        let status = answer.status();
        let answer: Value = answer.json().await.map_err(|e| Refused(format!("{e}")))?;
        if status.is_success() {
            Ok(answer["value"].clone())
        } else {
            Err(Refused(format!(
                "{}: {}",
                answer["value"]["error"], answer["value"]["message"]
            )))
        }
    }

    pub async fn goto(&self, url: &str) {
        self.command(Method::POST, "/url", json!({ "url": url }))
            .await
            .unwrap();
    }

    pub async fn current_path(&self) -> String {
        let url = self.command(Method::GET, "/url", json!({})).await.unwrap();
        let url = url.as_str().unwrap();
        let after_host = url.splitn(4, '/').nth(3).unwrap_or_default();
        format!("/{after_host}")
    }

    /// Run `script` in the page with `args`; what it returns.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.command(
            Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": args }),
        )
        .await
        .unwrap()
    }

    /// The first element `css` selects, as the driver's reference.
    async fn find(&self, css: &str) -> Result<String, Refused> {
        let found = self
            .command(
                Method::POST,
                "/element",
                json!({ "using": "css selector", "value": css }),
            )
            .await?;
        Ok(found[ELEMENT].as_str().unwrap().to_string())
    }

    /// Do `action` (`click`, `value`, `clear`) on the first element `css`
    /// selects, as a user would; again if a redraw replaced the element
    /// between finding and acting.
    async fn act(&self, css: &str, action: &str, body: Value) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let done = match self.find(css).await {
                Ok(element) => self
                    .command(
                        Method::POST,
                        &format!("/element/{element}/{action}"),
                        body.clone(),
                    )
                    .await
                    .map(drop),
                Err(e) => Err(e),
            };
            match done {
                Ok(()) => return,
                Err(e) => assert!(Instant::now() < deadline, "cannot {action} {css}: {e:?}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn click(&self, css: &str) {
        self.act(css, "click", json!({})).await;
    }

    /// Type `text` into the first element `css` selects (for a file input:
    /// the file's path).
    pub async fn type_into(&self, css: &str, text: &str) {
        self.act(css, "clear", json!({})).await;
        self.act(css, "value", json!({ "text": text })).await;
    }

    /// Type into a file input (which cannot be cleared).
    pub async fn choose_file(&self, css: &str, path: &str) {
        self.act(css, "value", json!({ "text": path })).await;
    }

    /// The text of the first element `css` selects, once there is one. Read
    /// in the page in one step: the dashboard redraws its tables every two
    /// seconds, which would leave a found element stale.
    pub async fn text(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let script = "const e = document.querySelector(arguments[0]); return e && e.innerText;";
            if let Value::String(text) = self.execute(script, vec![json!(css)]).await {
                return text;
            }
            assert!(Instant::now() < deadline, "no {css} on the page");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until the text of `css` satisfies `test`; that text.
    pub async fn text_until(&self, css: &str, test: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = self.text(css).await;
            if test(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "{css} stayed {text:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// How many elements `css` selects now.
    pub async fn count(&self, css: &str) -> usize {
        let script = "return document.querySelectorAll(arguments[0]).length;";
        self.execute(script, vec![json!(css)])
            .await
            .as_u64()
            .unwrap() as usize
    }

    /// Whether the first element `css` selects is shown.
    pub async fn shown(&self, css: &str) -> bool {
        let script = "const e = document.querySelector(arguments[0]); \
                      return !!e && !e.hidden && e.offsetParent !== null;";
        self.execute(script, vec![json!(css)]).await == json!(true)
    }

    /// The page as a PNG.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let png = self
            .command(Method::GET, "/screenshot", json!({}))
            .await
            .unwrap();
        base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap()
    }

    /// End the session (the browser quits); dropping stops the driver.
    pub async fn close(self) {
        let _ = self.command(Method::DELETE, "", json!({})).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
