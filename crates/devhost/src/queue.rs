//! An in-process stand-in for Service Bus queues with the semantics the handler meets on Azure
//! (docs/PROTOCOL.md, "Service Bus settlement"): PeekLock deliveries with `DeliveryCount`, a failed
//! delivery abandoned and delivered again at once (no backoff), dead-lettering with
//! `MaxDeliveryCountExceeded` after the max delivery count, a lock lost once an invocation outlives
//! host.json's `maxAutoLockRenewalDuration`, and counts one can inspect while it runs. The
//! consumer that drives a function from a queue is in `consumer.rs`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::Notify;
use uuid::Uuid;

/// Deliveries before a message is dead-lettered: Service Bus's default `MaxDeliveryCount`.
pub(crate) const DEFAULT_MAX_DELIVERY_COUNT: u32 = 10;
/// Message time-to-live shown in `ExpiresAtUtc` (the portal's default for a new queue).
pub(crate) const TIME_TO_LIVE: Duration = Duration::from_secs(14 * 24 * 3600);
/// The reason Service Bus records when it dead-letters after too many deliveries.
pub(crate) const MAX_DELIVERY_COUNT_EXCEEDED: &str = "MaxDeliveryCountExceeded";
/// What Service Bus calls settling a message whose lock has already gone.
pub(crate) const MESSAGE_LOCK_LOST: &str = "MessageLockLost";

/// Why a message could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum QueueError {
    #[error("no queue named {0:?} (queues come from the function.json files)")]
    UnknownQueue(String),
    /// Sends were made to fail (`--fail-queue-sends`, `PUT /_dev/faults`), as a missing
    /// permission, a deleted queue or throttling would on Azure.
    #[error("sending to queue {0:?} failed (handler dev is making queue sends fail)")]
    SendsFailing(String),
}

/// A settlement came too late: the delivery's lock was lost (the invocation outlived
/// `maxAutoLockRenewalDuration`), so the message was already given to another consumer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{MESSAGE_LOCK_LOST}: the lock on message {message_id} (delivery {delivery_count}) was lost"
)]
pub(crate) struct LockLost {
    pub message_id: String,
    pub delivery_count: u32,
}

/// How the in-process bus treats deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueOptions {
    /// Deliveries before dead-lettering (the queue's `MaxDeliveryCount`).
    pub max_delivery_count: u32,
    /// How long the host keeps renewing a delivery's lock (host.json
    /// `extensions.serviceBus.maxAutoLockRenewalDuration`); an invocation running longer loses it.
    pub max_lock_renewal: Duration,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            max_delivery_count: DEFAULT_MAX_DELIVERY_COUNT,
            max_lock_renewal: super::host_json::DEFAULT_MAX_AUTO_LOCK_RENEWAL,
        }
    }
}

/// A message to send, as an output binding produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewMessage {
    /// The body text.
    pub body: String,
    pub content_type: Option<String>,
}

impl NewMessage {
    /// A text message without content type.
    pub(crate) fn text(body: impl Into<String>) -> Self {
        Self {
            body: body.into(),
            content_type: None,
        }
    }
}

/// A message on the bus, with the system properties the trigger's Metadata shows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Message {
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
pub(crate) struct DeadLetter {
    pub message: Message,
    pub reason: String,
    pub description: String,
    pub dead_lettered_at: OffsetDateTime,
}

/// What happened to a message whose delivery failed or whose lock was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// It is available again at once, for its next delivery.
    Redeliver,
    DeadLettered,
}

/// How many messages are where, at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Waiting for a consumer.
    pub ready: usize,
    /// Delivered and locked (not yet settled, lock not lost).
    pub in_flight: usize,
    pub completed: u64,
    pub dead_lettered: usize,
    /// Deliveries whose lock was lost while their invocation ran (since the start).
    pub locks_lost: u64,
}

impl Counts {
    /// Messages that would be lost if the process stopped now.
    pub(crate) fn pending(&self) -> usize {
        self.ready + self.in_flight
    }
}

