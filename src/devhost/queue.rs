//! An in-process stand-in for Service Bus queues with the semantics the handler relies on:
//! at-least-once delivery, `DeliveryCount`, redelivery after a growing backoff on failure,
//! dead-lettering after the max delivery count, and counts one can inspect while it runs.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use uuid::Uuid;

/// Deliveries before a message is dead-lettered: Service Bus's default `MaxDeliveryCount`.
pub const DEFAULT_MAX_DELIVERY_COUNT: u32 = 10;
/// First redelivery delay; it doubles with each failed delivery.
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_secs(1);
/// Longest redelivery delay.
pub const RETRY_CAP: Duration = Duration::from_secs(30);
/// Message time-to-live shown in `ExpiresAtUtc` (the portal's default for a new queue).
pub const TIME_TO_LIVE: Duration = Duration::from_secs(14 * 24 * 3600);
/// The reason Service Bus records when it dead-letters after too many deliveries.
pub const MAX_DELIVERY_COUNT_EXCEEDED: &str = "MaxDeliveryCountExceeded";

/// Why a message could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("no queue named {0:?} (queues come from the function.json files)")]
    UnknownQueue(String),
}

/// How the in-process bus treats failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueOptions {
    pub max_delivery_count: u32,
    /// Delay before the second delivery; doubled per further failure, capped at `retry_cap`.
    pub retry_base: Duration,
    pub retry_cap: Duration,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            max_delivery_count: DEFAULT_MAX_DELIVERY_COUNT,
            retry_base: DEFAULT_RETRY_BASE,
            retry_cap: RETRY_CAP,
        }
    }
}

impl QueueOptions {
    /// The wait after the `delivery_count`-th delivery failed: base, 2·base, 4·base … ≤ cap.
    pub fn backoff(&self, delivery_count: u32) -> Duration {
        let doublings = delivery_count.saturating_sub(1).min(31);
        self.retry_base
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.retry_cap)
            .min(self.retry_cap)
    }
}

/// A message to send, as an output binding produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The body text.
    pub body: String,
    pub content_type: Option<String>,
}

impl NewMessage {
    /// A text message without content type.
    pub fn text(body: impl Into<String>) -> Self {
        Self {
            body: body.into(),
            content_type: None,
        }
    }
}

/// A message on the bus, with the system properties the trigger's Metadata shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// 32 lower-case hex digits, as the Service Bus SDK makes them.
    pub message_id: String,
    pub sequence_number: i64,
    pub body: String,
    pub content_type: Option<String>,
    pub enqueued_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    /// 1 on the first delivery, +1 on each redelivery.
    pub delivery_count: u32,
    /// New for every delivery.
    pub lock_token: Uuid,
}

/// A message that exhausted its deliveries, kept for inspection.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub message: Message,
    pub reason: String,
    pub description: String,
    pub dead_lettered_at: OffsetDateTime,
}

/// What happened to a message whose delivery failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// It comes back after this delay.
    Redeliver(Duration),
    DeadLettered,
}

/// How many messages are where, at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Waiting for a consumer.
    pub ready: usize,
    /// Delivered and not yet settled (locked, in Service Bus terms).
    pub in_flight: usize,
    /// Waiting out a retry backoff.
    pub scheduled: usize,
    pub completed: u64,
    pub dead_lettered: usize,
}

impl Counts {
    /// Messages that would be lost if the process stopped now.
    pub fn pending(&self) -> usize {
        self.ready + self.in_flight + self.scheduled
    }
}

#[derive(Debug, Default)]
struct State {
    ready: VecDeque<Message>,
    scheduled: Vec<(Instant, Message)>,
    in_flight: usize,
    completed: u64,
    dead_letter: Vec<DeadLetter>,
}

impl State {
    fn promote_due(&mut self, now: Instant) {
        let mut index = 0;
        while index < self.scheduled.len() {
            if self.scheduled[index].0 <= now {
                let (_, message) = self.scheduled.swap_remove(index);
                self.ready.push_back(message);
            } else {
                index += 1;
            }
        }
        // Keep delivery order stable when several become due together.
        self.ready
            .make_contiguous()
            .sort_by_key(|m| m.sequence_number);
    }
}

/// One queue.
#[derive(Debug)]
pub struct Queue {
    name: String,
    options: QueueOptions,
    next_sequence: AtomicU64,
    state: Mutex<State>,
    notify: Notify,
}

impl Queue {
    /// An empty queue.
    pub fn new(name: impl Into<String>, options: QueueOptions) -> Self {
        Self {
            name: name.into(),
            options,
            next_sequence: AtomicU64::new(1),
            state: Mutex::new(State::default()),
            notify: Notify::new(),
        }
    }

