//! The SMTP mailer: lettre speaks SMTP over rustls, on connections this module opens and pools
//! itself, with every send bounded by an overall deadline (lettre's own timeout is per read or
//! write, so a server that accepts the connection and then says nothing would otherwise hold the
//! invocation until the host kills the process).
//!
//! Why not lettre's pooled `AsyncSmtpTransport`: it opens its sockets itself and leaves Nagle's
//! algorithm on, so the small end-of-data write waits for the server's delayed ACK, about 40 ms
//! per message per connection (22 messages/s on one connection, measured in
//! `docs/BENCHMARKS.md`). lettre accepts a caller-made stream (`connect_with_transport`), so we
//! open the TCP connection with `TCP_NODELAY` set and let lettre do EHLO, STARTTLS and AUTH on it.
//! Implicit TLS (`smtps://`) needs lettre to wrap the socket before EHLO, which it only does on
//! sockets it opens, so `smtps://` keeps lettre's own pooled transport.
//!
//! On our own connections the envelope and message go out command by command (`MAIL FROM`,
//! `RCPT TO`, `DATA`, the message: the same four round trips as lettre's `send`), so a refusal
//! is known to answer the recipient or our sender (see `outcome.rs`). lettre's transport only
//! reports the reply code, so `smtps://` classifies by code and enhanced status code alone.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use async_trait::async_trait;
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use url::Url;

use super::outcome::{self, FailureKind, SmtpFailure, Stage};
use super::{MailError, Mailer};
use crate::config::{SmtpSettings, expose};

/// Connections kept open to the SMTP server between sends, and the most used at once.
const POOL_MAX_SIZE: usize = 8;
/// How long an unused pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default ports, as lettre reads SMTP URLs: 25 for plain `smtp://`, 587 with `?tls=`.
const SMTP_PORT: u16 = 25;
const SUBMISSION_PORT: u16 = 587;

/// Sends through one SMTP server with a small connection pool.
pub struct SmtpMailer {
    route: Route,
    display: String,
    deadline: Duration,
}

enum Route {
    /// `smtp://`: our own pool of TCP_NODELAY connections.
    Pooled(Pool),
    /// `smtps://`: lettre's pooled transport (implicit TLS on sockets it opens).
    Lettre(AsyncSmtpTransport<Tokio1Executor>),
}

/// STARTTLS as the URL asks for it (`?tls=required` or `?tls=opportunistic`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum StartTls {
    Never,
    Opportunistic,
    Required,
}

/// Where and how to connect, read once from `SMTP_URL` with lettre's own rules.
struct Endpoint {
    host: String,
    port: u16,
    start_tls: StartTls,
    credentials: Option<Credentials>,
    hello: ClientId,
    /// PEM roots trusted beside the public web PKI: only tests add one, for a loopback server
    /// with a self-signed certificate.
    #[cfg(test)]
    extra_roots: Vec<Vec<u8>>,
}

struct Idle {
    connection: AsyncSmtpConnection,
    since: Instant,
}

struct Pool {
    endpoint: Endpoint,
    /// Open, unused connections, most recently used last.
    idle: Mutex<Vec<Idle>>,
    /// Bounds connections in use, so a burst of sends cannot open hundreds of sessions.
    permits: Semaphore,
}

impl SmtpMailer {
    /// Prepares the mailer without connecting.
    pub fn new(settings: &SmtpSettings) -> Result<Self, MailError> {
        let raw = expose(&settings.url);
        let url = Url::parse(raw).map_err(|e| MailError::Build(format!("SMTP_URL: {e}")))?;
        let route = if url.scheme() == "smtps" {
            let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(raw)
                .map_err(|e| MailError::Build(format!("SMTP_URL is not usable: {e}")))?
                .timeout(Some(settings.timeout))
                .pool_config(
                    PoolConfig::new()
                        .max_size(POOL_MAX_SIZE as u32)
                        .idle_timeout(POOL_IDLE_TIMEOUT),
                )
                .build();
            Route::Lettre(transport)
        } else {
            Route::Pooled(Pool {
                endpoint: Endpoint::from_url(&url)?,
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(POOL_MAX_SIZE),
            })
        };
        Ok(Self {
            route,
            display: settings.display.clone(),
            deadline: settings.timeout,
        })
    }
}

