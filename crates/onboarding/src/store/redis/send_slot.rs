//! The shared send rate on Redis (`SMTP_MAX_PER_MINUTE`): the user's ticket, then the shared
//! schedule, each one script on one key (see `store/send_rate.rs` for the arithmetic).

use std::num::NonZeroU32;
use std::time::Duration;

use super::RedisStore;
use crate::domain::UserId;
use crate::store::StoreError;
use crate::store::send_rate::{self, GCRA_SCRIPT, SendSlot, TICKET_GRACE, TICKET_SCRIPT};

/// The two send-rate scripts, loaded once (EVALSHA, with EVAL when the server lost them).
#[derive(Clone)]
pub(super) struct Scripts {
    gcra: redis::Script,
    take_ticket: redis::Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            gcra: redis::Script::new(GCRA_SCRIPT),
            take_ticket: redis::Script::new(TICKET_SCRIPT),
        }
    }
}

impl RedisStore {
    fn send_ticket_key(&self, id: UserId) -> String {
        format!("{}user:{{{id}}}:send-slot", self.prefix)
    }

    fn send_rate_key(&self) -> String {
        format!("{}send-rate", self.prefix)
    }

    /// [`UserStore::reserve_send_slot`](crate::store::UserStore::reserve_send_slot) on Redis.
    pub(super) async fn send_slot(
        &self,
        id: UserId,
        per_minute: NonZeroU32,
        max_wait: Duration,
    ) -> Result<SendSlot, StoreError> {
        // Two keys in two slots of a cluster, so two commands: the user's ticket first, then
        // the shared schedule; a ticket for a slot too far ahead is written last. A crash in
        // between wastes one slot, nothing more.
        let interval_us = send_rate::interval(per_minute).as_micros() as u64;
        let max_wait_us = max_wait.as_micros() as u64;
        let ticket_key = self.send_ticket_key(id);
        let mut connection = self.link().await?;
        let mut ticket = self.send_rate.take_ticket.key(&ticket_key);
        ticket.arg(interval_us).arg(max_wait_us);
        let (outcome, wait_us): (i64, i64) =
            self.bounded(ticket.invoke_async(&mut connection)).await?;
        if let Some(slot) = send_rate::from_script_reply(outcome, wait_us) {
            return Ok(slot);
        }
        let mut gcra = self.send_rate.gcra.key(self.send_rate_key());
        gcra.arg(interval_us).arg(max_wait_us);
        let (outcome, wait_us, slot_us): (i64, i64, String) =
            self.bounded(gcra.invoke_async(&mut connection)).await?;
        let slot = send_rate::from_script_reply(outcome, wait_us)
            .ok_or_else(|| StoreError::Corrupt(format!("the rate script answered {outcome}")))?;
        if let SendSlot::TooFar { wait } = slot {
            let keep_ms = (wait + TICKET_GRACE).as_millis() as u64;
            self.query::<()>(
                redis::cmd("SET")
                    .arg(&ticket_key)
                    .arg(&slot_us)
                    .arg("PX")
                    .arg(keep_ms),
            )
            .await?;
        }
        Ok(slot)
    }
}
