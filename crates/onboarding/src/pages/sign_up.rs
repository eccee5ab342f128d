//! The sign-up page: a plain form that works without JavaScript, with each message beside its
//! field and the values kept (except the password) when something is wrong.

use super::{escape, page};
use crate::domain::{MAX_EMAIL_LEN, MAX_NAME_CHARS, MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS};
use crate::protocol::HttpResponse;

/// What the form shows: the values typed so far, a message per field, and one for the whole form.
#[derive(Debug, Default)]
pub struct SignUpForm<'a> {
    pub name: &'a str,
    pub email: &'a str,
    pub errors: Vec<(&'static str, String)>,
    pub banner: Option<String>,
}

impl SignUpForm<'_> {
    fn error_for(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, message)| message.as_str())
    }
}

/// Renders the form with the given status (200 empty, 400/409/422 with messages).
pub fn sign_up_page(status: u16, form: &SignUpForm<'_>) -> HttpResponse {
    let banner = form
        .banner
        .as_deref()
        .map(|text| format!("<p class=\"banner\" role=\"alert\">{}</p>\n", escape(text)))
        .unwrap_or_default();
    let first_invalid = form.errors.first().map(|(field, _)| *field);
    let field = |id: &str, label: &str, kind: &str, value: &str, attrs: &str, hint: &str| {
        let error = form.error_for(id);
        let focus = if first_invalid == Some(id) {
            " autofocus"
        } else {
            ""
        };
        let described = match (error.is_some(), hint.is_empty()) {
            (true, _) => format!(" aria-invalid=\"true\" aria-describedby=\"{id}-error\"{focus}"),
            (false, false) => format!(" aria-describedby=\"{id}-hint\""),
            (false, true) => String::new(),
        };
        let note = match error {
            Some(message) => format!(
                "<p class=\"error\" id=\"{id}-error\">{}</p>",
                escape(message)
            ),
            None if !hint.is_empty() => format!("<p class=\"hint\" id=\"{id}-hint\">{hint}</p>"),
            None => String::new(),
        };
        format!(
            "<label for=\"{id}\">{label}</label>\n\
             <input id=\"{id}\" name=\"{id}\" type=\"{kind}\" value=\"{value}\" required {attrs}{described}>\n{note}\n",
            value = escape(value),
        )
    };
    let body = format!(
        "<h1>Create your account</h1>\n\
         <p class=\"lead\">It takes a moment; your welcome email follows shortly.</p>\n\
         {banner}<form method=\"post\" action=\"/createUser\" novalidate>\n{name}{email}{password}\
         <button type=\"submit\">Create account</button>\n</form>\n\
         <p class=\"hint\">Already have an account? <a id=\"sign-in\" href=\"/signIn\">Sign in</a>.</p>\n",
        name = field(
            "name",
            "Name",
            "text",
            form.name,
            &format!("maxlength=\"{MAX_NAME_CHARS}\" autocomplete=\"name\""),
            ""
        ),
        email = field(
            "email",
            "Email",
            "email",
            form.email,
            &format!("maxlength=\"{MAX_EMAIL_LEN}\" autocomplete=\"email\" inputmode=\"email\""),
            ""
        ),
        password = field(
            "password",
            "Password",
            "password",
            "",
            &format!(
                "minlength=\"{MIN_PASSWORD_CHARS}\" maxlength=\"{MAX_PASSWORD_CHARS}\" autocomplete=\"new-password\""
            ),
            &if form.errors.is_empty() && form.banner.is_none() {
                format!("{MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters.")
            } else {
                format!(
                    "Enter your password again ({MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters)."
                )
            },
        ),
    );
    let title = if form.errors.is_empty() && form.banner.is_none() {
        "Create your account"
    } else {
        "Error: Create your account"
    };
    page(status, title, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_empty_form_has_labelled_fields_with_the_servers_limits() {
        let html = sign_up_page(200, &SignUpForm::default()).body;
        assert!(html.contains("<label for=\"email\">"));
        assert!(html.contains("type=\"email\""));
        assert!(html.contains("maxlength=\"254\""));
        assert!(html.contains("minlength=\"8\" maxlength=\"128\""));
        assert!(html.contains("autocomplete=\"new-password\""));
        assert!(html.contains("href=\"/signIn\""), "a link back to sign-in");
    }

    #[test]
    fn messages_sit_beside_their_fields_and_values_are_escaped() {
        let form = SignUpForm {
            name: "<script>x</script>",
            email: "bad\"@",
            errors: vec![("email", "email is not a valid email address".to_owned())],
            banner: None,
        };
        let html = sign_up_page(422, &form).body;
        assert!(html.contains("id=\"email-error\">email is not a valid email address"));
        assert!(html.contains("value=\"&lt;script&gt;x&lt;/script&gt;\""));
        assert!(html.contains("value=\"bad&quot;@\""));
        assert!(!html.contains("<script>"));
    }
}
