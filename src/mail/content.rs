//! What the onboarding email says, as plain text and as HTML. User text is escaped for HTML, and
//! lettre encodes headers, so a name can inject neither markup nor a header.

use html_escape::encode_text;
use lettre::Message;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use url::Url;

use super::MailError;
use crate::domain::{UserEmail, UserName};

/// The message to one user.
pub struct OnboardingEmail<'a> {
    pub from: &'a Mailbox,
    pub name: &'a UserName,
    pub email: &'a UserEmail,
    /// Where "open your account" points; omitted when the public URL is unknown.
    pub link: Option<&'a Url>,
}

/// Builds the multipart (text + HTML) message.
pub fn compose(email: &OnboardingEmail<'_>) -> Result<Message, MailError> {
    let to_address = email
        .email
        .as_str()
        .parse()
        .map_err(|e: lettre::address::AddressError| MailError::Build(e.to_string()))?;
    let to = Mailbox::new(Some(email.name.as_str().to_owned()), to_address);
    let name = email.name.as_str();
    let link = email.link.map(Url::as_str);

    let mut text = format!(
        "Hello {name},\n\nWelcome aboard: your account is ready.\n\n\
         You signed up with this address ({address}). ",
        address = email.email
    );
    match link {
        Some(link) => text.push_str(&format!("Open your account at {link}\n")),
        None => text.push_str("Sign in with your email and password any time.\n"),
    }
    text.push_str("\nIf this wasn't you, ignore this email: nothing more will be sent.\n");

    let html_name = encode_text(name);
    let html_address = encode_text(email.email.as_str());
    let action = match link {
        Some(link) => format!(
            r#"<p style="margin:24px 0"><a href="{href}" style="background:#2457d6;color:#ffffff;padding:12px 20px;border-radius:6px;text-decoration:none;font-weight:600">Open your account</a></p>"#,
            href = html_escape::encode_double_quoted_attribute(link)
        ),
        None => "<p>Sign in with your email and password any time.</p>".to_owned(),
    };
    let html = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Welcome aboard</title></head>
<body style="margin:0;padding:24px;background:#f4f5f7;font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d2330">
<div style="max-width:520px;margin:0 auto;background:#ffffff;border-radius:10px;padding:32px">
<h1 style="font-size:22px;margin:0 0 16px">Welcome aboard, {html_name}</h1>
<p>Your account is ready. You signed up with <strong>{html_address}</strong>.</p>
{action}
<p style="color:#5b6473;font-size:13px">If this wasn't you, ignore this email: nothing more will be sent.</p>
</div></body></html>
"#
    );

    Message::builder()
        .from(email.from.clone())
        .to(to)
        .subject(format!("Welcome aboard, {name}"))
        .multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(text),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(html),
                ),
        )
        .map_err(|e| MailError::Build(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(name: &str) -> String {
        let from: Mailbox = "Onboarding <no-reply@example.com>".parse().unwrap();
        let name = UserName::parse(name).unwrap();
        let email = UserEmail::parse("eve@example.com").unwrap();
        let message = compose(&OnboardingEmail {
            from: &from,
            name: &name,
            email: &email,
            link: None,
        })
        .unwrap();
        String::from_utf8(message.formatted()).unwrap()
    }

    #[test]
    fn the_email_has_a_text_and_an_html_part() {
        let raw = render("Ada");
        assert!(raw.contains("multipart/alternative"));
        assert!(raw.contains("text/plain"));
        assert!(raw.contains("text/html"));
    }

    #[test]
    fn html_in_a_name_is_escaped_in_the_html_part() {
        let raw = render("Eve <b>x</b>");
        assert!(raw.contains("&lt;b&gt;x&lt;/b&gt;"));
        assert!(!raw.contains("<b>x</b></h1>"));
    }

    #[test]
    fn a_name_cannot_add_a_header() {
        // Names with line breaks never become a UserName; a colon and angle brackets are encoded.
        let raw = render("Eve Bcc: <victim@example.com>");
        let headers = raw.split("\r\n\r\n").next().unwrap();
        assert!(!headers.lines().any(|l| l.starts_with("Bcc:")));
    }
}
