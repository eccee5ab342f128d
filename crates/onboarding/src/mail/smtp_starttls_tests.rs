//! STARTTLS and AUTH through the write-holding stream, against a real SMTP server on loopback
//! (mailin-embedded over rustls) that presents a self-signed certificate for `localhost`: the
//! path a mail provider on port 587 takes, which the plain-SMTP tests never reach.

use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailin_embedded::response::{AUTH_OK, INVALID_CREDENTIALS, OK};
use mailin_embedded::{AuthMechanism, Handler, Response, Server, SslConfig};
use secrecy::SecretString;

use super::{Route, SmtpMailer};
use crate::config::SmtpSettings;
use crate::mail::Mailer;

const USER: &str = "mailer";
const PASSWORD: &str = "p@ss word";
/// The same credentials as `SMTP_URL` carries them, percent-encoded.
const URL_CREDENTIALS: &str = "mailer:p%40ss%20word";

/// What the server was told.
#[derive(Default)]
struct Seen {
    logins: Vec<(String, String)>,
    messages: Vec<String>,
}

/// mailin clones this per connection.
#[derive(Clone)]
struct Recorder {
    seen: Arc<Mutex<Seen>>,
    current: Vec<u8>,
}

impl Handler for Recorder {
    fn auth_plain(&mut self, _authorization: &str, user: &str, password: &str) -> Response {
        let mut seen = self.seen.lock().unwrap();
        seen.logins.push((user.to_owned(), password.to_owned()));
        if (user, password) == (USER, PASSWORD) {
            AUTH_OK
        } else {
            INVALID_CREDENTIALS
        }
    }

    fn data_start(&mut self, _domain: &str, _from: &str, _8bit: bool, _to: &[String]) -> Response {
        self.current.clear();
        OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.current.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let message = String::from_utf8_lossy(&std::mem::take(&mut self.current)).into_owned();
        self.seen.lock().unwrap().messages.push(message);
        OK
    }
}

/// A server offering STARTTLS, then AUTH PLAIN only over TLS. Returns its port, its
/// certificate (PEM) and what it sees.
fn start_server(dir: &Path) -> (u16, String, Arc<Mutex<Seen>>) {
    // mailin builds its rustls config with the process's default provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut server = Server::new(Recorder {
        seen: seen.clone(),
        current: Vec::new(),
    });
    server
        .with_name("localhost")
        .with_ssl(SslConfig::SelfSigned {
            cert_path: cert_path.to_str().unwrap().to_owned(),
            key_path: key_path.to_str().unwrap().to_owned(),
        })
        .unwrap()
        .with_auth(AuthMechanism::Plain)
        .with_tcp_listener(listener);
    std::thread::spawn(move || {
        if let Err(e) = server.serve() {
            eprintln!("the STARTTLS test server stopped: {e}");
        }
    });
    (port, cert.pem(), seen)
}

/// Our mailer for `url`, trusting `root` (PEM) beside the public roots when given.
fn mailer(url: String, root: Option<&str>) -> SmtpMailer {
    let settings = SmtpSettings {
        url: SecretString::from(url),
        display: "test".to_owned(),
        timeout: Duration::from_secs(10),
    };
    let mut mailer = SmtpMailer::new(&settings).unwrap();
    let Route::Pooled(pool) = &mut mailer.route else {
        panic!("smtp:// URLs go through our own pool");
    };
    pool.endpoint
        .extra_roots
        .extend(root.map(|pem| pem.as_bytes().to_vec()));
    mailer
}

fn message(n: u32) -> lettre::Message {
    lettre::Message::builder()
        .from("Onboarding <no-reply@example.com>".parse().unwrap())
        .to("ada@example.com".parse().unwrap())
        .subject(format!("message {n}"))
        .body(format!("This is message {n}."))
        .unwrap()
}

