//! Keeps `docs/openapi.json` true: its paths and methods are the declared HTTP functions, its
//! limits are the domain's, and what the handler really answers (statuses, JSON members) is what
//! it documents.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use onboarding::app::App;
use onboarding::config::{Mode, Settings};
use onboarding::domain::{MAX_EMAIL_LEN, MAX_NAME_CHARS, MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS};
use onboarding::functions::declaration::{ALL, Trigger};
use onboarding::mail::OutboxMailer;
use onboarding::server::routes;
use onboarding::store::MemoryStore;
use serde_json::{Value, json};

fn spec() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json"))
        .expect("docs/openapi.json is readable");
    serde_json::from_str(&text).expect("docs/openapi.json is JSON")
}

/// The public path of a declared route: the root function's optional empty parameter is `/`.
fn public_path(route: &str) -> String {
    if route.starts_with("{ignored") {
        "/".to_owned()
    } else {
        format!("/{route}")
    }
}

fn app() -> Arc<App> {
    app_with(|_| None)
}

fn app_with(setting: impl Fn(&str) -> Option<String>) -> Arc<App> {
    let settings = Settings::from_lookup(Mode::Dev, setting).expect("dev settings");
    Arc::new(App::new(
        &settings,
        Arc::new(MemoryStore::new()),
        Arc::new(OutboxMailer::new(
            std::env::temp_dir().join("onboarding-openapi-test"),
        )),
        Duration::from_secs(5),
    ))
}

/// Invokes an HTTP function in-process and returns `Outputs.res`.
async fn call(
    app: &Arc<App>,
    function: &str,
    method: &str,
    headers: Value,
    body: Option<&str>,
) -> Value {
    let mut req = json!({"Url": "http://127.0.0.1:7071/", "Method": method, "Query": {}, "Headers": headers, "Params": {}});
    if let Some(body) = body {
        req["Body"] = json!(body);
    }
    let reply = warp::test::request()
        .method("POST")
        .path(&format!("/{function}"))
        .body(json!({"Data": {"req": req}, "Metadata": {}}).to_string())
        .reply(&routes(app.clone()))
        .await;
    assert_eq!(reply.status(), 200, "{function} failed at the host level");
    let answer: Value = serde_json::from_slice(reply.body()).expect("a JSON answer");
    answer["Outputs"]["res"].clone()
}

fn documented_statuses(spec: &Value, path: &str, method: &str) -> BTreeSet<u16> {
    spec["paths"][path][method]["responses"]
        .as_object()
        .unwrap_or_else(|| panic!("{method} {path} is not documented"))
        .keys()
        .map(|k| k.parse().expect("numeric status"))
        .collect()
}

fn required(spec: &Value, schema: &str) -> BTreeSet<String> {
    spec["components"]["schemas"][schema]["required"]
        .as_array()
        .expect("required members")
        .iter()
        .map(|v| v.as_str().expect("a name").to_owned())
        .collect()
}

fn members(body: &str) -> BTreeSet<String> {
    serde_json::from_str::<Value>(body)
        .expect("a JSON body")
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect()
}

/// Every HTTP function is documented under its public path with exactly its methods, and
/// nothing else is.
#[test]
fn the_paths_and_methods_are_the_declared_http_functions() {
    let spec = spec();
    let mut declared = BTreeSet::new();
    for function in ALL {
        if let Trigger::Http { methods, route } = function.trigger {
            for method in methods {
                declared.insert((public_path(route), (*method).to_owned()));
            }
        }
    }
    let documented: BTreeSet<(String, String)> = spec["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .expect("operations")
                .keys()
                .map(move |m| (path.clone(), m.clone()))
        })
        .collect();
    assert_eq!(documented, declared);
}

/// The documented field limits are the ones the domain enforces.
#[test]
fn the_documented_limits_are_the_domains() {
    let spec = spec();
    let fields = &spec["components"]["schemas"]["SignUp"]["properties"];
    assert_eq!(fields["name"]["maxLength"], MAX_NAME_CHARS);
    assert_eq!(fields["email"]["maxLength"], MAX_EMAIL_LEN);
    assert_eq!(fields["password"]["minLength"], MIN_PASSWORD_CHARS);
    assert_eq!(fields["password"]["maxLength"], MAX_PASSWORD_CHARS);
}

