//! Reading JSON request bodies under one memory budget shared by every request in flight.
//!
//! A body is charged before it is read (its declared length, or the endpoint's cap) and again,
//! once read, for what parsing it will cost: a `serde_json::Value` tree takes far more memory
//! than its text when the text is dense with small values (`[0,0,0,…]` grows about 30-fold).
//! The charge is held for as long as the caller keeps the [`BodyPermit`], so unauthenticated
//! peers and clients together can never hold more than the budget, however many connect.

use std::{sync::Arc, time::Duration};

use axum::body::{Body, Bytes};
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// Permits count KiB.
const UNIT: usize = 1024;
/// What every body in flight may hold at once, text and parsed tree together.
pub const BUDGET_BYTES: usize = 192 * 1024 * 1024;
/// The most one body may be charged; a body that would parse to more is refused outright.
pub const MAX_CHARGE_BYTES: usize = 48 * 1024 * 1024;
/// The estimated memory of one parsed JSON value (a `Value` plus its share of its container).
const BYTES_PER_VALUE: usize = 96;
/// How long a request waits for budget before it is told to come back.
const BUDGET_WAIT: Duration = Duration::from_secs(5);
/// How long a body may take to arrive once its budget is granted (slow senders hold budget).
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Memory charged to one body; released when dropped.
pub struct BodyPermit(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

#[derive(Clone)]
pub struct BodyBudget {
    sem: Arc<Semaphore>,
}

impl Default for BodyBudget {
    fn default() -> Self {
        Self {
            sem: Arc::new(Semaphore::new(BUDGET_BYTES / UNIT)),
        }
    }
}

/// Roughly how much memory the parsed form of `bytes` takes: its text plus a `Value` per
/// structural character (each `,` `:` `[` `{` opens or separates one value).
pub fn parse_cost(bytes: &[u8]) -> usize {
    let values = bytes
        .iter()
        .filter(|b| matches!(b, b',' | b':' | b'[' | b'{'))
        .count();
    bytes
        .len()
        .saturating_add(values.saturating_mul(BYTES_PER_VALUE))
}

fn units(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX)
}

impl BodyBudget {
    async fn charge(&self, bytes: usize) -> Result<OwnedSemaphorePermit, ApiError> {
        let busy = || ApiError::LimitExceeded {
            why: "too many request bodies in flight".into(),
            retry_after_ms: 1000,
        };
        tokio::time::timeout(
            BUDGET_WAIT,
            self.sem.clone().acquire_many_owned(units(bytes).max(1)),
        )
        .await
        .map_err(|_| busy())?
        .map_err(|_| busy())
    }

    /// Read and parse a JSON body of at most `cap` bytes. `None` for an empty body.
    /// `M_TOO_LARGE` over the cap (declared or actual) or when parsing would cost more than one
    /// body may; `M_LIMIT_EXCEEDED` when the budget stays exhausted; `M_NOT_JSON` for non-JSON.
    pub async fn read_json(
        &self,
        body: Body,
        declared: Option<usize>,
        cap: usize,
    ) -> Result<(Option<Value>, BodyPermit), ApiError> {
        let (bytes, permit) = self.read_bytes(body, declared, cap).await?;
        if bytes.is_empty() {
            return Ok((None, permit));
        }
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::NotJson(format!("Content not JSON: {e}")))?;
        Ok((Some(value), permit))
    }

    /// Read a body that will be parsed as JSON, charged for what parsing it costs. A body of
    /// only whitespace reads as empty. Errors as for [`Self::read_json`], but for `M_NOT_JSON`.
    pub async fn read_bytes(
        &self,
        body: Body,
        declared: Option<usize>,
        cap: usize,
    ) -> Result<(Bytes, BodyPermit), ApiError> {
        // Without a Content-Length, the body itself may know its size (none, for a GET).
        let declared = declared.or_else(|| {
            axum::body::HttpBody::size_hint(&body)
                .exact()
                .and_then(|n| usize::try_from(n).ok())
        });
        if declared.is_some_and(|len| len > cap) {
            return Err(ApiError::TooLarge);
        }
        if declared == Some(0) {
            return Ok((Bytes::new(), BodyPermit(None)));
        }
        let mut permit = self.charge(declared.unwrap_or(cap)).await?;
        let bytes: Bytes = tokio::time::timeout(READ_TIMEOUT, axum::body::to_bytes(body, cap))
            .await
            .map_err(|_| ApiError::LimitExceeded {
                why: "the request body did not arrive in time".into(),
                retry_after_ms: 0,
            })?
            .map_err(|_| ApiError::TooLarge)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok((Bytes::new(), BodyPermit(None)));
        }
        let cost = parse_cost(&bytes);
        if cost > MAX_CHARGE_BYTES {
            return Err(ApiError::TooLarge);
        }
        // Hold what parsing costs: more than was reserved for the text, or give the rest back
        // (a body sent without a length was charged the whole cap).
        let held = permit.num_permits();
        let needed = (units(cost) as usize).max(1);
        if needed > held {
            permit.merge(self.charge((needed - held) * UNIT).await?);
        } else if let Some(spare) = permit.split(held - needed) {
            drop(spare);
        }
        Ok((bytes, BodyPermit(Some(permit))))
    }

    /// KiB of budget free now (for tests and metrics).
    pub fn available_kib(&self) -> usize {
        self.sem.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_values_cost_more_than_text() {
        let text = format!("{{\"body\":\"{}\"}}", "a".repeat(10_000));
        let dense = format!("[{}0]", "0,".repeat(5_000));
        assert!(parse_cost(text.as_bytes()) < 10_300);
        assert!(parse_cost(dense.as_bytes()) > 40 * dense.len());
    }

    #[tokio::test]
    async fn budget_comes_back_and_refuses_what_is_too_dense() {
        let budget = BodyBudget::default();
        let full = budget.available_kib();
        let (v, permit) = budget
            .read_json(Body::from("{\"a\":[1,2,3]}"), None, 1024)
            .await
            .unwrap();
        assert_eq!(v.unwrap()["a"][2], 3);
        assert!(budget.available_kib() < full);
        drop(permit);
        assert_eq!(budget.available_kib(), full);

        let dense = format!("[{}0]", "0,".repeat(600_000));
        let err = budget
            .read_json(Body::from(dense.clone()), Some(dense.len()), 1 << 21)
            .await
            .err();
        assert!(matches!(err, Some(ApiError::TooLarge)));
        assert_eq!(budget.available_kib(), full);

        let err = budget
            .read_json(Body::from("{}"), Some(2_000_000), 1 << 20)
            .await
            .err();
        assert!(matches!(err, Some(ApiError::TooLarge)));
        let err = budget.read_json(Body::from("nope"), None, 1024).await.err();
        assert!(matches!(err, Some(ApiError::NotJson(_))));
    }
}
