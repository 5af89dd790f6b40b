//! The dashboard at `/ui`, in a real browser: headless Chromium driven over
//! WebDriver (a `chromedriver` this file starts on an ephemeral port)
//! against a 2-peer mesh with HAProxy. Needs `chromium` and
//! `chromium-driver` (`scripts/system-packages.sh` installs them). Also the
//! redirect of `GET /` for browsers, which needs no browser.

mod support;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use support::http::TestServer;
use support::{Cluster, Peer, eventually, ok, serve_myapp_v1, within};

/// The port the static backend's frontend listens on (each peer's HAProxy
/// on its own loopback address).
const WEB_PORT: u16 = 18190;
/// The port the dynamic backend's frontend listens on.
const APP_PORT: u16 = 18191;

/// One browser at a time: on a small machine, two Chromiums and four
/// HAProxies at once would measure the CPU rather than the page.
static ONE_BROWSER: Mutex<()> = Mutex::new(());

/// A `chromedriver` process, killed (by its own PID) when dropped.
struct ChromeDriver {
    child: Child,
    port: u16,
}

impl ChromeDriver {
    fn start() -> ChromeDriver {
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").expect("an ephemeral port");
            probe.local_addr().expect("its address").port()
        };
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts (apt-get install chromium-driver)");
        let driver = ChromeDriver { child, port };
        eventually("chromedriver to answer", || {
            let url = format!("http://127.0.0.1:{port}/status");
            reqwest::blocking::get(url)
                .ok()?
                .status()
                .is_success()
                .then_some(())
        });
        driver
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session, used from blocking test code.
struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    // Dropped after the session is closed.
    _driver: ChromeDriver,
}

impl Browser {
    fn open(url: &str) -> Browser {
        let driver = ChromeDriver::start();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for WebDriver");
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--window-size=1400,1100"]
            }
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("an object")
        };
        let webdriver = format!("http://127.0.0.1:{}", driver.port);
        let client = runtime.block_on(async {
            let client =
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(capabilities)
                    .connect(&webdriver)
                    .await
                    .expect("a Chromium session");
            client.goto(url).await.expect("the page loads");
            client
        });
        Browser {
            runtime,
            client: Some(client),
            _driver: driver,
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("open")
    }

    /// The attribute `name` of the first element matching `css`, if any.
    fn attribute(&self, css: &str, name: &str) -> Option<String> {
        self.runtime.block_on(async {
            let element = self.client().find(Locator::Css(css)).await.ok()?;
            element.attr(name).await.ok()?
        })
    }

    /// The text of the first element matching `css`, if any.
    fn text(&self, css: &str) -> Option<String> {
        self.runtime.block_on(async {
            let element = self.client().find(Locator::Css(css)).await.ok()?;
            element.text().await.ok()
        })
    }

    /// Whether an element matches `css`.
    fn has(&self, css: &str) -> bool {
        self.runtime
            .block_on(self.client().find(Locator::Css(css)))
            .is_ok()
    }

    /// Chooses `value` in the `<select>` matching `css`.
    fn select(&self, css: &str, value: &str) {
        self.runtime.block_on(async {
            let select = self
                .client()
                .find(Locator::Css(css))
                .await
                .expect("the selector");
            select.select_by_value(value).await.expect("the option");
        });
    }

    /// Writes a PNG of the page to `path`.
    fn screenshot(&self, path: &std::path::Path) {
        let png = self
            .runtime
            .block_on(self.client().screenshot())
            .expect("a screenshot");
        std::fs::write(path, png).expect("the screenshot is written");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(client.close());
        }
    }
}

/// Two peers with HAProxy reading stats every 200 ms, a static backend
/// `web` of two test servers checked every 100 ms behind frontend `site`,
/// and a dynamic backend `live` following `myapp@1.0.0` behind frontend
/// `app`, with instances of 1.0.0 and 2.0.0 registered.
struct Setup {
    _cluster: Cluster,
    first: Peer,
    second: Peer,
    web: Vec<TestServer>,
    _app: Vec<TestServer>,
}

fn setup(label: &str) -> Setup {
    let cluster = Cluster::new(label);
    let start = |name: &str, join: &[&Peer]| {
        let mut spec = cluster.peer(name);
        spec.join = join.iter().map(|p| p.gossip).collect();
        spec.haproxy = Some(support::loopback_host());
        spec.extra = vec!["--stats-interval".into(), "200".into()];
        spec.start()
    };
    let first = start("first", &[]);
    let second = start("second", &[&first]);
    support::wait_for_mesh(&[&first, &second]);

    let web: Vec<TestServer> = (0..2)
        .map(|i| TestServer::start(&format!("web#{i}")))
        .collect();
    let members: Vec<Value> = web
        .iter()
        .map(|s| json!({"host": "127.0.0.1", "port": s.port()}))
        .collect();
    ok(first.put(
        "/backends/web",
        json!({"type": "static", "members": members, "health": {"uri": "/", "interval": 100}}),
    ));
    ok(first.put(
        "/frontends/site",
        json!({"bind": format!("*:{WEB_PORT}"), "backend": "web"}),
    ));

    let app: Vec<TestServer> = ["1.0.0", "2.0.0"]
        .iter()
        .map(|version| TestServer::start(&format!("{version}#0")))
        .collect();
    for (version, server) in ["1.0.0", "2.0.0"].iter().zip(&app) {
        ok(first.post(
            &format!("/registrations/myapp/{version}/127.0.0.1/{}", server.port()),
            json!({"secondsToExpire": 600}),
        ));
    }
    serve_myapp_v1(&first, "app", APP_PORT);
    support::wait_for_convergence(&[&first, &second]);
    Setup {
        _cluster: cluster,
        first,
        second,
        web,
        _app: app,
    }
}

