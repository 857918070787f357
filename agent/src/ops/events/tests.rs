//! The tests of `events`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use super::*;

#[test]
fn node_event_names_the_node_and_the_agent() {
    let e = event_object(
        "n1",
        Some("uid-1"),
        &NodeEvent::warning("KubeletCertificateRenewalFailed", "boom"),
        jiff_now(),
    );
    assert_eq!(e.involved_object.kind.as_deref(), Some("Node"));
    assert_eq!(e.involved_object.name.as_deref(), Some("n1"));
    assert_eq!(e.involved_object.uid.as_deref(), Some("uid-1"));
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert_eq!(e.source.unwrap().component.as_deref(), Some(COMPONENT));
    assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
}

#[test]
fn a_message_with_control_characters_is_escaped_visibly() {
    let e = NodeEvent::normal(
        "CATrustChanged",
        "installed \"CN=a\nKubelet started\r\x1b[2K\u{202e}\"",
    );
    assert_eq!(
        e.message,
        "installed \"CN=a\\nKubelet started\\r\\x1b[2K\\u{202e}\""
    );
}

#[test]
fn long_messages_are_cut_to_the_apis_limit_on_a_character_boundary() {
    assert_eq!(truncate_message("short"), "short");
    let long = "é".repeat(1000);
    let cut = truncate_message(&long);
    assert!(cut.len() <= MAX_MESSAGE_BYTES, "{}", cut.len());
    assert!(cut.ends_with("..."));
    let e = event_object(
        "n1",
        None,
        &NodeEvent::warning("KubeletCertificateRenewalFailed", "x".repeat(5000)),
        jiff_now(),
    );
    assert_eq!(e.message.unwrap().len(), MAX_MESSAGE_BYTES);
}

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + second).unwrap()
}

fn failed(node: &str, message: &str, now: Timestamp) -> Event {
    event_object(
        node,
        Some("uid-1"),
        &NodeEvent::warning("KubeletCertificateRenewalFailed", message),
        now,
    )
}

/// The name a write goes to, and the count it writes.
fn written(w: &Write) -> (&'static str, String, i32) {
    match w {
        Write::Create(e) => ("create", e.metadata.name.clone().unwrap(), e.count.unwrap()),
        Write::Patch { event, patch } => {
            assert_eq!(patch["count"].as_i64(), event.count.map(i64::from));
            (
                "patch",
                event.metadata.name.clone().unwrap(),
                event.count.unwrap(),
            )
        }
        Write::Skip => ("skip", String::new(), 0),
    }
}

#[test]
fn an_identical_event_patches_the_count_of_the_first_instead_of_creating_another() {
    let mut c = EventCorrelator::default();
    let first = c.correlate(failed("n1", "boom", at(0)), at(0));
    let (what, name, count) = written(&first);
    assert_eq!((what, count), ("create", 1));
    for (i, t) in [(2, 30), (3, 95)] {
        let w = c.correlate(failed("n1", "boom", at(t)), at(t));
        assert_eq!(written(&w), ("patch", name.clone(), i));
        let Write::Patch { event, patch } = w else {
            unreachable!()
        };
        // What client-go's two-way merge patch holds: the count, the
        // last time and the message; the first time stays.
        assert_eq!(
            patch,
            serde_json::json!({
                "count": i,
                "lastTimestamp": Time(at(t)),
                "message": "boom",
            })
        );
        assert_eq!(event.first_timestamp, Some(Time(at(0))));
    }
    // Another reason, message or node is another Event.
    let other = c.correlate(failed("n1", "other", at(100)), at(100));
    assert_eq!(written(&other).0, "create");
    let other_node = c.correlate(failed("n2", "boom", at(100)), at(100));
    assert_eq!(written(&other_node).0, "create");
}

