//! Ingest admission: how much memory ingest requests may hold, who may hold it, and
//! how slowly a body may arrive.
//!
//! Memory is charged for what a request holds, never for what it announced or sent.
//! One budget (`ingest_max_inflight_bytes`) is shared by every ingest request of the
//! process, and a request's [`Charge`] grows step by step with what it really holds:
//! - its body as it arrives off the wire (the buffer's capacity; chunked bodies too);
//! - a decoder's state (the zstd window its frames declare) and the decoded text as
//!   the decoder produces it, in growing steps charged before they are allocated;
//! - the Native column block as lines are encoded into it: every
//!   [`BlockMeter::ROWS`] rows or [`BlockMeter::TEXT`] bytes of text the block is
//!   measured, and room for the rows the rest of the body will make is charged and
//!   reserved before it is used (tiny lines become rows several times their size, so
//!   a body that will not fit is refused early, not at the end).
//!
//! Each part is released as soon as it is dropped (the wire bytes once decoded, the
//! text once encoded); the block stays charged until the request answers, because it
//! is held until ClickHouse has committed it. Every exit releases everything at once
//! ([`Charge`] is released on drop), and a refused request stored nothing.
//!
//! Nobody starves the others: a tenant holds at most `ingest_tenant_share` of the
//! budget, so a tenant flooding the server with bodies leaves the rest to everyone
//! else. A request that alone would need more than that share can never be admitted
//! and is answered 413; one that cannot grow because the budget or its tenant's share
//! is held by other requests is answered 503 with `Retry-After`.
//!
//! A body must also keep arriving: after `ingest_body_grace`, at least
//! `ingest_min_body_rate` bytes per second on average (the deadline moves one second
//! further for every `ingest_min_body_rate` bytes received, as Apache's
//! `mod_reqtimeout` does). An upload slower than that is answered 408 and releases
//! what it held, so uploads that stall or trickle cannot hold admission.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use logport_store::IngestBlock;

use crate::error::ApiError;

/// Bytes every ingest request is charged up front: its parsing state, line errors and
/// answer (a request that cannot get even this is refused before reading its body).
pub const REQUEST_BASE: usize = 64 << 10;

/// The memory ingest requests of this process may hold, shared fairly by tenants.
pub struct IngestBudget {
    total: usize,
    tenant_max: usize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    total: usize,
    by_tenant: HashMap<String, usize>,
}

/// Why a request may not hold more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The request alone would hold more than a tenant's share: it never fits.
    TooLarge { limit: usize },
    /// The budget is held by other requests.
    Busy,
    /// The tenant's share is held by its other requests.
    TenantBusy,
}

impl From<Refused> for ApiError {
    fn from(r: Refused) -> Self {
        let reason = match r {
            Refused::TooLarge { .. } => "too_large",
            Refused::Busy => "memory",
            Refused::TenantBusy => "tenant_share",
        };
        metrics::counter!("logport_ingest_refused_total", "reason" => reason).increment(1);
        match r {
            Refused::TooLarge { limit } => ApiError::TooLarge(format!(
                "ingesting this body needs more than the {limit} bytes of memory one request \
                 may hold (the body, its decoded text and the column data its lines become); \
                 split it into smaller requests"
            )),
            Refused::Busy => ApiError::Unavailable {
                detail: "ingest memory is held by requests in progress; retry shortly".into(),
                retry_after: 1,
            },
            Refused::TenantBusy => ApiError::Unavailable {
                detail: "this tenant's ingest requests in progress hold its share of ingest \
                         memory; retry when some of them have answered"
                    .into(),
                retry_after: 1,
            },
        }
    }
}

impl IngestBudget {
    /// `total` bytes for every request; one tenant may hold `tenant_share` of them.
    pub fn new(total: usize, tenant_share: f64) -> IngestBudget {
        let share = if tenant_share.is_finite() {
            tenant_share.clamp(0.0, 1.0)
        } else {
            1.0
        };
        IngestBudget {
            total,
            tenant_max: (total as f64 * share) as usize,
            held: Mutex::default(),
        }
    }

