//! Events between the workers running one invocation spread over them
//! ([`stratus_dag::spread`]): `POST /v1/agent/workflows/event` takes a
//! peer's [`RunEvent`] into the invocation's mailbox, and [`send`] posts
//! one to a peer.
//!
//! A mailbox opens when the invocation's run starts here
//! ([`Mailboxes::open`]) and closes when it ends. Events that come before
//! it opens wait (the control plane sends the run to every worker at once,
//! and one may begin before another): at most [`MAX_EARLY`] invocations'
//! and twice the invoke body limit of bytes in all, each for at most
//! [`EARLY_FOR`]. Past those bounds an event is refused (507), and the
//! invocation it belongs to goes back to the control plane when its peers
//! wait out their time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt;
use parking_lot::Mutex;
use stratus_dag::spread::{parse_event, RunEvent, EVENT_PATH, MAX_EVENT_HEAD};
use tokio::sync::mpsc;

use crate::routes::ApiError;
use crate::server::Agent;

/// The most invocations with events waiting for their run to start here.
pub(crate) const MAX_EARLY: usize = 1024;

/// How long events wait for their run to start here.
pub(crate) const EARLY_FOR: Duration = Duration::from_secs(60);

/// A peer's event: its head and the output's bytes (when sent).
pub(crate) type Event = (RunEvent, Bytes);

enum Mailbox {
    Early {
        events: Vec<Event>,
        since: Instant,
        bytes: u64,
    },
    Open(mpsc::UnboundedSender<Event>),
}

#[derive(Default)]
pub(crate) struct Mailboxes {
    boxes: Mutex<HashMap<String, Mailbox>>,
}

/// Closes its invocation's mailbox when dropped.
pub(crate) struct Open<'a> {
    boxes: &'a Mailboxes,
    invocation: String,
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.boxes.boxes.lock().remove(&self.invocation);
    }
}

impl Mailboxes {
    /// Opens `invocation`'s mailbox: the events that came for it so far,
    /// then the ones to come.
    pub(crate) fn open(
        &self,
        invocation: &str,
    ) -> Result<(mpsc::UnboundedReceiver<Event>, Open<'_>), ApiError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut boxes = self.boxes.lock();
        match boxes.insert(invocation.to_string(), Mailbox::Open(tx.clone())) {
            Some(Mailbox::Open(old)) => {
                boxes.insert(invocation.to_string(), Mailbox::Open(old));
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!("invocation {invocation} already runs here"),
                ));
            }
            Some(Mailbox::Early { events, .. }) => {
                for e in events {
                    let _ = tx.send(e);
                }
            }
            None => {}
        }
        Ok((
            rx,
            Open {
                boxes: self,
                invocation: invocation.to_string(),
            },
        ))
    }

    /// Delivers `ev` (or keeps it until its run starts here, within the
    /// bounds; `max_bytes` of early events in all).
    fn deliver(&self, ev: Event, max_bytes: u64, now: Instant) -> Result<(), ApiError> {
        let mut boxes = self.boxes.lock();
        boxes.retain(|_, m| match m {
            Mailbox::Early { since, .. } => now.duration_since(*since) < EARLY_FOR,
            Mailbox::Open(_) => true,
        });
        let early: u64 = boxes
            .values()
            .map(|m| match m {
                Mailbox::Early { bytes, .. } => *bytes,
                Mailbox::Open(_) => 0,
            })
            .sum();
        let waiting = boxes
            .values()
            .filter(|m| matches!(m, Mailbox::Early { .. }))
            .count();
        let len = ev.1.len() as u64;
        let full = |why: String| Err(ApiError::new(StatusCode::INSUFFICIENT_STORAGE, why));
        match boxes.get_mut(&ev.0.invocation) {
            Some(Mailbox::Open(tx)) => {
                let _ = tx.send(ev);
                Ok(())
            }
            Some(Mailbox::Early { events, bytes, .. }) => {
                if early + len > max_bytes {
                    return full(format!("events waiting here passed {max_bytes} bytes"));
                }
                *bytes += len;
                events.push(ev);
                Ok(())
            }
            None => {
                if waiting >= MAX_EARLY || early + len > max_bytes {
                    return full(format!(
                        "{waiting} invocations' events already wait here ({early} bytes)"
                    ));
                }
                let inv = ev.0.invocation.clone();
                boxes.insert(
                    inv,
                    Mailbox::Early {
                        events: vec![ev],
                        since: now,
                        bytes: len,
                    },
                );
                Ok(())
            }
        }
    }
}

