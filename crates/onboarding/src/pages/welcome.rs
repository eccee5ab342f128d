//! The welcome page a signed-in person sees at `/`.

use super::{escape, page};
use crate::domain::{Onboarding, User};
use crate::protocol::HttpResponse;

/// Renders the profile: name, email, join date and whether the welcome email went out; when it
/// never can, a sentence saying so and what to do, with the receiving server's own words. The
/// sign-out form carries `form_token`, the session's anti-forgery token.
pub fn welcome_page(user: &User, onboarding: &Onboarding, form_token: &str) -> HttpResponse {
    let (status_class, status_text) = match onboarding {
        Onboarding::Pending => ("pending", "pending: on its way"),
        Onboarding::Sent => ("sent", "sent"),
        Onboarding::Undeliverable(_) => ("undeliverable", "could not be delivered"),
    };
    let explanation = onboarding
        .refusal()
        .map(|refusal| {
            let said = match refusal.code {
                Some(code) => format!(" It answered: {code} {}", escape(&refusal.reply)),
                None => format!(" ({})", escape(&refusal.reply)),
            };
            format!(
                "<p id=\"onboarding-detail\" class=\"hint\">We could not deliver your welcome \
                 email: the mail server for {email} refused it.{said} Check that the address is \
                 right; your account works all the same.</p>\n",
                email = escape(user.email.as_str()),
            )
        })
        .unwrap_or_default();
    let body = format!(
        "<h1>Welcome, {name}</h1>\n\
         <p class=\"lead\">Your account is ready.</p>\n\
         <dl>\n<dt>Name</dt><dd id=\"name\">{name}</dd>\n\
         <dt>Email</dt><dd id=\"email\">{email}</dd>\n\
         <dt>Joined</dt><dd><time datetime=\"{joined}\">{joined_text}</time></dd>\n\
         <dt>Welcome email</dt><dd><span id=\"onboarding\" class=\"status {status_class}\">{status_text}</span></dd>\n</dl>\n{explanation}\
         <form class=\"sign-out\" method=\"post\" action=\"/signOut\">\n\
         <input type=\"hidden\" name=\"csrf\" value=\"{form_token}\">\n\
         <button type=\"submit\" id=\"sign-out\">Sign out everywhere</button>\n</form>\n",
        form_token = escape(form_token),
        name = escape(user.name.as_str()),
        email = escape(user.email.as_str()),
        joined = user.created_at_rfc3339(),
        joined_text = user
            .created_at
            .format(time::macros::format_description!(
                "[day padding:none] [month repr:long] [year]"
            ))
            .unwrap_or_else(|_| user.created_at_rfc3339()),
    );
    page(200, "Welcome", &body)
}
