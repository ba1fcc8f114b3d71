//! Process-wide memory budgets for request bodies: the bytes buffered while bodies arrive (all
//! connections, all HTTP/2 streams), each connection's share of them, and the estimated size of
//! the bodies being parsed and judged at once. Without them a client could hold up to
//! `maxConnections` × streams × `maxBodyBytes` of unfinished bodies, and a body of `[{}, …]`
//! grows about 40-fold when parsed.
//!
//! Every figure is derived from `limits.maxBodyBytes` (see [`Budgets::new`]), so lowering the
//! body limit lowers them all; docs/RELIABILITY.md lists them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::admission::shape::{Shape, MAX_PARSED_PER_BODY_BYTE};
use crate::config::Limits;
use crate::policy::memory::BodyMemory;

/// Bodies buffered at once, all connections together, in multiples of `maxBodyBytes`.
pub const BUFFERED_BODIES: usize = 12;
/// One connection's share of the buffered bytes, in multiples of `maxBodyBytes`: an apiserver
/// multiplexes its calls over one HTTP/2 connection, so this is what one client may have in
/// flight; a flood on one connection is refused before it takes everyone's budget.
pub const CONNECTION_BODIES: usize = 2;
/// Estimated parsed bytes of the large requests being parsed and judged at once, in multiples
/// of `maxBodyBytes`: one body of the largest estimate allowed
/// ([`MAX_PARSED_PER_BODY_BYTE`]), or several smaller ones.
pub const PARSING_BODIES: usize = MAX_PARSED_PER_BODY_BYTE;
/// A body of at most this many bytes may also use the reserve (see [`Budgets::reserve_limit`]):
/// ordinary reviews are a few KiB, and are still read while large bodies hold the whole budget.
pub const SMALL_BODY_BYTES: usize = 256 * 1024;
/// The reserve for small bodies, in multiples of `maxBodyBytes`.
pub const RESERVE_BODIES: usize = 1;
/// A request whose estimated parsed size is at most this draws from a pool of its own
/// ([`SMALL_PARSING_BODIES`]): ordinary reviews (a few hundred KiB parsed) never wait behind a
/// large one.
pub const SMALL_PARSE_BYTES: usize = 1024 * 1024;
/// Estimated parsed bytes of small requests at once, in multiples of `maxBodyBytes`.
pub const SMALL_PARSING_BODIES: usize = 8;

/// Which budget refused a request (the `reason` label of
/// `regate_memory_budget_rejections_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// All connections together buffer as much as the process allows.
    Buffered,
    /// This connection already buffers its share.
    Connection,
    /// The bodies being parsed at once took the parsing budget for longer than the queue timeout.
    Parsing,
}

impl Exhausted {
    pub fn as_str(self) -> &'static str {
        match self {
            Exhausted::Buffered => "buffered",
            Exhausted::Connection => "connection",
            Exhausted::Parsing => "parsing",
        }
    }
}

/// The budgets, shared by every connection of the webhook port.
#[derive(Debug)]
pub struct Budgets {
    buffered: Arc<Semaphore>,
    /// Bytes of request bodies buffered at once, process-wide.
    pub buffered_limit: usize,
    reserve: Arc<Semaphore>,
    /// Bytes beyond `buffered_limit` that only bodies of at most [`SMALL_BODY_BYTES`] may use.
    pub reserve_limit: usize,
    /// Bytes one connection may have buffered at once.
    pub connection_share: usize,
    parsing: Arc<Semaphore>,
    /// Estimated parsed bytes of large requests at once.
    pub parsing_limit: usize,
    small_parsing: Arc<Semaphore>,
    /// Estimated parsed bytes of small requests at once.
    pub small_parsing_limit: usize,
    /// Estimated parsed bytes (see [`Shape`]) of one body.
    pub max_parsed_bytes: usize,
}

/// Bytes one semaphore call may take (tokio counts permits of one call in `u32`).
const MAX_CALL: usize = u32::MAX as usize;