    /// The most one tenant (and so one request) may hold.
    pub fn tenant_max(&self) -> usize {
        self.tenant_max
    }

    /// What every request holds now.
    pub fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    /// An empty charge of one request of `tenant`.
    pub fn charge(self: &Arc<Self>, tenant: &str) -> Charge {
        Charge {
            budget: Arc::clone(self),
            tenant: tenant.to_string(),
            held: 0,
        }
    }

    fn grow(&self, tenant: &str, request_held: usize, more: usize) -> Result<(), Refused> {
        if request_held.saturating_add(more) > self.tenant_max {
            return Err(Refused::TooLarge {
                limit: self.tenant_max,
            });
        }
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let tenant_held = held.by_tenant.get(tenant).copied().unwrap_or(0);
        if tenant_held + more > self.tenant_max {
            return Err(Refused::TenantBusy);
        }
        if held.total + more > self.total {
            return Err(Refused::Busy);
        }
        held.total += more;
        *held.by_tenant.entry(tenant.to_string()).or_insert(0) += more;
        metrics::gauge!("logport_ingest_held_bytes").set(held.total as f64);
        Ok(())
    }

    fn release(&self, tenant: &str, less: usize) {
        if less == 0 {
            return;
        }
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.total = held.total.saturating_sub(less);
        if let Some(t) = held.by_tenant.get_mut(tenant) {
            *t = t.saturating_sub(less);
            if *t == 0 {
                held.by_tenant.remove(tenant);
            }
        }
        metrics::gauge!("logport_ingest_held_bytes").set(held.total as f64);
    }
}

/// The memory one ingest request holds; released when dropped.
pub struct Charge {
    budget: Arc<IngestBudget>,
    tenant: String,
    held: usize,
}

impl Charge {
    /// Holds `more` bytes on top of what the request holds, or says why not.
    pub fn grow(&mut self, more: usize) -> Result<(), Refused> {
        if more > 0 {
            self.budget.grow(&self.tenant, self.held, more)?;
            self.held += more;
        }
        Ok(())
    }

    /// Gives back `less` bytes the request no longer holds.
    pub fn shrink(&mut self, less: usize) {
        let less = less.min(self.held);
        self.budget.release(&self.tenant, less);
        self.held -= less;
    }

    /// Holds exactly `bytes` in all (growing may be refused; shrinking never is).
    pub fn set(&mut self, bytes: usize) -> Result<(), Refused> {
        match bytes.checked_sub(self.held) {
            Some(more) => self.grow(more),
            None => {
                self.shrink(self.held - bytes);
                Ok(())
            }
        }
    }

    /// What the request holds now.
    pub fn held(&self) -> usize {
        self.held
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.release(&self.tenant, self.held);
    }
}

/// How fast an ingest body must arrive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BodyPace {
    /// How long a body may take before the rate counts.
    pub grace: Duration,
    /// Bytes per second on average after the grace (0: no minimum).
    pub min_rate: u64,
}

impl Default for BodyPace {
    fn default() -> Self {
        BodyPace {
            grace: Duration::from_secs(10),
            min_rate: 1024,
        }
    }
}

impl BodyPace {
    /// When the next bytes must have arrived, `received` bytes into a body whose
    /// reading started at `start` (`None`: no minimum rate).
    pub fn deadline(
        &self,
        start: tokio::time::Instant,
        received: u64,
    ) -> Option<tokio::time::Instant> {
        if self.min_rate == 0 {
            return None;
        }
        let earned = Duration::from_secs_f64(received as f64 / self.min_rate as f64);
        Some(start + self.grace + earned.min(Duration::from_secs(86_400 * 365)))
    }

    /// The 408 for a body that arrived too slowly.
    pub fn too_slow(&self, received: u64) -> ApiError {
        metrics::counter!("logport_ingest_refused_total", "reason" => "slow_body").increment(1);
        ApiError::BodyTooSlow(format!(
            "the body arrived slower than {} bytes per second (after a grace of {} s; {received} \
             bytes came); nothing was stored — send it faster, or in smaller requests",
            self.min_rate,
            self.grace.as_secs_f64()
        ))
    }
}

