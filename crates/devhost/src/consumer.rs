//! Drives one Service Bus-triggered function from its queue as the Service Bus extension does:
//! at most `maxConcurrentCalls` invocations at a time, each message settled by the invocation's
//! outcome (complete on success, abandon on failure), and the lock given up when an invocation
//! outlives `maxAutoLockRenewalDuration` (the message then goes to the next free slot while the
//! first invocation still runs, and that invocation's outcome is ignored: `MessageLockLost`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::function_json::{FunctionDef, Trigger};
use super::invoke::{InvokeError, Invoker};
use super::payload::{self, Sys};
use super::queue::{Disposition, MAX_DELIVERY_COUNT_EXCEEDED, Message, Queue};

/// Why a delivery failed; its text becomes the message's `errorDescription` when it is
/// dead-lettered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeliveryError {
    #[error(transparent)]
    Invocation(#[from] InvokeError),
    #[error("{0} has no Service Bus trigger")]
    NotServiceBusTriggered(String),
}

/// Hands one message to a function; `Err` abandons it.
#[async_trait::async_trait]
pub(crate) trait Deliver: Send + Sync {
    async fn deliver(&self, message: &Message) -> Result<(), DeliveryError>;
}

/// Delivers a queue's messages to one Service Bus-triggered function.
pub(crate) struct TriggerDelivery {
    invoker: Arc<Invoker>,
    function: FunctionDef,
}

impl TriggerDelivery {
    /// A deliverer for `function`, which must have a Service Bus trigger.
    pub(crate) fn new(invoker: Arc<Invoker>, function: FunctionDef) -> Self {
        Self { invoker, function }
    }
}

#[async_trait::async_trait]
impl Deliver for TriggerDelivery {
    async fn deliver(&self, message: &Message) -> Result<(), DeliveryError> {
        let Trigger::ServiceBus { binding, .. } = &self.function.trigger else {
            return Err(DeliveryError::NotServiceBusTriggered(
                self.function.name.clone(),
            ));
        };
        let envelope =
            payload::service_bus_envelope(binding, message, &Sys::now(&self.function.name));
        let reason = format!(
            "New ServiceBus message detected on '{}' (DeliveryCount={})",
            match &self.function.trigger {
                Trigger::ServiceBus { queue, .. } => queue.as_str(),
                Trigger::Http { .. } => "",
            },
            message.delivery_count
        );
        self.invoker
            .invoke(&self.function, &envelope, &reason)
            .await
            .map(|_| ())
            .map_err(DeliveryError::from)
    }
}

