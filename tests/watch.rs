//! Live access events over real mTLS: a portal watches the access log, an
//! agency makes calls, the portal disconnects and resumes from its cursor,
//! and it has seen every record exactly once, in order, with its subjects
//! and without officer ids.

mod support;

use interop_gateway::proto::audit::v1::{
    access_log_service_client::AccessLogServiceClient, WatchAccessRecordsRequest,
    WatchAccessRecordsResponse,
};
use support::{watch::*, *};
use tokio_stream::StreamExt;
use tonic::{Code, Streaming};

/// Reads events until one for the lookup with dossier `n`.
async fn until_dossier(
    stream: &mut Streaming<WatchAccessRecordsResponse>,
    n: u32,
    seen: &mut Vec<WatchAccessRecordsResponse>,
) {
    let want = dossier(n);
    while let Some(event) = stream.next().await {
        let event = event.unwrap();
        let done = event.record.as_ref().unwrap().dossier_id == want;
        seen.push(event);
        if done {
            return;
        }
    }
    panic!("the stream ended before dossier {want}");
}

#[tokio::test]
async fn a_portal_sees_every_record_exactly_once_in_order_across_a_reconnect() {
    let gw = Gateway::start_with(Options {
        extra_config: WATCH_GRANT.into(),
        ..Options::default()
    })
    .await;
    let mut agency = gw.client(LAND_OFFICE).await;
    let mut seen = Vec::new();

    let mut portal = gw.client(PORTAL).await;
    let mut first = watch(&mut portal, "").await;
    for n in 1..=3 {
        lookup(&mut agency, n).await;
    }
    until_dossier(&mut first, 3, &mut seen).await;
    let cursor = seen.last().unwrap().cursor.clone();
    // Disconnect: the stream and the whole connection go away.
    drop(first);
    drop(portal);

    for n in 4..=6 {
        lookup(&mut agency, n).await;
    }
    let mut portal = gw.client(PORTAL).await;
    let mut second = watch(&mut portal, &cursor).await;
    for n in 7..=8 {
        lookup(&mut agency, n).await;
    }
    until_dossier(&mut second, 8, &mut seen).await;

    // Cursors strictly increase: nothing twice, nothing out of order.
    let cursors: Vec<u64> = seen.iter().map(|e| e.cursor.parse().unwrap()).collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "{cursors:?}");
    // Every lookup exactly once, in order; between them only the watches' own records.
    let lookups: Vec<&str> = seen
        .iter()
        .map(|e| e.record.as_ref().unwrap())
        .filter(|r| r.method != WATCH_METHOD)
        .map(|r| r.dossier_id.as_str())
        .collect();
    let expected: Vec<String> = (1..=8).map(dossier).collect();
    assert_eq!(lookups, expected);
    // Nothing lost: the cursors of the lookups and watches cover a gapless range.
    assert_eq!(
        cursors.last().unwrap() - cursors.first().unwrap() + 1,
        cursors.len() as u64,
        "{cursors:?}"
    );
    for event in seen
        .iter()
        .filter(|e| e.record.as_ref().unwrap().method != WATCH_METHOD)
    {
        assert_eq!(event.subject_ids, [CITIZEN_ID]);
        let record = event.record.as_ref().unwrap();
        assert_eq!(record.agency_code, LAND_OFFICE);
        assert_eq!(record.outcome, "OK");
    }
    assert!(!format!("{seen:?}").contains("officer-secret"));
    gw.stop().await;
}

