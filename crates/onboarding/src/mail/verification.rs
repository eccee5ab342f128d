//! The email a signed-in person asks for when the welcome email's confirmation link is lost or
//! expired: one link, nothing else.

use html_escape::{encode_double_quoted_attribute, encode_text};
use lettre::Message;
use lettre::message::Mailbox;
use url::Url;

use super::MailError;
use super::content::envelope_to;
use crate::domain::{UserEmail, UserName};

/// A verification email to one user.
pub struct VerificationEmail<'a> {
    pub from: &'a Mailbox,
    pub name: &'a UserName,
    pub email: &'a UserEmail,
    /// The `verifyEmail` link with its token.
    pub confirm: &'a Url,
}

/// Builds the multipart (text + HTML) message.
pub fn compose_verification(email: &VerificationEmail<'_>) -> Result<Message, MailError> {
    let name = email.name.as_str();
    let link = email.confirm.as_str();
    let text = format!(
        "Hello {name},\n\nConfirm that {address} is yours by opening this\n\
         link (it works for 7 days):\n{link}\n\n\
         If you did not ask for this, ignore this email.\n",
        address = email.email
    );
    let html = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Confirm your email address</title></head>
<body style="font-family:system-ui,sans-serif;color:#1d2330">
<p>Hello {html_name},</p>
<p>Confirm that <strong>{html_address}</strong> is yours (the link
works for 7 days):
<a id="verify-email" href="{href}">confirm my address</a>.</p>
<p style="color:#5b6473;font-size:13px">If you did not ask for this,
ignore this email.</p>
</body></html>
"#,
        html_name = encode_text(name),
        html_address = encode_text(email.email.as_str()),
        href = encode_double_quoted_attribute(link),
    );
    envelope_to(
        email.from,
        email.name,
        email.email,
        "Confirm your email address".to_owned(),
        text,
        html,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_email_carries_the_link_and_escapes_the_name() {
        let from: Mailbox = "Onboarding <no-reply@example.com>".parse().unwrap();
        let name = UserName::parse("Eve <b>").unwrap();
        let address = UserEmail::parse("eve@example.com").unwrap();
        let url = Url::parse("https://app.example.net/verifyEmail?token=a.b.c").unwrap();
        let message = compose_verification(&VerificationEmail {
            from: &from,
            name: &name,
            email: &address,
            confirm: &url,
        })
        .unwrap();
        let raw = String::from_utf8(message.formatted()).unwrap();
        assert!(raw.contains("Subject: Confirm your email address"), "{raw}");
        assert!(raw.contains("verifyEmail?token=a.b.c"), "{raw}");
        assert!(raw.contains("Eve &lt;b&gt;"), "{raw}");
    }
}