#[test]
fn ten_different_messages_of_one_reason_within_ten_minutes_are_combined_into_one_event() {
    let mut c = EventCorrelator::default();
    let mut creates = 0;
    for i in 0..9 {
        let w = c.correlate(failed("n1", &format!("csr-{i} denied"), at(i)), at(i));
        assert_eq!(written(&w).0, "create", "message {i}");
        creates += 1;
    }
    let tenth = c.correlate(failed("n1", "csr-9 denied", at(9)), at(9));
    let Write::Create(combined) = &tenth else {
        panic!("{tenth:?}")
    };
    assert_eq!(
        combined.message.as_deref(),
        Some("(combined from similar events): csr-9 denied")
    );
    let name = combined.metadata.name.clone().unwrap();
    // Every further new message counts on the combined Event (one each
    // 5 minutes, within the rate limit and the interval).
    for i in 10..40 {
        let t = 9 + (i - 9) * 300;
        let w = c.correlate(failed("n1", &format!("csr-{i} denied"), at(t)), at(t));
        assert_eq!(written(&w), ("patch", name.clone(), (i - 8) as i32));
    }
    assert_eq!(creates, 9);
    // Quiet for longer than the interval: a new message stands alone.
    let t = 9 + 30 * 300 + 601;
    let w = c.correlate(failed("n1", "csr-x denied", at(t)), at(t));
    let Write::Create(alone) = w else {
        panic!("{w:?}")
    };
    assert_eq!(alone.message.as_deref(), Some("csr-x denied"));
}

#[test]
fn writes_about_one_object_stop_after_25_and_refill_one_every_five_minutes() {
    let mut c = EventCorrelator::default();
    let kinds: Vec<&str> = (0..100)
        .map(|_| written(&c.correlate(failed("n1", "boom", at(0)), at(0))).0)
        .collect();
    assert_eq!(kinds[0], "create");
    assert!(kinds[1..25].iter().all(|k| *k == "patch"), "{kinds:?}");
    assert!(kinds[25..].iter().all(|k| *k == "skip"), "{kinds:?}");
    // 299 s later there is no whole token yet; at 300 s there is one,
    // and the write carries every occurrence, dropped ones included.
    assert_eq!(
        written(&c.correlate(failed("n1", "boom", at(299)), at(299))).0,
        "skip"
    );
    let w = c.correlate(failed("n1", "boom", at(300)), at(300));
    assert_eq!((written(&w).0, written(&w).2), ("patch", 102));
    assert_eq!(
        written(&c.correlate(failed("n1", "boom", at(301)), at(301))).0,
        "skip"
    );
    // Another object has its own bucket.
    assert_eq!(
        written(&c.correlate(failed("n2", "boom", at(301)), at(301))).0,
        "create"
    );
    // A clock stepped back refills nothing and takes nothing wrongly.
    assert_eq!(
        written(&c.correlate(failed("n1", "boom", at(0)), at(0))).0,
        "skip"
    );
}

/// One request the fake API server below got: method, path,
/// content type.
type Seen = (String, String, String);

/// What the fake API server below keeps: the requests it got, and the
/// Events it holds by name.
type Requests = Arc<std::sync::Mutex<Vec<Seen>>>;
type Stored = Arc<std::sync::Mutex<HashMap<String, serde_json::Value>>>;

/// A plain-HTTP API server answering what [`post`] asks: the Node,
/// Event creates (kept by name) and PATCHes (404 for an Event it does
/// not hold). One request per connection.
fn fake_events_api() -> (String, Requests, Stored) {
    use std::io::{BufRead, BufReader, Read, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(std::sync::Mutex::new(Vec::<Seen>::new()));
    let stored = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let (seen2, stored2) = (seen.clone(), stored.clone());
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { continue };
            let mut reader = BufReader::new(tcp);
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or("").to_string();
            let path = parts.next().unwrap_or("").to_string();
            let (mut length, mut content_type) = (0usize, String::new());
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap();
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap();
                } else if k.eq_ignore_ascii_case("content-type") {
                    content_type = v.trim().to_string();
                }
            }
            let mut body = vec![0u8; length];
            reader.read_exact(&mut body).unwrap();
            let path = path.split('?').next().unwrap().to_string();
            seen2
                .lock()
                .unwrap()
                .push((method.clone(), path.clone(), content_type));
            let name = path.rsplit('/').next().unwrap().to_string();
            let mut stored = stored2.lock().unwrap();
            let (status, answer) = match method.as_str() {
                "GET" => (
                    "200 OK",
                    serde_json::json!({"apiVersion": "v1", "kind": "Node",
                        "metadata": {"name": "n1", "uid": "uid-1"}}),
                ),
                "POST" => {
                    let e: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let name = e["metadata"]["name"].as_str().unwrap().to_string();
                    stored.insert(name, e.clone());
                    ("201 Created", e)
                }
                _ => match stored.get(&name) {
                    Some(e) => ("200 OK", e.clone()),
                    None => (
                        "404 Not Found",
                        serde_json::json!({"kind": "Status", "apiVersion": "v1",
                            "status": "Failure", "reason": "NotFound", "code": 404,
                            "message": format!("events \"{name}\" not found")}),
                    ),
                },
            };
            let body = serde_json::to_vec(&answer).unwrap();
            let tcp = reader.get_mut();
            let _ = write!(tcp, "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = tcp.write_all(&body);
        }
    });
    (url, seen, stored)
}