impl Endpoint {
    fn from_url(url: &Url) -> Result<Self, MailError> {
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| MailError::Build("SMTP_URL has no host".to_owned()))?
            .to_owned();
        let start_tls = match url.query_pairs().find(|(k, _)| k == "tls") {
            None => StartTls::Never,
            Some((_, v)) if v == "required" => StartTls::Required,
            Some((_, v)) if v == "opportunistic" => StartTls::Opportunistic,
            Some((_, v)) => {
                return Err(MailError::Build(format!(
                    "SMTP_URL has tls={v}; use required or opportunistic"
                )));
            }
        };
        let default_port = if start_tls == StartTls::Never {
            SMTP_PORT
        } else {
            SUBMISSION_PORT
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| MailError::Build("SMTP_URL has credentials that are not UTF-8".into()))
        };
        let credentials = match url.password() {
            Some(password) => Some(Credentials::new(decode(url.username())?, decode(password)?)),
            None => None,
        };
        let path = url.path().trim_matches('/');
        let hello = if path.is_empty() {
            ClientId::default()
        } else {
            ClientId::Domain(path.to_owned())
        };
        Ok(Self {
            port: url.port().unwrap_or(default_port),
            host,
            start_tls,
            credentials,
            hello,
            #[cfg(test)]
            extra_roots: Vec::new(),
        })
    }

    /// How STARTTLS verifies the server: its certificate must chain to a public root and name
    /// the host from `SMTP_URL`.
    fn tls_parameters(&self) -> Result<TlsParameters, lettre::transport::smtp::Error> {
        #[cfg_attr(not(test), allow(unused_mut))]
        let mut builder = TlsParameters::builder(self.host.clone());
        #[cfg(test)]
        for pem in &self.extra_roots {
            builder = builder
                .add_root_certificate(lettre::transport::smtp::client::Certificate::from_pem(pem)?);
        }
        builder.build()
    }
}

