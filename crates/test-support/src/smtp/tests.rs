//! The sink over raw SMTP: the rate limit charges a message once, at its first `RCPT TO`, and
//! refuses past it there; a counting sink accepts everything and keeps nothing.
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use super::{Modes, Record, SinkOptions, SmtpSink};

/// One raw SMTP session: sends each command, returns each reply's last line.
fn session(sink: &SmtpSink, commands: &[&str]) -> Vec<String> {
    let stream = TcpStream::connect(("127.0.0.1", sink.port())).unwrap();
    let mut replies = BufReader::new(stream.try_clone().unwrap());
    let mut out = &stream;
    let mut reply = || {
        let mut line = String::new();
        loop {
            line.clear();
            replies.read_line(&mut line).unwrap();
            if line.as_bytes().get(3) != Some(&b'-') {
                return line.trim_end().to_owned();
            }
        }
    };
    reply();
    commands
        .iter()
        .map(|c| {
            out.write_all(format!("{c}\r\n").as_bytes()).unwrap();
            reply()
        })
        .collect()
}

const MESSAGE: &[&str] = &[
    "MAIL FROM:<a@example.com>",
    "RCPT TO:<b@example.com>",
    "RCPT TO:<c@example.com>",
    "DATA",
    "Subject: hi\r\n\r\nhello\r\n.",
];

fn codes(replies: &[String]) -> Vec<&str> {
    replies.iter().map(|r| &r[..3]).collect()
}

#[test]
fn the_limited_sink_refuses_past_its_rate_at_rcpt_to() {
    let sink = SmtpSink::try_start(SinkOptions {
        modes: Modes {
            rate_per_second: Some(1),
            ..Modes::default()
        },
        ..SinkOptions::default()
    })
    .unwrap();
    let mut commands = vec!["EHLO client"];
    commands.extend(MESSAGE);
    commands.extend(&MESSAGE[..2]);
    let replies = session(&sink, &commands);
    // One message with two recipients is charged once; the next is refused at RCPT TO.
    assert_eq!(
        codes(&replies),
        ["250", "250", "250", "250", "354", "250", "250", "451"]
    );
    assert!(
        replies[7].starts_with("451 4.7.0 Too many messages, at most 1 per second"),
        "{}",
        replies[7]
    );
    assert_eq!((sink.accepted(), sink.throttled()), (1, 1));
    assert_eq!(sink.messages().len(), 1);
}

#[test]
fn the_unlimited_sink_accepts_everything() {
    let sink = SmtpSink::try_start(SinkOptions {
        record: Record::Count,
        ..SinkOptions::default()
    })
    .unwrap();
    let mut commands = vec!["EHLO client"];
    for _ in 0..3 {
        commands.extend(MESSAGE);
    }
    let replies = session(&sink, &commands);
    assert!(codes(&replies).iter().all(|c| *c == "250" || *c == "354"));
    assert_eq!((sink.accepted(), sink.throttled()), (3, 0));
    assert!(
        sink.messages().is_empty(),
        "a counting sink keeps no message"
    );
}