/// Charges a growing [`IngestBlock`] to a request as lines are encoded into it.
pub struct BlockMeter {
    /// What the block is charged for now.
    charged: usize,
    next_rows: usize,
    next_text: usize,
}

impl Default for BlockMeter {
    fn default() -> Self {
        BlockMeter::new()
    }
}

impl BlockMeter {
    /// Rows between two measurements of the block.
    pub const ROWS: usize = 1024;
    /// Bytes of text between two measurements (long lines make big rows).
    pub const TEXT: usize = 1 << 20;

    pub fn new() -> BlockMeter {
        BlockMeter {
            charged: 0,
            next_rows: Self::ROWS,
            next_text: Self::TEXT,
        }
    }

    /// Called before each line: `done` bytes of a `total`-byte text are encoded. Now
    /// and then measures the block, charges room for the rows the rest of the text
    /// will make (at the widths seen so far, at most `max_rows` in all), and reserves
    /// that room, so the block grows only into memory already charged.
    pub fn check(
        &mut self,
        block: &mut IngestBlock,
        done: usize,
        total: usize,
        max_rows: usize,
        charge: &mut Charge,
    ) -> Result<(), Refused> {
        let rows = block.rows();
        if rows < self.next_rows && done < self.next_text {
            return Ok(());
        }
        self.next_rows = rows + Self::ROWS;
        self.next_text = done + Self::TEXT;
        let ahead = if rows == 0 || done == 0 {
            0
        } else {
            let rest = total.saturating_sub(done) as u128 * rows as u128 / done as u128;
            // A little slack: the rows' widths vary.
            (rest as usize)
                .saturating_add(Self::ROWS / 4)
                .min(max_rows.saturating_sub(rows))
        };
        self.charge_to(block.held_bytes_with(ahead), charge)?;
        block.reserve_rows(ahead);
        Ok(())
    }

    /// Gives back room reserved for rows that did not come, then charges exactly
    /// what the finished block holds (and will write out).
    pub fn finish(&mut self, block: &mut IngestBlock, charge: &mut Charge) -> Result<(), Refused> {
        block.shrink_to_fit();
        self.charge_to(block.held_bytes(), charge)
    }

    fn charge_to(&mut self, bytes: usize, charge: &mut Charge) -> Result<(), Refused> {
        if bytes > self.charged {
            charge.grow(bytes - self.charged)?;
        } else {
            charge.shrink(self.charged - bytes);
        }
        self.charged = bytes;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_bounded_per_tenant_and_in_all_and_released_on_drop() {
        let budget = Arc::new(IngestBudget::new(1000, 0.5));
        assert_eq!(budget.tenant_max(), 500);
        let mut a1 = budget.charge("a");
        let mut a2 = budget.charge("a");
        assert_eq!(
            a1.grow(501),
            Err(Refused::TooLarge { limit: 500 }),
            "more than a tenant's share never fits"
        );
        a1.grow(300).unwrap();
        assert_eq!(a2.grow(201), Err(Refused::TenantBusy));
        a2.grow(200).unwrap();
        let mut b = budget.charge("b");
        b.grow(400).unwrap();
        let mut c = budget.charge("c");
        assert_eq!(c.grow(101), Err(Refused::Busy));
        c.grow(100).unwrap();
        assert_eq!(budget.held(), 1000);
        a1.shrink(100);
        assert_eq!(a1.held(), 200);
        a1.set(250).unwrap();
        a1.set(50).unwrap();
        drop(a2);
        drop(b);
        assert_eq!(budget.held(), 150);
        drop(a1);
        drop(c);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn the_pace_moves_the_deadline_by_what_arrived() {
        let pace = BodyPace {
            grace: Duration::from_secs(2),
            min_rate: 100,
        };
        let t0 = tokio::time::Instant::now();
        assert_eq!(pace.deadline(t0, 0), Some(t0 + Duration::from_secs(2)));
        assert_eq!(
            pace.deadline(t0, 250),
            Some(t0 + Duration::from_millis(4500))
        );
        let off = BodyPace {
            min_rate: 0,
            ..pace
        };
        assert_eq!(off.deadline(t0, 0), None);
    }
}
