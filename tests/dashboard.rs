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
            support::http_get(url)
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

    /// The computed CSS `property` of the first element matching `css`.
    fn css_value(&self, css: &str, property: &str) -> Option<String> {
        self.runtime.block_on(async {
            let element = self.client().find(Locator::Css(css)).await.ok()?;
            element.css_value(property).await.ok()
        })
    }

    /// Types `text` into the input matching `css`, then leaves it (so that
    /// its `change` event fires).
    fn type_into(&self, css: &str, text: &str) {
        self.runtime.block_on(async {
            let input = self
                .client()
                .find(Locator::Css(css))
                .await
                .expect("the input");
            input.clear().await.expect("cleared");
            input.send_keys(text).await.expect("typed");
            self.client()
                .execute(
                    "arguments[0].dispatchEvent(new Event('change'))",
                    vec![json!(input)],
                )
                .await
                .expect("the change event");
        });
    }

    /// Runs `script` in the page and returns its value.
    fn script(&self, script: &str) -> Value {
        self.runtime
            .block_on(self.client().execute(script, Vec::new()))
            .expect("the script runs")
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
    setup_with(label, &[])
}

/// [`setup`], with `extra` options for both peers.
fn setup_with(label: &str, extra: &[&str]) -> Setup {
    let cluster = Cluster::new(label);
    let start = |name: &str, join: &[&Peer]| {
        let mut spec = cluster.peer(name);
        spec.join = join.iter().map(|p| p.gossip).collect();
        spec.haproxy = Some(support::loopback_host());
        spec.extra = vec!["--stats-interval".into(), "200".into()];
        spec.extra.extend(extra.iter().map(|s| s.to_string()));
        spec.start()
    };
    let token = extra
        .iter()
        .position(|s| *s == "--api-token")
        .map(|i| extra[i + 1]);
    let with_token = |peer: Peer| match token {
        Some(token) => peer.with_token(token),
        None => peer,
    };
    let first = with_token(start("first", &[]));
    let second = with_token(start("second", &[&first]));
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
    for peer in [&first, &second] {
        peer.assert_haproxy_workers_unprivileged();
    }
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
    let selector = VERSION_SELECT;
    wait_for_version_offer(&browser);

    browser.select(selector, "2.0.0");
    eventually("live to follow 2.0.0 on the other peer", || {
        (setup.first.get("/backends/live").1["version"] == "2.0.0").then_some(())
    });
}

/// `GET /` with the given `Accept`, without following redirects.
fn get_root(peer: &Peer, accept: &str) -> reqwest::blocking::Response {
    support::http_builder()
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
    wait_until_live(&browser);

    let dead = setup.web.remove(0);
    let server = format!("web/127.0.0.1:{}", dead.port());
    drop(dead);
    eventually("the member's fall in the activity feed", || {
        let text = browser.text("#activity-list li[data-type=\"member\"]")?;
        (text.contains(&server) && text.contains("DOWN")).then_some(())
    });
}

/// The version selector of the dynamic backend `live`.
const VERSION_SELECT: &str = "select[data-version-select=\"live\"]";

/// Waits until the selector of `live` offers version 2.0.0.
fn wait_for_version_offer(browser: &Browser) {
    eventually("the selector to offer 2.0.0", || {
        browser
            .has(&format!("{VERSION_SELECT} option[value=\"2.0.0\"]"))
            .then_some(())
    });
}

/// Waits until the page says it is live.
fn wait_until_live(browser: &Browser) {
    eventually("the page to be live", || {
        (browser.attribute("#connection", "data-state").as_deref() == Some("connected"))
            .then_some(())
    });
}

#[test]
fn the_mesh_panel_shows_the_other_peer_converged_with_its_haproxy_status() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let setup = setup("dashboard-mesh");
    let browser = Browser::open(&setup.second.url("/ui"));
    let row = "#peers tr[data-peer=\"first\"]";
    // Reports lag what they report by a round or two (and first's digest
    // moves with each lease renewal): wait for the page to show first
    // converged, with the reload count and digest first has now.
    eventually("first's current status on second's page", || {
        let reloads = setup.first.haproxy_count("reloads");
        let digest = setup.first.digest();
        let haproxy = browser.text(&format!("{row} .haproxy"))?;
        (browser.attribute(row, "data-converged").as_deref() == Some("yes")
            && haproxy.contains("running")
            && haproxy.contains(&format!("{reloads} reloads"))
            && browser.attribute(&format!("{row} .digest"), "title") == Some(digest))
        .then_some(())
    });
}

