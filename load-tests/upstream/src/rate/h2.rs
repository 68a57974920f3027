//! HTTP/2 driver: every scheduled request goes out at its time on one multiplexed connection
//! (at most `h2_streams` at once; past that the sender waits and the wait is counted).

use std::sync::Arc;

use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    sync::Semaphore,
    task::JoinSet,
    time::{timeout, Instant},
};

use super::{connect, finish, request, Outcome, RatePlan, Schedule, Tally, REQUEST_TIMEOUT};

type Sender = http2::SendRequest<http_body_util::Empty<bytes::Bytes>>;

/// Runs one connection's schedule. A broken connection is re-opened at the next slot.
pub(super) async fn drive(plan: &RatePlan, conn: usize, s: Schedule, mut t: Tally) -> Tally {
    let mut sender: Option<Sender> = None;
    let in_flight = Arc::new(Semaphore::new(plan.h2_streams.max(1)));
    let mut running: JoinSet<(bool, std::time::Duration, Outcome)> = JoinSet::new();
    let mut k = 0;
    while let Some(intended) = s.wait(k, &mut t).await {
        k += 1;
        while let Some(Ok((record, latency, outcome))) = running.try_join_next() {
            if record {
                t.record(latency, outcome);
            }
        }
        let begin = Instant::now();
        t.lag(begin - intended);
        let record = intended >= s.record_from;
        if sender.as_ref().is_none_or(|tx| tx.is_closed()) {
            sender = open(plan).await;
        }
        let Some(tx) = sender.clone() else {
            if record {
                t.record(begin.elapsed(), Outcome::Socket);
            }
            continue;
        };
        // Past the cap the sender waits here; `begin` is already taken, so the wait is counted.
        let Ok(permit) = in_flight.clone().acquire_owned().await else { break };
        let req = request(plan, conn, k - 1, true);
        running.spawn(async move {
            let mut tx = tx;
            let outcome = match timeout(REQUEST_TIMEOUT, async {
                match tx.ready().await {
                    Ok(()) => finish(tx.send_request(req).await).await,
                    Err(_) => Outcome::Socket,
                }
            })
            .await
            {
                Ok(outcome) => outcome,
                Err(_) => Outcome::Socket,
            };
            drop(permit);
            (record, begin.elapsed(), outcome)
        });
    }
    while let Some(Ok((record, latency, outcome))) = running.join_next().await {
        if record {
            t.record(latency, outcome);
        }
    }
    t
}

async fn open(plan: &RatePlan) -> Option<Sender> {
    let tls = timeout(REQUEST_TIMEOUT, connect(plan)).await.ok()?.ok()?;
    let (tx, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.ok()?;
    tokio::spawn(connection);
    Some(tx)
}
