//! The sign-up flow in a real headless Chromium (Debian's `chromium`, driven through
//! `chromedriver`) against `handler dev`: the form, the welcome page, the messages beside the
//! fields, the session cookie, and the onboarding email as a mail client would render it.
//! Each test saves screenshots under `target/screenshots/` for a person to look at.
//!
//! Chromium and chromedriver must be installed (`apt-get install -y chromium chromium-driver`;
//! `scripts/test` does it); without them these tests fail, they never skip.

// Helpers live in tests/browser/ (not test targets themselves: no main.rs there).
#[path = "browser/chrome.rs"]
mod chrome;
#[path = "browser/dev_host.rs"]
mod dev_host;
#[path = "browser/email.rs"]
mod email;

use std::future::Future;
use std::time::{Duration, Instant};

use chrome::Browser;
use dev_host::DevHost;

/// No test may take longer than this, whatever hangs.
const TEST_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the queue may take to turn a sign-up into an `.eml` file.
const MAIL_TIMEOUT: Duration = Duration::from_secs(60);
/// A password that passes the rules.
const PASSWORD: &str = "Tr0ub4dor&3-horse-battery";

/// Runs a test body with the overall time limit; dropping it on timeout stops its processes.
async fn within(test: impl Future<Output = ()>) {
    if tokio::time::timeout(TEST_TIMEOUT, test).await.is_err() {
        panic!("the test did not finish within {TEST_TIMEOUT:?}");
    }
}

