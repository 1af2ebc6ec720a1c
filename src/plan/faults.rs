//! Faults injected by `flowgate test` (SPEC §9): a transform's first
//! `fail` calls fail, or every call times out, with retryable failures, so
//! tests exercise retries, breakers and error routes without a failing
//! service.

use crate::components::{AsyncTransform, BuiltTransform, CallError, Transform, TransformOutput};
use crate::config::tests::Fault;
use crate::core::Failed;
use crate::core::{Batch, Event};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

struct Injected {
    remaining: AtomicU32,
    timeout: bool,
}

impl Injected {
    /// The failure for this call, if the fault applies to it.
    fn next_failure(&self) -> Option<(&'static str, &'static str)> {
        if self.timeout {
            return Some(("injected timeout", "timeout"));
        }
        self.remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .ok()
            .map(|_| ("injected failure", "fault"))
    }
}

struct FaultyCall {
    inner: Arc<dyn AsyncTransform>,
    fault: Injected,
}

#[async_trait::async_trait]
impl AsyncTransform for FaultyCall {
    async fn call(&self, event: &Event) -> Result<Event, CallError> {
        match self.fault.next_failure() {
            Some((message, error_type)) => Err(CallError {
                message: message.into(),
                error_type,
                retryable: true,
                overloaded: false,
            }),
            None => self.inner.call(event).await,
        }
    }
}

struct FaultyBatch {
    inner: Arc<dyn Transform>,
    fault: Injected,
}

impl Transform for FaultyBatch {
    fn process(&self, batch: Batch, out: &mut TransformOutput) {
        match self.fault.next_failure() {
            Some((message, error_type)) => {
                out.attempt_failure = Some((message.to_string(), error_type));
                out.failed.extend(
                    batch
                        .into_iter()
                        .map(|e| Failed::new(e, message, error_type)),
                );
            }
            None => self.inner.process(batch, out),
        }
    }
}

/// Wraps a built transform with a fault.
pub fn inject(built: &BuiltTransform, fault: &Fault) -> BuiltTransform {
    let injected = || Injected {
        remaining: AtomicU32::new(fault.fail),
        timeout: fault.timeout,
    };
    match built {
        BuiltTransform::Sync(t) => BuiltTransform::Sync(Arc::new(FaultyBatch {
            inner: t.clone(),
            fault: injected(),
        })),
        BuiltTransform::Async(t) => BuiltTransform::Async(Arc::new(FaultyCall {
            inner: t.clone(),
            fault: injected(),
        })),
    }
}
