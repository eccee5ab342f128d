//! The mail ceilings, all sending the product's own email (captured by the sink) to the same sink:
//!
//! - the sink's capacity: a raw SMTP client that writes each message and its end marker in one
//!   piece (so Nagle never holds anything back);
//! - lettre's pooled `AsyncSmtpTransport`, configured as the product configures it (Nagle on:
//!   lettre 0.11.23 makes its sockets itself and never sets TCP_NODELAY);
//! - one lettre connection, Nagle on vs. off, messages per second per connection: the stall and
//!   its removal. The "off" connection is made by us (`TcpStream` + `set_nodelay(true)`) and handed
//!   to `AsyncSmtpConnection::connect_with_transport`, the only way lettre 0.11.23 allows;
//! - a pool of such nodelay connections (the same size as the product's), which is what the
//!   product would need to own to get there today.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use lettre::address::Envelope;
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The product's pool size (crates/onboarding/src/mail/smtp.rs POOL_MAX_SIZE).
pub const PRODUCT_POOL_SIZE: u32 = 8;

/// Messages sent in a phase, and their latencies.
#[derive(Debug, Clone, Default)]
pub struct MailRun {
    pub sent: u64,
    pub seconds: f64,
    pub latencies_us: Vec<u64>,
    pub errors: u64,
}

impl MailRun {
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.seconds
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        percentile_ms(&self.latencies_us, p)
    }

    fn merge(&mut self, other: MailRun) {
        self.sent += other.sent;
        self.errors += other.errors;
        self.latencies_us.extend(other.latencies_us);
    }
}

/// The p-th percentile of latencies in microseconds, in milliseconds.
pub fn percentile_ms(latencies_us: &[u64], p: f64) -> f64 {
    if latencies_us.is_empty() {
        return f64::NAN;
    }
    let mut sorted = latencies_us.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

/// The message every ceiling sends: the product's email as the sink received it.
#[derive(Clone)]
pub struct Sample {
    /// Without the SMTP dot-stuffing and without the final CRLF (lettre adds `\r\n.\r\n`).
    pub data: Arc<Vec<u8>>,
    pub envelope: Envelope,
}

impl Sample {
    /// From the message as the sink captured it.
    pub fn new(mut data: Vec<u8>) -> anyhow::Result<Self> {
        if data.ends_with(b"\r\n") {
            data.truncate(data.len() - 2);
        }
        let envelope = Envelope::new(
            Some("onboarding@bench.example".parse::<Address>()?),
            vec!["ceiling@bench.example".parse::<Address>()?],
        )?;
        Ok(Self {
            data: Arc::new(data),
            envelope,
        })
    }

    /// The DATA payload in one piece: dot-stuffed, with the end marker.
    fn wire(&self) -> Vec<u8> {
        let mut wire = Vec::with_capacity(self.data.len() + 64);
        let mut at_line_start = true;
        for &byte in self.data.iter() {
            if at_line_start && byte == b'.' {
                wire.push(b'.');
            }
            wire.push(byte);
            at_line_start = byte == b'\n';
        }
        wire.extend_from_slice(b"\r\n.\r\n");
        wire
    }
}

/// Runs `senders` tasks for `duration`, each calling `send` in a loop.
async fn drive<F, Fut>(senders: u32, duration: Duration, send: F) -> MailRun
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..senders)
        .map(|_| {
            let send = send.clone();
            tokio::spawn(async move {
                let mut run = MailRun::default();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match send().await {
                        Ok(()) => {
                            run.sent += 1;
                            run.latencies_us.push(t.elapsed().as_micros() as u64);
                        }
                        Err(e) => {
                            run.errors += 1;
                            if run.errors == 1 {
                                eprintln!("bench: a ceiling send failed: {e:#}");
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                run
            })
        })
        .collect();
    let mut total = MailRun::default();
    for task in tasks {
        if let Ok(run) = task.await {
            total.merge(run);
        }
    }
    total.seconds = started.elapsed().as_secs_f64();
    total
}

/// The sink's capacity: `connections` raw SMTP sessions, each message written in one piece.
pub async fn raw_client(
    port: u16,
    connections: u32,
    duration: Duration,
    sample: &Sample,
) -> anyhow::Result<MailRun> {
    let wire = Arc::new(sample.wire());
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let wire = wire.clone();
        tasks.push(tokio::spawn(async move {
            let mut run = MailRun::default();
            let stream = TcpStream::connect(("127.0.0.1", port)).await?;
            let (read, mut write) = stream.into_split();
            let mut read = BufReader::new(read);
            let mut line = String::new();
            expect_reply(&mut read, &mut line, "220").await?;
            write.write_all(b"EHLO bench.example\r\n").await?;
            expect_reply(&mut read, &mut line, "250").await?;
            while Instant::now() < deadline {
                let t = Instant::now();
                write
                    .write_all(b"MAIL FROM:<onboarding@bench.example>\r\n")
                    .await?;
                expect_reply(&mut read, &mut line, "250").await?;
                write
                    .write_all(b"RCPT TO:<ceiling@bench.example>\r\n")
                    .await?;
                expect_reply(&mut read, &mut line, "250").await?;
                write.write_all(b"DATA\r\n").await?;
                expect_reply(&mut read, &mut line, "354").await?;
                write.write_all(&wire).await?;
                expect_reply(&mut read, &mut line, "250").await?;
                run.sent += 1;
                run.latencies_us.push(t.elapsed().as_micros() as u64);
            }
            let _ = write.write_all(b"QUIT\r\n").await;
            anyhow::Ok(run)
        }));
    }
    let mut total = MailRun::default();
    for task in tasks {
        total.merge(task.await??);
    }
    total.seconds = started.elapsed().as_secs_f64();
    Ok(total)
}

/// Reads one (possibly multi-line) SMTP reply and checks its code.
async fn expect_reply<R: tokio::io::AsyncBufRead + Unpin>(
    read: &mut R,
    line: &mut String,
    code: &str,
) -> anyhow::Result<()> {
    loop {
        line.clear();
        if read.read_line(line).await? == 0 {
            bail!("the SMTP server closed the connection");
        }
        if !line.starts_with(code) {
            bail!("expected {code}, got {line:?}");
        }
        // "250-..." continues, "250 ..." ends.
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(());
        }
    }
}