/// A fresh, unique email address.
fn unique_email() -> String {
    format!("user-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// Fills the sign-up form on the current page by typing, and submits it with its button.
async fn submit_sign_up(browser: &Browser, name: &str, email: &str, password: &str) {
    browser.type_into("input#name", name).await;
    browser.type_into("input#email", email).await;
    browser.type_into("input#password", password).await;
    browser.click("form button[type=submit]").await;
}

/// Opens the sign-up page, signs up, and waits for the welcome page.
async fn sign_up(browser: &Browser, host: &DevHost, name: &str, email: &str, password: &str) {
    browser.goto(&host.url("/createUser")).await;
    submit_sign_up(browser, name, email, password).await;
    browser.wait_for("dd#name").await;
}

/// The page's own stylesheet applied (a wrong CSP hash would leave the page unstyled).
async fn assert_styled(browser: &Browser) {
    let body = browser.style("body", "background-color").await;
    let main = browser.style("main", "background-color").await;
    assert!(
        body.contains("244, 245, 247") && main.contains("255, 255, 255"),
        "the page looks unstyled (body background {body}, main background {main}): \
         is the Content-Security-Policy's style hash right?"
    );
}

/// The page is laid out for the phone's width (it asks for `width=device-width`) and fits it:
/// nothing makes it scroll sideways.
async fn assert_fits_width(browser: &Browser, what: &str) {
    let [screen, viewport, document] = browser.widths().await;
    assert_eq!(
        viewport, screen,
        "{what} is laid out {viewport} px wide on a {screen} px wide phone: \
         something is too wide for the screen (or the viewport meta tag is missing), so a phone \
         shows it zoomed out"
    );
    assert!(
        document <= viewport,
        "{what} is {document} px wide on a {viewport} px wide phone: it scrolls sideways"
    );
}

/// Checks that the message for `field` is the element right after its input, shown between
/// that input and the next label, and that the input points at it.
async fn assert_message_beside(browser: &Browser, field: &str) {
    browser
        .wait_for(&format!("input#{field} + p.error#{field}-error"))
        .await;
    let input = browser.wait_for(&format!("input#{field}")).await;
    assert_eq!(
        input.attr("aria-invalid").await.expect("aria-invalid"),
        Some("true".to_owned())
    );
    assert_eq!(
        input
            .attr("aria-describedby")
            .await
            .expect("aria-describedby"),
        Some(format!("{field}-error"))
    );
    let (_, input_y, _, input_h) = input.rectangle().await.expect("the input's box");
    let message = browser.wait_for(&format!("#{field}-error")).await;
    let (_, message_y, _, message_h) = message.rectangle().await.expect("the message's box");
    assert!(
        message_y >= input_y + input_h,
        "#{field}-error (y {message_y}) is not below its input (y {input_y}, height {input_h})"
    );
    if let Some(label) = browser
        .find_all(&format!("#{field}-error + label"))
        .await
        .first()
    {
        let (_, label_y, _, _) = label.rectangle().await.expect("the next label's box");
        assert!(
            message_y + message_h <= label_y,
            "#{field}-error (y {message_y}, height {message_h}) runs into the next label (y {label_y})"
        );
    }
    assert!(
        message.is_displayed().await.expect("visibility"),
        "#{field}-error is hidden"
    );
}

/// Opening `/` without a session lands on the sign-up form, with a label for every input.
#[tokio::test]
async fn opening_the_site_lands_on_the_sign_up_form() {
    within(async {
        let browser = Browser::open().await;
        let host = DevHost::start().await;

        browser.goto(&host.url("/")).await;
        browser.wait_for("form").await;

        assert_eq!(browser.url().await.path(), "/createUser");
        assert_eq!(
            browser.client.title().await.expect("title"),
            "Create your account"
        );
        browser
            .wait_for("form[method=post][action='/createUser']")
            .await;
        for (id, kind) in [
            ("name", "text"),
            ("email", "email"),
            ("password", "password"),
        ] {
            let label = browser.text(&format!("label[for={id}]")).await;
            assert!(!label.trim().is_empty(), "the {id} label is empty");
            let input = browser.wait_for(&format!("input#{id}[name={id}]")).await;
            assert_eq!(
                input.attr("type").await.expect("type"),
                Some(kind.to_owned())
            );
            assert_eq!(browser.value(&format!("input#{id}")).await, "");
        }
        assert!(browser.find_all("p.error").await.is_empty());
        browser.wait_for("form button[type=submit]").await;
        assert_styled(&browser).await;
        assert_fits_width(&browser, "the page").await;
        browser.screenshot("sign-up-form").await;
        browser.close().await;
    })
    .await;
}

/// Submitting valid data lands on `/`, where the welcome page shows the name, the email and
/// whether the welcome email went out.
#[tokio::test]
async fn signing_up_lands_on_the_welcome_page_showing_the_name() {
    within(async {
        let browser = Browser::open().await;
        let host = DevHost::start().await;
        let email = unique_email();

        sign_up(&browser, &host, "Zoë Lovelace", &email, PASSWORD).await;

        assert_eq!(browser.url().await.path(), "/");
        assert_eq!(browser.text("dd#name").await, "Zoë Lovelace");
        assert_eq!(browser.text("dd#email").await, email);
        assert!(browser.text("h1").await.contains("Zoë Lovelace"));
        let onboarding = browser.wait_for("span#onboarding").await;
        let class = onboarding
            .attr("class")
            .await
            .expect("class")
            .unwrap_or_default();
        assert!(
            class.contains("pending") || class.contains("sent"),
            "onboarding status class is {class:?}"
        );
        assert!(!onboarding.text().await.expect("text").is_empty());
        assert_styled(&browser).await;
        assert_fits_width(&browser, "the page").await;
        browser.screenshot("welcome").await;
        browser.close().await;
    })
    .await;
}

/// An invalid email shows the form again with the message beside the email field, the name and
/// email as typed, and the password field empty.
#[tokio::test]
async fn an_invalid_email_is_shown_beside_its_field_with_the_name_kept() {
    within(async {
        let browser = Browser::open().await;
        let host = DevHost::start().await;

        browser.goto(&host.url("/createUser")).await;
        submit_sign_up(&browser, "Ada Lovelace", "not-an-email", PASSWORD).await;
        browser.wait_for("#email-error").await;

        assert_eq!(browser.url().await.path(), "/createUser");
        let message = browser.text("#email-error").await;
        assert!(
            message.to_lowercase().contains("email"),
            "the message does not name the email: {message:?}"
        );
        assert_message_beside(&browser, "email").await;
        assert!(browser.find_all("#name-error").await.is_empty());
        assert!(browser.find_all("#password-error").await.is_empty());
        assert_eq!(browser.value("input#name").await, "Ada Lovelace");
        assert_eq!(browser.value("input#email").await, "not-an-email");
        assert_eq!(browser.value("input#password").await, "");
        assert_styled(&browser).await;
        assert_fits_width(&browser, "the page").await;
        browser.screenshot("invalid-email").await;
        browser.close().await;
    })
    .await;
}

/// Signed up, a person signs out everywhere with the welcome page's button (landing on the
/// sign-in form, the session gone: `/` sends them to sign-up), mistypes the password (one
/// sentence, the email kept), then signs in and is welcomed back.
#[tokio::test]
async fn signing_out_and_signing_in_again() {
    within(async {
        let browser = Browser::open().await;
        let host = DevHost::start().await;
        let email = unique_email();
        sign_up(&browser, &host, "Ada Lovelace", &email, PASSWORD).await;

        browser.click("button#sign-out").await;
        browser.wait_for("form[action='/signIn']").await;
        assert_eq!(browser.url().await.path(), "/signIn");
        browser.goto(&host.url("/")).await;
        browser.wait_for("form[action='/createUser']").await;
        assert_eq!(browser.url().await.path(), "/createUser");

        browser.click("a#sign-in").await;
        browser.wait_for("input#password").await;
        browser.type_into("input#email", &email).await;
        browser.type_into("input#password", "not-my-password").await;
        browser.click("form button[type=submit]").await;
        browser.wait_for("#form-error").await;
        assert!(browser.text("#form-error").await.contains("wrong"));
        assert_eq!(browser.value("input#email").await, email);
        assert_eq!(browser.value("input#password").await, "");
        assert_styled(&browser).await;
        assert_fits_width(&browser, "the sign-in page").await;
        browser.screenshot("sign-in-refused").await;

        browser.type_into("input#password", PASSWORD).await;
        browser.click("form button[type=submit]").await;
        browser.wait_for("dd#name").await;
        assert_eq!(browser.url().await.path(), "/");
        assert_eq!(browser.text("dd#email").await, email);
        browser.screenshot("signed-in-again").await;
        browser.close().await;
    })
    .await;
}

/// Signing up again with a registered email and another password shows the conflict message
/// beside the email field.
#[tokio::test]
async fn a_second_sign_up_with_another_password_shows_the_conflict_beside_the_email() {
    within(async {
        let browser = Browser::open().await;
        let host = DevHost::start().await;
        let email = unique_email();
        sign_up(&browser, &host, "Ada Lovelace", &email, PASSWORD).await;
        // Someone else, without the first person's session, tries the same address.
        browser
            .client
            .delete_all_cookies()
            .await
            .expect("delete cookies");

        browser.goto(&host.url("/createUser")).await;
        submit_sign_up(&browser, "Ada Impostor", &email, "another-password-42").await;
        browser.wait_for("#email-error").await;

        assert_eq!(browser.url().await.path(), "/createUser");
        let message = browser.text("#email-error").await;
        assert!(
            message.contains("already registered"),
            "the conflict message is {message:?}"
        );
        assert_message_beside(&browser, "email").await;
        assert_eq!(browser.value("input#name").await, "Ada Impostor");
        assert_eq!(browser.value("input#email").await, email);
        assert_eq!(browser.value("input#password").await, "");
        assert_styled(&browser).await;
        assert_fits_width(&browser, "the page").await;
        browser.screenshot("conflict").await;
        browser.close().await;
    })
    .await;
}

/// The session cookie set by a sign-up is HttpOnly and SameSite=Lax: page scripts never see it.
#[tokio::test]
async fn the_session_cookie_is_hidden_from_page_scripts() {
    within(async {
        let browser = Browser::open().await;
        let host = DevHost::start().await;
        sign_up(&browser, &host, "Ada Lovelace", &unique_email(), PASSWORD).await;

        let cookie = browser
            .client
            .get_named_cookie("session")
            .await
            .expect("the sign-up sets a `session` cookie");
        assert_eq!(cookie.http_only(), Some(true), "{cookie:?}");
        assert_eq!(
            cookie.same_site().map(|s| s.to_string()).as_deref(),
            Some("Lax"),
            "{cookie:?}"
        );
        assert_eq!(cookie.path(), Some("/"), "{cookie:?}");
        assert_ne!(cookie.secure(), Some(true), "plain http here: {cookie:?}");
        let visible = browser
            .client
            .execute("return document.cookie", vec![])
            .await
            .expect("run a script");
        assert!(
            !visible.as_str().unwrap_or_default().contains("session"),
            "document.cookie shows the session: {visible}"
        );
        browser.close().await;
    })
    .await;
}

/// The onboarding email's HTML part renders with the name as text (markup in it escaped), and
/// its button leads to the welcome page, where the email now shows as sent.
#[tokio::test]
async fn the_onboarding_email_renders_with_the_name_escaped() {
    within(async {
        let browser = Browser::open().await;
        let host = DevHost::start().await;
        let name = "Zoë <b>Test</b>";
        sign_up(&browser, &host, name, &unique_email(), PASSWORD).await;
        // The welcome page escapes the name too.
        assert_eq!(browser.text("dd#name").await, name);
        assert!(browser.find_all("dd#name b, h1 b").await.is_empty());

        let eml = host.wait_for_email(MAIL_TIMEOUT).await;
        let mail = email::read(&eml);
        assert_eq!(mail.subject, format!("Welcome aboard, {name}"));
        assert!(mail.text.contains(name), "text part:\n{}", mail.text);
        let dir = tempfile::tempdir().expect("a folder for the email's HTML");
        let page = dir.path().join("onboarding-email.html");
        std::fs::write(&page, &mail.html).expect("write the email's HTML");
        browser.goto(&format!("file://{}", page.display())).await;

        let heading = browser.text("h1").await;
        assert_eq!(
            heading,
            format!("Welcome aboard, {name}"),
            "HTML part:\n{}",
            mail.html
        );
        assert!(
            browser.find_all("b").await.is_empty(),
            "the name's markup became elements:\n{}",
            mail.html
        );
        browser.screenshot("email").await;
        let email_widths = browser.widths().await;

        let button = browser.wait_for("a[href]").await;
        assert_eq!(
            button.attr("href").await.expect("href"),
            Some(host.url("/"))
        );
        button.click().await.expect("click the email's button");
        browser.wait_for("dd#name").await;
        assert_eq!(browser.text("dd#name").await, name);
        let started = Instant::now();
        while browser.find_all("span#onboarding.sent").await.is_empty() {
            assert!(
                started.elapsed() < MAIL_TIMEOUT,
                "the welcome page still shows the email as {:?} after it was written",
                browser.text("span#onboarding").await
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
            browser
                .client
                .refresh()
                .await
                .expect("reload the welcome page");
        }
        browser.screenshot("welcome-sent").await;
        browser.close().await;
        // Last, so that everything above is checked even while this fails.
        let [screen, viewport, document] = email_widths;
        assert!(
            viewport == screen && document <= viewport,
            "the email is {document} px wide (laid out {viewport} px wide) on a {screen} px wide \
             phone, so a phone shows it zoomed out or scrolling sideways: something in it does not \
             wrap (see target/screenshots/email.png)"
        );
    })
    .await;
}

/// The confirmation link in the welcome email's `.eml` file points at the dev host itself; it
/// opens a page with a Confirm button (the GET confirms nothing: the welcome page still says
/// "not confirmed yet"), and the button's POST confirms, after which the badge says so.
#[tokio::test]
async fn the_link_in_the_eml_file_confirms_the_address_and_the_badge_changes() {
    within(async {
        let browser = Browser::open().await;
        let host = DevHost::start().await;
        sign_up(&browser, &host, "Ada", &unique_email(), PASSWORD).await;
        browser.wait_for("span#email-verified.unverified").await;
        assert!(browser.find_all("button#resend").await.len() == 1);

        let mail = email::read(&host.wait_for_email(MAIL_TIMEOUT).await);
        let dir = tempfile::tempdir().expect("a folder for the email's HTML");
        let page = dir.path().join("welcome-email.html");
        std::fs::write(&page, &mail.html).expect("write the email's HTML");
        browser.goto(&format!("file://{}", page.display())).await;
        let link = browser.wait_for("a#verify-email").await;
        let href = link.attr("href").await.expect("href").expect("a link");
        assert!(
            href.starts_with(&host.url("/verifyEmail?token=")),
            "the link points at the dev host: {href}"
        );
        link.click().await.expect("click the confirmation link");

        browser.wait_for("button#confirm").await;
        browser.screenshot("verify-email-confirm").await;
        browser.goto(&host.url("/")).await;
        browser.wait_for("span#email-verified.unverified").await;

        browser.goto(&href).await;
        browser.click("button#confirm").await;
        let outcome = browser.text("#outcome").await;
        assert!(outcome.contains("is confirmed"), "{outcome}");
        browser.goto(&host.url("/")).await;
        browser.wait_for("span#email-verified.verified").await;
        assert!(browser.find_all("button#resend").await.is_empty());
        browser.screenshot("welcome-verified").await;
        browser.close().await;
    })
    .await;
}
