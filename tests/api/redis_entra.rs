//! Entra ID against a real `redis-server`: the handler signs in with tokens from a stand-in
//! managed identity endpoint (the one stand-in allowed) that live 20 s. The test makes Redis
//! behave as Azure does with them: the ACL user is the token's `oid`, each new token becomes
//! one of its passwords before the handler sees it, and each token stops working when it
//! expires. Plain Redis keeps a connection open when its password goes away, so re-auth is
//! proven by counting `AUTH` calls (`INFO commandstats`) and by opening new connections.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use test_support::RedisCluster;
use test_support::token_endpoint::{IssuedToken, Mode, TokenEndpoint, TokenEndpointConfig};

use crate::helpers::{RedisServer, SmtpSink, TestApp, new_user_body};

/// How long each test token lives (Azure's last for hours; 20 s makes rotations happen here).
const TOKEN_LIFE: Duration = Duration::from_secs(20);
/// How long sign-ups and profile reads run: at least three rotations.
const TRAFFIC: Duration = Duration::from_secs(60);
/// How long the token endpoint is down, starting [`OUTAGE_AFTER`] a token was issued, so that
/// the renewal due at about 15 s falls inside it and the outage ends before the token expires.
const OUTAGE: Duration = Duration::from_secs(10);
const OUTAGE_AFTER: Duration = Duration::from_secs(6);
/// The identity the tokens are for.
const OID: &str = "6f1c1d1e-2b7a-4c55-9d0e-8e8f3c2a4b10";
const CLIENT_ID: &str = "0d6b1f3e-5a4c-4e2b-8f7a-1c9d2e3f4a5b";
const IDENTITY_HEADER: &str = "identity-header-not-for-logs-0b1c";
/// The test's own Redis user, so the default user can be switched off.
const ADMIN: (&str, &str) = ("entra-test-admin", "entra-test-admin-password");

/// 60 s of sign-ups and profile reads through the handler, with tokens rotating every ~15 s and
/// a 10 s outage of the token endpoint over one renewal: no request fails, every token reaches
/// the connection (`AUTH` per rotation), expired tokens no longer open connections, and a new
/// connection after a drop signs in with the current one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_id_tokens_rotate_under_traffic_and_an_endpoint_outage_causes_no_error() {
    let redis = RedisServer::start();
    entra_id_scenario(&redis.url(), &[redis.url()]).await;
}

/// The same against a cluster of 3 primaries and 3 replicas: the token goes to every node's ACL,
/// and the handler's connection to each node (found through `CLUSTER SLOTS`, not the URL)
/// signs in and re-authenticates with every new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_id_tokens_rotate_on_every_node_of_a_cluster() {
    let cluster = RedisCluster::start();
    entra_id_scenario(&cluster.url(), &cluster.node_urls()).await;
}

/// The scenario against any Redis the handler reaches at `redis_url`; `nodes` are the servers
/// whose ACLs the tokens go to (one for a single server, every node of a cluster).
async fn entra_id_scenario(redis_url: &str, nodes: &[String]) {
    let acl = Acl::prepare(nodes);
    let endpoint = {
        let acl = acl.clone();
        let config = TokenEndpointConfig {
            oid: OID.to_owned(),
            client_id: CLIENT_ID.to_owned(),
            identity_header: IDENTITY_HEADER.to_owned(),
            lifetime: TOKEN_LIFE,
        };
        TokenEndpoint::start(config, move |issued| acl.accept(issued))
    };
    let smtp = SmtpSink::start();
    let auth_before = acl.auth_calls();
    let app = TestApp::builder(redis_url, &smtp.url())
        .env("REDIS_CREDENTIAL", "managedidentity")
        .env("REDIS_CLIENT_ID", CLIENT_ID)
        .env("IDENTITY_ENDPOINT", &endpoint.url())
        .env("IDENTITY_HEADER", IDENTITY_HEADER)
        .spawn()
        .await;

    let failures = run_traffic(&app, &endpoint).await;

    assert!(
        failures.is_empty(),
        "requests failed:\n{}",
        failures.join("\n")
    );
    assert_eq!(
        endpoint.rejected(),
        Vec::<String>::new(),
        "requests not in the documented form"
    );
    let issued = endpoint.issued();
    assert!(
        issued.len() >= 4,
        "expected the first token and at least 3 rotations, got {}",
        issued.len()
    );
    assert!(
        endpoint.failed_requests() >= 1,
        "the outage did not cover a renewal"
    );
    let auth_calls = acl.auth_calls() - auth_before;
    println!(
        "Entra ID: {} tokens issued, {auth_calls} AUTH calls, {} token requests met the outage",
        issued.len(),
        endpoint.failed_requests()
    );
    assert!(
        auth_calls >= issued.len() as u64,
        "{} tokens but only {auth_calls} AUTH calls: a connection did not re-authenticate",
        issued.len()
    );
    acl.assert_connections_signed_in_as_the_identity();
    acl.assert_expired_tokens_refused(&issued);

    assert_a_new_connection_signs_in_with_the_current_token(&app, &acl).await;
    assert_no_secret_logged(&app, &issued);
}

