//! Live access events across two gateway instances (the built binary, on
//! their own ports) sharing one PostgreSQL access log, over real mTLS: a
//! portal watching one instance receives every committed record of both,
//! exactly once and in order per instance; it resumes on the other instance
//! with its last cursor and receives exactly what it missed; the feed's own
//! database connection dropped loses nothing; the database stopped ends the
//! stream with UNAVAILABLE `AUDIT_UNAVAILABLE`, and a watch after recovery
//! resumes from the cursor. (That a file-log gateway refuses a cursor of a
//! shared log is in tests/watch.rs.)

mod support;

use std::{collections::BTreeMap, path::Path, time::Duration};

use interop_gateway::{client::Client, proto::audit::v1::WatchAccessRecordsResponse};
use support::{pg::PgCluster, watch::*, *};
use tokio_stream::StreamExt;
use tonic::{Code, Streaming};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

/// How long any one step may take before the test gives up (never reached
/// when things work: every wait below ends on an event).
const STEP: Duration = Duration::from_secs(30);

type Positions = BTreeMap<String, u64>;

/// The test reads the cursor to tell which instance sent each event; a
/// client treats it as opaque.
fn positions(cursor: &str) -> Positions {
    let rest = cursor.strip_prefix("v1:").expect(cursor);
    rest.split(',')
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (i, s) = e.split_once('=').unwrap();
            (i.to_owned(), s.parse().unwrap())
        })
        .collect()
}

fn instance_config(dir: &Path, pg: &PgCluster, name: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = config_text(&[], "certs/ca.pem")
        + WATCH_GRANT
        + &format!(
            "\n[audit]\ndatabase_url = \"{}\"\ninstance = \"{name}\"\ncheckpoint_every_seconds = 1\n",
            pg.url
        );
    std::fs::write(&path, text).unwrap();
    path
}

/// Lookups `ns`: the odd ones through `a`, the even ones through `b`.
async fn lookups(a: &mut Client, b: &mut Client, ns: std::ops::RangeInclusive<u32>) {
    for n in ns {
        lookup(if n % 2 == 1 { &mut *a } else { &mut *b }, n).await;
    }
}

/// Every instance's last seq, as the database has it.
fn heads(pg: &PgCluster) -> Positions {
    let out = pg.psql(
        "SELECT i.instance || '=' || coalesce(max(r.seq), 0) FROM audit_instances i \
         LEFT JOIN audit_records r USING (instance) GROUP BY i.instance",
    );
    positions(&format!("v1:{}", out.lines().collect::<Vec<_>>().join(",")))
}

/// What a watcher received, checked as it arrives: each event moves exactly
/// one instance's position on by exactly one record from the cursor before
/// it (so nothing is skipped, repeated or out of order per instance).
struct Seen {
    cursor: Positions,
    /// The last event's cursor, as sent.
    sent: String,
    /// (instance, dossier) of each lookup, in the order received.
    lookups: Vec<(String, String)>,
    watches: BTreeMap<String, u32>,
}

impl Seen {
    fn take(&mut self, event: WatchAccessRecordsResponse) {
        let next = positions(&event.cursor);
        let moved: Vec<_> = next
            .iter()
            .filter(|(i, s)| self.cursor.get(*i).copied().unwrap_or(0) != **s)
            .collect();
        assert_eq!(moved.len(), 1, "{:?} -> {next:?}", self.cursor);
        let (instance, seq) = moved[0];
        assert_eq!(
            *seq,
            self.cursor.get(instance).copied().unwrap_or(0) + 1,
            "{:?} -> {next:?}",
            self.cursor
        );
        assert!(
            self.cursor.keys().all(|k| next.contains_key(k)),
            "{:?} -> {next:?}",
            self.cursor
        );
        let record = event.record.unwrap();
        assert!(record.relay_agency_code.is_empty());
        if record.method == WATCH_METHOD {
            assert_eq!(record.agency_code, PORTAL);
            assert!(event.subject_ids.is_empty());
            *self.watches.entry(instance.clone()).or_default() += 1;
        } else {
            assert_eq!(record.agency_code, LAND_OFFICE);
            assert_eq!(event.subject_ids, [CITIZEN_ID]);
            self.lookups.push((instance.clone(), record.dossier_id));
        }
        self.cursor = next;
        self.sent = event.cursor;
    }

    /// Reads events until the cursor reaches `until`.
    async fn until(
        &mut self,
        stream: &mut Streaming<WatchAccessRecordsResponse>,
        until: &Positions,
    ) {
        while &self.cursor != until {
            let event = tokio::time::timeout(STEP, stream.next())
                .await
                .unwrap_or_else(|_| panic!("nothing more after {:?}, want {until:?}", self.cursor))
                .expect("the stream ended")
                .unwrap();
            assert!(!format!("{event:?}").contains("officer-secret"));
            self.take(event);
        }
    }

