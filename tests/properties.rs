//! Property-based tests of what a client or the host can throw at the handler: arbitrary
//! envelopes, arbitrary sign-up bodies, odd header casing. Whatever comes in, the handler never
//! panics, never answers 5xx for a client's fault, and keeps serving.
//!
//! These run the real routes in-process (warp's test client) over the embedded store and outbox,
//! since what is under test is parsing and validation, not Redis or SMTP.

use std::sync::Arc;
use std::time::Duration;

use onboarding::app::App;
use onboarding::config::{Mode, Settings};
use onboarding::mail::OutboxMailer;
use onboarding::server::routes;
use onboarding::store::MemoryStore;
use proptest::prelude::*;
use serde_json::{Value, json};
use test_support::envelope::http_invocation;

/// Cases per property; each is cheap except the few that reach password hashing.
const CASES: u32 = 256;

fn app() -> Arc<App> {
    let settings = Settings::from_lookup(Mode::Dev, |_| None).expect("dev settings need nothing");
    let outbox = std::env::temp_dir().join(format!("onboarding-props-{}", std::process::id()));
    Arc::new(App::new(
        &settings,
        Arc::new(MemoryStore::new()),
        Arc::new(OutboxMailer::new(outbox)),
        Duration::from_secs(5),
    ))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a test runtime")
}

/// Sends one invocation body and returns (host status, res.statusCode if any).
async fn invoke(app: &Arc<App>, function: &str, body: Vec<u8>) -> (u16, Option<u16>) {
    let response = warp::test::request()
        .method("POST")
        .path(&format!("/{function}"))
        .header("content-type", "application/json; charset=utf-8")
        .body(body)
        .reply(&routes(app.clone()))
        .await;
    let status = response.status().as_u16();
    let res_status = serde_json::from_slice::<Value>(response.body())
        .ok()
        .and_then(|v| v["Outputs"]["res"]["statusCode"].as_u64())
        .map(|s| s as u16);
    (status, res_status)
}

/// A createUser invocation as the host builds it, with one header and this body.
fn http_envelope(header: &str, value: &str, body: &str) -> Vec<u8> {
    let url = "https://app.example.net/createUser";
    http_invocation("POST", url, &[(header, value)], Some(body))
        .to_string()
        .into_bytes()
}

/// Any JSON value, nested a few levels, with strings that include control characters and markup.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "\\PC{0,40}".prop_map(Value::String),
        "[<>&\"'\r\n\t\u{0}a-z@.]{0,30}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,8}|name|email|password", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    /// Arbitrary bytes as an envelope: the host gets 200 or a 4xx, never a 5xx or a hang, and the
    /// handler still answers the readiness ping afterwards.
    #[test]
    fn arbitrary_envelope_bytes_never_cause_a_server_error(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        function in prop_oneof![Just("createUser"), Just("root"), Just("health"), Just("sendOnboarding"), Just("nope")],
    ) {
        let app = app();
        runtime().block_on(async {
            let (status, _) = invoke(&app, function, bytes).await;
            if function == "sendOnboarding" {
                // A message that cannot be read must fail toward the dead-letter queue.
                prop_assert!(status == 200 || status == 400 || status == 500, "{status}");
            } else {
                prop_assert!(status < 500, "{function}: {status}");
            }
            let ping = warp::test::request().path("/").reply(&routes(app.clone())).await;
            prop_assert_eq!(ping.status().as_u16(), 200);
            Ok(())
        })?;
    }

    /// Arbitrary JSON bodies for createUser, with any header casing: always a client answer
    /// (2xx or 4xx), never 5xx.
    #[test]
    fn arbitrary_sign_up_bodies_get_a_client_answer(
        body in any_json(),
        header in "(?i:content-type)",
    ) {
        let app = app();
        let envelope = http_envelope(&header, "application/json", &body.to_string());
        runtime().block_on(async {
            let (status, res) = invoke(&app, "createUser", envelope).await;
            prop_assert_eq!(status, 200);
            let res = res.expect("an HTTP answer");
            prop_assert!((200..500).contains(&res), "res {res}");
            Ok(())
        })?;
    }

    /// Arbitrary text (not necessarily JSON) under any content type: a 4xx, never 5xx.
    #[test]
    fn arbitrary_body_text_and_media_types_get_a_client_answer(
        body in "\\PC{0,300}",
        media in prop_oneof![
            Just("application/json".to_owned()),
            Just("text/plain".to_owned()),
            Just("application/x-www-form-urlencoded".to_owned()),
            "[a-z]{1,10}/[a-z+]{1,10}",
        ],
    ) {
        let app = app();
        let envelope = http_envelope("Content-Type", &media, &body);
        runtime().block_on(async {
            let (status, res) = invoke(&app, "createUser", envelope).await;
            prop_assert_eq!(status, 200);
            let res = res.expect("an HTTP answer");
            prop_assert!((200..500).contains(&res), "res {res}");
            Ok(())
        })?;
    }

    /// Arbitrary shapes inside Data.req (wrong types everywhere): the handler answers, and any
    /// HTTP answer it gives is not a server error.
    #[test]
    fn arbitrary_request_shapes_never_cause_a_server_error(
        req in any_json(),
        function in prop_oneof![Just("createUser"), Just("root"), Just("health")],
    ) {
        let app = app();
        let envelope = json!({"Data": {"req": req}, "Metadata": {}}).to_string().into_bytes();
        runtime().block_on(async {
            let (status, res) = invoke(&app, function, envelope).await;
            // An envelope the handler cannot read is the host's bad request (400), never a
            // server error; one it can read carries an HTTP answer below 500.
            prop_assert!(status == 200 || status == 400, "{status}");
            if status == 200 {
                let res = res.expect("an HTTP answer");
                prop_assert!(res < 500, "res {res}");
            }
            Ok(())
        })?;
    }

    /// Arbitrary tokens and cookies at `/`: always the redirect to sign-up, never a profile.
    #[test]
    fn arbitrary_tokens_never_sign_anyone_in(token in "[A-Za-z0-9_.=-]{0,600}", use_cookie in any::<bool>()) {
        let app = app();
        let headers = if use_cookie {
            json!({"Cookie": [format!("session={token}")]})
        } else {
            json!({"Authorization": [format!("Bearer {token}")]})
        };
        let envelope = json!({"Data": {"req": {"Url": "http://x/", "Method": "GET", "Headers": headers}}, "Metadata": {}})
            .to_string()
            .into_bytes();
        runtime().block_on(async {
            let (status, res) = invoke(&app, "root", envelope).await;
            prop_assert_eq!(status, 200);
            prop_assert_eq!(res, Some(302));
            Ok(())
        })?;
    }
}

/// A deeply nested body (100 000 levels) is refused as malformed, not a stack overflow.
#[test]
fn a_deeply_nested_body_is_refused_cleanly() {
    let app = app();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let envelope = http_envelope("Content-Type", "application/json", &deep);
    let (status, res) = runtime().block_on(invoke(&app, "createUser", envelope));
    assert_eq!(status, 200);
    assert!(matches!(res, Some(400) | Some(413)), "{res:?}");
}

/// A deeply nested envelope is refused by the host endpoint, not a crash.
#[test]
fn a_deeply_nested_envelope_is_refused_cleanly() {
    let app = app();
    let deep = format!(
        "{{\"Data\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let (status, _) = runtime().block_on(invoke(&app, "createUser", deep.into_bytes()));
    assert_eq!(status, 400);
}