impl Pool {
    /// A pooled connection that is still fresh, or none.
    fn take_idle(&self) -> Option<AsyncSmtpConnection> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(entry) = idle.pop() {
            if entry.since.elapsed() < POOL_IDLE_TIMEOUT && !entry.connection.has_broken() {
                return Some(entry.connection);
            }
            // Dropping closes the socket; the server times the session out on its side.
        }
        None
    }

    fn put_idle(&self, connection: AsyncSmtpConnection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < POOL_MAX_SIZE {
            idle.push(Idle {
                connection,
                since: Instant::now(),
            });
        }
    }

    /// Opens a session: TCP with TCP_NODELAY, EHLO, STARTTLS and AUTH as the URL asks.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SmtpFailure> {
        let endpoint = &self.endpoint;
        let at = |stage| move |e: lettre::transport::smtp::Error| outcome::from_lettre(stage, &e);
        let io = |e: std::io::Error| SmtpFailure {
            stage: Stage::Connect,
            kind: FailureKind::Network,
            detail: format!("connecting to {}:{}: {e}", endpoint.host, endpoint.port),
        };
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(io)?;
        tcp.set_nodelay(true).map_err(io)?;
        let mut connection = AsyncSmtpConnection::connect_with_transport(
            Box::new(CorkedStream::new(tcp)),
            &endpoint.hello,
        )
        .await
        .map_err(at(Stage::Connect))?;
        // `required` asks lettre for STARTTLS even when the server does not offer it, so lettre
        // ends the session (before AUTH) instead of sending in clear text.
        if endpoint.start_tls != StartTls::Never
            && (connection.can_starttls() || endpoint.start_tls == StartTls::Required)
        {
            let parameters = endpoint.tls_parameters().map_err(at(Stage::StartTls))?;
            connection
                .starttls(parameters, &endpoint.hello)
                .await
                .map_err(at(Stage::StartTls))?;
        }
        if let Some(credentials) = &endpoint.credentials {
            connection
                .auth(DEFAULT_MECHANISMS, credentials)
                .await
                .map_err(at(Stage::Auth))?;
        }
        Ok(connection)
    }

    async fn send(&self, message: &lettre::Message) -> Result<(), SmtpFailure> {
        let _permit = self.permits.acquire().await.map_err(|_| SmtpFailure {
            stage: Stage::Connect,
            kind: FailureKind::Client,
            detail: "the SMTP pool is closed".to_owned(),
        })?;
        let envelope = message.envelope();
        let body = message.formatted();
        // A pooled session may have been closed by the server since its last use (the socket
        // fails, or the server says 421 and closes); one fresh connection is tried before the
        // send counts as failed. Any other reply is the server's answer to this email.
        if let Some(mut connection) = self.take_idle() {
            match deliver(&mut connection, envelope, &body).await {
                Ok(()) => {
                    self.put_idle(connection);
                    return Ok(());
                }
                Err(e) => {
                    connection.abort().await;
                    if !matches!(e.kind, FailureKind::Network | FailureKind::Reply(421)) {
                        return Err(e);
                    }
                    tracing::debug!(error = %e, "pooled SMTP session failed; reconnecting");
                }
            }
        }
        let mut connection = self.connect().await?;
        match deliver(&mut connection, envelope, &body).await {
            Ok(()) => {
                self.put_idle(connection);
                Ok(())
            }
            Err(e) => {
                connection.abort().await;
                Err(e)
            }
        }
    }
}