    /// Every lookup of `ns` was received exactly once, from the instance it
    /// went through (see [`lookups`]), in that instance's order.
    fn assert_lookups_once(&self, ns: std::ops::RangeInclusive<u32>) {
        let through = |odd: bool| -> Vec<String> {
            ns.clone()
                .filter(|n| (n % 2 == 1) == odd)
                .map(dossier)
                .collect()
        };
        assert_eq!(self.dossiers_of("gw-a"), through(true));
        assert_eq!(self.dossiers_of("gw-b"), through(false));
    }

    fn dossiers_of(&self, instance: &str) -> Vec<String> {
        self.lookups
            .iter()
            .filter(|(i, _)| i == instance)
            .map(|(_, d)| d.clone())
            .collect()
    }
}

async fn wait_serving(c: &Client) {
    let mut health = HealthClient::new(c.channel.clone());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "interop.citizen.v1.CitizenRegistryService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    loop {
        let status = tokio::time::timeout(STEP, watch.message())
            .await
            .expect("health never turned SERVING")
            .unwrap()
            .unwrap();
        if status.status() == ServingStatus::Serving {
            return;
        }
    }
}

/// Instances `gw-a` and `gw-b` on `pg`, and the agency's client of each.
/// Keep `dir`, `a` and `b` bound while the test runs (`_name`, not `_`):
/// dropping them removes the folder and stops the processes.
struct Pair {
    dir: tempfile::TempDir,
    a: ServeProcess,
    b: ServeProcess,
    /// The portal's identity, to connect to either.
    portal: interop_gateway::client::AgencyIdentity,
    land_a: Client,
    land_b: Client,
}

