//! test-support's SMTP sink (crates/test-support/src/smtp.rs) in each of its provider modes, over real
//! TCP on loopback with lettre: the rate limit (451 at RCPT TO), refused mailboxes (550 at RCPT
//! TO), refused logins (535 to AUTH), and stopping and starting it on the same port.

use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use test_support::{Modes, SmtpSink};

/// A transport of its own (lettre pools connections) to the sink, without TLS.
fn transport(sink: &SmtpSink) -> AsyncSmtpTransport<Tokio1Executor> {
    builder(sink).build()
}

fn builder(sink: &SmtpSink) -> lettre::transport::smtp::AsyncSmtpTransportBuilder {
    let port = sink
        .url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the sink's URL ends in its port");
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .timeout(Some(Duration::from_secs(5)))
}

fn email(to: &str) -> Message {
    Message::builder()
        .from("Onboarding <no-reply@example.com>".parse().unwrap())
        .to(to.parse().unwrap())
        .subject("Welcome")
        .body("Hello".to_owned())
        .unwrap()
}

type Sent = Result<lettre::transport::smtp::response::Response, lettre::transport::smtp::Error>;

/// The reply code of a refused send, and lettre's account of it (which quotes the reply text).
fn refusal(result: Sent) -> (u16, String) {
    let e = result.expect_err("the server refuses this send");
    let code = e
        .status()
        .unwrap_or_else(|| panic!("a refusal with an SMTP reply, not {e}"));
    (u16::from(code), e.to_string())
}

/// The reply code of a refused send.
fn code(result: Sent) -> u16 {
    refusal(result).0
}

#[tokio::test]
async fn the_rate_limit_refuses_past_r_per_second_with_451_at_rcpt_to() {
    let sink = SmtpSink::start_with(&Modes {
        rate_per_second: Some(2),
        ..Modes::default()
    });
    let mailer = transport(&sink);
    let started = Instant::now();
    let mut codes = Vec::new();
    for i in 0..6 {
        codes.push(
            match mailer.send(email(&format!("u{i}@example.com"))).await {
                Ok(r) => u16::from(r.code()),
                Err(e) => u16::from(e.status().unwrap_or_else(|| panic!("no SMTP reply: {e}"))),
            },
        );
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(1), "6 sends took {elapsed:?}");
    assert_eq!(codes, [250, 250, 451, 451, 451, 451]);
    assert_eq!(sink.messages().len(), 2);
    assert_eq!(sink.throttled(), 4);

    // The window slides: a second after the first two, the limit admits two more.
    tokio::time::sleep(Duration::from_secs(1)).await;
    mailer.send(email("late1@example.com")).await.unwrap();
    mailer.send(email("late2@example.com")).await.unwrap();
    let (code451, text) = refusal(mailer.send(email("late3@example.com")).await);
    assert_eq!(code451, 451);
    assert!(
        text.contains("4.7.0 Too many messages, at most 2 per second"),
        "{text}"
    );
    assert_eq!(sink.throttled(), 5);

    // Changed while running: no limit.
    sink.set_rate_limit(None);
    for i in 0..5 {
        mailer
            .send(email(&format!("free{i}@example.com")))
            .await
            .unwrap();
    }
    assert_eq!(sink.messages().len(), 9);
    assert_eq!(sink.throttled(), 5);
}

#[tokio::test]
async fn a_refused_mailbox_gets_550_at_rcpt_to_and_costs_no_rate() {
    let sink = SmtpSink::start_with(&Modes {
        rate_per_second: Some(1),
        refused_mailboxes: vec!["Gone@Example.com".to_owned()],
        ..Modes::default()
    });
    let mailer = transport(&sink);
    let (code550, text) = refusal(mailer.send(email("gone@example.com")).await);
    assert_eq!(code550, 550);
    assert!(
        text.contains("5.1.1 <gone@example.com>: mailbox unavailable"),
        "{text}"
    );
    assert_eq!(sink.mailbox_refusals(), 1);
    // The refusal was not charged: the one message this second still goes through.
    mailer.send(email("here@example.com")).await.unwrap();
    assert_eq!(sink.throttled(), 0);

    sink.set_rate_limit(None);
    sink.set_refused_mailboxes(["here@example.com"]);
    assert_eq!(code(mailer.send(email("here@example.com")).await), 550);
    mailer.send(email("gone@example.com")).await.unwrap();
    assert_eq!(sink.mailbox_refusals(), 2);
    let per_recipient = sink.per_recipient();
    assert_eq!(per_recipient.get("here@example.com"), Some(&1));
    assert_eq!(per_recipient.get("gone@example.com"), Some(&1));
}

#[tokio::test]
async fn refused_logins_get_535_and_nothing_is_sent() {
    let sink = SmtpSink::start_with(&Modes::default());
    // Switched on while running: it applies to sessions opened from now on.
    sink.set_auth_refused(true);
    let credentials = Credentials::new("apikey".to_owned(), "not-the-password".to_owned());

    let plain = builder(&sink).credentials(credentials.clone()).build();
    let (code535, text) = refusal(plain.send(email("a@example.com")).await);
    assert_eq!(code535, 535);
    assert!(
        text.contains("5.7.8 Authentication credentials invalid"),
        "{text}"
    );
    assert!(!text.contains("not-the-password"), "{text}");
    let login = builder(&sink)
        .credentials(credentials)
        .authentication(vec![Mechanism::Login])
        .build();
    assert_eq!(code(login.send(email("a@example.com")).await), 535);
    assert_eq!(sink.auth_attempts(), 2);

    // Without credentials a strict provider refuses the message itself.
    let anonymous = transport(&sink);
    assert_eq!(code(anonymous.send(email("a@example.com")).await), 530);
    assert!(sink.messages().is_empty());

    sink.set_auth_refused(false);
    transport(&sink).send(email("a@example.com")).await.unwrap();
    assert_eq!(sink.messages().len(), 1);
    assert_eq!(sink.auth_attempts(), 2);
}

#[tokio::test]
async fn down_refuses_connections_and_up_accepts_again_on_the_same_port() {
    let mut sink = SmtpSink::start_with(&Modes::default());
    let url = sink.url();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    transport(&sink).send(email("a@example.com")).await.unwrap();

    assert_eq!(sink.down(), 0, "no session was mid-message");
    let refused = TcpStream::connect(("127.0.0.1", port)).expect_err("the port is closed");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    let e = transport(&sink)
        .send(email("b@example.com"))
        .await
        .expect_err("nothing listens");
    assert!(
        e.status().is_none(),
        "no SMTP reply, only a refused connection: {e}"
    );

    sink.up();
    assert_eq!(sink.url(), url);
    let before = Instant::now();
    transport(&sink).send(email("b@example.com")).await.unwrap();
    let mails = sink.messages();
    assert_eq!(mails.len(), 2);
    assert_eq!(mails[1].to, ["b@example.com"]);
    assert!(mails[1].received_at >= before);
}