/// One email on an open session, command by command (what lettre's `send` does, with each
/// failure tagged with the command it answered).
async fn deliver(
    connection: &mut AsyncSmtpConnection,
    envelope: &lettre::address::Envelope,
    body: &[u8],
) -> Result<(), SmtpFailure> {
    let at = |stage| move |e: lettre::transport::smtp::Error| outcome::from_lettre(stage, &e);
    let refuse = |stage, why: &str| SmtpFailure {
        stage,
        kind: FailureKind::Client,
        detail: why.to_owned(),
    };
    let server = connection.server_info();
    let mut options = Vec::new();
    // RFC 6531 and 6152, as lettre checks them: no non-ASCII address without SMTPUTF8, no
    // 8-bit body without 8BITMIME.
    // A sender the server cannot take is our MAIL_FROM's fault, a recipient the user's.
    let not_ascii = |address: &lettre::Address| !AsRef::<str>::as_ref(address).is_ascii();
    let sender_not_ascii = envelope.from().is_some_and(not_ascii);
    let recipient_not_ascii = envelope.to().iter().any(not_ascii);
    if sender_not_ascii || recipient_not_ascii {
        if !server.supports_feature(Extension::SmtpUtfEight) {
            let stage = if sender_not_ascii {
                Stage::MailFrom
            } else {
                Stage::Recipient
            };
            return Err(refuse(
                stage,
                "the address is not ASCII and the server does not support SMTPUTF8",
            ));
        }
        options.push(MailParameter::SmtpUtfEight);
    }
    if !body.is_ascii() {
        if !server.supports_feature(Extension::EightBitMime) {
            return Err(refuse(
                Stage::Message,
                "the message is not ASCII and the server does not support 8BITMIME",
            ));
        }
        options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    connection
        .command(Mail::new(envelope.from().cloned(), options))
        .await
        .map_err(at(Stage::MailFrom))?;
    for to in envelope.to() {
        connection
            .command(Rcpt::new(to.clone(), Vec::new()))
            .await
            .map_err(at(Stage::Recipient))?;
    }
    connection.command(Data).await.map_err(at(Stage::Data))?;
    connection.message(body).await.map_err(at(Stage::Message))?;
    Ok(())
}

/// Written bytes wait here until lettre next reads.
///
/// lettre writes the message body and the end-of-data line `.` separately, flushing after each,
/// so on a TCP_NODELAY socket every message cost two segments where one does (and the sink woke
/// up twice). SMTP without pipelining is strictly request then reply: after each write lettre
/// either writes more or waits for the server's answer. So this stream treats `flush` as "more
/// may follow" and sends everything pending as soon as a read is attempted (or on shutdown): no
/// bytes wait while anyone waits on the server, hence no stall, and each command, and the body
/// with its end-of-data line, goes out as one write. Under STARTTLS it sits below TLS, holding
/// TLS records the same way.
struct CorkedStream<S> {
    inner: S,
    pending: Vec<u8>,
    /// How much of `pending` has reached the socket.
    sent: usize,
}

/// At most this much is held; a write that would go past it sends what is held first, and a
/// write this large or larger goes straight to the socket, so a large message is never copied
/// whole.
const CORK_LIMIT: usize = 64 * 1024;

/// Lengths only: the held bytes may be an AUTH exchange or an email.
impl<S> std::fmt::Debug for CorkedStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CorkedStream")
            .field("pending", &self.pending.len())
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncWrite + Unpin> CorkedStream<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            sent: 0,
        }
    }

    /// Writes out everything pending.
    fn poll_send_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.pending.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for CorkedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Whoever reads waits on the server, which must first have everything we wrote.
        ready!(self.poll_send_pending(cx))?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CorkedStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.pending.len() >= CORK_LIMIT {
            ready!(self.poll_send_pending(cx))?;
        }
        if self.pending.is_empty() && buf.len() >= CORK_LIMIT {
            return Pin::new(&mut self.inner).poll_write(cx, buf);
        }
        // Whatever does not fit is written again by the caller, after what is held goes out.
        let taken = buf.len().min(CORK_LIMIT - self.pending.len());
        self.pending.extend_from_slice(&buf[..taken]);
        Poll::Ready(Ok(taken))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Deferred to the next read or shutdown: see the type's doc.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for CorkedStream<TcpStream> {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    fn describe(&self) -> String {
        format!("SMTP at {}", self.display)
    }

    async fn send(&self, message: &lettre::Message) -> Result<(), MailError> {
        let send = async {
            match &self.route {
                Route::Pooled(pool) => pool.send(message).await.map_err(MailError::Smtp),
                // lettre's errors name the server and the SMTP reply, never the credentials.
                Route::Lettre(transport) => transport
                    .send(message.clone())
                    .await
                    .map(drop)
                    .map_err(|e| MailError::Smtp(outcome::from_lettre(Stage::Unknown, &e))),
            }
        };
        match tokio::time::timeout(self.deadline, send).await {
            Ok(result) => result,
            Err(_) => Err(MailError::Timeout(self.deadline)),
        }
    }
}