impl Pair {
    async fn start(pg: &PgCluster) -> Pair {
        let (dir, pki, _) = prepared_dir();
        let a = ServeProcess::start(&instance_config(dir.path(), pg, "gw-a"), None);
        let b = ServeProcess::start(&instance_config(dir.path(), pg, "gw-b"), None);
        let land = pki.identity(&pki.agency(LAND_OFFICE));
        let land_a = Client::connect(&a.addr, &land).await.unwrap();
        let land_b = Client::connect(&b.addr, &land).await.unwrap();
        Pair {
            portal: pki.identity(&pki.agency(PORTAL)),
            dir,
            a,
            b,
            land_a,
            land_b,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_on_one_instance_sees_every_instance_and_resumes_on_another() {
    let Some(pg) = PgCluster::start_or_skip(
        "a_portal_on_one_instance_sees_every_instance_and_resumes_on_another",
    ) else {
        return;
    };
    let Pair {
        dir: _dir,
        a,
        b,
        portal,
        mut land_a,
        mut land_b,
    } = Pair::start(&pg).await;
    // Something on both chains before the watch: the watch starts after it.
    lookup(&mut land_a, 900).await;
    lookup(&mut land_b, 901).await;

    // A portal watches a; the agency calls through a (odd dossiers) and b
    // (even ones).
    let mut portal_a = Client::connect(&a.addr, &portal).await.unwrap();
    let mut seen = Seen {
        // An empty cursor starts after what is there.
        cursor: heads(&pg),
        sent: String::new(),
        lookups: Vec::new(),
        watches: BTreeMap::new(),
    };
    let mut stream = watch(&mut portal_a, "").await;
    lookups(&mut land_a, &mut land_b, 1..=6).await;
    seen.until(&mut stream, &heads(&pg)).await;
    assert_eq!(seen.watches, BTreeMap::from([("gw-a".to_owned(), 1)]));

    // Disconnect; more calls through both; resume on b with the last cursor.
    drop(stream);
    drop(portal_a);
    lookups(&mut land_a, &mut land_b, 7..=12).await;
    let mut portal_b = Client::connect(&b.addr, &portal).await.unwrap();
    let mut stream = watch(&mut portal_b, &seen.sent).await;
    lookups(&mut land_a, &mut land_b, 13..=14).await;
    seen.until(&mut stream, &heads(&pg)).await;
    // Every lookup exactly once, each instance's in its own order.
    seen.assert_lookups_once(1..=14);
    assert_eq!(
        seen.watches,
        BTreeMap::from([("gw-a".to_owned(), 1), ("gw-b".to_owned(), 1)])
    );

    // A second watch on b, from the start of every chain, shares b's feed.
    let mut portal_b2 = Client::connect(&b.addr, &portal).await.unwrap();
    let mut second = watch(&mut portal_b2, "v1:").await;
    seen.until(&mut stream, &heads(&pg)).await;
    let mut from_start = Seen {
        cursor: Positions::new(),
        sent: String::new(),
        lookups: Vec::new(),
        watches: BTreeMap::new(),
    };
    from_start.until(&mut second, &seen.cursor).await;
    assert_eq!(from_start.lookups.len(), 16);
    assert_eq!(from_start.watches, seen.watches);
    // A cursor that does not name an instance streams that instance from its
    // first record: here b, with a where the portal is.
    let only_a = Positions::from([("gw-a".to_owned(), seen.cursor["gw-a"])]);
    let mut partial = watch(&mut portal_b2, &format!("v1:gw-a={}", only_a["gw-a"])).await;
    seen.until(&mut stream, &heads(&pg)).await;
    let mut from_a = Seen {
        cursor: only_a,
        sent: String::new(),
        lookups: Vec::new(),
        watches: BTreeMap::new(),
    };
    from_a.until(&mut partial, &seen.cursor).await;
    let b_lookups: Vec<String> = std::iter::once(901)
        .chain((1..=14).filter(|n| n % 2 == 0))
        .map(dossier)
        .collect();
    assert_eq!(from_a.dossiers_of("gw-b"), b_lookups);
    assert!(from_a.dossiers_of("gw-a").is_empty());
    assert_eq!(from_a.watches["gw-b"], seen.watches["gw-b"]);
    drop(partial);

    // The feeds' own connections are cut: the stream stays open, and what
    // was committed meanwhile is read back, once.
    let cut = pg.psql(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = 'interop-gateway-feed'",
    );
    assert_eq!(cut, "2", "one feed connection per process, not per watch");
    lookups(&mut land_a, &mut land_b, 15..=18).await;
    b.wait_for_log("audit feed lost its database connection");
    seen.until(&mut stream, &heads(&pg)).await;
    // Anyone may NOTIFY: announcements that lie make the feed read, never
    // skip or repeat.
    pg.psql("NOTIFY interop_audit_records, 'gw-a 999999'");
    pg.psql("NOTIFY interop_audit_records, 'not an announcement'");
    lookups(&mut land_a, &mut land_b, 19..=20).await;
    seen.until(&mut stream, &heads(&pg)).await;
    assert_eq!(seen.lookups.len(), 20);
    drop(second);

    // Cursors of the wrong kind or of another log are refused on `cursor`.
    for bad in ["5", "v1:gw-z=1", "v1:gw-a=99999", "v2:gw-a=1", "v1:gw-a"] {
        let err = watch_refused(&mut portal_b, bad).await;
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}");
        assert_eq!(bad_fields(&err), ["cursor"], "{bad}");
    }
    // Refused watches are records too, and the stream shows them.
    seen.until(&mut stream, &heads(&pg)).await;
    // On b: the resumed watch, the second and third ones and the five refused.
    assert_eq!(seen.watches["gw-b"], 8);

    // The database stops: the watch ends with AUDIT_UNAVAILABLE.
    let before_outage = seen.sent.clone();
    pg.stop();
    let status = match tokio::time::timeout(STEP, stream.next()).await.unwrap() {
        Some(Ok(event)) => panic!("an event with the database stopped: {event:?}"),
        Some(Err(status)) => status,
        None => panic!("the stream ended without a status"),
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(reason(&status), "AUDIT_UNAVAILABLE");

    // Back: a new watch on a resumes from the cursor.
    pg.start_again();
    wait_serving(&land_a).await;
    wait_serving(&land_b).await;
    let mut portal_a = Client::connect(&a.addr, &portal).await.unwrap();
    let mut stream = watch(&mut portal_a, &before_outage).await;
    lookups(&mut land_a, &mut land_b, 21..=24).await;
    seen.until(&mut stream, &heads(&pg)).await;
    seen.assert_lookups_once(1..=24);

    drop(stream);
    assert!(a.terminate().success());
    assert!(b.terminate().success());
}

/// Commits notify only while some gateway's feed listens, and an instance
/// looks for one every second. After a spell with no watch at all (so the
/// instances stopped notifying), the first watch still receives what is
/// committed next: the instances see its feed and announce again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_after_a_spell_without_any_still_receives_each_commit() {
    let Some(pg) =
        PgCluster::start_or_skip("a_watch_after_a_spell_without_any_still_receives_each_commit")
    else {
        return;
    };
    let Pair {
        dir: _dir,
        a: _a,
        b,
        portal,
        mut land_a,
        mut land_b,
    } = Pair::start(&pg).await;
    lookup(&mut land_a, 1).await;
    // Nothing signals "looked and found no feed": give both instances time
    // to look a few times (they look every second).
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(
        pg.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'interop-gateway-feed'"
        ),
        "0"
    );
    let mut portal_b = Client::connect(&b.addr, &portal).await.unwrap();
    let mut seen = Seen {
        cursor: heads(&pg),
        sent: String::new(),
        lookups: Vec::new(),
        watches: BTreeMap::new(),
    };
    let mut stream = watch(&mut portal_b, "").await;
    // The calls right after the feed starts, then one later, through both.
    lookups(&mut land_a, &mut land_b, 2..=5).await;
    seen.until(&mut stream, &heads(&pg)).await;
    lookups(&mut land_a, &mut land_b, 6..=7).await;
    seen.until(&mut stream, &heads(&pg)).await;
    seen.assert_lookups_once(2..=7);
}