/// lettre's pooled transport exactly as the product builds it (from an `smtp://` URL, pool of
/// [`PRODUCT_POOL_SIZE`], 60 s idle), `senders` tasks sharing it.
pub async fn lettre_pooled(
    port: u16,
    senders: u32,
    duration: Duration,
    sample: &Sample,
) -> anyhow::Result<MailRun> {
    let transport =
        AsyncSmtpTransport::<Tokio1Executor>::from_url(&format!("smtp://127.0.0.1:{port}"))?
            .timeout(Some(Duration::from_secs(30)))
            .pool_config(
                PoolConfig::new()
                    .max_size(PRODUCT_POOL_SIZE)
                    .idle_timeout(Duration::from_secs(60)),
            )
            .build();
    let sample = sample.clone();
    let run = drive(senders, duration, move || {
        let (transport, sample) = (transport.clone(), sample.clone());
        async move {
            transport
                .send_raw(&sample.envelope, &sample.data)
                .await
                .map(drop)
                .context("lettre send")
        }
    })
    .await;
    Ok(run)
}

/// Opens one lettre connection: lettre's own socket (Nagle on), or ours with TCP_NODELAY.
pub async fn lettre_connection(port: u16, nodelay: bool) -> anyhow::Result<AsyncSmtpConnection> {
    let hello = ClientId::Domain("bench.example".to_owned());
    if nodelay {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        Ok(AsyncSmtpConnection::connect_with_transport(Box::new(stream), &hello).await?)
    } else {
        Ok(AsyncSmtpConnection::connect_tokio1(
            ("127.0.0.1", port),
            Some(Duration::from_secs(30)),
            &hello,
            None,
            None,
        )
        .await?)
    }
}

/// One connection, one message at a time, for `duration`: messages per second per connection.
pub async fn lettre_single(
    port: u16,
    nodelay: bool,
    duration: Duration,
    sample: &Sample,
) -> anyhow::Result<MailRun> {
    let mut connection = lettre_connection(port, nodelay).await?;
    // The first send pays for nothing extra (EHLO is done), but warm up anyway.
    connection.send(&sample.envelope, &sample.data).await?;
    let started = Instant::now();
    let mut run = MailRun::default();
    while started.elapsed() < duration {
        let t = Instant::now();
        connection.send(&sample.envelope, &sample.data).await?;
        run.sent += 1;
        run.latencies_us.push(t.elapsed().as_micros() as u64);
    }
    run.seconds = started.elapsed().as_secs_f64();
    let _ = connection.quit().await;
    Ok(run)
}

/// lettre's pool semantics over connections we make with TCP_NODELAY: an idle connection is
/// reused after a NOOP (as lettre's pool does), a new one is opened when none is idle, and at most
/// `max_idle` are kept. This is what the product would own to send without the stall today, and
/// what lettre's pooled transport gives once it sets TCP_NODELAY itself. Cloning shares the pool.
#[derive(Clone)]
pub struct NodelayPool {
    port: u16,
    max_idle: usize,
    idle: Arc<Mutex<Vec<AsyncSmtpConnection>>>,
}

impl NodelayPool {
    pub fn new(port: u16, max_idle: u32) -> Self {
        Self {
            port,
            max_idle: max_idle as usize,
            idle: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Sends `sample` on an idle connection, or on a new one when none is idle.
    pub async fn send(&self, sample: &Sample) -> anyhow::Result<()> {
        let mut connection = loop {
            let pooled = self.idle.lock().unwrap().pop();
            match pooled {
                Some(mut c) => {
                    if c.test_connected().await {
                        break c;
                    }
                    c.abort().await;
                }
                None => break lettre_connection(self.port, true).await?,
            }
        };
        let result = connection.send(&sample.envelope, &sample.data).await;
        if connection.has_broken() {
            connection.abort().await;
        } else {
            let mut idle = self.idle.lock().unwrap();
            if idle.len() < self.max_idle {
                idle.push(connection);
            }
        }
        result.map(drop).context("lettre send")
    }
}

/// `senders` tasks sharing a [`NodelayPool`] of at most `max_idle` idle connections.
pub async fn lettre_nodelay_pool(
    port: u16,
    max_idle: u32,
    senders: u32,
    duration: Duration,
    sample: &Sample,
) -> anyhow::Result<MailRun> {
    let pool = NodelayPool::new(port, max_idle);
    let sample = sample.clone();
    let run = drive(senders, duration, move || {
        let (pool, sample) = (pool.clone(), sample.clone());
        async move { pool.send(&sample).await }
    })
    .await;
    Ok(run)
}