#[tokio::test]
async fn a_failure_repeated_over_the_api_creates_one_event_and_patches_its_count() {
    let (url, seen, stored) = fake_events_api();
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let mut correlator = EventCorrelator::default();
    let mut node_uid = None;
    let failure = NodeEvent::warning("KubeletCertificateRenewalFailed", "CSR create: 403");
    for _ in 0..3 {
        post(&client, "n1", &mut node_uid, &mut correlator, &failure)
            .await
            .unwrap();
    }
    let writes: Vec<(String, String)> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, p, _)| p.contains("/events"))
        .map(|(m, _, ct)| (m.clone(), ct.clone()))
        .collect();
    let strategic = "application/strategic-merge-patch+json".to_string();
    assert_eq!(
        writes,
        [
            ("POST".to_string(), "application/json".to_string()),
            ("PATCH".to_string(), strategic.clone()),
            ("PATCH".to_string(), strategic.clone()),
        ],
        "one Event created, then its count patched"
    );
    assert_eq!(stored.lock().unwrap().len(), 1);
    // The Event expired (the API server's event TTL): the next repeat
    // creates it again, with the count so far.
    stored.lock().unwrap().clear();
    let written = post(&client, "n1", &mut node_uid, &mut correlator, &failure)
        .await
        .unwrap();
    assert!(written.starts_with("created again"), "{written}");
    let again = stored.lock().unwrap().values().next().cloned().unwrap();
    assert_eq!(again["count"], 4);
}

#[test]
fn an_event_is_named_like_kubelets_and_within_the_apis_limit() {
    let e = failed("n1", "boom", at(0));
    assert_eq!(
        e.metadata.name.as_deref(),
        Some(format!("n1.{:x}", at(0).as_nanosecond()).as_str())
    );
    let long = "a".repeat(253);
    let e = failed(&long, "boom", at(0));
    let name = e.metadata.name.unwrap();
    assert_eq!(name.len(), 253, "{name}");
    assert!(name.ends_with(&format!(".{:x}", at(0).as_nanosecond())));
}

#[test]
fn the_caches_keep_the_most_recently_used_entries() {
    let mut r: Recent<u32> = Recent::new(2);
    r.insert("a", 1);
    r.insert("b", 2);
    assert_eq!(r.get_mut("a").copied(), Some(1));
    r.insert("c", 3);
    assert_eq!(r.get_mut("b"), None, "the least recently used went");
    assert_eq!(r.get_mut("a").copied(), Some(1));
    assert_eq!(r.get_mut("c").copied(), Some(3));
}

#[tokio::test]
async fn a_full_queue_drops_instead_of_blocking() {
    let (tx, mut rx) = mpsc::channel(1);
    let sink = EventSink { tx: Some(tx) };
    // Ten emits into a queue of one return at once (a blocking emit
    // would hang here, which the timeout turns into a failure).
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        for i in 0..10 {
            sink.emit(NodeEvent::normal("CATrustChanged", format!("{i}")));
        }
    })
    .await
    .expect("emit never waits for the queue");
    // The first was kept; the nine others were dropped.
    let kept = rx.try_recv().expect("the first event is queued");
    assert_eq!(kept.message, "0");
    assert!(rx.try_recv().is_err(), "only one event fits the queue");
    // A disabled sink takes events and keeps none.
    EventSink::disabled().emit(NodeEvent::normal("CATrustChanged", "x"));
}
