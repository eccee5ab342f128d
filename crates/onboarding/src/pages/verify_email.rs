//! The pages of `verifyEmail`: the Confirm button a link opens, the answer to confirming, to
//! asking for a new link, and what is wrong with a link.

use super::{escape, page};
use crate::domain::{User, UserEmail};
use crate::protocol::HttpResponse;

/// Which verifyEmail page to show.
pub enum VerifyPage<'a> {
    /// The form that spends the link: a GET never does (mail scanners open links).
    Confirm { token: &'a str, user: &'a User },
    /// The address is confirmed; `true` when it was already.
    Confirmed(bool),
    /// A new link is on its way to this address.
    Resent(&'a UserEmail),
    /// What went wrong (title, sentence).
    Problem(&'a str, &'a str),
}

/// Renders one of the pages with `status`.
pub fn verify_page(status: u16, which: &VerifyPage<'_>) -> HttpResponse {
    const BACK: &str = "<p><a href=\"./\">Go to your account</a></p>\n";
    let (title, body) = match which {
        VerifyPage::Confirm { token, user } => (
            "Confirm your email address",
            format!(
                "<h1>Confirm your email address</h1>\n\
                 <p class=\"lead\">Confirm that <strong id=\"email\">{email}</strong> is yours.</p>\n\
                 <form method=\"post\" action=\"verifyEmail\">\n\
                 <input type=\"hidden\" name=\"token\" value=\"{token}\">\n\
                 <button id=\"confirm\" type=\"submit\">Confirm</button>\n</form>\n",
                email = escape(user.email.as_str()),
                token = escape(token),
            ),
        ),
        VerifyPage::Confirmed(already) => {
            let text = if *already {
                "Your email address was already confirmed."
            } else {
                "Thank you: your email address is confirmed."
            };
            (
                "Email address confirmed",
                format!(
                    "<h1>Email address confirmed</h1>\n<p id=\"outcome\" class=\"lead\">{text}</p>\n{BACK}"
                ),
            )
        }
        VerifyPage::Resent(email) => (
            "A new link is on its way",
            format!(
                "<h1>Check your inbox</h1>\n<p id=\"outcome\" class=\"lead\">A new confirmation \
                 link is on its way to {email}. It works for 7 days.</p>\n{BACK}",
                email = escape(email.as_str())
            ),
        ),
        VerifyPage::Problem(title, detail) => (
            *title,
            format!(
                "<h1>{title}</h1>\n<p id=\"outcome\" class=\"banner\">{detail}</p>\n{BACK}",
                title = escape(title),
                detail = escape(detail)
            ),
        ),
    };
    page(status, title, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_confirm_page_posts_the_token_back_and_escapes_it() {
        let user = User {
            id: crate::domain::UserId::new(),
            name: crate::domain::UserName::parse("Ada").unwrap(),
            email: UserEmail::parse("ada@example.com").unwrap(),
            created_at: time::OffsetDateTime::now_utc(),
            password_hash: String::new(),
        };
        let res = verify_page(
            200,
            &VerifyPage::Confirm {
                token: "a\"b",
                user: &user,
            },
        );
        assert!(res.body.contains("method=\"post\" action=\"verifyEmail\""));
        assert!(res.body.contains("name=\"token\" value=\"a&quot;b\""));
    }
}