fn member(server: &TestServer) -> String {
    format!(
        "[data-backend=\"web\"] [data-member=\"127.0.0.1:{}\"]",
        server.port()
    )
}

#[test]
fn the_overview_lists_the_configured_frontends_and_backends() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let setup = setup("dashboard-overview");
    let browser = Browser::open(&setup.second.url("/ui"));

    eventually("the frontends and backends on the page", || {
        [
            "[data-frontend=\"site\"]",
            "[data-frontend=\"app\"]",
            "[data-backend=\"web\"]",
            "[data-backend=\"live\"]",
        ]
        .iter()
        .all(|css| browser.has(css))
        .then_some(())
    });
    assert_eq!(
        browser
            .text("[data-frontend=\"site\"] .default-backend")
            .as_deref(),
        Some("web")
    );
    // The artifact: the overview once every member is up.
    eventually("every member of web UP", || {
        setup
            .web
            .iter()
            .all(|s| browser.attribute(&member(s), "data-health").as_deref() == Some("UP"))
            .then_some(())
    });
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-overview.png");
    browser.screenshot(&path);
    println!("dashboard screenshot: {}", path.display());
}

#[test]
fn a_member_whose_server_dies_turns_down_on_the_page_within_3_seconds() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let mut setup = setup("dashboard-down");
    let browser = Browser::open(&setup.second.url("/ui"));
    eventually("every member of web UP", || {
        setup
            .web
            .iter()
            .all(|s| browser.attribute(&member(s), "data-health").as_deref() == Some("UP"))
            .then_some(())
    });

    let dead = setup.web.remove(0);
    let css = member(&dead);
    drop(dead);
    within(
        Duration::from_secs(3),
        "the member DOWN on the page",
        || (browser.attribute(&css, "data-health").as_deref() == Some("DOWN")).then_some(()),
    );
}

#[test]
fn choosing_a_version_in_the_selector_switches_the_dynamic_backend() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let setup = setup("dashboard-switch");
    let browser = Browser::open(&setup.second.url("/ui"));
    let selector = "select[data-version-select=\"live\"]";
    eventually("the selector to offer 2.0.0", || {
        browser
            .has(&format!("{selector} option[value=\"2.0.0\"]"))
            .then_some(())
    });

    browser.select(selector, "2.0.0");
    eventually("live to follow 2.0.0 on the other peer", || {
        (setup.first.get("/backends/live").1["version"] == "2.0.0").then_some(())
    });
}

/// `GET /` with the given `Accept`, without following redirects.
fn get_root(peer: &Peer, accept: &str) -> reqwest::blocking::Response {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client")
        .get(peer.url("/"))
        .header(reqwest::header::ACCEPT, accept)
        .send()
        .expect("the peer answers")
}

#[test]
fn get_root_sends_browsers_to_the_dashboard() {
    let cluster = Cluster::new("dashboard-root-browser");
    let peer = cluster.start("solo", &[]);
    let answer = get_root(&peer, "text/html,application/xhtml+xml,*/*;q=0.8");
    assert!(answer.status().is_redirection(), "{}", answer.status());
    assert_eq!(answer.headers()[reqwest::header::LOCATION], "/ui");
}

#[test]
fn get_root_answers_api_clients_as_before() {
    let cluster = Cluster::new("dashboard-root-api");
    let peer = cluster.start("solo", &[]);
    let answer = get_root(&peer, "application/json");
    assert_eq!(answer.status().as_u16(), 404);
    let body: Value = answer.json().expect("a JSON error");
    assert_eq!(body["error"], "no such route");
}

#[test]
fn the_page_shows_disconnected_while_its_peer_restarts_and_reconnects_by_itself() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let mut setup = setup("dashboard-reconnect");
    let browser = Browser::open(&setup.second.url("/ui"));
    let connection =
        |state: &str| browser.attribute("#connection", "data-state").as_deref() == Some(state);
    eventually("the page to be live", || {
        connection("connected").then_some(())
    });

    setup.second.kill_9();
    eventually("the page to show it is disconnected", || {
        connection("disconnected").then_some(())
    });
    setup.second.restart_on_same_api();
    eventually("the page to be live again", || {
        connection("connected").then_some(())
    });
}

#[test]
fn the_activity_feed_shows_a_member_going_down() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let mut setup = setup("dashboard-activity");
    let browser = Browser::open(&setup.second.url("/ui"));
    eventually("the page to be live", || {
        (browser.attribute("#connection", "data-state").as_deref() == Some("connected"))
            .then_some(())
    });

    let dead = setup.web.remove(0);
    let server = format!("web/127.0.0.1:{}", dead.port());
    drop(dead);
    eventually("the member's fall in the activity feed", || {
        let text = browser.text("#activity-list li[data-type=\"member\"]")?;
        (text.contains(&server) && text.contains("DOWN")).then_some(())
    });
}