impl Budgets {
    pub fn new(limits: &Limits) -> Budgets {
        let body = limits.max_body_bytes.max(1);
        // Semaphores hold at most `Semaphore::MAX_PERMITS`; a limit that large is no limit.
        let cap = |n: usize| n.min(Semaphore::MAX_PERMITS);
        let buffered_limit = cap(body.saturating_mul(BUFFERED_BODIES));
        let parsing_limit = cap(body.saturating_mul(PARSING_BODIES));
        let reserve_limit = cap(body.saturating_mul(RESERVE_BODIES));
        let small_parsing_limit =
            cap(body.saturating_mul(SMALL_PARSING_BODIES)).max(SMALL_PARSE_BYTES);
        Budgets {
            buffered: Arc::new(Semaphore::new(buffered_limit)),
            buffered_limit,
            reserve: Arc::new(Semaphore::new(reserve_limit)),
            reserve_limit,
            connection_share: body.saturating_mul(CONNECTION_BODIES),
            parsing: Arc::new(Semaphore::new(parsing_limit)),
            parsing_limit,
            small_parsing: Arc::new(Semaphore::new(small_parsing_limit)),
            small_parsing_limit,
            max_parsed_bytes: body.saturating_mul(MAX_PARSED_PER_BODY_BYTE),
        }
    }

    /// Bytes of request bodies buffered now (the reserve included).
    pub fn buffered_in_use(&self) -> usize {
        let main = self
            .buffered_limit
            .saturating_sub(self.buffered.available_permits());
        let reserve = self
            .reserve_limit
            .saturating_sub(self.reserve.available_permits());
        main + reserve
    }

    /// Estimated parsed bytes of the requests being parsed and judged now (small and large).
    pub fn parsing_in_use(&self) -> usize {
        let large = self
            .parsing_limit
            .saturating_sub(self.parsing.available_permits());
        let small = self
            .small_parsing_limit
            .saturating_sub(self.small_parsing.available_permits());
        large + small
    }

    /// An empty reservation of buffered bytes for one body arriving on `connection` (`None`
    /// outside the webhook port, e.g. a router served by a test without connection shares).
    pub fn reservation(&self, connection: Option<ConnectionShare>) -> Reservation {
        Reservation {
            budget: self.buffered.clone(),
            reserve: self.reserve.clone(),
            share: self.connection_share,
            permit: None,
            reserved: None,
            connection,
            bytes: 0,
            memory: BodyMemory::default(),
        }
    }

    /// Reserves the estimated parsed size of a body of this shape, waiting at most `wait` for
    /// requests being judged to finish: small ones from the small pool, large ones from the
    /// large pool.
    pub async fn reserve_parsing(
        &self,
        shape: &Shape,
        wait: Duration,
    ) -> Result<ParsingPermit, Exhausted> {
        let estimate = shape.estimated_parsed_bytes();
        let (pool, limit) = if estimate <= SMALL_PARSE_BYTES {
            (&self.small_parsing, self.small_parsing_limit)
        } else {
            (&self.parsing, self.parsing_limit)
        };
        // Never more than the whole pool, so that one request can always run alone.
        let wanted = estimate.min(limit).min(MAX_CALL) as u32;
        match tokio::time::timeout(wait, pool.clone().acquire_many_owned(wanted)).await {
            Ok(Ok(permit)) => Ok(ParsingPermit(permit, BodyMemory::new(wanted as usize))),
            _ => Err(Exhausted::Parsing),
        }
    }
}

/// Held while a request is parsed and judged; gives its estimate back when dropped. The
/// estimate is also memory the evaluation ceiling leaves to the body (`policy::memory`).
#[derive(Debug)]
pub struct ParsingPermit(
    #[allow(dead_code)] OwnedSemaphorePermit,
    #[allow(dead_code)] BodyMemory,
);

/// One connection's buffered bytes, shared by its requests (HTTP/2 streams). The webhook port
/// puts one in every request's extensions.
#[derive(Debug, Clone, Default)]
pub struct ConnectionShare(Arc<AtomicUsize>);

impl ConnectionShare {
    pub fn new() -> ConnectionShare {
        ConnectionShare::default()
    }