#[derive(Debug, Default)]
struct State {
    /// In sequence-number order: an abandoned message goes back to its place.
    ready: VecDeque<Message>,
    /// Delivered messages by lock token.
    locked: HashMap<Uuid, Message>,
    completed: u64,
    locks_lost: u64,
    dead_letter: Vec<DeadLetter>,
}

impl State {
    /// Makes a message available again, or dead-letters it after its last allowed delivery.
    fn release(&mut self, message: Message, max: u32, why: &str) -> Disposition {
        if message.delivery_count >= max {
            let description = format!(
                "Message could not be consumed after {} delivery attempts. Last failure: {why}",
                message.delivery_count
            );
            self.dead_letter.push(DeadLetter {
                message,
                reason: MAX_DELIVERY_COUNT_EXCEEDED.to_owned(),
                description,
                dead_lettered_at: OffsetDateTime::now_utc(),
            });
            Disposition::DeadLettered
        } else {
            let at = self
                .ready
                .partition_point(|m| m.sequence_number < message.sequence_number);
            self.ready.insert(at, message);
            Disposition::Redeliver
        }
    }
}

/// One queue.
#[derive(Debug)]
pub(crate) struct Queue {
    name: String,
    options: QueueOptions,
    next_sequence: AtomicU64,
    state: Mutex<State>,
    notify: Notify,
}

impl Queue {
    /// An empty queue.
    pub(crate) fn new(name: impl Into<String>, options: QueueOptions) -> Self {
        Self {
            name: name.into(),
            options,
            next_sequence: AtomicU64::new(1),
            state: Mutex::new(State::default()),
            notify: Notify::new(),
        }
    }

    /// The queue's name as function.json spells it.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The queue's delivery rules.
    pub(crate) fn options(&self) -> QueueOptions {
        self.options
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every update is one step).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enqueues a message; consumers are woken.
    pub(crate) fn send(&self, new: NewMessage) -> Message {
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

    /// Waits for the next message and locks it: its delivery count goes up by one and it gets a
    /// new lock token. Cancel-safe.
    pub(crate) async fn receive(&self) -> Message {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before looking, so a send between the look and the wait is not missed.
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                if let Some(mut message) = state.ready.pop_front() {
                    message.delivery_count += 1;
                    message.lock_token = Uuid::new_v4();
                    state.locked.insert(message.lock_token, message.clone());
                    return message;
                }
            }
            notified.await;
        }
    }

    fn lock_lost(message: &Message) -> LockLost {
        LockLost {
            message_id: message.message_id.clone(),
            delivery_count: message.delivery_count,
        }
    }

    /// Settles a delivered message as done; fails when its lock was lost meanwhile.
    pub(crate) fn complete(&self, message: &Message) -> Result<(), LockLost> {
        let mut state = self.lock();
        state
            .locked
            .remove(&message.lock_token)
            .ok_or_else(|| Self::lock_lost(message))?;
        state.completed += 1;
        Ok(())
    }

    /// Gives a delivered message back after a failure: available again at once, or
    /// dead-lettered once it has been delivered `max_delivery_count` times. Fails when its lock
    /// was lost meanwhile (the message is already someone else's).
    pub(crate) fn abandon(&self, message: &Message, error: &str) -> Result<Disposition, LockLost> {
        let disposition = {
            let mut state = self.lock();
            let locked = state
                .locked
                .remove(&message.lock_token)
                .ok_or_else(|| Self::lock_lost(message))?;
            state.release(locked, self.options.max_delivery_count, error)
        };
        self.notify.notify_waiters();
        Ok(disposition)
    }

    /// Ends a delivery's lock while its invocation still runs (the renewal limit passed): the
    /// message is available again at once, or dead-lettered after its last allowed delivery.
    /// `None` when the delivery was settled already.
    pub(crate) fn expire_lock(&self, message: &Message) -> Option<Disposition> {
        let disposition = {
            let mut state = self.lock();
            let locked = state.locked.remove(&message.lock_token)?;
            state.locks_lost += 1;
            let why = format!(
                "{MESSAGE_LOCK_LOST}: the invocation ran past maxAutoLockRenewalDuration ({} s)",
                self.options.max_lock_renewal.as_secs_f64()
            );
            state.release(locked, self.options.max_delivery_count, &why)
        };
        self.notify.notify_waiters();
        Some(disposition)
    }

    /// Where the messages are now.
    pub(crate) fn counts(&self) -> Counts {
        let state = self.lock();
        Counts {
            ready: state.ready.len(),
            in_flight: state.locked.len(),
            completed: state.completed,
            dead_lettered: state.dead_letter.len(),
            locks_lost: state.locks_lost,
        }
    }

    /// The dead-lettered messages, oldest first.
    pub(crate) fn dead_letters(&self) -> Vec<DeadLetter> {
        self.lock().dead_letter.clone()
    }

    /// The queue as `/_dev/queues` shows it.
    pub(crate) fn snapshot(&self) -> Value {
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
                    "enqueuedTimeUtc": super::timestamps::to_the_second(d.message.enqueued_at),
                    "deadLetteredTimeUtc": super::timestamps::to_the_second(d.dead_lettered_at),
                    "body": d.message.body,
                })
            })
            .collect();
        json!({
            // Like Service Bus's active count: waiting plus locked.
            "active": counts.ready + counts.in_flight,
            "inFlight": counts.in_flight,
            "completed": counts.completed,
            "locksLost": counts.locks_lost,
            "deadLetter": dead,
        })
    }
}