/// What the handler answers for each kind of sign-up, and for the profile, is documented with
/// the members it really has.
#[tokio::test]
async fn real_answers_match_the_description() {
    let spec = spec();
    let app = app();
    let json_type = json!({"Content-Type": ["application/json"]});
    let post_statuses = documented_statuses(&spec, "/createUser", "post");
    let example = spec["paths"]["/createUser"]["post"]["requestBody"]["content"]["application/json"]["example"].to_string();

    let created = call(
        &app,
        "createUser",
        "POST",
        json_type.clone(),
        Some(&example),
    )
    .await;
    assert_eq!(created["statusCode"], 201);
    let body = created["body"].as_str().expect("a body");
    assert_eq!(members(body), required(&spec, "SignedUp"));
    let token = serde_json::from_str::<Value>(body).expect("JSON")["token"]
        .as_str()
        .expect("a token")
        .to_owned();

    let other_password = example.replace("correct horse battery", "another password");
    let cases: Vec<(Value, Option<String>)> = vec![
        (json_type.clone(), Some(example.clone())),
        (json_type.clone(), Some(other_password)),
        (json_type.clone(), Some("{".to_owned())),
        (
            json_type.clone(),
            Some(r#"{"name":"","email":"x","password":"short"}"#.to_owned()),
        ),
        (json_type.clone(), Some("x".repeat(17 * 1024))),
        (
            json!({"Content-Type": ["text/plain"]}),
            Some(example.clone()),
        ),
        (
            json!({"Content-Type": ["application/x-www-form-urlencoded"], "Accept": ["text/html"]}),
            Some("name=Bo&email=bo%40example.com&password=correct+horse".to_owned()),
        ),
    ];
    let mut seen = BTreeSet::new();
    for (headers, body) in cases {
        let res = call(&app, "createUser", "POST", headers, body.as_deref()).await;
        let status = res["statusCode"].as_u64().expect("a status") as u16;
        assert!(
            post_statuses.contains(&status),
            "POST /createUser answered an undocumented {status}"
        );
        seen.insert(status);
    }
    assert_eq!(seen, BTreeSet::from([200, 303, 400, 409, 413, 415, 422]));

    let profile = call(
        &app,
        "root",
        "GET",
        json!({"Authorization": [format!("Bearer {token}")]}),
        None,
    )
    .await;
    assert_eq!(profile["statusCode"], 200);
    assert_eq!(
        members(profile["body"].as_str().expect("a body")),
        required(&spec, "Profile")
    );
    let anonymous = call(&app, "root", "GET", json!({}), None).await;
    assert!(
        documented_statuses(&spec, "/", "get")
            .contains(&(anonymous["statusCode"].as_u64().expect("status") as u16))
    );

    let health = call(&app, "health", "GET", json!({}), None).await;
    assert_eq!(health["statusCode"], 200);
    assert_eq!(
        members(health["body"].as_str().expect("a body")),
        required(&spec, "Health")
    );
}

/// The statuses `signIn` and `signOut` really answer are the documented ones, and a sign-in's
/// token has the members `SignedIn` requires.
#[tokio::test]
async fn sign_in_and_sign_out_answers_are_documented() {
    let spec = spec();
    let app = app_with(|name| (name == "LIMIT_FAILED_SIGN_INS_PER_ACCOUNT").then(|| "3/1h".into()));
    let json_type = json!({"Content-Type": ["application/json"]});
    let example =
        spec["paths"]["/signIn"]["post"]["requestBody"]["content"]["application/json"]["example"]
            .to_string();
    let sign_up = r#"{"name":"Ada","email":"ada@example.com","password":"correct horse battery"}"#;
    let created = call(&app, "createUser", "POST", json_type.clone(), Some(sign_up)).await;
    assert_eq!(created["statusCode"], 201);

    let signed_in = call(&app, "signIn", "POST", json_type.clone(), Some(&example)).await;
    assert_eq!(signed_in["statusCode"], 200);
    let body = signed_in["body"].as_str().expect("a body");
    assert_eq!(members(body), required(&spec, "SignedIn"));
    let token = serde_json::from_str::<Value>(body).expect("JSON")["token"]
        .as_str()
        .expect("a token")
        .to_owned();

    let wrong = example.replace("correct horse battery", "another password");
    let form =
        json!({"Content-Type": ["application/x-www-form-urlencoded"], "Accept": ["text/html"]});
    let cases: Vec<(Value, Option<String>)> = vec![
        (
            form,
            Some("email=ada%40example.com&password=correct+horse+battery".to_owned()),
        ),
        (json_type.clone(), Some("{".to_owned())),
        (
            json_type.clone(),
            Some(r#"{"email":"x","password":"short"}"#.to_owned()),
        ),
        (json_type.clone(), Some("x".repeat(17 * 1024))),
        (
            json!({"Content-Type": ["text/plain"]}),
            Some(example.clone()),
        ),
        (json_type.clone(), Some(wrong.clone())),
        (json_type.clone(), Some(wrong.clone())),
        (json_type.clone(), Some(wrong.clone())),
        (json_type.clone(), Some(wrong)),
    ];
    let documented = documented_statuses(&spec, "/signIn", "post");
    let mut seen = BTreeSet::new();
    for (headers, body) in cases {
        let res = call(&app, "signIn", "POST", headers, body.as_deref()).await;
        let status = res["statusCode"].as_u64().expect("a status") as u16;
        assert!(
            documented.contains(&status),
            "POST /signIn answered an undocumented {status}"
        );
        seen.insert(status);
    }
    assert_eq!(seen, BTreeSet::from([303, 400, 401, 413, 415, 422, 429]));

    let documented = documented_statuses(&spec, "/signOut", "post");
    let cookie = json!({"Cookie": [format!("session={token}")], "Content-Type": ["application/x-www-form-urlencoded"]});
    let cases = [
        (json!({}), None),
        (cookie.clone(), Some("csrf=forged")),
        (json!({"Authorization": [format!("Bearer {token}")]}), None),
        (json!({"Authorization": [format!("Bearer {token}")]}), None),
    ];
    let mut seen = BTreeSet::new();
    for (headers, body) in cases {
        let res = call(&app, "signOut", "POST", headers, body).await;
        let status = res["statusCode"].as_u64().expect("a status") as u16;
        assert!(
            documented.contains(&status),
            "POST /signOut answered an undocumented {status}"
        );
        seen.insert(status);
    }
    assert_eq!(seen, BTreeSet::from([204, 401, 403]));
}