#[tokio::test]
async fn watching_needs_a_grant_and_a_cursor_of_this_log() {
    let gw = Gateway::start_with(Options {
        extra_config: WATCH_GRANT.into(),
        ..Options::default()
    })
    .await;
    let mut agency = gw.client(LAND_OFFICE).await;
    let err = agency
        .access_log
        .watch_access_records(WatchAccessRecordsRequest {
            context: context(PROCEDURE_LAND),
            cursor: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    let mut portal = gw.client(PORTAL).await;
    // The last: a cursor of a log shared by several instances.
    for bad in ["abc", "99999999", "-1", "v1:gw-a=1"] {
        let err = portal
            .access_log
            .watch_access_records(WatchAccessRecordsRequest {
                context: context(PROCEDURE_PORTAL),
                cursor: bad.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}");
        assert_eq!(bad_fields(&err), ["cursor"], "{bad}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_watcher_that_does_not_read_is_cut_off_and_resumes_without_loss() {
    let gw = Gateway::start_with(Options {
        extra_config: WATCH_GRANT.into(),
        ..Options::default()
    })
    .await;
    // A watcher whose connection takes little before it must read: small
    // HTTP/2 flow-control windows.
    let issued = gw.pki.agency(PORTAL);
    let channel = interop_gateway::client::endpoint(&gw.addr, &gw.pki.identity(&issued))
        .unwrap()
        .initial_stream_window_size(Some(4096))
        .initial_connection_window_size(Some(4096))
        .connect()
        .await
        .unwrap();
    let mut slow = AccessLogServiceClient::new(channel);
    let mut stalled = slow
        .watch_access_records(WatchAccessRecordsRequest {
            context: context(PROCEDURE_PORTAL),
            cursor: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    // More records than the live buffer, the watch's queue and what the
    // server's HTTP/2 send buffer holds together, while nobody reads.
    let calls = interop_gateway::audit::LIVE_BUFFER as u32 + 3500;
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..8u32 {
        let mut agency = gw.client(LAND_OFFICE).await;
        tasks.push(tokio::spawn(async move {
            for n in (worker..calls).step_by(8) {
                lookup(&mut agency, 1 + n % 9000).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!("{calls} calls in {:?}", started.elapsed());
    // Calls never waited for the watcher; now it reads what was queued and
    // then learns it fell behind.
    let mut last_cursor = String::new();
    let status = loop {
        match stalled.next().await {
            Some(Ok(event)) => last_cursor = event.cursor,
            Some(Err(status)) => break status,
            None => panic!("the stream ended without a status"),
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(reason(&status), "WATCH_OVERFLOW");
    // Resuming from the last cursor delivers the rest, in order, from the file.
    let mut portal = gw.client(PORTAL).await;
    let mut resumed = watch(&mut portal, &last_cursor).await;
    let mut expected: u64 = last_cursor.parse::<u64>().unwrap() + 1;
    let mut lookups_after = 0;
    while let Some(event) = resumed.next().await {
        let event = event.unwrap();
        assert_eq!(event.cursor.parse::<u64>().unwrap(), expected);
        expected += 1;
        if event.record.as_ref().unwrap().method != WATCH_METHOD {
            lookups_after += 1;
        }
        // The log ends with the resuming watch's own record.
        if event.record.as_ref().unwrap().method == WATCH_METHOD && lookups_after > 0 {
            break;
        }
    }
    assert!(lookups_after > 0);
    gw.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_watches_instead_of_waiting_for_them() {
    let gw = Gateway::start_with(Options {
        extra_config: WATCH_GRANT.into(),
        ..Options::default()
    })
    .await;
    let mut portal = gw.client(PORTAL).await;
    let mut open = watch(&mut portal, "").await;
    // The watch's own record arrives first: the stream is live.
    let first = open.next().await.unwrap().unwrap();
    assert_eq!(first.record.unwrap().method, WATCH_METHOD);
    gw.stop().await;
    let status = loop {
        match open.next().await {
            Some(Ok(_)) => continue,
            Some(Err(status)) => break status,
            None => panic!("the stream ended without a status"),
        }
    };
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(reason(&status), "SHUTTING_DOWN");
}

/// `/metrics` counts open watches and the records they were sent, by
/// agency, and why each ended (here the watcher leaving).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_are_counted_while_open_with_their_events_and_how_they_ended() {
    let gw = Gateway::start_with(Options {
        extra_config: format!("{WATCH_GRANT}\n[admin]\nlisten = \"127.0.0.1:0\"\n"),
        ..Options::default()
    })
    .await;
    let admin = gw.admin.clone().expect("[admin] is configured");
    let mut agency = gw.client(LAND_OFFICE).await;
    let mut portal = gw.client(PORTAL).await;
    let mut stream = watch(&mut portal, "").await;
    lookup(&mut agency, 1).await;
    lookup(&mut agency, 2).await;
    let mut seen = Vec::new();
    until_dossier(&mut stream, 2, &mut seen).await;

    let text = scrape(&admin).await;
    let open = |text: &str| metric(text, "interop_gateway_watches", &[("agency", PORTAL)]);
    assert_eq!(open(&text), Some(1.0), "{text}");
    // Every event the watcher read was counted as it was handed over.
    let events = metric(
        &text,
        "interop_gateway_watch_events_total",
        &[("agency", PORTAL)],
    )
    .unwrap_or(0.0);
    assert!(
        events >= seen.len() as f64,
        "{events} < {}: {text}",
        seen.len()
    );
    assert_eq!(
        metric(
            &text,
            "interop_gateway_watch_ended_total",
            &[("reason", "left")]
        ),
        None
    );

    // The watcher goes away; the gateway notices on its own.
    drop(stream);
    drop(portal);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let text = loop {
        let text = scrape(&admin).await;
        if open(&text) == Some(0.0) {
            break text;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(
        metric(
            &text,
            "interop_gateway_watch_ended_total",
            &[("reason", "left")]
        ),
        Some(1.0),
        "{text}"
    );
    gw.stop().await;
}
