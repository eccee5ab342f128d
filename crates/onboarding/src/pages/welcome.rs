//! The welcome page a signed-in person sees at `/`.

use super::{escape, page};
use crate::domain::{Account, Onboarding};
use crate::protocol::HttpResponse;

/// The anti-forgery fields of the page's two forms: both named `field`, each value a token for
/// its own purpose (so one form's token is refused by the other's function).
pub struct WelcomeForms<'a> {
    pub field: &'a str,
    /// For "send the confirmation link again" (`POST /verifyEmail`).
    pub resend: &'a str,
    /// For "sign out everywhere" (`POST /signOut`).
    pub sign_out: &'a str,
}

/// Renders the profile: name, email, whether the address is confirmed (with a form asking for
/// a new link while it is not), join date and whether the welcome email went out; when it never
/// can, a sentence saying so and what to do, with the receiving server's own words. Then the
/// sign-out button.
pub fn welcome_page(account: &Account, forms: &WelcomeForms<'_>) -> HttpResponse {
    let (user, onboarding) = (&account.user, &account.onboarding);
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
    let (verified_class, verified_text, resend) = if account.email_verified {
        ("verified", "confirmed", String::new())
    } else {
        (
            "unverified",
            "not confirmed yet",
            format!(
                "<form method=\"post\" action=\"verifyEmail\">\n\
                 <input type=\"hidden\" name=\"{name}\" value=\"{value}\">\n\
                 <button id=\"resend\" type=\"submit\">Send the confirmation link again</button>\n</form>\n",
                name = escape(forms.field),
                value = escape(forms.resend),
            ),
        )
    };
    let body = format!(
        "<h1>Welcome, {name}</h1>\n\
         <p class=\"lead\">Your account is ready.</p>\n\
         <dl>\n<dt>Name</dt><dd id=\"name\">{name}</dd>\n\
         <dt>Email</dt><dd id=\"email\">{email}</dd>\n\
         <dt>Address</dt><dd><span id=\"email-verified\" class=\"status {verified_class}\">{verified_text}</span></dd>\n\
         <dt>Joined</dt><dd><time datetime=\"{joined}\">{joined_text}</time></dd>\n\
         <dt>Welcome email</dt><dd><span id=\"onboarding\" class=\"status {status_class}\">{status_text}</span></dd>\n</dl>\n{explanation}{resend}\
         <form class=\"sign-out\" method=\"post\" action=\"/signOut\">\n\
         <input type=\"hidden\" name=\"{field}\" value=\"{sign_out}\">\n\
         <button type=\"submit\" id=\"sign-out\">Sign out everywhere</button>\n</form>\n",
        field = escape(forms.field),
        sign_out = escape(forms.sign_out),
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
