//! One bounded look, at start, at each backend the settings name: a Redis or SMTP server that
//! does not answer is said beside its banner line, where a developer looks, instead of surfacing
//! only later through `/health` or a failing email. The dev host starts anyway, as the host
//! would: the handler connects lazily and rides outages out.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::TcpStream;
use url::Url;

use onboarding::app::App;
use onboarding::config::{Settings, SmtpSettings, expose};

/// The longest look at one backend.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a backend did not answer, in a few words (never a credential).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unreachable {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Store(#[from] onboarding::store::StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the server greeted with {0:?}, not 220")]
    Greeting(String),
    #[error("SMTP_URL has no host")]
    NoHost,
}

/// `backends` (as `App::describe_backends` names them), each real one that did not answer
/// followed by why. Looks at both at once, so the start waits one timeout at most.
pub(crate) async fn annotate(
    app: &App,
    settings: &Settings,
    backends: Vec<(&'static str, String)>,
) -> Vec<(&'static str, String)> {
    let store = async {
        match settings.redis {
            Some(_) => bounded(async { Ok(app.store.ping().await?) }).await,
            None => Ok(()),
        }
    };
    let mail = async {
        match &settings.smtp {
            Some(smtp) => bounded(greeting(smtp)).await,
            None => Ok(()),
        }
    };
    let (store, mail) = tokio::join!(store, mail);
    backends
        .into_iter()
        .map(|(part, description)| {
            let outcome = match part {
                "store" => &store,
                "mail" => &mail,
                _ => return (part, description),
            };
            match outcome {
                Ok(()) => (part, description),
                Err(why) => {
                    tracing::warn!(
                        "{part}: {description} is not answering ({why}); starting anyway, as the \
                         host would (the handler connects when it needs it)"
                    );
                    let warning =
                        format!("{description}  <- NOT ANSWERING: {why} (starting anyway)");
                    (part, warning)
                }
            }
        })
        .collect()
}

async fn bounded(
    look: impl std::future::Future<Output = Result<(), Unreachable>>,
) -> Result<(), Unreachable> {
    tokio::time::timeout(PROBE_TIMEOUT, look)
        .await
        .unwrap_or(Err(Unreachable::Timeout(PROBE_TIMEOUT)))
}

/// Connects and, on plain `smtp://`, reads the greeting, which must be a 220. (`smtps://`
/// speaks TLS first; a connection is as far as a look without a handshake goes.)
async fn greeting(smtp: &SmtpSettings) -> Result<(), Unreachable> {
    let url = Url::parse(expose(&smtp.url)).map_err(|_| Unreachable::NoHost)?;
    let host = url.host_str().ok_or(Unreachable::NoHost)?;
    let starttls = url.query_pairs().any(|(k, _)| k == "tls");
    let port = url.port().unwrap_or(match (url.scheme(), starttls) {
        ("smtps", _) => 465,
        (_, true) => 587,
        _ => 25,
    });
    let stream = TcpStream::connect((host, port)).await?;
    if url.scheme() == "smtps" {
        return Ok(());
    }
    let mut first = String::new();
    BufReader::new(stream).read_line(&mut first).await?;
    if first.starts_with("220") {
        Ok(())
    } else {
        Err(Unreachable::Greeting(
            first.trim().chars().take(80).collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onboarding::config::Mode;

    async fn app_with(env: &[(&str, String)]) -> (App, Settings) {
        let settings = Settings::from_lookup(Mode::Dev, |name| {
            env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())
        })
        .unwrap();
        let outbox = std::env::temp_dir().join("reachability-tests-outbox");
        (App::build(&settings, &outbox).await.unwrap(), settings)
    }

    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn backends_that_do_not_answer_are_named_beside_their_line() {
        let env = [
            ("REDIS_URL", format!("redis://127.0.0.1:{}", closed_port())),
            ("SMTP_URL", format!("smtp://127.0.0.1:{}", closed_port())),
        ];
        let (app, settings) = app_with(&env).await;
        let started = std::time::Instant::now();
        let lines = annotate(&app, &settings, app.describe_backends()).await;
        assert!(started.elapsed() < PROBE_TIMEOUT + Duration::from_millis(500));
        for (part, line) in &lines {
            assert!(line.contains("NOT ANSWERING"), "{part}: {line}");
        }
    }

    #[tokio::test]
    async fn embedded_backends_are_not_looked_at() {
        let (app, settings) = app_with(&[]).await;
        let lines = annotate(&app, &settings, app.describe_backends()).await;
        assert!(
            lines.iter().all(|(_, l)| !l.contains("NOT ANSWERING")),
            "{lines:?}"
        );
    }

    #[tokio::test]
    async fn a_server_greeting_with_220_answers() {
        use tokio::io::AsyncWriteExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            socket.write_all(b"220 sink ESMTP\r\n").await.unwrap();
        });
        let env = [("SMTP_URL", format!("smtp://127.0.0.1:{port}"))];
        let (app, settings) = app_with(&env).await;
        let lines = annotate(&app, &settings, app.describe_backends()).await;
        assert!(
            lines.iter().all(|(_, l)| !l.contains("NOT ANSWERING")),
            "{lines:?}"
        );
    }
}