    /// Bytes this connection's requests buffer now.
    pub fn in_use(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Buffered bytes reserved for one body, from the process-wide budget and from its connection's
/// share; all given back when it is dropped (the body answered, refused or abandoned).
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
    share: usize,
    permit: Option<OwnedSemaphorePermit>,
    /// Bytes taken from the reserve for small bodies.
    reserved: Option<OwnedSemaphorePermit>,
    connection: Option<ConnectionShare>,
    bytes: usize,
    /// The same bytes, left out of what the evaluation ceiling counts (`policy::memory`).
    memory: BodyMemory,
}

impl Reservation {
    /// Bytes reserved so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Reserves `more` bytes, or says which budget has no room for them (reserving nothing).
    pub fn grow(&mut self, more: usize) -> Result<(), Exhausted> {
        if more == 0 {
            return Ok(());
        }
        if let Some(connection) = &self.connection {
            let share = self.share;
            let taken = connection
                .0
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                    used.checked_add(more).filter(|total| *total <= share)
                });
            if taken.is_err() {
                return Err(Exhausted::Connection);
            }
        }
        let small = self.bytes.saturating_add(more) <= SMALL_BODY_BYTES;
        let take = |from: &Arc<Semaphore>| {
            u32::try_from(more)
                .ok()
                .and_then(|n| from.clone().try_acquire_many_owned(n).ok())
        };
        if let Some(permit) = take(&self.budget) {
            match &mut self.permit {
                Some(held) => held.merge(permit),
                None => self.permit = Some(permit),
            }
        } else if let Some(permit) = take(&self.reserve).filter(|_| small) {
            match &mut self.reserved {
                Some(held) => held.merge(permit),
                None => self.reserved = Some(permit),
            }
        } else {
            if let Some(connection) = &self.connection {
                connection.0.fetch_sub(more, Ordering::AcqRel);
            }
            return Err(Exhausted::Buffered);
        }
        self.bytes += more;
        self.memory.grow(more);
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(connection) = &self.connection {
            connection.0.fetch_sub(self.bytes, Ordering::AcqRel);
        }
        // The semaphore permit gives its bytes back as it drops.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(body: usize) -> Limits {
        Limits {
            max_body_bytes: body,
            ..Limits::default()
        }
    }

    #[test]
    fn derived_from_the_body_limit() {
        let b = Budgets::new(&Limits::default());
        assert_eq!(b.buffered_limit, 96 * 1024 * 1024);
        assert_eq!(b.reserve_limit, 8 * 1024 * 1024);
        assert_eq!(b.connection_share, 16 * 1024 * 1024);
        assert_eq!(b.parsing_limit, 192 * 1024 * 1024);
        assert_eq!(b.max_parsed_bytes, 192 * 1024 * 1024);
    }

    #[test]
    fn reservations_are_bounded_and_given_back() {
        let b = Budgets::new(&limits(1000));
        let conn = ConnectionShare::new();
        let mut first = b.reservation(Some(conn.clone()));
        assert_eq!(first.grow(1500), Ok(()));
        let mut second = b.reservation(Some(conn.clone()));
        // The connection's share is 2,000 bytes.
        assert_eq!(second.grow(600), Err(Exhausted::Connection));
        assert_eq!(second.grow(500), Ok(()));
        assert_eq!(conn.in_use(), 2000);
        assert_eq!(b.buffered_in_use(), 2000);
        // Other connections share the process-wide 12,000.
        let mut others: Vec<Reservation> = (0..5)
            .map(|_| b.reservation(Some(ConnectionShare::new())))
            .collect();
        for r in &mut others {
            assert_eq!(r.grow(2000), Ok(()));
        }
        // Beyond the budget, small bodies still have the reserve (1,000 bytes here).
        let mut large = b.reservation(None);
        let mut small = b.reservation(Some(ConnectionShare::new()));
        assert_eq!(small.grow(1000), Ok(()));
        let mut last = b.reservation(Some(ConnectionShare::new()));
        assert_eq!(last.grow(1), Err(Exhausted::Buffered));
        assert_eq!(last.bytes(), 0);
        drop(small);
        assert_eq!(large.grow(SMALL_BODY_BYTES + 1), Err(Exhausted::Buffered));
        assert_eq!(b.buffered_in_use(), 12_000);
        drop(others);
        drop(first);
        drop(second);
        assert_eq!(conn.in_use(), 0);
        assert_eq!(b.buffered_in_use(), 0);
        assert_eq!(last.grow(1), Ok(()));
    }

    #[tokio::test]
    async fn large_parses_wait_for_each_other_and_small_ones_never_wait() {
        let b = Budgets::new(&limits(1024 * 1024));
        let huge = Shape {
            bytes: 1024 * 1024,
            values: 10_000_000,
            ..Shape::default()
        };
        let held = b.reserve_parsing(&huge, Duration::from_millis(10)).await;
        assert!(held.is_ok());
        assert_eq!(b.parsing_in_use(), b.parsing_limit);
        let again = b.reserve_parsing(&huge, Duration::from_millis(10)).await;
        assert_eq!(again.err(), Some(Exhausted::Parsing));
        let small = Shape {
            bytes: 10_000,
            values: 500,
            containers: 50,
            ..Shape::default()
        };
        let small = b.reserve_parsing(&small, Duration::from_millis(10)).await;
        assert!(small.is_ok());
        drop(held);
        assert!(b.parsing_in_use() > 0);
        drop(small);
        assert_eq!(b.parsing_in_use(), 0);
    }
}