/// Every queue the function.json files mention, by name (compared case-insensitively, as
/// Service Bus entity names are), and the switch that makes output-binding sends fail.
#[derive(Debug, Default)]
pub(crate) struct Bus {
    queues: BTreeMap<String, Arc<Queue>>,
    sends_fail: AtomicBool,
}

impl Bus {
    /// Creates the named queues.
    pub(crate) fn new(names: impl IntoIterator<Item = String>, options: QueueOptions) -> Self {
        let mut queues = BTreeMap::new();
        for name in names {
            queues
                .entry(name.to_ascii_lowercase())
                .or_insert_with(|| Arc::new(Queue::new(name, options)));
        }
        Self {
            queues,
            sends_fail: AtomicBool::new(false),
        }
    }

    /// A queue by name.
    pub(crate) fn queue(&self, name: &str) -> Result<Arc<Queue>, QueueError> {
        self.queues
            .get(&name.to_ascii_lowercase())
            .cloned()
            .ok_or_else(|| QueueError::UnknownQueue(name.to_owned()))
    }

    /// Sends an output binding's message, unless sends are made to fail.
    pub(crate) fn send(&self, queue: &str, message: NewMessage) -> Result<Message, QueueError> {
        let queue = self.queue(queue)?;
        if self.sends_fail() {
            return Err(QueueError::SendsFailing(queue.name().to_owned()));
        }
        Ok(queue.send(message))
    }

    /// Makes output-binding sends fail (true) or work again (false).
    pub(crate) fn set_sends_fail(&self, fail: bool) {
        self.sends_fail.store(fail, Ordering::SeqCst);
    }

    /// Whether output-binding sends are made to fail.
    pub(crate) fn sends_fail(&self) -> bool {
        self.sends_fail.load(Ordering::SeqCst)
    }

    /// Every queue, by name.
    pub(crate) fn queues(&self) -> impl Iterator<Item = &Arc<Queue>> {
        self.queues.values()
    }

    /// `{"<queue>": {active, inFlight, completed, locksLost, deadLetter: […]}, …}`.
    pub(crate) fn snapshot(&self) -> Value {
        Value::Object(
            self.queues
                .values()
                .map(|q| (q.name().to_owned(), q.snapshot()))
                .collect(),
        )
    }
}
