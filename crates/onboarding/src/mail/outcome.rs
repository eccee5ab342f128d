//! What a failed send means, and so what happens next: a recipient refused for good (recorded,
//! never retried), a server that may heal (ridden out, then redelivered), or an operator's
//! setting to fix (ridden out like a server that may heal, never blamed on the user).
//!
//! SMTP tells these apart by the reply code *and* by which command it answered (RFC 5321 §4.2):
//! a 5xx to `RCPT TO` or at the end of `DATA` is about this recipient or this message; a 5xx to
//! the greeting, `EHLO`, `STARTTLS` or `AUTH` is about us as a client, and a 5xx to `MAIL FROM`
//! about our sender address.

use std::fmt;

use crate::domain::Refusal;

/// The SMTP command a reply answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// TCP connect, the greeting and `EHLO`.
    Connect,
    StartTls,
    Auth,
    MailFrom,
    Recipient,
    /// The `DATA` command itself (before the message).
    Data,
    /// The end of the message (`<CRLF>.<CRLF>`).
    Message,
    /// Unknown: lettre's own transport (`smtps://`) does not say which command failed.
    Unknown,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "connecting (greeting and EHLO)",
            Self::StartTls => "STARTTLS",
            Self::Auth => "AUTH",
            Self::MailFrom => "MAIL FROM",
            Self::Recipient => "RCPT TO",
            Self::Data => "DATA",
            Self::Message => "the end of DATA",
            Self::Unknown => "sending",
        })
    }
}

/// How one SMTP exchange failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    /// The server answered with this negative reply code (4xx or 5xx).
    Reply(u16),
    /// The connection failed: refused, reset, closed, or a garbled reply.
    Network,
    /// TLS failed: most often a certificate the client rejects.
    Tls,
    /// The client refused to go on (no shared AUTH mechanism, an address the server cannot take).
    Client,
}

impl FailureKind {
    /// The reply code and a space, for messages; empty when the server gave no reply.
    fn reply_code(&self) -> String {
        match self {
            Self::Reply(code) => format!("{code} "),
            _ => String::new(),
        }
    }
}

/// A failed SMTP send: at which command, how, and lettre's description (the server's reply
/// text, never the credentials: lettre is built without its `tracing` feature, and its errors
/// carry replies, not what we sent).
#[derive(Debug, Clone, thiserror::Error)]
#[error("SMTP failed at {stage}: {}{detail}", .kind.reply_code())]
pub struct SmtpFailure {
    pub stage: Stage,
    pub kind: FailureKind,
    /// The reply text alone (for a refusal record), or the error's description.
    pub detail: String,
}

/// The setting an operator must fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    SmtpUrl,
    MailFrom,
}

impl Setting {
    /// The app setting's name, as an operator types it.
    pub fn name(self) -> &'static str {
        match self {
            Self::SmtpUrl => "SMTP_URL",
            Self::MailFrom => "MAIL_FROM",
        }
    }
}

/// What a failed send means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Refused for good: record it, acknowledge, never retry.
    Undeliverable(Refusal),
    /// May heal. `throttled` when the server is up but asked us to slow down (a 4xx to the
    /// envelope or the message), as opposed to being unreachable.
    MayHeal { throttled: bool },
    /// The operator's fault: ride it out like a server that may heal, log which setting to fix.
    Misconfigured(Setting),
}

/// Replies that mean our credentials are refused (RFC 4954 §6: 530 authentication required,
/// 534 mechanism too weak, 535 credentials invalid, 538 encryption required), whichever command
/// they answer.
const AUTHENTICATION_CODES: [u16; 4] = [530, 534, 535, 538];

impl SmtpFailure {
    /// Classifies this failure (see the module doc).
    pub fn verdict(&self) -> Verdict {
        let code = match self.kind {
            FailureKind::Network => return Verdict::MayHeal { throttled: false },
            FailureKind::Tls => return Verdict::Misconfigured(Setting::SmtpUrl),
            FailureKind::Client => return self.client_verdict(),
            FailureKind::Reply(code) => code,
        };
        if AUTHENTICATION_CODES.contains(&code) {
            return Verdict::Misconfigured(Setting::SmtpUrl);
        }
        if code < 500 {
            let envelope = matches!(
                self.stage,
                Stage::MailFrom | Stage::Recipient | Stage::Data | Stage::Message | Stage::Unknown
            );
            return Verdict::MayHeal {
                throttled: envelope,
            };
        }
        match self.stage {
            Stage::Connect | Stage::StartTls | Stage::Auth => {
                Verdict::Misconfigured(Setting::SmtpUrl)
            }
            Stage::MailFrom => Verdict::Misconfigured(Setting::MailFrom),
            Stage::Recipient | Stage::Data | Stage::Message => self.recipient_or_policy(code),
            Stage::Unknown => unknown_stage_verdict(code, &self.detail, self),
        }
    }