#[test]
fn the_activity_feed_shows_registrations_coming_and_going_and_filters_by_text() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let setup = setup("dashboard-registrations");
    let browser = Browser::open(&setup.second.url("/ui"));
    wait_until_live(&browser);

    let id = "/myapp/3.0.0/127.0.0.1/18199";
    let feed = "#activity-list li[data-type=\"registration\"]";
    // The texts of the feed's registration items, newest first.
    let items = || -> Vec<String> {
        let texts = browser.script(&format!(
            "return [...document.querySelectorAll('{feed}')].map(li => li.textContent)"
        ));
        texts
            .as_array()
            .map(|texts| {
                texts
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let position = |items: &[String], word: &str| {
        items
            .iter()
            .position(|t| t.contains(id) && t.ends_with(word))
    };
    ok(setup.first.post(
        &format!("/registrations{id}"),
        json!({"secondsToExpire": 600}),
    ));
    // Gone only after it was seen live: the peer renders the live set per
    // change, and two changes in one render would show neither.
    eventually("the registration live in the feed", || {
        position(&items(), "live")
    });
    ok(setup.first.delete(&format!("/registrations{id}")));
    eventually(
        "the registration gone, above its coming, in the feed",
        || {
            let items = items();
            (position(&items, "gone")? < position(&items, "live")?).then_some(())
        },
    );

    browser.type_into("#activity-filter", "3.0.0");
    let shown = browser.script(
        "return [...document.querySelectorAll('#activity-list li:not([hidden])')]\
         .map(li => li.textContent)",
    );
    let shown = shown.as_array().expect("a list");
    assert!(!shown.is_empty(), "the matching items stay");
    assert!(
        shown
            .iter()
            .all(|t| t.as_str().is_some_and(|t| t.contains("3.0.0"))),
        "only matching items shown: {shown:?}"
    );
}

#[test]
fn the_activity_feed_shows_a_peer_leaving() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let mut setup = setup("dashboard-peer-leaves");
    let browser = Browser::open(&setup.second.url("/ui"));
    wait_until_live(&browser);

    setup.first.terminate();
    eventually("first going down in the feed", || {
        let text = browser.text("#activity-list li[data-type=\"peer\"]")?;
        (text.contains("peer first") && text.ends_with("down")).then_some(())
    });
}

#[test]
fn a_member_in_maintenance_or_draining_is_shown_so_in_its_colour() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let setup = setup("dashboard-maint");
    let browser = Browser::open(&setup.second.url("/ui"));
    for (state, word, colour) in [
        ("maint", "MAINT", "rgba(109, 76, 65, 1)"),
        ("drain", "DRAIN", "rgba(239, 108, 0, 1)"),
    ] {
        let server = &setup.web[0];
        ok(setup.first.put(
            &format!("/backends/web/members/127.0.0.1/{}", server.port()),
            json!({ "state": state }),
        ));
        let css = member(server);
        eventually(&format!("the member {word} on the page"), || {
            (browser.attribute(&css, "data-health").as_deref() == Some(word)).then_some(())
        });
        assert_eq!(
            browser
                .css_value(&format!("{css} .health"), "background-color")
                .as_deref(),
            Some(colour),
            "{word}'s colour"
        );
    }
}

#[test]
fn the_charts_draw_each_frontend_and_backend_from_the_stream() {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let setup = setup("dashboard-charts");
    let browser = Browser::open(&setup.second.url("/ui"));
    let through = setup.second.through_haproxy(WEB_PORT);
    for _ in 0..20 {
        support::http::fetch(through, "/", "site.test").expect("served through HAProxy");
    }
    for chart in ["frontend site", "backend web"] {
        let css = format!("[data-chart=\"{chart}\"]");
        eventually(&format!("a few points in the chart of {chart}"), || {
            let points: u32 = browser.attribute(&css, "data-points")?.parse().ok()?;
            (points >= 3).then_some(())
        });
        // Something was drawn: the canvas differs from a blank one.
        let drawn = browser.script(&format!(
            "const c = document.querySelector('{css} canvas'); \
             const blank = document.createElement('canvas'); \
             blank.width = c.width; blank.height = c.height; \
             return c.toDataURL() !== blank.toDataURL();"
        ));
        assert_eq!(drawn, json!(true), "{chart}'s canvas is blank");
    }
}

#[test]
fn a_token_protected_peer_shows_nothing_until_the_token_is_typed_and_the_read_token_cannot_switch()
{
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let setup = setup_with(
        "dashboard-token",
        &[
            "--api-token",
            "s3cret-token",
            "--api-read-token",
            "r3ad-token",
        ],
    );
    let browser = Browser::open(&setup.second.url("/ui"));
    eventually("the page to ask for a token", || {
        (browser.attribute("#connection", "data-state").as_deref() == Some("token")).then_some(())
    });
    assert!(
        !browser.has("[data-backend=\"live\"]"),
        "the page showed the configuration without a token"
    );

    // The read token shows everything, the event stream included.
    browser.type_into("#api-token", "r3ad-token");
    wait_until_live(&browser);
    wait_for_version_offer(&browser);
    let selector = VERSION_SELECT;
    let error = "[data-switch-error=\"live\"]";
    browser.select(selector, "2.0.0");
    eventually("the refusal on the page", || {
        let text = browser.text(error)?;
        (!text.is_empty()).then_some(text)
    });
    assert_eq!(setup.first.get("/backends/live").1["version"], "1.0.0");
    assert_eq!(
        browser.script(&format!(
            "return document.querySelector('{selector}').value"
        )),
        json!("1.0.0"),
        "the selector shows the version still in force"
    );

    browser.type_into("#api-token", "s3cret-token");
    browser.select(selector, "2.0.0");
    eventually("live to follow 2.0.0", || {
        (setup.first.get("/backends/live").1["version"] == "2.0.0").then_some(())
    });
    assert_eq!(
        browser.script("return localStorage.length"),
        json!(0),
        "the token is kept for this tab only (sessionStorage)"
    );
}
