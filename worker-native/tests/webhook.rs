//! Webhook deliveries (`worker_native::webhook`) against a real HTTP receiver on
//! loopback: the Standard Webhooks headers and signature, one id on every attempt, each
//! answer judged (2xx, 410, 5xx with `Retry-After`, a redirect not followed, no answer
//! in time), and no connection to an address inside the network. (The reference
//! library's own check of the same deliveries is in `e2e/test_webhooks.py`.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use serde_json::json;
use shared::webhook::{self, Endpoint, Event, Secret, SECRET_BYTES};
use worker_native::webhook::{Answer, Deliverer};

/// What the receiver answers, in turn (then 200): a status, a `Retry-After`, a delay.
type Script = Vec<(u16, Option<&'static str>, Duration)>;

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(Instant, HeaderMap, Bytes)>>>,
    script: Arc<Mutex<Script>>,
    /// Requests being answered now, and the most there ever were at once.
    in_flight: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start(script: Script) -> (Self, String) {
        let r = Receiver { script: Arc::new(Mutex::new(script)), ..Default::default() };
        let state = r.clone();
        let app = Router::new().route(
            "/hooks",
            post(move |headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move {
                    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    state.most.fetch_max(now, Ordering::SeqCst);
                    state.got.lock().unwrap().push((Instant::now(), headers, body));
                    let next = {
                        let mut script = state.script.lock().unwrap();
                        (!script.is_empty()).then(|| script.remove(0))
                    };
                    let (status, retry_after, delay) = next.unwrap_or((200, None, Duration::ZERO));
                    tokio::time::sleep(delay).await;
                    let mut answer = StatusCode::from_u16(status).unwrap().into_response();
                    if status == 302 {
                        answer.headers_mut().insert("location", "http://169.254.169.254/latest/meta-data/".parse().unwrap());
                    }
                    if let Some(ra) = retry_after {
                        answer.headers_mut().insert("retry-after", ra.parse().unwrap());
                    }
                    state.in_flight.fetch_sub(1, Ordering::SeqCst);
                    answer
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (r, url)
    }

    fn got(&self) -> Vec<(Instant, HeaderMap, Bytes)> {
        self.got.lock().unwrap().clone()
    }
}

fn endpoint(url: &str, secret: Secret, previous: Option<Secret>) -> Endpoint {
    Endpoint {
        id: webhook::endpoint_id(1_795_586_400_000, [1; 8]),
        url: url.into(),
        events: vec![webhook::TEST_EVENT.into()],
        created_at: "2026-12-07T12:00:00.000Z".into(),
        secret,
        previous: previous.map(|p| (p, u64::MAX)),
        disabled: None,
    }
}

fn event() -> Event {
    event_n(2)
}

fn event_n(n: u8) -> Event {
    Event {
        id: webhook::event_id(1_795_586_400_000, [n; 8]),
        kind: "message.sent".into(),
        timestamp: "2026-12-07T12:00:00.000Z".into(),
        data: json!({"messageId": "m"}),
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

/// Every attempt carries the event's id, this attempt's time and a signature that
/// verifies with the endpoint's secret (and, during a rotation, with the old one too).
#[tokio::test]
async fn a_delivery_is_signed_and_a_failed_one_tried_again_with_the_same_id() {
    let (receiver, url) = Receiver::start(vec![(500, None, Duration::ZERO), (503, Some("1"), Duration::ZERO)]).await;
    let (new, old) = (Secret::from_bytes([5; SECRET_BYTES]), Secret::from_bytes([6; SECRET_BYTES]));
    let deliverer = Deliverer::new(Duration::from_secs(5), true, 1000, 8).unwrap();
    let e = event();
    let to = endpoint(&url, new.clone(), Some(old.clone()));
    let (answer, attempts) = deliverer.deliver(to.clone(), &e, |_| async { true }, || std::future::ready(Some(to.clone()))).await;
    assert_eq!((answer, attempts), (Answer::Delivered, 3));
    let got = receiver.got();
    assert!(got[2].0 - got[1].0 >= Duration::from_millis(950), "the receiver's Retry-After (1 s) is honoured over the schedule's 5 ms");
    for (_, h, body) in &got {
        assert_eq!(header(h, "webhook-id"), e.id);
        assert_eq!(header(h, "content-type"), "application/json");
        let ts: u64 = header(h, "webhook-timestamp").parse().unwrap();
        assert_eq!(body.as_ref(), e.body().as_bytes());
        for secret in [&new, &old] {
            assert!(webhook::verify(secret, header(h, "webhook-signature"), &e.id, ts, body), "{:?}", header(h, "webhook-signature"));
        }
    }
}

/// An endpoint deleted or disabled while its delivery waits to be tried again is not
/// tried again; a secret rotated meanwhile signs the next attempt.
#[tokio::test]
async fn a_retry_reads_the_endpoint_again() {
    let (receiver, url) = Receiver::start(vec![(500, None, Duration::ZERO), (500, None, Duration::ZERO)]).await;
    let deliverer = Deliverer::new(Duration::from_secs(5), true, 1000, 8).unwrap();
    let (first, rotated) = (Secret::from_bytes([1; SECRET_BYTES]), Secret::from_bytes([2; SECRET_BYTES]));
    let e = event();
    let mut reads = 0;
    let current = || {
        reads += 1;
        let now = match reads {
            1 => Some(endpoint(&url, rotated.clone(), None)),
            _ => Some(Endpoint { disabled: Some(webhook::Disabled { at: "t".into(), reason: "410".into() }), ..endpoint(&url, rotated.clone(), None) }),
        };
        std::future::ready(now)
    };
    let (answer, attempts) = deliverer.deliver(endpoint(&url, first.clone(), None), &e, |_| async { true }, current).await;
    assert_eq!((answer, attempts), (Answer::Withdrawn, 2), "disabled after the second attempt: not tried a third time");
    let got = receiver.got();
    assert_eq!(got.len(), 2);
    let (_, h, body) = &got[1];
    let ts: u64 = header(h, "webhook-timestamp").parse().unwrap();
    assert!(webhook::verify(&rotated, header(h, "webhook-signature"), &e.id, ts, body), "the second attempt signed with the rotated secret");
    assert!(!webhook::verify(&first, header(h, "webhook-signature"), &e.id, ts, body));
}

/// An endpoint's backlog (a sweep's take-over) goes to it at most `per_endpoint` at a
/// time, every event delivered; another endpoint does not wait behind it.
#[tokio::test]
async fn an_endpoint_has_at_most_its_share_of_attempts_in_flight() {
    let slow = (200, None, Duration::from_millis(300));
    let (receiver, url) = Receiver::start(vec![slow; 11]).await;
    let deliverer = Deliverer::new(Duration::from_secs(5), true, 1, 2).unwrap();
    let busy = endpoint(&url, Secret::from_bytes([3; SECRET_BYTES]), None);
    let other = Endpoint { id: webhook::endpoint_id(1_795_586_400_000, [9; 8]), ..busy.clone() };
    let backlog: Vec<Event> = (10..20).map(event_n).collect();
    let lone = event_n(30);
    let answers = futures::future::join_all(backlog.iter().map(|e| deliverer.attempt(&busy, e)).chain([deliverer.attempt(&other, &lone)])).await;
    assert!(answers.iter().all(|a| *a == Answer::Delivered), "{answers:?}");
    assert_eq!(receiver.got().len(), 11, "each event delivered once");
    assert_eq!(receiver.most.load(Ordering::SeqCst), 3, "two of the busy endpoint's at once, and the other's beside them");
    let order: Vec<String> = receiver.got().iter().map(|(_, h, _)| header(h, "webhook-id").to_owned()).collect();
    let at = order.iter().position(|id| *id == lone.id).unwrap();
    assert!(at < 3, "the other endpoint's event went at once, not behind the backlog (arrived {}th)", at + 1);
}

/// A delivery waiting for its endpoint's turn says so every half timeout (its event's
/// lease renewed: a backlog's wait would otherwise outlast it, and a sweep take the
/// event again), and gives up its place when it no longer holds the event.
#[tokio::test]
async fn a_delivery_waiting_for_its_turn_holds_its_event() {
    let (receiver, url) = Receiver::start(vec![(200, None, Duration::from_millis(1_300))]).await;
    // Timeout 2 s: told every second. One attempt at a time.
    let deliverer = Deliverer::new(Duration::from_secs(2), true, 1, 1).unwrap();
    let to = endpoint(&url, Secret::from_bytes([4; SECRET_BYTES]), None);
    let current = || std::future::ready(Some(to.clone()));
    let told = Mutex::new(Vec::new());
    let holding = |retry: worker_native::webhook::Retry| {
        told.lock().unwrap().push(retry);
        async { true }
    };
    let (first, second) = (event_n(40), event_n(41));
    let (a, b) = tokio::join!(deliverer.deliver(to.clone(), &first, |_| async { true }, current), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        deliverer.deliver(to.clone(), &second, holding, current).await
    });
    assert_eq!((a, b), ((Answer::Delivered, 1), (Answer::Delivered, 1)));
    let told = told.into_inner().unwrap();
    assert!(!told.is_empty() && told.iter().all(|r| r.waiting && r.attempts == 0), "told of its wait while the first held the turn: {told:?}");

    // One that no longer holds its event leaves the line without an attempt.
    let (receiver2, url2) = Receiver::start(vec![(200, None, Duration::from_millis(1_300))]).await;
    let to = endpoint(&url2, Secret::from_bytes([4; SECRET_BYTES]), None);
    let current = || std::future::ready(Some(to.clone()));
    let (a, b) = tokio::join!(deliverer.deliver(to.clone(), &first, |_| async { true }, current), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        deliverer.deliver(to.clone(), &second, |_| async { false }, current).await
    });
    assert_eq!((a, b), ((Answer::Delivered, 1), (Answer::Yielded, 0)));
    assert_eq!(receiver2.got().len(), 1, "the yielded one never sent");
    assert_eq!(receiver.got().len(), 2);
}

#[tokio::test]
async fn each_answer_is_judged() {
    let secret = || Secret::from_bytes([7; SECRET_BYTES]);
    let deliverer = Deliverer::new(Duration::from_millis(300), true, 1, 8).unwrap();
    let deliverer = &deliverer;
    let once = |status: u16, retry_after: Option<&'static str>, delay_ms: u64| async move {
        let (receiver, url) = Receiver::start(vec![(status, retry_after, Duration::from_millis(delay_ms))]).await;
        let answer = deliverer.attempt(&endpoint(&url, secret(), None), &event()).await;
        (answer, receiver.got().len())
    };
    assert_eq!(once(204, None, 0).await, (Answer::Delivered, 1));
    assert_eq!(once(410, None, 0).await, (Answer::Gone, 1));
    assert_eq!(once(429, Some("7"), 0).await, (Answer::Failed { reason: "the receiver answered 429".into(), retry_after_ms: Some(7_000) }, 1));
    // A redirect (here to the cloud's metadata service) is an answer, not followed.
    assert_eq!(once(302, None, 0).await, (Answer::Failed { reason: "the receiver answered 302".into(), retry_after_ms: None }, 1));
    assert_eq!(once(200, None, 1_000).await, (Answer::Failed { reason: "the receiver did not answer in time".into(), retry_after_ms: None }, 1));
}

/// Nothing is sent to an address inside the network: not to loopback unless allowed
/// (a local run), never to a private or link-local one. (A name is judged by what it
/// resolves to: `webhook::tests`.)
#[tokio::test]
async fn nothing_reaches_inside_the_network() {
    let (receiver, url) = Receiver::start(vec![]).await;
    let strict = Deliverer::new(Duration::from_secs(2), false, 1, 8).unwrap();
    let secret = || Secret::from_bytes([8; SECRET_BYTES]);
    let port = url.trim_start_matches("http://127.0.0.1:").trim_end_matches("/hooks").to_owned();
    for target in [url.clone(), format!("https://10.1.2.3:{port}/hooks"), "https://169.254.169.254/latest/meta-data/".into()] {
        let answer = strict.attempt(&endpoint(&target, secret(), None), &event()).await;
        assert!(matches!(&answer, Answer::Failed { reason, .. } if reason.starts_with("the endpoint's URL is refused")), "{target}: {answer:?}");
    }
    assert!(receiver.got().is_empty(), "the receiver on loopback got nothing");
}