/// After its connections are dropped (as in a failover), the handler opens a new one, which can
/// only sign in with a current token: expired ones were removed from the ACL.
async fn assert_a_new_connection_signs_in_with_the_current_token(app: &TestApp, acl: &Acl) {
    acl.drop_identity_connections();
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.health().await.res().status_code != 200 {
        assert!(
            Instant::now() < deadline,
            "no new connection within 5 s of a drop"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let user = app.sign_up(&new_user_body()).await;
    assert_eq!(app.profile(&user.token).await["id"], user.id);
    acl.assert_connections_signed_in_as_the_identity();
}

/// No token and not the identity header in anything the handler wrote.
fn assert_no_secret_logged(app: &TestApp, issued: &[IssuedToken]) {
    let output = format!("{}{}", app.stdout(), app.stderr());
    for secret in issued
        .iter()
        .map(|t| t.token.as_str())
        .chain([IDENTITY_HEADER])
    {
        assert!(
            !output.contains(secret),
            "a token or the identity header was logged"
        );
    }
}

/// Sign-ups and profile reads from two clients for [`TRAFFIC`], with the endpoint's outage
/// started [`OUTAGE_AFTER`] the second token; returns every request that did not succeed.
async fn run_traffic(app: &TestApp, endpoint: &TokenEndpoint) -> Vec<String> {
    let started = Instant::now();
    let failures = Mutex::new(Vec::new());
    let client = |n: usize| {
        let failures = &failures;
        async move {
            while started.elapsed() < TRAFFIC {
                if let Err(failure) = sign_up_and_read(app).await {
                    let at = started.elapsed().as_secs_f64();
                    lock(failures).push(format!("client {n} at {at:.1} s: {failure}"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let outage = async {
        while endpoint.issued().len() < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let second = endpoint.issued()[1].issued_at;
        let start = second + OUTAGE_AFTER;
        sleep_until(start).await;
        endpoint.set_mode(Mode::Failing);
        sleep_until(start + OUTAGE).await;
        endpoint.set_mode(Mode::Serving);
    };
    tokio::join!(client(1), client(2), outage);
    failures
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
}

/// One sign-up (201) and a profile read (200) with its token.
async fn sign_up_and_read(app: &TestApp) -> Result<(), String> {
    let answer = app.create_user_json(&new_user_body()).await;
    let res = answer.res.as_ref().ok_or("createUser: no res output")?;
    if res.status_code != 201 {
        return Err(format!(
            "createUser answered {}: {}",
            res.status_code, res.body
        ));
    }
    let token = res.json()["token"]
        .as_str()
        .ok_or("createUser: no token")?
        .to_owned();
    let answer = app.root_with_token(&token).await;
    let res = answer.res.as_ref().ok_or("root: no res output")?;
    if res.status_code != 200 {
        return Err(format!("root answered {}: {}", res.status_code, res.body));
    }
    Ok(())
}

async fn sleep_until(at: SystemTime) {
    if let Ok(wait) = at.duration_since(SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }
}

/// The ACLs of every node, kept as Azure keeps them for an Entra ID user: each token a
/// password of the user `oid` from when it is issued until it expires.
#[derive(Clone)]
struct Acl {
    nodes: Arc<Vec<String>>,
    admins: Arc<Vec<Mutex<redis::Connection>>>,
}

impl Acl {
    /// Creates the test's admin user on each node and switches the default user off, so only
    /// a client that authenticates gets in. One admin connection per node, opened here, so the
    /// handler's `AUTH` calls can be counted apart.
    fn prepare(nodes: &[String]) -> Self {
        let admins = nodes
            .iter()
            .map(|url| {
                let mut open = connect(url);
                let (user, password) = ADMIN;
                query(
                    &mut open,
                    &[
                        "ACL",
                        "SETUSER",
                        user,
                        "on",
                        &format!(">{password}"),
                        "~*",
                        "&*",
                        "+@all",
                    ],
                );
                let admin_url = url.replacen("redis://", &format!("redis://{user}:{password}@"), 1);
                let admin = connect(&admin_url);
                // A replica that reconnects to its primary must still get in once the default
                // user is off.
                query(&mut open, &["CONFIG", "SET", "masteruser", user]);
                query(&mut open, &["CONFIG", "SET", "masterauth", password]);
                query(&mut open, &["ACL", "SETUSER", "default", "off"]);
                Mutex::new(admin)
            })
            .collect();
        Self {
            nodes: Arc::new(nodes.to_vec()),
            admins: Arc::new(admins),
        }
    }

    /// Makes `issued` a password of the identity's user on every node, and schedules its
    /// removal at its expiry.
    fn accept(&self, issued: &IssuedToken) {
        let password = format!(">{}", issued.token);
        self.on_every_node(&["ACL", "SETUSER", OID, "on", &password, "~*", "&*", "+@all"]);
        let acl = self.clone();
        let expired = format!("<{}", issued.token);
        let expires_at = issued.expires_at;
        std::thread::spawn(move || {
            if let Ok(wait) = expires_at.duration_since(SystemTime::now()) {
                std::thread::sleep(wait);
            }
            for admin in acl.admins.iter() {
                let _ = redis::cmd("ACL")
                    .arg("SETUSER")
                    .arg(OID)
                    .arg(&expired)
                    .query::<()>(&mut lock(admin));
            }
        });
    }

    /// `cmdstat_auth` calls summed over the nodes.
    fn auth_calls(&self) -> u64 {
        self.admins
            .iter()
            .map(|admin| {
                let info: String = redis::cmd("INFO")
                    .arg("commandstats")
                    .query(&mut lock(admin))
                    .expect("INFO commandstats");
                info.lines()
                    .find_map(|l| l.strip_prefix("cmdstat_auth:calls="))
                    .and_then(|rest| rest.split(',').next())
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum()
    }

    /// Every client connection other than the test's own runs as the identity's user, and
    /// there is at least one. (`TYPE normal` leaves out a cluster's replication links, which
    /// are the servers' own.)
    fn assert_connections_signed_in_as_the_identity(&self) {
        let mut identity = 0;
        for admin in self.admins.iter() {
            let list: String = redis::cmd("CLIENT")
                .arg("LIST")
                .arg("TYPE")
                .arg("normal")
                .query(&mut lock(admin))
                .expect("CLIENT LIST");
            for line in list.lines() {
                let user = line
                    .split(' ')
                    .find_map(|f| f.strip_prefix("user="))
                    .unwrap_or("");
                match user {
                    u if u == OID => identity += 1,
                    u if u == ADMIN.0 => {}
                    other => panic!("a connection runs as {other:?}, not as the identity: {line}"),
                }
            }
        }
        assert!(identity >= 1, "no connection signed in as the identity");
    }

    /// A token past its expiry opens no connection any more (as on Azure); the newest does.
    fn assert_expired_tokens_refused(&self, issued: &[IssuedToken]) {
        let now = SystemTime::now();
        let expired: Vec<&IssuedToken> = issued
            .iter()
            .filter(|t| t.expires_at + Duration::from_secs(1) < now)
            .collect();
        assert!(!expired.is_empty(), "no token expired during the run");
        let newest = issued.last().expect("at least one token");
        for url in self.nodes.iter() {
            for token in &expired {
                assert!(
                    sign_in(url, &token.token).is_err(),
                    "an expired token still signs in"
                );
            }
            assert!(
                sign_in(url, &newest.token).is_ok(),
                "the newest token does not sign in"
            );
        }
    }

    /// Closes the identity's connections, as a failover or a network blip would.
    fn drop_identity_connections(&self) {
        self.on_every_node(&["CLIENT", "KILL", "USER", OID]);
    }

    fn on_every_node(&self, args: &[&str]) {
        for admin in self.admins.iter() {
            query(&mut lock(admin), args);
        }
    }
}

/// A fresh connection authenticating as the identity with `token`.
fn sign_in(url: &str, token: &str) -> redis::RedisResult<()> {
    let mut connection = redis::Client::open(url)?.get_connection()?;
    redis::cmd("AUTH")
        .arg(OID)
        .arg(token)
        .query(&mut connection)
}

fn connect(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .and_then(|client| client.get_connection())
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

fn query(connection: &mut redis::Connection, args: &[&str]) {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    let _: redis::Value = cmd
        .query(connection)
        .unwrap_or_else(|e| panic!("{} {}: {e}", args[0], args[1]));
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