#[cfg(test)]
#[path = "smtp_starttls_tests.rs"]
mod starttls_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(url: &str) -> Endpoint {
        Endpoint::from_url(&Url::parse(url).unwrap()).unwrap()
    }

    /// Writes and flushes wait in the stream; the read that follows sends them first, in order
    /// and together, so the server's reply comes back instead of a deadlock.
    #[tokio::test]
    async fn a_corked_stream_sends_what_it_holds_before_it_reads() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, mut server) = tokio::io::duplex(1024);
        let mut corked = CorkedStream::new(client);
        corked.write_all(b"body\r\n").await.unwrap();
        corked.flush().await.unwrap();
        corked.write_all(b".\r\n").await.unwrap();
        corked.flush().await.unwrap();
        assert_eq!(corked.pending, b"body\r\n.\r\n");

        let reply = tokio::spawn(async move {
            let mut got = [0; 9];
            server.read_exact(&mut got).await.unwrap();
            server.write_all(b"250 OK\r\n").await.unwrap();
            got
        });
        let mut answer = [0; 8];
        corked.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"250 OK\r\n");
        assert_eq!(&reply.await.unwrap(), b"body\r\n.\r\n");
        assert!(corked.pending.is_empty());
    }

    /// Closing the stream sends what it still holds (lettre's QUIT on abort).
    #[tokio::test]
    async fn a_corked_stream_sends_what_it_holds_on_shutdown() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, mut server) = tokio::io::duplex(1024);
        let mut corked = CorkedStream::new(client);
        corked.write_all(b"QUIT\r\n").await.unwrap();
        corked.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"QUIT\r\n");
    }

    /// A message larger than the cork limit streams out while the server reads, rather than
    /// piling up: the writer is not held until the whole message is buffered.
    #[tokio::test]
    async fn a_corked_stream_passes_large_writes_through_past_its_limit() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, mut server) = tokio::io::duplex(4096);
        let mut corked = CorkedStream::new(client);
        let reader = tokio::spawn(async move {
            let mut got = vec![0; 3 * CORK_LIMIT];
            server.read_exact(&mut got).await.unwrap();
            got
        });
        let chunk = vec![b'x'; 1000];
        for _ in 0..(3 * CORK_LIMIT / 1000) {
            corked.write_all(&chunk).await.unwrap();
        }
        let rest = 3 * CORK_LIMIT % 1000;
        corked.write_all(&chunk[..rest]).await.unwrap();
        corked.shutdown().await.unwrap();
        assert!(reader.await.unwrap().iter().all(|&b| b == b'x'));
    }

    /// One write far past the limit (lettre writes a whole message at once) is neither held
    /// whole nor lost, and the small write after it still waits for the next read.
    #[tokio::test]
    async fn a_corked_stream_sends_one_huge_write_without_holding_it() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, mut server) = tokio::io::duplex(4096);
        let mut corked = CorkedStream::new(client);
        let total = 3 * CORK_LIMIT + 123;
        let reader = tokio::spawn(async move {
            let mut got = vec![0; total + 5];
            server.read_exact(&mut got).await.unwrap();
            got
        });
        let big: Vec<u8> = (0..3 * CORK_LIMIT + 123).map(|i| (i % 251) as u8).collect();
        corked.write_all(&big).await.unwrap();
        assert!(corked.pending.len() < CORK_LIMIT);
        corked.write_all(b"\r\n.\r\n").await.unwrap();
        corked.shutdown().await.unwrap();
        let got = reader.await.unwrap();
        assert_eq!(&got[..total], &big[..]);
        assert_eq!(&got[total..], b"\r\n.\r\n");
    }

    #[test]
    fn plain_smtp_defaults_to_port_25_without_tls() {
        let e = endpoint("smtp://mail.example.com");
        assert_eq!((e.port, e.start_tls == StartTls::Never), (25, true));
        assert!(e.credentials.is_none());
    }

    #[test]
    fn required_tls_defaults_to_the_submission_port() {
        let e = endpoint("smtp://user:p%40ss@smtp.example.com?tls=required");
        assert_eq!(e.port, 587);
        assert!(e.start_tls == StartTls::Required);
        assert!(e.credentials.is_some());
    }

    #[test]
    fn an_unknown_tls_mode_is_refused() {
        assert!(Endpoint::from_url(&Url::parse("smtp://h?tls=sometimes").unwrap()).is_err());
    }

    #[test]
    fn the_path_names_the_ehlo_domain() {
        let e = endpoint("smtp://h:2525/client.example.com");
        assert_eq!(e.port, 2525);
        assert!(matches!(e.hello, ClientId::Domain(ref d) if d == "client.example.com"));
    }
}
