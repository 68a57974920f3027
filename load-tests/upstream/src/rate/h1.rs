//! HTTP/1.1 keep-alive driver: one request at a time per connection, wrk2-style correction.

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::time::{timeout, Instant};

use super::{connect, finish, request, Outcome, RatePlan, Schedule, Tally, REQUEST_TIMEOUT};

/// Most reconnects after errors per connection: a dead target must not spin the generator.
const MAX_RECONNECTS: u32 = 1000;

/// Runs one connection's schedule; reconnects after a connection error.
pub(super) async fn drive(plan: &RatePlan, conn: usize, s: Schedule, mut t: Tally) -> Tally {
    let mut sender: Option<http1::SendRequest<http_body_util::Empty<bytes::Bytes>>> = None;
    let mut prev_done = s.first;
    let mut reconnects = 0;
    let mut k = 0;
    while let Some(intended) = s.wait(k, &mut t).await {
        let sent = Instant::now();
        // Late because the previous answer came after our slot: the server's delay, counted from
        // the slot. Late with an idle connection: our timer's delay, counted from the send.
        let begin = if prev_done > intended {
            intended
        } else {
            t.lag(sent - intended);
            sent
        };
        let outcome = match ready_sender(plan, &mut sender, &mut reconnects).await {
            Some(tx) => {
                let req = request(plan, conn, k, false);
                match timeout(REQUEST_TIMEOUT, async { finish(tx.send_request(req).await).await }).await {
                    Ok(outcome) => outcome,
                    Err(_) => Outcome::Socket,
                }
            }
            None => Outcome::Socket,
        };
        if outcome == Outcome::Socket {
            sender = None;
        }
        prev_done = Instant::now();
        if intended >= s.record_from {
            t.record(prev_done - begin, outcome);
        }
        k += 1;
    }
    t
}

/// The connection's sender, (re)connecting when there is none or it closed.
async fn ready_sender<'a>(
    plan: &RatePlan,
    sender: &'a mut Option<http1::SendRequest<http_body_util::Empty<bytes::Bytes>>>,
    reconnects: &mut u32,
) -> Option<&'a mut http1::SendRequest<http_body_util::Empty<bytes::Bytes>>> {
    if sender.as_ref().is_some_and(|tx| tx.is_closed()) {
        *sender = None;
    }
    if sender.is_none() {
        if *reconnects >= MAX_RECONNECTS {
            return None;
        }
        *reconnects += 1;
        let tls = timeout(REQUEST_TIMEOUT, connect(plan)).await.ok()?.ok()?;
        let (tx, connection) = http1::handshake(TokioIo::new(tls)).await.ok()?;
        tokio::spawn(connection);
        *sender = Some(tx);
    }
    let tx = sender.as_mut()?;
    tx.ready().await.ok()?;
    Some(tx)
}
