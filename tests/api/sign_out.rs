//! `signOut` through host-shaped envelopes against a real Redis: every earlier token refused,
//! the browser's form guarded by its session's form token, one `Set-Cookie` at most.

use crate::helpers::{InvocationAnswer, TEST_PASSWORD, form_token, new_user_body, spawn_app};

const CLIENT: &str = "198.51.100.30:40000";
const BROWSER: &str = "text/html,application/xhtml+xml,*/*;q=0.8";

fn token_of(answer: &InvocationAnswer) -> String {
    answer.res().assert_status(200).json()["token"]
        .as_str()
        .expect("a token")
        .to_owned()
}

fn assert_refused_at_root(answer: &InvocationAnswer) {
    let res = answer.res().assert_status(302);
    assert_eq!(res.header("Location"), Some("/createUser"));
    assert_eq!(
        res.header("WWW-Authenticate"),
        Some(r#"Bearer error="invalid_token""#)
    );
}

/// A JSON client signs out with its bearer token alone (204): that token and every other one
/// issued before, from sign-up or sign-in, is refused from then on; a sign-in right after (in
/// the same second) works.
#[tokio::test]
async fn a_bearer_sign_out_refuses_every_earlier_token() {
    let stack = spawn_app().await;
    let user = stack.app.sign_up(&new_user_body()).await;
    let signed_in = token_of(&stack.app.sign_in(&user.email, TEST_PASSWORD, CLIENT).await);
    stack.app.profile(&user.token).await;

    let authorization = format!("Bearer {signed_in}");
    let answer = stack
        .app
        .http(
            "signOut",
            "POST",
            &[("Authorization", &authorization)],
            None,
        )
        .await;
    let res = answer.res().assert_status(204);
    assert_eq!(res.header("Set-Cookie"), None, "no cookie was involved");

    assert_refused_at_root(&stack.app.root_with_token(&user.token).await);
    assert_refused_at_root(&stack.app.root_with_token(&signed_in).await);
    let again = token_of(&stack.app.sign_in(&user.email, TEST_PASSWORD, CLIENT).await);
    assert_eq!(stack.app.profile(&again).await["id"], user.id.as_str());

    let answer = stack
        .app
        .http(
            "signOut",
            "POST",
            &[("Authorization", &authorization)],
            None,
        )
        .await;
    answer.res().assert_problem(401);
}

/// Without a token, a sign-out is a 401 with a challenge.
#[tokio::test]
async fn a_sign_out_without_a_token_is_401() {
    let stack = spawn_app().await;
    let answer = stack.app.http("signOut", "POST", &[], None).await;
    let res = answer.res();
    res.assert_problem(401);
    assert_eq!(
        res.header("WWW-Authenticate"),
        Some(r#"Bearer realm="onboarding""#)
    );
}

/// The welcome page's form signs a browser out: its form token matches the session, the
/// answer is a 303 to sign-in with the cookie cleared (its one `Set-Cookie`), and the cookie
/// no longer opens `/`. A post without the token, with another session's token, with the
/// token of the page's other form, or that the browser marks cross-site is refused (403) and
/// changes nothing.
#[tokio::test]
async fn the_browser_form_needs_its_sessions_form_token() {
    let stack = spawn_app().await;
    let user = stack.app.sign_up(&new_user_body()).await;
    let other = stack.app.sign_up(&new_user_body()).await;
    let cookie = format!("session={}", user.token);
    let page = stack
        .app
        .root(&[("Cookie", &cookie), ("Accept", BROWSER)])
        .await;
    let html = &page.res().assert_status(200).body;
    assert!(html.contains("action=\"/signOut\""));
    let own_token = form_token(html, "/signOut");
    // The page's other form (a new confirmation link) has a token for its own purpose only.
    let resend_token = form_token(html, "verifyEmail");
    assert_ne!(own_token, resend_token);
    let other_page = stack
        .app
        .root(&[
            ("Cookie", &format!("session={}", other.token)),
            ("Accept", BROWSER),
        ])
        .await;
    let others_token = form_token(&other_page.res().body, "/signOut");
    assert_ne!(own_token, others_token);

    let post = |form: String, extra: Option<(&'static str, &'static str)>| {
        let cookie = cookie.clone();
        let app = &stack.app;
        async move {
            let mut headers = vec![
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Accept", BROWSER),
                ("Cookie", cookie.as_str()),
            ];
            headers.extend(extra);
            app.http("signOut", "POST", &headers, Some(&form)).await
        }
    };
    for (form, extra) in [
        (String::new(), None),
        (format!("csrf={others_token}"), None),
        (format!("csrf={resend_token}"), None),
        (
            format!("csrf={own_token}"),
            Some(("Sec-Fetch-Site", "cross-site")),
        ),
    ] {
        let answer = post(form, extra).await;
        let res = answer.res().assert_status(403);
        assert_eq!(res.header("Set-Cookie"), None);
        stack.app.profile(&user.token).await;
    }

    let answer = post(
        format!("csrf={own_token}"),
        Some(("Sec-Fetch-Site", "same-origin")),
    )
    .await;
    let res = answer.res().assert_status(303);
    assert_eq!(res.header("Location"), Some("/signIn"));
    let cleared = res.header("Set-Cookie").expect("the cookie cleared");
    assert!(cleared.starts_with("session=;") && cleared.contains("Max-Age=0"));
    assert_refused_at_root(&stack.app.root_with_token(&user.token).await);
    stack.app.profile(&other.token).await;
}
