//! What the onboarding email says, as plain text and as HTML, and the envelope every email of
//! ours shares. User text is escaped for HTML, and lettre encodes headers, so a name can inject
//! neither markup nor a header.

use html_escape::encode_text;
use lettre::Address;
use lettre::Message;
use lettre::address::Envelope;
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};
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
    /// The link that confirms the address (`verifyEmail`); omitted when the public URL is
    /// unknown.
    pub confirm: Option<&'a Url>,
}

/// Builds the multipart (text + HTML) message.
pub fn compose(email: &OnboardingEmail<'_>) -> Result<Message, MailError> {
    let subject = format!("Welcome aboard, {}", email.name);
    envelope_to(
        email.from,
        email.name,
        email.email,
        subject,
        text_body(email),
        html_body(email),
    )
}

/// Any email of ours to one person: the envelope, a unique Message-ID, and the two parts.
pub(super) fn envelope_to(
    from: &Mailbox,
    name: &UserName,
    address: &UserEmail,
    subject: String,
    text: String,
    html: String,
) -> Result<Message, MailError> {
    let to_address: Address = address
        .as_str()
        .parse()
        .map_err(|e: lettre::address::AddressError| MailError::Build(e.to_string()))?;
    // Given, so lettre need not parse it back out of the From and To headers it just wrote.
    let envelope = Envelope::new(Some(from.email.clone()), vec![to_address.clone()])
        .map_err(|e| MailError::Build(e.to_string()))?;
    let to = Mailbox::new(Some(name.as_str().to_owned()), to_address);
    // RFC 5322 wants one, and spam filters count its absence; lettre adds none by itself. Unique
    // per message (a thread-local CSPRNG, no system call), under the sender's domain.
    let message_id = format!("<{:032x}@{}>", rand::random::<u128>(), from.email.domain());
    Message::builder()
        .envelope(envelope)
        .message_id(Some(message_id))
        .from(from.clone())
        .to(to)
        .subject(subject)
        .multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(part_body(text)),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(part_body(html)),
                ),
        )
        .map_err(|e| MailError::Build(e.to_string()))
}

/// The longest line, in octets and without its CRLF, that 7bit content may carry (RFC 2045,
/// section 2.7, after RFC 5322's line limit).
const SEVEN_BIT_LINE_MAX: usize = 998;

/// A part's body as it goes on the wire. ASCII text whose lines fit RFC 2045's 998 octets goes
/// out as 7bit, its line ends made CRLF here. lettre's own choice would quoted-printable-encode
/// any part with a line of 76 characters or more, and every email with a confirmation link
/// (a signed token of some 400 characters) has one: encoding it cost about a tenth of
/// sendOnboarding's CPU, and broke the links in the raw message across soft line breaks.
/// Anything else (a non-ASCII name, a longer line) is left to lettre, which encodes it.
fn part_body(text: String) -> Body {
    if !fits_seven_bit(&text) {
        return Body::new(text);
    }
    let mut wire = Vec::with_capacity(text.len() + text.len() / 32);
    for line in text.split_inclusive('\n') {
        match line.strip_suffix('\n') {
            Some(content) => {
                wire.extend_from_slice(content.as_bytes());
                wire.extend_from_slice(b"\r\n");
            }
            None => wire.extend_from_slice(line.as_bytes()),
        }
    }
    Body::dangerous_pre_encoded(wire, ContentTransferEncoding::SevenBit)
}

/// Whether `text` is 7bit data as RFC 2045 defines it, once its `\n`s become CRLF: ASCII, no
/// NUL, no CR of its own, no line over 998 octets.
fn fits_seven_bit(text: &str) -> bool {
    text.is_ascii()
        && !text.bytes().any(|b| b == b'\0' || b == b'\r')
        && text
            .split('\n')
            .all(|line| line.len() <= SEVEN_BIT_LINE_MAX)
}

/// The plain-text part. Its lines, like the HTML part's, are short enough to read in a raw
/// message, except the links, which are never broken (see [`part_body`] for how it goes out).
pub fn text_body(email: &OnboardingEmail<'_>) -> String {
    let name = email.name.as_str();
    let link = email.link.map(Url::as_str);

    let mut text = format!(
        "Hello {name},\n\nWelcome aboard: your account is ready.\n\n\
         You signed up with this address ({address}).\n",
        address = email.email
    );
    match link {
        Some(link) => {
            text.push_str("Open your account at ");
            text.push_str(link);
            text.push_str("\nSign in with your email and password any time at\n");
            text.push_str(sign_in_link(email).as_deref().unwrap_or(link));
            text.push('\n');
        }
        None => text.push_str("Sign in with your email and password any time.\n"),
    }
    if let Some(confirm) = email.confirm {
        text.push_str("\nConfirm that this address is yours (the link works\nfor 7 days):\n");
        text.push_str(confirm.as_str());
        text.push('\n');
    }
    text.push_str("\nIf this wasn't you, ignore this email: nothing more will be sent.\n");
    text
}

