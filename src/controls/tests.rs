//! The control stack as a stage driver uses it: a half-open breaker
//! closes again whatever happened to its trial (dropped by the rate
//! limit, timed out, cancelled).

use super::breaker::State;
use super::*;
use crate::config::controls::StageCommon;
use crate::ev;

fn controls(extra: &str) -> (StageControls, ComponentMetrics) {
    let yaml = format!(
        "inputs: [x]\ncircuit_breaker: {{consecutive_failures: 1, open_for: 10s, half_open_calls: 1}}\n{extra}"
    );
    let common: StageCommon = serde_yaml::from_str(&yaml).expect("a valid stage config");
    let metrics = crate::telemetry::Metrics::new().component("p", "s", "sink", "http");
    (StageControls::for_stage(&common, &metrics), metrics)
}

fn state(c: &StageControls) -> State {
    c.breaker.as_ref().expect("a breaker").0.state()
}

/// Opens the breaker with one failed call and waits until it half-opens.
async fn open_then_half_open(c: &StageControls) {
    let gated = c.gate(vec![ev!({"n": 0})], &Acks::none(), false).await;
    let failed = c
        .run(
            gated.call,
            || async { Attempt::<()>::Retryable("down".into(), "io") },
            |_| true,
        )
        .await;
    assert!(failed.is_err());
    assert_eq!(state(c), State::Open);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(state(c), State::HalfOpen);
}

/// One call that succeeds: the breaker must admit it and close.
async fn close_with_a_success(c: &StageControls) {
    let gated = c.gate(vec![ev!({"n": 1})], &Acks::none(), false).await;
    assert!(gated.rejected.is_empty(), "the trial slot is free again");
    let ok = c
        .run(gated.call, || async { Attempt::Done(()) }, |_| true)
        .await;
    assert!(ok.is_ok());
    assert_eq!(state(c), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_trial_whose_batch_the_rate_limit_drops_leaves_the_breaker_able_to_close() {
    let (c, _m) = controls("rate_limit: {rate: 1, per: 1h, when_limited: drop}");
    open_then_half_open(&c).await;
    // The bucket's one token went to the first call: this trial is dropped
    // whole by the rate limit and never reaches the work.
    let gated = c.gate(vec![ev!({"n": 2})], &Acks::none(), false).await;
    assert_eq!((gated.batch.len(), gated.rate_limited), (0, 1));
    assert!(gated.call.is_some(), "the breaker admitted it as a trial");
    drop(gated);
    assert_eq!(state(&c), State::HalfOpen);
    tokio::time::advance(Duration::from_secs(3600)).await;
    close_with_a_success(&c).await;
}

#[tokio::test(start_paused = true)]
async fn a_trial_that_times_out_reopens_and_the_next_trial_closes() {
    let (c, _m) = controls("timeout: 1s");
    open_then_half_open(&c).await;
    let gated = c.gate(vec![ev!({"n": 2})], &Acks::none(), false).await;
    let timed_out = c
        .run(
            gated.call,
            || async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Attempt::Done(())
            },
            |_| true,
        )
        .await;
    assert_eq!(timed_out.err().map(|e| e.1), Some("timeout"));
    assert_eq!(state(&c), State::Open, "a timed-out trial is a failure");
    tokio::time::advance(Duration::from_secs(10)).await;
    close_with_a_success(&c).await;
}

#[tokio::test(start_paused = true)]
async fn a_trial_whose_task_is_cancelled_leaves_the_breaker_able_to_close() {
    let (c, _m) = controls("");
    let c = Arc::new(c);
    open_then_half_open(&c).await;
    let trial = {
        let c = c.clone();
        tokio::spawn(async move {
            let gated = c.gate(vec![ev!({"n": 2})], &Acks::none(), false).await;
            c.run(gated.call, std::future::pending::<Attempt<()>>, |_| true)
                .await
        })
    };
    // Let the trial be admitted and start its attempt, then cancel it.
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(
        c.gate(vec![ev!({"n": 3})], &Acks::none(), false)
            .await
            .call
            .is_none(),
        "the only trial slot is taken while the trial runs"
    );
    trial.abort();
    assert!(trial.await.unwrap_err().is_cancelled());
    assert_eq!(state(&c), State::HalfOpen);
    close_with_a_success(&c).await;
}