    /// A 5xx to the recipient or the message is the recipient's, unless its enhanced status code
    /// (RFC 3463) says policy: `X.7.x` is security or policy (a relay that will not relay for
    /// us, a sender the provider does not let us use, SPF or DMARC), and Exchange Online's
    /// `5.2.252` is SendAsDenied. Those refuse every user alike, so they are ours to fix, never
    /// recorded on a user as undeliverable.
    fn recipient_or_policy(&self, code: u16) -> Verdict {
        match enhanced_code(&self.detail) {
            Some([_, "7", _]) if self.stage == Stage::Recipient => {
                Verdict::Misconfigured(Setting::SmtpUrl)
            }
            Some([_, "7", _] | [_, "2", "252"]) => Verdict::Misconfigured(Setting::MailFrom),
            _ => self.refusal(Some(code)),
        }
    }

    fn client_verdict(&self) -> Verdict {
        match self.stage {
            // An address the server cannot take (non-ASCII without SMTPUTF8): this recipient.
            Stage::Recipient | Stage::Message => self.refusal(None),
            // Our sender address, the same for every user.
            Stage::MailFrom => Verdict::Misconfigured(Setting::MailFrom),
            _ => Verdict::Misconfigured(Setting::SmtpUrl),
        }
    }

    /// The whole reply, not cut to the stored length yet: the caller takes the recipient's
    /// address out first, so no part of it survives a cut.
    fn refusal(&self, code: Option<u16>) -> Verdict {
        Verdict::Undeliverable(Refusal {
            code,
            reply: self.detail.trim().to_owned(),
        })
    }
}

/// A 5xx whose command is unknown (`smtps://`, lettre's transport): read the enhanced status
/// code (RFC 3463) in the reply. `X.1.1`–`X.1.6` and `X.1.10` (bad destination mailbox),
/// `X.2.x` (mailbox full or disabled) and `X.3.4` (message too big) are about the recipient;
/// anything else (`X.1.7`/`X.1.8` bad sender, `X.7.x` policy, no enhanced code at all) may be
/// ours, so it is treated as our sender's fault and ridden out rather than blamed on the user.
/// The limit: a recipient refused without an enhanced code is retried until Service Bus
/// dead-letters it, where the `smtp://` route would have recorded it as undeliverable.
fn unknown_stage_verdict(code: u16, reply: &str, failure: &SmtpFailure) -> Verdict {
    let about_recipient = match enhanced_code(reply) {
        Some(["5", "1", d]) => matches!(d, "1" | "2" | "3" | "4" | "5" | "6" | "10"),
        Some(["5", "2", "252"]) => false,
        Some(["5", "2", _]) => true,
        Some(["5", "3", "4"]) => true,
        _ => false,
    };
    if about_recipient {
        failure.refusal(Some(code))
    } else {
        Verdict::Misconfigured(Setting::MailFrom)
    }
}

/// The enhanced status code (RFC 3463) a reply's text starts with, as its three parts.
fn enhanced_code(reply: &str) -> Option<[&str; 3]> {
    let mut parts = reply.split_whitespace().next()?.split('.');
    let code = [parts.next()?, parts.next()?, parts.next()?];
    let numeric = code
        .iter()
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    (numeric && parts.next().is_none()).then_some(code)
}