/// Delivers a queue's messages to one function, at most `max_concurrent` invocations running at
/// a time (one whose lock was lost still holds its slot until it ends, as on Azure), until
/// `shutdown` turns true; then waits up to `drain` for deliveries in flight. Returns how many
/// deliveries were still running when the drain time ran out.
pub(crate) async fn consume(
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
        // A message not delivered yet waits in the queue and spends no delivery count.
        let message = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break,
            message = queue.receive() => message,
        };
        let (queue, deliverer, function) = (queue.clone(), deliverer.clone(), function.clone());
        deliveries.spawn(async move {
            let delivery = deliverer.deliver(&message);
            tokio::pin!(delivery);
            let limit = queue.options().max_lock_renewal;
            let result = tokio::select! {
                result = &mut delivery => result,
                () = tokio::time::sleep(limit) => {
                    lose_lock(&queue, &function, &message, limit);
                    delivery.await
                }
            };
            settle(&queue, &function, &message, result);
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

/// The renewal limit passed while the invocation runs: the message is released (or
/// dead-lettered) now, whatever the invocation later answers.
fn lose_lock(queue: &Queue, function: &str, message: &Message, limit: Duration) {
    let (id, count) = (&message.message_id, message.delivery_count);
    match queue.expire_lock(message) {
        Some(Disposition::Redeliver) => tracing::error!(
            queue = queue.name(),
            "delivery {count} of message {id} to {function} still running after \
             maxAutoLockRenewalDuration ({} s): its lock is lost and the message is delivered \
             again while that invocation goes on, as Service Bus does",
            limit.as_secs_f64()
        ),
        Some(Disposition::DeadLettered) => tracing::error!(
            queue = queue.name(),
            "message {id} dead-lettered ({MAX_DELIVERY_COUNT_EXCEEDED}): delivery {count} to \
             {function} lost its lock after {} s and it was the last one allowed",
            limit.as_secs_f64()
        ),
        None => {}
    }
}

fn settle(queue: &Queue, function: &str, message: &Message, result: Result<(), DeliveryError>) {
    let (id, count) = (&message.message_id, message.delivery_count);
    match result {
        Ok(()) => match queue.complete(message) {
            Ok(()) => tracing::debug!(
                queue = queue.name(),
                message_id = %id,
                delivery_count = count,
                "{function} completed the message"
            ),
            Err(lost) => tracing::warn!(
                queue = queue.name(),
                "{function} succeeded on delivery {count} of message {id}, but the message cannot \
                 be completed: {lost}; its success is ignored"
            ),
        },
        Err(error) => match queue.abandon(message, &error.to_string()) {
            Ok(Disposition::Redeliver) => tracing::warn!(
                queue = queue.name(),
                "delivery {count} of message {id} to {function} failed ({error}); abandoned: \
                 delivered again at once, as Service Bus does"
            ),
            Ok(Disposition::DeadLettered) => tracing::error!(
                queue = queue.name(),
                "message {id} dead-lettered ({MAX_DELIVERY_COUNT_EXCEEDED}): {function} failed \
                 all {count} deliveries; last failure: {error}"
            ),
            Err(lost) => tracing::warn!(
                queue = queue.name(),
                "delivery {count} of message {id} to {function} failed ({error}) after its lock \
                 was lost: {lost}; the failure is ignored"
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{Bus, Counts, NewMessage, QueueError, QueueOptions};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::Notify;
    use tokio::time::Instant;

    /// Fails the first `failures` deliveries, recording each delivery's count and time.
    struct Flaky {
        failures: u32,
        seen: Mutex<Vec<(u32, Instant)>>,
    }

    impl Flaky {
        fn new(failures: u32) -> Arc<Self> {
            Arc::new(Self {
                failures,
                seen: Mutex::new(Vec::new()),
            })
        }

        fn counts(&self) -> Vec<u32> {
            self.seen.lock().unwrap().iter().map(|(c, _)| *c).collect()
        }
    }

    #[async_trait::async_trait]
    impl Deliver for Flaky {
        async fn deliver(&self, message: &Message) -> Result<(), DeliveryError> {
            // Each delivery takes a moment, so the timestamps show the queue adds no delay.
            tokio::time::sleep(Duration::from_millis(10)).await;
            let mut seen = self.seen.lock().unwrap();
            seen.push((message.delivery_count, Instant::now()));
            if seen.len() as u32 <= self.failures {
                Err(InvokeError::Failed {
                    status: 503,
                    body_preview: String::new(),
                }
                .into())
            } else {
                Ok(())
            }
        }
    }

    fn options(max: u32) -> QueueOptions {
        QueueOptions {
            max_delivery_count: max,
            max_lock_renewal: Duration::from_secs(300),
        }
    }

    /// Starts consuming `queue` with `deliverer`, `max` at a time and `drain` to finish at
    /// shutdown; the sender stops it.
    fn start(
        queue: &Arc<Queue>,
        deliverer: Arc<dyn Deliver>,
        max: usize,
        drain: Duration,
    ) -> (watch::Sender<bool>, tokio::task::JoinHandle<usize>) {
        let (tx, rx) = watch::channel(false);
        let consumer = tokio::spawn(consume(
            queue.clone(),
            "f".into(),
            deliverer,
            max,
            rx,
            drain,
        ));
        (tx, consumer)
    }

    async fn run_until<F: Fn(&Counts) -> bool>(
        queue: &Arc<Queue>,
        deliverer: Arc<dyn Deliver>,
        done: F,
    ) {
        let (tx, consumer) = start(queue, deliverer, 4, Duration::from_secs(5));
        tokio::time::timeout(Duration::from_secs(3600), async {
            while !done(&queue.counts()) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the queue never settled");
        tx.send(true).unwrap();
        consumer.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_delivery_comes_back_at_once_with_a_higher_delivery_count() {
        let queue = Arc::new(Queue::new("q", options(10)));
        queue.send(NewMessage::text("{}"));
        let flaky = Flaky::new(2);
        let started = Instant::now();
        run_until(&queue, flaky.clone(), |c| c.completed == 1).await;
        let seen = flaky.seen.lock().unwrap().clone();
        assert_eq!(flaky.counts(), vec![1, 2, 3]);
        // Each delivery ends 10 ms after the previous one: no backoff, no delay.
        let at: Vec<u128> = seen
            .iter()
            .map(|(_, t)| (*t - started).as_millis())
            .collect();
        assert_eq!(at, vec![10, 20, 30]);
        assert_eq!(queue.counts().pending(), 0);
        assert!(queue.dead_letters().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_is_dead_lettered_after_the_max_delivery_count() {
        let queue = Arc::new(Queue::new("q", options(10)));
        let sent = queue.send(NewMessage::text(r#"{"userId":"u1"}"#));
        let always = Flaky::new(u32::MAX);
        let started = Instant::now();
        run_until(&queue, always.clone(), |c| c.dead_lettered == 1).await;
        assert_eq!(always.counts(), (1..=10).collect::<Vec<_>>());
        // Ten quick failures dead-letter the message within their own time: 10 × 10 ms.
        let last = always.seen.lock().unwrap().last().unwrap().1;
        assert_eq!((last - started).as_millis(), 100);
        let dead = queue.dead_letters();
        assert_eq!(dead[0].message.message_id, sent.message_id);
        assert_eq!(dead[0].message.delivery_count, 10);
        assert_eq!(dead[0].reason, MAX_DELIVERY_COUNT_EXCEEDED);
        assert!(dead[0].description.contains("handler answered 503"));
        assert_eq!(queue.counts().pending(), 0);
        let snapshot = queue.snapshot();
        assert_eq!(snapshot["deadLetter"][0]["deliveryCount"], 10);
        assert_eq!(snapshot["deadLetter"][0]["body"], r#"{"userId":"u1"}"#);
        assert!(snapshot.get("scheduled").is_none());
    }

    /// The first delivery runs 5 s (past a 2 s renewal limit) and succeeds; later ones succeed
    /// at once. Records each delivery's count and start time.
    struct SlowFirst {
        seen: Mutex<Vec<(u32, Instant)>>,
        first_done: Notify,
    }

    #[async_trait::async_trait]
    impl Deliver for SlowFirst {
        async fn deliver(&self, message: &Message) -> Result<(), DeliveryError> {
            let first = {
                let mut seen = self.seen.lock().unwrap();
                seen.push((message.delivery_count, Instant::now()));
                seen.len() == 1
            };
            if first {
                tokio::time::sleep(Duration::from_secs(5)).await;
                self.first_done.notify_one();
            }
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_invocation_past_the_renewal_limit_loses_its_lock_and_its_success_is_ignored() {
        let queue = Arc::new(Queue::new(
            "q",
            QueueOptions {
                max_delivery_count: 10,
                max_lock_renewal: Duration::from_secs(2),
            },
        ));
        queue.send(NewMessage::text("{}"));
        let slow = Arc::new(SlowFirst {
            seen: Mutex::new(Vec::new()),
            first_done: Notify::new(),
        });
        let started = Instant::now();
        let first_done = slow.first_done.notified();
        tokio::pin!(first_done);
        first_done.as_mut().enable();
        let (tx, consumer) = start(&queue, slow.clone(), 4, Duration::from_secs(10));
        first_done.await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        let seen = slow.seen.lock().unwrap().clone();
        let at: Vec<(u32, u64)> = seen
            .iter()
            .map(|(c, t)| (*c, (*t - started).as_secs()))
            .collect();
        // Delivered again at the renewal limit, while the first still ran; the first's later
        // success did not complete the message a second time.
        assert_eq!(at, vec![(1, 0), (2, 2)]);
        let counts = queue.counts();
        assert_eq!(
            (counts.completed, counts.locks_lost, counts.pending()),
            (1, 1, 0)
        );
        tx.send(true).unwrap();
        assert_eq!(consumer.await.unwrap(), 0);
    }

    /// Never finishes a delivery.
    struct Hang;

    #[async_trait::async_trait]
    impl Deliver for Hang {
        async fn deliver(&self, _message: &Message) -> Result<(), DeliveryError> {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn lock_loss_on_the_last_allowed_delivery_dead_letters_and_slots_stay_taken() {
        let queue = Arc::new(Queue::new(
            "q",
            QueueOptions {
                max_delivery_count: 3,
                max_lock_renewal: Duration::from_secs(1),
            },
        ));
        queue.send(NewMessage::text("{}"));
        queue.send(NewMessage::text("{}"));
        // Two slots: the first message's lock-lost invocations keep holding them.
        let (tx, consumer) = start(&queue, Arc::new(Hang), 2, Duration::from_secs(1));
        tokio::time::sleep(Duration::from_secs(10)).await;
        let counts = queue.counts();
        // Both delivered once, both locks lost at 1 s; no slot is free for their redelivery.
        assert_eq!(counts.locks_lost, 2);
        assert_eq!(counts.ready, 2);
        assert_eq!(counts.in_flight, 0);
        tx.send(true).unwrap();
        assert_eq!(consumer.await.unwrap(), 2);

        // With free slots, the third lost lock is the last allowed delivery: dead-lettered.
        let queue = Arc::new(Queue::new(
            "q",
            QueueOptions {
                max_delivery_count: 3,
                max_lock_renewal: Duration::from_secs(1),
            },
        ));
        queue.send(NewMessage::text("{}"));
        let (tx, consumer) = start(&queue, Arc::new(Hang), 8, Duration::from_secs(1));
        tokio::time::sleep(Duration::from_secs(10)).await;
        let dead = queue.dead_letters();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].reason, MAX_DELIVERY_COUNT_EXCEEDED);
        assert_eq!(dead[0].message.delivery_count, 3);
        assert!(
            dead[0].description.contains("MessageLockLost"),
            "{}",
            dead[0].description
        );
        tx.send(true).unwrap();
        assert_eq!(consumer.await.unwrap(), 3);
    }

    /// Holds every delivery until released, counting how many run at once.
    struct Gate {
        running: AtomicUsize,
        peak: AtomicUsize,
        release: Notify,
    }

    impl Gate {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                running: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
                release: Notify::new(),
            })
        }
    }

    #[async_trait::async_trait]
    impl Deliver for Gate {
        async fn deliver(&self, _message: &Message) -> Result<(), DeliveryError> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            let released = self.release.notified();
            released.await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_than_max_concurrent_deliveries_run_at_once_and_the_rest_wait_undelivered() {
        let queue = Arc::new(Queue::new("q", options(10)));
        for _ in 0..5 {
            queue.send(NewMessage::text("{}"));
        }
        let gate = Gate::new();
        let (tx, consumer) = start(&queue, gate.clone(), 2, Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(queue.counts().ready, 3);
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
        let gate = Gate::new();
        let (tx, consumer) = start(&queue, gate.clone(), 1, Duration::from_secs(5));
        while queue.counts().in_flight == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tx.send(true).unwrap();
        // The delivery in flight finishes 1 s into the 5 s drain: it completes, nothing is cut,
        // and the message not yet delivered stays in the queue.
        tokio::time::sleep(Duration::from_secs(1)).await;
        gate.release.notify_waiters();
        assert_eq!(consumer.await.unwrap(), 0);
        let counts = queue.counts();
        assert_eq!(
            (counts.completed, counts.in_flight, counts.ready),
            (1, 0, 1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_delivery_still_running_when_the_drain_time_ends_is_cut_and_counted() {
        let queue = Arc::new(Queue::new("q", options(10)));
        queue.send(NewMessage::text("{}"));
        queue.send(NewMessage::text("{}"));
        let gate = Gate::new();
        let (tx, consumer) = start(&queue, gate.clone(), 1, Duration::from_secs(5));
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
    fn the_bus_finds_queues_whatever_the_case_and_sends_can_be_made_to_fail() {
        let bus = Bus::new(["Onboarding".to_owned()], QueueOptions::default());
        assert_eq!(bus.queue("onboarding").unwrap().name(), "Onboarding");
        assert!(matches!(
            bus.queue("other"),
            Err(QueueError::UnknownQueue(_))
        ));
        let sent = bus.send("ONBOARDING", NewMessage::text("x")).unwrap();
        assert_eq!(sent.message_id.len(), 32);
        assert_eq!(sent.sequence_number, 1);
        assert_eq!(bus.snapshot()["Onboarding"]["active"], 1);
        bus.set_sends_fail(true);
        assert!(matches!(
            bus.send("onboarding", NewMessage::text("y")),
            Err(QueueError::SendsFailing(_))
        ));
        bus.set_sends_fail(false);
        assert!(bus.send("onboarding", NewMessage::text("z")).is_ok());
    }

    #[test]
    fn an_abandoned_message_goes_back_to_its_place_and_a_late_settlement_is_refused() {
        let queue = Queue::new("q", options(10));
        queue.send(NewMessage::text("a"));
        queue.send(NewMessage::text("b"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let first = rt.block_on(queue.receive());
        assert_eq!(queue.abandon(&first, "no").unwrap(), Disposition::Redeliver);
        let again = rt.block_on(queue.receive());
        assert_eq!((again.body.as_str(), again.delivery_count), ("a", 2));
        assert_ne!(again.lock_token, first.lock_token);
        assert!(
            queue.complete(&first).is_err(),
            "an old lock settles nothing"
        );
        assert_eq!(queue.expire_lock(&again), Some(Disposition::Redeliver));
        assert!(queue.complete(&again).is_err());
        assert_eq!(queue.counts().locks_lost, 1);
    }
}