    /// The queue's name as function.json spells it.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every update is one step).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enqueues a message; consumers are woken.
    pub fn send(&self, new: NewMessage) -> Message {
        let now = OffsetDateTime::now_utc();
        let sequence = self.next_sequence.fetch_add(1, Ordering::Relaxed);
        let message = Message {
            message_id: Uuid::new_v4().simple().to_string(),
            sequence_number: i64::try_from(sequence).unwrap_or(i64::MAX),
            body: new.body,
            content_type: new.content_type,
            enqueued_at: now,
            expires_at: now + TIME_TO_LIVE,
            delivery_count: 0,
            lock_token: Uuid::nil(),
        };
        self.lock().ready.push_back(message.clone());
        self.notify.notify_waiters();
        message
    }

    /// Waits for the next message and locks it: its delivery count goes up by one. Cancel-safe.
    pub async fn receive(&self) -> Message {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before looking, so a send between the look and the wait is not missed.
            notified.as_mut().enable();
            let wake_at = {
                let mut state = self.lock();
                state.promote_due(Instant::now());
                if let Some(mut message) = state.ready.pop_front() {
                    message.delivery_count += 1;
                    message.lock_token = Uuid::new_v4();
                    state.in_flight += 1;
                    return message;
                }
                state.scheduled.iter().map(|(at, _)| *at).min()
            };
            match wake_at {
                Some(at) => {
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Settles a delivered message as done.
    pub fn complete(&self, _message: &Message) {
        let mut state = self.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        state.completed += 1;
    }

    /// Gives a delivered message back after a failure: redelivered after a backoff, or
    /// dead-lettered once it has been delivered `max_delivery_count` times.
    pub fn abandon(&self, message: Message, error: &str) -> Disposition {
        let disposition = {
            let mut state = self.lock();
            state.in_flight = state.in_flight.saturating_sub(1);
            if message.delivery_count >= self.options.max_delivery_count {
                let description = format!(
                    "Message could not be consumed after {} delivery attempts. Last failure: {error}",
                    message.delivery_count
                );
                state.dead_letter.push(DeadLetter {
                    message,
                    reason: MAX_DELIVERY_COUNT_EXCEEDED.to_owned(),
                    description,
                    dead_lettered_at: OffsetDateTime::now_utc(),
                });
                Disposition::DeadLettered
            } else {
                let delay = self.options.backoff(message.delivery_count);
                state.scheduled.push((Instant::now() + delay, message));
                Disposition::Redeliver(delay)
            }
        };
        self.notify.notify_waiters();
        disposition
    }

    /// Where the messages are now.
    pub fn counts(&self) -> Counts {
        let state = self.lock();
        Counts {
            ready: state.ready.len(),
            in_flight: state.in_flight,
            scheduled: state.scheduled.len(),
            completed: state.completed,
            dead_lettered: state.dead_letter.len(),
        }
    }

    /// The dead-lettered messages, oldest first.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.lock().dead_letter.clone()
    }

    /// The queue as `/_dev/queues` shows it.
    pub fn snapshot(&self) -> Value {
        let counts = self.counts();
        let dead: Vec<Value> = self
            .dead_letters()
            .into_iter()
            .map(|d| {
                json!({
                    "messageId": d.message.message_id,
                    "sequenceNumber": d.message.sequence_number,
                    "deliveryCount": d.message.delivery_count,
                    "reason": d.reason,
                    "errorDescription": d.description,
                    "enqueuedTimeUtc": super::payload::to_the_second(d.message.enqueued_at),
                    "deadLetteredTimeUtc": super::payload::to_the_second(d.dead_lettered_at),
                    "body": d.message.body,
                })
            })
            .collect();
        json!({
            // Like Service Bus's active count: waiting plus locked.
            "active": counts.ready + counts.in_flight,
            "inFlight": counts.in_flight,
            "scheduled": counts.scheduled,
            "completed": counts.completed,
            "deadLetter": dead,
        })
    }
}

/// Every queue the function.json files mention, by name (compared case-insensitively, as
/// Service Bus entity names are).
#[derive(Debug, Default)]
pub struct Bus {
    queues: BTreeMap<String, Arc<Queue>>,
}

impl Bus {
    /// Creates the named queues.
    pub fn new(names: impl IntoIterator<Item = String>, options: QueueOptions) -> Self {
        let mut queues = BTreeMap::new();
        for name in names {
            queues
                .entry(name.to_ascii_lowercase())
                .or_insert_with(|| Arc::new(Queue::new(name, options)));
        }
        Self { queues }
    }

    /// A queue by name.
    pub fn queue(&self, name: &str) -> Result<Arc<Queue>, QueueError> {
        self.queues
            .get(&name.to_ascii_lowercase())
            .cloned()
            .ok_or_else(|| QueueError::UnknownQueue(name.to_owned()))
    }

    /// Every queue, by name.
    pub fn queues(&self) -> impl Iterator<Item = &Arc<Queue>> {
        self.queues.values()
    }

    /// `{"<queue>": {active, inFlight, scheduled, completed, deadLetter: […]}, …}`.
    pub fn snapshot(&self) -> Value {
        Value::Object(
            self.queues
                .values()
                .map(|q| (q.name().to_owned(), q.snapshot()))
                .collect(),
        )
    }
}

/// Hands one message to a function; `Err` (why) abandons it.
#[async_trait::async_trait]
pub trait Deliver: Send + Sync {
    async fn deliver(&self, message: &Message) -> Result<(), String>;
}

/// Delivers a queue's messages to one function, at most `max_concurrent` at a time, until
/// `shutdown` turns true; then waits up to `drain` for deliveries in flight. Returns how many
/// deliveries were still running when the drain time ran out.
pub async fn consume(
    queue: Arc<Queue>,
    function: String,
    deliverer: Arc<dyn Deliver>,
    max_concurrent: usize,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) -> usize {
    let permits = Arc::new(Semaphore::new(max_concurrent.max(1)));
    let mut deliveries = JoinSet::new();
    loop {
        // Reap finished deliveries so the set does not grow without bound.
        while deliveries.try_join_next().is_some() {}
        // `wait_for` also returns when the sender is gone: that too means stop.
        let permit = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let message = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break,
            message = queue.receive() => message,
        };
        let (queue, deliverer, function) = (queue.clone(), deliverer.clone(), function.clone());
        deliveries.spawn(async move {
            let result = deliverer.deliver(&message).await;
            settle(&queue, &function, message, result);
            drop(permit);
        });
    }
    let finished = tokio::time::timeout(drain, async {
        while deliveries.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        let left = deliveries.len();
        deliveries.abort_all();
        return left;
    }
    0
}

fn settle(queue: &Queue, function: &str, message: Message, result: Result<(), String>) {
    match result {
        Ok(()) => {
            tracing::debug!(
                queue = queue.name(),
                message_id = %message.message_id,
                delivery_count = message.delivery_count,
                "{function} completed the message"
            );
            queue.complete(&message);
        }
        Err(error) => {
            let (id, count) = (message.message_id.clone(), message.delivery_count);
            match queue.abandon(message, &error) {
                Disposition::Redeliver(delay) => tracing::warn!(
                    queue = queue.name(),
                    "delivery {count} of message {id} to {function} failed ({error}); \
                     redelivering in {} ms",
                    delay.as_millis()
                ),
                Disposition::DeadLettered => tracing::error!(
                    queue = queue.name(),
                    "message {id} dead-lettered ({MAX_DELIVERY_COUNT_EXCEEDED}): {function} failed \
                     all {count} deliveries; last failure: {error}"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Fails the first `failures` deliveries, recording each delivery's count and time.
    struct Flaky {
        failures: u32,
        seen: Mutex<Vec<(u32, Instant)>>,
    }

    #[async_trait::async_trait]
    impl Deliver for Flaky {
        async fn deliver(&self, message: &Message) -> Result<(), String> {
            let mut seen = self.seen.lock().unwrap();
            seen.push((message.delivery_count, Instant::now()));
            if seen.len() as u32 <= self.failures {
                Err("handler answered 503".to_owned())
            } else {
                Ok(())
            }
        }
    }

    fn options(max: u32) -> QueueOptions {
        QueueOptions {
            max_delivery_count: max,
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(30),
        }
    }

    async fn run_until<F: Fn(&Counts) -> bool>(
        queue: &Arc<Queue>,
        deliverer: Arc<dyn Deliver>,
        done: F,
    ) {
        let (tx, rx) = watch::channel(false);
        let consumer = tokio::spawn(consume(
            queue.clone(),
            "f".into(),
            deliverer,
            4,
            rx,
            Duration::from_secs(5),
        ));
        tokio::time::timeout(Duration::from_secs(3600), async {
            while !done(&queue.counts()) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the queue never settled");
        tx.send(true).unwrap();
        consumer.await.unwrap();
    }

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        let o = QueueOptions {
            max_delivery_count: 10,
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(30),
        };
        let delays: Vec<u64> = (1..=7).map(|n| o.backoff(n).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(o.backoff(1000), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_delivery_comes_back_with_a_higher_delivery_count() {
        let queue = Arc::new(Queue::new("q", options(10)));
        queue.send(NewMessage::text("{}"));
        let flaky = Arc::new(Flaky {
            failures: 2,
            seen: Mutex::new(Vec::new()),
        });
        run_until(&queue, flaky.clone(), |c| c.completed == 1).await;
        let counts: Vec<u32> = flaky.seen.lock().unwrap().iter().map(|(c, _)| *c).collect();
        assert_eq!(counts, vec![1, 2, 3]);
        assert_eq!(queue.counts().pending(), 0);
        assert!(queue.dead_letters().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn redeliveries_wait_longer_each_time() {
        let queue = Arc::new(Queue::new("q", options(10)));
        queue.send(NewMessage::text("{}"));
        let flaky = Arc::new(Flaky {
            failures: 7,
            seen: Mutex::new(Vec::new()),
        });
        run_until(&queue, flaky.clone(), |c| c.completed == 1).await;
        let seen = flaky.seen.lock().unwrap();
        let gaps: Vec<u64> = seen
            .windows(2)
            .map(|w| (w[1].1 - w[0].1).as_secs())
            .collect();
        assert_eq!(gaps, vec![1, 2, 4, 8, 16, 30, 30]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_is_dead_lettered_after_the_max_delivery_count() {
        let queue = Arc::new(Queue::new("q", options(10)));
        let sent = queue.send(NewMessage::text(r#"{"userId":"u1"}"#));
        let always = Arc::new(Flaky {
            failures: u32::MAX,
            seen: Mutex::new(Vec::new()),
        });
        run_until(&queue, always.clone(), |c| c.dead_lettered == 1).await;
        let counts: Vec<u32> = always
            .seen
            .lock()
            .unwrap()
            .iter()
            .map(|(c, _)| *c)
            .collect();
        assert_eq!(counts, (1..=10).collect::<Vec<_>>());
        let dead = queue.dead_letters();
        assert_eq!(dead[0].message.message_id, sent.message_id);
        assert_eq!(dead[0].message.delivery_count, 10);
        assert_eq!(dead[0].reason, MAX_DELIVERY_COUNT_EXCEEDED);
        assert!(dead[0].description.contains("handler answered 503"));
        assert_eq!(queue.counts().pending(), 0);
        let snapshot = queue.snapshot();
        assert_eq!(snapshot["deadLetter"][0]["deliveryCount"], 10);
        assert_eq!(snapshot["deadLetter"][0]["body"], r#"{"userId":"u1"}"#);
    }

    /// Holds every delivery until released, counting how many run at once.
    struct Gate {
        running: AtomicUsize,
        peak: AtomicUsize,
        release: Notify,
    }

    #[async_trait::async_trait]
    impl Deliver for Gate {
        async fn deliver(&self, _message: &Message) -> Result<(), String> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            let released = self.release.notified();
            released.await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_than_max_concurrent_deliveries_run_at_once() {
        let queue = Arc::new(Queue::new("q", options(10)));
        for _ in 0..5 {
            queue.send(NewMessage::text("{}"));
        }
        let gate = Arc::new(Gate {
            running: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            release: Notify::new(),
        });
        let (tx, rx) = watch::channel(false);
        let consumer = tokio::spawn(consume(
            queue.clone(),
            "f".into(),
            gate.clone(),
            2,
            rx,
            Duration::from_secs(5),
        ));
        while queue.counts().completed < 5 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert!(queue.counts().in_flight <= 2);
            gate.release.notify_waiters();
        }
        assert_eq!(gate.peak.load(Ordering::SeqCst), 2);
        tx.send(true).unwrap();
        assert_eq!(consumer.await.unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_lets_deliveries_in_flight_finish_within_the_drain_time() {
        let queue = Arc::new(Queue::new("q", options(10)));
        queue.send(NewMessage::text("{}"));
        queue.send(NewMessage::text("{}"));
        let gate = Arc::new(Gate {
            running: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            release: Notify::new(),
        });
        let (tx, rx) = watch::channel(false);
        let consumer = tokio::spawn(consume(
            queue.clone(),
            "f".into(),
            gate.clone(),
            1,
            rx,
            Duration::from_secs(5),
        ));
        while queue.counts().in_flight == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tx.send(true).unwrap();
        // The one in flight never finishes: the drain gives up after 5 s and reports it.
        assert_eq!(consumer.await.unwrap(), 1);
        let counts = queue.counts();
        assert_eq!((counts.ready, counts.in_flight), (1, 1));
        assert_eq!(counts.pending(), 2);
    }

    #[test]
    fn the_bus_finds_queues_whatever_the_case() {
        let bus = Bus::new(["Onboarding".to_owned()], QueueOptions::default());
        assert_eq!(bus.queue("onboarding").unwrap().name(), "Onboarding");
        assert!(matches!(
            bus.queue("other"),
            Err(QueueError::UnknownQueue(_))
        ));
        let sent = bus.queue("ONBOARDING").unwrap().send(NewMessage::text("x"));
        assert_eq!(sent.message_id.len(), 32);
        assert_eq!(sent.sequence_number, 1);
        assert_eq!(bus.snapshot()["Onboarding"]["active"], 1);
    }
}