/// The sign-in page under the public URL (`<PUBLIC_URL>/signIn`), when one is set: without it
/// the email cannot know where the app is reached, and the sentence goes without a link.
fn sign_in_link(email: &OnboardingEmail<'_>) -> Option<String> {
    email
        .link
        .and_then(|base| base.join("signIn").ok())
        .map(String::from)
}

/// The HTML part, styled like the sign-up pages; every user-supplied text is escaped. Line
/// breaks fall between attributes or after a CSS `;`, where HTML and CSS read them as spaces.
pub fn html_body(email: &OnboardingEmail<'_>) -> String {
    let name = email.name.as_str();
    let link = email.link.map(Url::as_str);
    let html_name = encode_text(name);
    let html_address = encode_text(email.email.as_str());
    let action = match link {
        Some(link) => format!(
            r#"<p style="margin:24px 0"><a href="{href}"
style="display:inline-block;background:#2457d6;color:#ffffff;
padding:12px 20px;border-radius:6px;text-decoration:none;
font-weight:600">Open your account</a></p>
<p><a href="{sign_in}">Sign in with your email
and password</a> any time.</p>"#,
            href = html_escape::encode_double_quoted_attribute(link),
            sign_in = html_escape::encode_double_quoted_attribute(
                sign_in_link(email).as_deref().unwrap_or(link)
            ),
        ),
        None => "<p>Sign in with your email and password any time.</p>".to_owned(),
    };
    let confirm = email
        .confirm
        .map(|url| {
            format!(
                r#"<p>Confirm that this address is yours (the link works
for 7 days): <a id="verify-email" href="{href}">confirm my address</a>.</p>"#,
                href = html_escape::encode_double_quoted_attribute(url.as_str())
            )
        })
        .unwrap_or_default();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Welcome aboard</title></head>