/// Turns lettre's error into a failure at `stage`.
pub fn from_lettre(stage: Stage, e: &lettre::transport::smtp::Error) -> SmtpFailure {
    use std::error::Error as _;
    let kind = match e.status() {
        Some(code) => FailureKind::Reply(u16::from(code)),
        None if e.is_tls() => FailureKind::Tls,
        None if e.is_client() => FailureKind::Client,
        None => FailureKind::Network,
    };
    // For a reply, lettre's source is the reply text itself; otherwise its whole description.
    let detail = match (&kind, e.source()) {
        (FailureKind::Reply(_), Some(text)) => text.to_string(),
        _ => e.to_string(),
    };
    SmtpFailure {
        stage,
        kind,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(stage: Stage, code: u16, text: &str) -> Verdict {
        SmtpFailure {
            stage,
            kind: FailureKind::Reply(code),
            detail: text.to_owned(),
        }
        .verdict()
    }

    #[test]
    fn a_5xx_to_rcpt_is_undeliverable_with_its_code_and_text() {
        for code in [550, 551, 552, 553, 554] {
            assert_eq!(
                reply(Stage::Recipient, code, "5.1.1 no such user"),
                Verdict::Undeliverable(Refusal::new(Some(code), "5.1.1 no such user"))
            );
        }
    }

    #[test]
    fn a_5xx_at_the_end_of_data_is_undeliverable() {
        assert!(matches!(
            reply(Stage::Message, 554, "5.6.0 rejected"),
            Verdict::Undeliverable(_)
        ));
    }

    #[test]
    fn a_policy_refusal_is_the_operators_fault_not_the_recipients() {
        assert_eq!(
            reply(
                Stage::Recipient,
                554,
                "5.7.1 <bo@example.com>: Relay access denied"
            ),
            Verdict::Misconfigured(Setting::SmtpUrl)
        );
        assert_eq!(
            reply(Stage::Message, 550, "5.7.1 DMARC policy violation"),
            Verdict::Misconfigured(Setting::MailFrom)
        );
        assert_eq!(
            reply(
                Stage::Message,
                554,
                "5.2.252 SendAsDenied; not allowed to send as sender"
            ),
            Verdict::Misconfigured(Setting::MailFrom)
        );
        assert!(matches!(
            reply(Stage::Recipient, 550, "5.2.2 mailbox full"),
            Verdict::Undeliverable(_)
        ));
        assert!(matches!(
            reply(Stage::Recipient, 550, "no enhanced code here"),
            Verdict::Undeliverable(_)
        ));
    }

    #[test]
    fn a_sender_the_server_cannot_take_is_about_mail_from() {
        let failure = SmtpFailure {
            stage: Stage::MailFrom,
            kind: FailureKind::Client,
            detail: "the address is not ASCII and the server does not support SMTPUTF8".into(),
        };
        assert_eq!(failure.verdict(), Verdict::Misconfigured(Setting::MailFrom));
    }

    #[test]
    fn enhanced_codes_are_read_only_when_well_formed() {
        assert_eq!(enhanced_code("5.1.10 null MX"), Some(["5", "1", "10"]));
        assert_eq!(enhanced_code("Mailbox 5.1.1 unknown"), None);
        assert_eq!(enhanced_code("5.1 short"), None);
        assert_eq!(enhanced_code("5.1.1.1 long"), None);
        assert_eq!(enhanced_code(""), None);
    }

    #[test]
    fn any_4xx_may_heal_and_a_4xx_to_the_envelope_is_a_throttle() {
        for code in [421, 450, 451, 452] {
            assert_eq!(
                reply(Stage::Recipient, code, "4.7.0 slow down"),
                Verdict::MayHeal { throttled: true }
            );
        }
        assert_eq!(
            reply(Stage::Connect, 421, "busy"),
            Verdict::MayHeal { throttled: false }
        );
    }

    #[test]
    fn refused_credentials_are_the_operators_fault_whatever_the_command() {
        for code in AUTHENTICATION_CODES {
            for stage in [Stage::Auth, Stage::MailFrom, Stage::Recipient] {
                assert_eq!(
                    reply(stage, code, "5.7.8 nope"),
                    Verdict::Misconfigured(Setting::SmtpUrl)
                );
            }
        }
    }

    #[test]
    fn a_5xx_greeting_is_about_smtp_url_and_a_5xx_to_mail_from_about_mail_from() {
        assert_eq!(
            reply(Stage::Connect, 554, "go away"),
            Verdict::Misconfigured(Setting::SmtpUrl)
        );
        assert_eq!(
            reply(Stage::MailFrom, 553, "5.1.8 bad sender"),
            Verdict::Misconfigured(Setting::MailFrom)
        );
    }

    #[test]
    fn network_and_tls_failures_never_blame_the_user() {
        let failure = |kind| SmtpFailure {
            stage: Stage::Connect,
            kind,
            detail: String::new(),
        };
        assert_eq!(
            failure(FailureKind::Network).verdict(),
            Verdict::MayHeal { throttled: false }
        );
        assert_eq!(
            failure(FailureKind::Tls).verdict(),
            Verdict::Misconfigured(Setting::SmtpUrl)
        );
    }

    #[test]
    fn without_the_command_only_a_recipient_enhanced_code_is_undeliverable() {
        assert!(matches!(
            reply(Stage::Unknown, 550, "5.1.1 <a@b>: unknown"),
            Verdict::Undeliverable(_)
        ));
        assert_eq!(
            reply(Stage::Unknown, 550, "5.1.8 sender rejected"),
            Verdict::Misconfigured(Setting::MailFrom)
        );
        assert_eq!(
            reply(Stage::Unknown, 550, "mailbox unavailable"),
            Verdict::Misconfigured(Setting::MailFrom)
        );
    }
}