/// `POST /v1/agent/workflows/event`.
pub(crate) async fn event(
    State(a): State<Arc<Agent>>,
    req: Request,
) -> Result<StatusCode, ApiError> {
    let limit = a.config().max_invoke_bytes + MAX_EVENT_HEAD + 4;
    let body = crate::workflow_run::read_body(req, limit, "workflow event").await?;
    let ev =
        parse_event(&body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    if !stratus_dag::whole::id_like(&ev.0.invocation) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "invocation {:?}: give 1 to 128 of A-Z a-z 0-9 . _ -",
                ev.0.invocation.chars().take(80).collect::<String>()
            ),
        ));
    }
    let max = 2 * a.config().max_invoke_bytes as u64;
    a.mailboxes.deliver(ev, max, Instant::now())?;
    Ok(StatusCode::ACCEPTED)
}

/// Posts `body` (an event) to the agent at `peer`, within the invoke
/// timeout; a failure is logged (the peer then waits out its time, and the
/// control plane runs the invocation itself).
pub(crate) async fn send(a: Arc<Agent>, peer: String, body: Vec<Bytes>) {
    let len: u64 = body.iter().map(|b| b.len() as u64).sum();
    let stream =
        futures_util::stream::iter(body.into_iter().map(Ok::<_, std::convert::Infallible>));
    let req = http::Request::post(format!("http://{peer}{EVENT_PATH}"))
        .header(header::CONTENT_LENGTH, len)
        .header(
            header::CONTENT_TYPE,
            "application/vnd.stratus.workflow-event",
        )
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", a.config().token.expose()),
        )
        .body(Body::from_stream(stream));
    let Ok(req) = req else { return };
    let timeout = a.config().invoke_timeout;
    match tokio::time::timeout(timeout, a.client.request(req)).await {
        Ok(Ok(r)) if r.status().is_success() => {}
        Ok(Ok(r)) => {
            let status = r.status();
            let text = r
                .into_body()
                .collect()
                .await
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                .unwrap_or_default();
            tracing::warn!(
                peer,
                "a workflow event was not taken: HTTP {status}: {text}"
            );
        }
        Ok(Err(e)) => tracing::warn!(
            peer,
            "a workflow event was not taken: {}",
            stratus_sandbox::error_chain(&e)
        ),
        Err(_) => tracing::warn!(peer, "a workflow event was not taken within {timeout:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_dag::spread::Outcome;

    fn ev(inv: &str, len: usize) -> Event {
        (
            RunEvent {
                invocation: inv.into(),
                step: 0,
                index: 0,
                attempt: 1,
                from: 1,
                took_us: 1,
                outcome: Outcome::Succeeded {
                    len: len as u64,
                    sent: true,
                    split: None,
                },
            },
            Bytes::from(vec![b'x'; len]),
        )
    }

    #[test]
    fn early_events_wait_within_bounds_and_reach_the_run() {
        let m = Mailboxes::default();
        let t0 = Instant::now();
        m.deliver(ev("a", 10), 25, t0).unwrap();
        m.deliver(ev("a", 10), 25, t0).unwrap();
        // Past the bytes bound: refused, kept ones unharmed.
        let e = m.deliver(ev("b", 10), 25, t0).unwrap_err();
        assert_eq!(e.status, StatusCode::INSUFFICIENT_STORAGE);
        let (mut rx, open) = m.open("a").unwrap();
        assert_eq!(rx.try_recv().unwrap().1.len(), 10);
        assert_eq!(rx.try_recv().unwrap().1.len(), 10);
        // Open: events go straight in, whatever their size.
        m.deliver(ev("a", 100), 25, t0).unwrap();
        assert_eq!(rx.try_recv().unwrap().1.len(), 100);
        // One run per invocation at a time.
        let Err(e) = m.open("a") else {
            panic!("a second run of one invocation opened")
        };
        assert_eq!(e.status, StatusCode::CONFLICT);
        drop(open);
        assert!(m.boxes.lock().is_empty());
        // Early events past their time are dropped.
        m.deliver(ev("c", 10), 25, t0).unwrap();
        m.deliver(ev("d", 10), 25, t0 + EARLY_FOR).unwrap();
        assert!(!m.boxes.lock().contains_key("c"));
    }
}