<body style="margin:0;padding:16px;background:#f4f5f7;
font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;
color:#1d2330">
<div style="max-width:520px;margin:0 auto;background:#ffffff;
border-radius:10px;padding:24px;overflow-wrap:anywhere;
word-break:break-word">
<h1 style="font-size:22px;margin:0 0 16px">
Welcome aboard, {html_name}</h1>
<p>Your account is ready. You signed up with
<strong>{html_address}</strong>.</p>
{action}
{confirm}
<p style="color:#5b6473;font-size:13px">If this wasn't you, ignore
this email: nothing more will be sent.</p>
</div></body></html>
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The longest line the templates produce for an ordinary name and address; lettre encodes a
    /// part with a line of 76 characters or more.
    const TEMPLATE_LINE_MAX: usize = 72;

    fn with_email<T>(
        name: &str,
        link: Option<&Url>,
        f: impl FnOnce(&OnboardingEmail<'_>) -> T,
    ) -> T {
        let from: Mailbox = "Onboarding <no-reply@example.com>".parse().unwrap();
        let name = UserName::parse(name).unwrap();
        let email = UserEmail::parse("eve@example.com").unwrap();
        f(&OnboardingEmail {
            from: &from,
            name: &name,
            email: &email,
            link,
            confirm: None,
        })
    }

    fn render(name: &str) -> String {
        with_email(name, None, |email| {
            String::from_utf8(compose(email).unwrap().formatted()).unwrap()
        })
    }

    #[test]
    fn each_message_has_its_own_message_id_under_the_senders_domain() {
        let ids: Vec<String> = (0..2)
            .map(|_| {
                render("Ada")
                    .lines()
                    .find_map(|l| l.strip_prefix("Message-ID: ").map(str::to_owned))
                    .expect("a Message-ID header")
            })
            .collect();
        assert!(
            ids[0].starts_with('<') && ids[0].ends_with("@example.com>"),
            "{}",
            ids[0]
        );
        assert_ne!(ids[0], ids[1]);
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
        let html = with_email("Eve <b>x</b>", None, html_body);
        assert!(html.contains("Welcome aboard, Eve &lt;b&gt;x&lt;/b&gt;</h1>"));
        assert!(!html.contains("<b>x</b>"));
    }

    #[test]
    fn the_link_goes_to_the_public_url() {
        let url = Url::parse("https://app.example.net/").unwrap();
        let html = with_email("Ada", Some(&url), html_body);
        assert!(html.contains(r#"href="https://app.example.net/""#));
        assert!(with_email("Ada", Some(&url), text_body).contains("https://app.example.net/"));
    }

    #[test]
    fn the_sign_in_sentence_links_to_the_sign_in_page() {
        let url = Url::parse("https://app.example.net/").unwrap();
        let html = with_email("Ada", Some(&url), html_body);
        assert!(html.contains(
            "<a href=\"https://app.example.net/signIn\">Sign in with your email\nand password</a>"
        ));
        let text = with_email("Ada", Some(&url), text_body);
        assert!(
            text.contains("any time at\nhttps://app.example.net/signIn\n"),
            "{text}"
        );
    }

    /// With an ordinary name, address and link, no line is long enough to need encoding.
    #[test]
    fn an_ordinary_email_goes_out_as_plain_7bit_text() {
        let url = Url::parse("https://app.example.net/").unwrap();
        for link in [None, Some(&url)] {
            for body in [
                with_email("Ada Lovelace", link, text_body),
                with_email("Ada Lovelace", link, html_body),
            ] {
                let longest = body.lines().map(str::len).max().unwrap();
                assert!(
                    longest <= TEMPLATE_LINE_MAX,
                    "a {longest}-character line in:\n{body}"
                );
            }
        }
        let raw = with_email("Ada Lovelace", Some(&url), |email| {
            String::from_utf8(compose(email).unwrap().formatted()).unwrap()
        });
        assert!(!raw.contains("quoted-printable"), "{raw}");
        assert!(raw.contains("Content-Transfer-Encoding: 7bit"), "{raw}");
    }

    /// A confirmation link as long as a real one stays on one line: the part is 7bit, the
    /// link reads whole in the raw message, and every line ends in CRLF.
    #[test]
    fn a_long_link_goes_out_whole_as_7bit() {
        let url = Url::parse("https://app.example.net/").unwrap();
        let confirm = Url::parse(&format!(
            "https://app.example.net/verifyEmail?token={}",
            "t".repeat(400)
        ))
        .unwrap();
        let from: Mailbox = "Onboarding <no-reply@example.com>".parse().unwrap();
        let name = UserName::parse("Ada").unwrap();
        let address = UserEmail::parse("ada@example.com").unwrap();
        let email = OnboardingEmail {
            from: &from,
            name: &name,
            email: &address,
            link: Some(&url),
            confirm: Some(&confirm),
        };
        let raw = String::from_utf8(compose(&email).unwrap().formatted()).unwrap();
        assert!(!raw.contains("quoted-printable"), "{raw}");
        assert_eq!(raw.matches("Content-Transfer-Encoding: 7bit").count(), 2);
        assert_eq!(raw.matches(confirm.as_str()).count(), 2, "{raw}");
        assert!(
            raw.split("\r\n").all(|line| !line.contains('\n')),
            "a bare LF in:\n{raw}"
        );
    }

    /// What 7bit cannot carry is left to lettre to encode: text that is not ASCII, a line
    /// over 998 octets; nor is a CR or a NUL of its own pre-encoded here.
    #[test]
    fn what_7bit_cannot_carry_is_encoded() {
        let seven_bit = ContentTransferEncoding::SevenBit;
        assert_eq!(part_body("a\nb\n".to_owned()).encoding(), seven_bit);
        assert_eq!(part_body("a\nb\n".to_owned()).into_vec(), b"a\r\nb\r\n");
        assert_eq!(part_body("x".repeat(998)).encoding(), seven_bit);
        for text in ["x".repeat(999), "Zoë\n".to_owned()] {
            assert_ne!(part_body(text.clone()).encoding(), seven_bit, "{text:?}");
        }
        assert!(!fits_seven_bit("a\rb\n") && !fits_seven_bit("a\0b"));
        let raw = render("Zoë");
        assert!(
            raw.contains("quoted-printable") || raw.contains("base64"),
            "{raw}"
        );
    }

    #[test]
    fn a_name_cannot_add_a_header() {
        // Names with line breaks never become a UserName; a colon and angle brackets are encoded.
        let raw = render("Eve Bcc: <victim@example.com>");
        let headers = raw.split("\r\n\r\n").next().unwrap();
        assert!(!headers.lines().any(|l| l.starts_with("Bcc:")));
    }
}
