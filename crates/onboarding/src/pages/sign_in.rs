//! The sign-in page: email and password, one message for the whole form (a wrong email and a
//! wrong password read the same), and a link to sign-up.

use super::{escape, page};
use crate::domain::{MAX_EMAIL_LEN, MAX_PASSWORD_CHARS};
use crate::protocol::HttpResponse;

/// What the form shows: the email typed so far and one message for the whole form.
#[derive(Debug, Default)]
pub struct SignInForm<'a> {
    pub email: &'a str,
    pub banner: Option<String>,
}

/// Renders the form with the given status (200 empty; 400, 401, 422, 429 with a message).
pub fn sign_in_page(status: u16, form: &SignInForm<'_>) -> HttpResponse {
    let banner = form
        .banner
        .as_deref()
        .map(|text| {
            format!(
                "<p class=\"banner\" role=\"alert\" id=\"form-error\">{}</p>\n",
                escape(text)
            )
        })
        .unwrap_or_default();
    let body = format!(
        "<h1>Sign in</h1>\n\
         <p class=\"lead\">With the email and password you signed up with.</p>\n\
         {banner}<form method=\"post\" action=\"/signIn\" novalidate>\n\
         <label for=\"email\">Email</label>\n\
         <input id=\"email\" name=\"email\" type=\"email\" value=\"{email}\" required \
         maxlength=\"{MAX_EMAIL_LEN}\" autocomplete=\"email\" inputmode=\"email\">\n\
         <label for=\"password\">Password</label>\n\
         <input id=\"password\" name=\"password\" type=\"password\" value=\"\" required \
         maxlength=\"{MAX_PASSWORD_CHARS}\" autocomplete=\"current-password\">\n\
         <button type=\"submit\">Sign in</button>\n</form>\n\
         <p class=\"hint\">No account yet? <a id=\"sign-up\" href=\"/createUser\">Create one</a>.</p>\n",
        email = escape(form.email),
    );
    let title = if form.banner.is_none() {
        "Sign in"
    } else {
        "Error: Sign in"
    };
    page(status, title, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_posts_to_sign_in_and_links_to_sign_up() {
        let html = sign_in_page(200, &SignInForm::default()).body;
        assert!(html.contains("action=\"/signIn\""));
        assert!(html.contains("href=\"/createUser\""));
        assert!(html.contains("autocomplete=\"current-password\""));
    }

    #[test]
    fn the_typed_email_is_kept_and_escaped_and_the_password_never() {
        let form = SignInForm {
            email: "<b>@x",
            banner: Some("The email or the password is wrong.".to_owned()),
        };
        let html = sign_in_page(401, &form).body;
        assert!(html.contains("value=\"&lt;b&gt;@x\""));
        assert!(
            html.contains("role=\"alert\" id=\"form-error\">The email or the password is wrong.")
        );
    }
}