/// STARTTLS, then AUTH, then two emails; the second reuses the pooled session (one login).
#[tokio::test]
async fn emails_go_out_over_starttls_with_auth_on_one_pooled_session() {
    let dir = tempfile::tempdir().unwrap();
    let (port, root, seen) = start_server(dir.path());
    let url = format!("smtp://{URL_CREDENTIALS}@localhost:{port}?tls=required");
    let mailer = mailer(url, Some(&root));

    mailer.send(&message(1)).await.unwrap();
    mailer.send(&message(2)).await.unwrap();

    let seen = seen.lock().unwrap();
    assert_eq!(seen.logins, [(USER.to_owned(), PASSWORD.to_owned())]);
    assert_eq!(seen.messages.len(), 2);
    assert!(seen.messages[0].contains("This is message 1."));
    assert!(seen.messages[1].contains("This is message 2."));
}

/// The server's certificate is checked: one no public root vouches for is refused, and so is
/// a trusted one that names another host. Neither gets a password or an email.
#[tokio::test]
async fn a_certificate_that_does_not_check_out_gets_neither_password_nor_email() {
    let dir = tempfile::tempdir().unwrap();
    let (port, root, seen) = start_server(dir.path());

    let untrusted = mailer(
        format!("smtp://{URL_CREDENTIALS}@localhost:{port}?tls=required"),
        None,
    );
    let error = untrusted.send(&message(1)).await.unwrap_err();
    assert!(error.to_string().contains("UnknownIssuer"), "{error}");

    // Trusted, but it names localhost, not 127.0.0.1.
    let misnamed = mailer(
        format!("smtp://{URL_CREDENTIALS}@127.0.0.1:{port}?tls=required"),
        Some(&root),
    );
    let error = misnamed.send(&message(2)).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("not valid for name \"127.0.0.1\""),
        "{error}"
    );

    let seen = seen.lock().unwrap();
    assert!(seen.logins.is_empty() && seen.messages.is_empty());
}

/// A server that offers AUTH but not STARTTLS (a downgrade, or a misconfigured relay): with
/// `tls=required` lettre refuses to go on after EHLO, so the password never crosses in clear
/// text.
/// The server is raw TCP because mailin never offers AUTH without TLS.
#[tokio::test]
async fn required_tls_sends_no_password_to_a_server_without_starttls() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let (read, mut write) = socket.into_split();
        let mut lines = BufReader::new(read).lines();
        let mut heard = Vec::new();
        write.write_all(b"220 localhost ESMTP\r\n").await.unwrap();
        while let Ok(Some(line)) = lines.next_line().await {
            let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
            heard.push(line);
            let reply: &[u8] = match verb.as_str() {
                "EHLO" => b"250-localhost\r\n250 AUTH PLAIN LOGIN\r\n",
                "QUIT" => b"221 bye\r\n",
                _ => b"502 not implemented\r\n",
            };
            if write.write_all(reply).await.is_err() || verb == "QUIT" {
                break;
            }
        }
        heard
    });

    let mailer = mailer(
        format!("smtp://{URL_CREDENTIALS}@127.0.0.1:{port}?tls=required"),
        None,
    );
    let error = mailer.send(&message(1)).await.unwrap_err();
    assert!(
        error.to_string().contains("STARTTLS is not supported"),
        "{error}"
    );
    drop(mailer);

    let heard = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the client hung up")
        .unwrap();
    assert!(
        !heard
            .iter()
            .any(|line| line.to_ascii_uppercase().starts_with("AUTH")),
        "{heard:?}"
    );
}

/// Whatever a tracing subscriber writes, kept for reading.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Even at the most verbose log level (an operator chasing a mail problem), the SMTP password
/// appears in no log line, neither as typed nor as the base64 of AUTH PLAIN.
#[tokio::test]
async fn the_smtp_password_reaches_no_log_line_even_at_trace_level() {
    use base64::Engine as _;

    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer({
            let captured = captured.clone();
            move || captured.clone()
        })
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    tracing::debug!("the capture works");

    let dir = tempfile::tempdir().unwrap();
    let (port, root, seen) = start_server(dir.path());
    let url = format!("smtp://{URL_CREDENTIALS}@localhost:{port}?tls=required");
    mailer(url, Some(&root)).send(&message(1)).await.unwrap();
    assert_eq!(seen.lock().unwrap().logins.len(), 1);

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("the capture works"), "{logs}");
    let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0{USER}\0{PASSWORD}"));
    assert!(!logs.contains(PASSWORD), "{logs}");
    assert!(!logs.contains(&plain), "{logs}");
}
