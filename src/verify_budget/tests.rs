use std::{
    num::NonZeroU32,
    sync::Arc,
    time::{Duration, SystemTime},
};

use super::*;
use crate::clock::ManualClock;

const A: &str = "000.00.20.H13";
const B: &str = "000.00.12.H13";
const ID: &str = "092085000123";
const HOUR: Duration = Duration::from_secs(3600);

fn limits(per_subject: u32, window_hours: u64, per_agency: u32) -> Limits {
    Limits {
        verify_failures_per_subject: NonZeroU32::new(per_subject).unwrap(),
        verify_window: Duration::from_secs(window_hours * 3600),
        verify_failures_per_agency_hour: NonZeroU32::new(per_agency).unwrap(),
        ..Limits::default()
    }
}

fn setup(l: &Limits) -> (tempfile::TempDir, Arc<ManualClock>, VerifyBudget) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let budget = VerifyBudget::open(&dir.path().join("b.sqlite"), l, clock.clone()).unwrap();
    (dir, clock, budget)
}

async fn fail(b: &VerifyBudget, agency: &str, subject: &str) {
    b.reserve(agency, subject)
        .unwrap()
        .fail(FailureKind::Mismatch)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_budget_refuses_after_the_limit_and_frees_when_the_oldest_failure_leaves() {
    let (_dir, clock, b) = setup(&limits(3, 24, 100));
    fail(&b, A, ID).await;
    clock.advance(HOUR);
    fail(&b, A, ID).await;
    fail(&b, A, ID).await;
    let r = b.reserve(A, ID).err().unwrap();
    assert_eq!(r.scope, Scope::Subject);
    assert_eq!(r.limit, 3);
    // The first failure, an hour older than the others, frees the slot.
    assert_eq!(r.retry_after, 23 * HOUR);
    clock.advance(23 * HOUR - Duration::from_secs(1));
    assert!(b.reserve(A, ID).is_err());
    clock.advance(Duration::from_secs(1));
    let slot = b.reserve(A, ID).unwrap();
    // One slot only: the other two failures are still in the window.
    assert_eq!(b.reserve(A, ID).err().unwrap().scope, Scope::Subject);
    drop(slot);
}

#[tokio::test]
async fn successes_cost_nothing_and_other_agencies_and_subjects_are_apart() {
    let (_dir, _clock, b) = setup(&limits(2, 24, 100));
    for _ in 0..10 {
        // Dropped unsettled: a match.
        drop(b.reserve(A, ID).unwrap());
    }
    fail(&b, A, ID).await;
    fail(&b, A, ID).await;
    assert!(b.reserve(A, ID).is_err());
    assert!(b.reserve(B, ID).is_ok());
    assert!(b.reserve(A, "092085000124").is_ok());
}

#[tokio::test]
async fn reservations_in_flight_count_against_the_limit() {
    let (_dir, _clock, b) = setup(&limits(2, 24, 100));
    let one = b.reserve(A, ID).unwrap();
    let two = b.reserve(A, ID).unwrap();
    let r = b.reserve(A, ID).err().unwrap();
    assert_eq!((r.scope, r.retry_after), (Scope::Subject, RETRY_SOON));
    drop(one);
    let three = b.reserve(A, ID).unwrap();
    two.fail(FailureKind::NotFound).await.unwrap();
    three.fail(FailureKind::Mismatch).await.unwrap();
    assert!(b.reserve(A, ID).is_err());
}

#[tokio::test]
async fn the_agency_ceiling_bounds_a_sweep_over_many_subjects() {
    let (_dir, clock, b) = setup(&limits(5, 24, 3));
    for n in 0..3 {
        fail(&b, A, &format!("0920850001{n:02}")).await;
        clock.advance(Duration::from_secs(60));
    }
    let r = b.reserve(A, "092085000199").err().unwrap();
    assert_eq!(r.scope, Scope::Agency);
    assert_eq!(r.window, HOUR);
    assert_eq!(r.retry_after, HOUR - Duration::from_secs(180));
    assert!(b.reserve(B, "092085000199").is_ok());
    clock.advance(HOUR - Duration::from_secs(180));
    assert!(b.reserve(A, "092085000199").is_ok());
}

#[tokio::test]
async fn failures_survive_reopening_the_file() {
    let l = limits(2, 24, 100);
    let (dir, clock, b) = setup(&l);
    fail(&b, A, ID).await;
    fail(&b, A, ID).await;
    drop(b);
    let again = VerifyBudget::open(&dir.path().join("b.sqlite"), &l, clock.clone()).unwrap();
    assert_eq!(again.reserve(A, ID).err().unwrap().scope, Scope::Subject);
    assert!(again.reserve(A, "092085000124").is_ok());
    // Reopened after the window: nothing left to count.
    clock.advance(24 * HOUR);
    let later = VerifyBudget::open(&dir.path().join("b.sqlite"), &l, clock).unwrap();
    assert!(later.reserve(A, ID).is_ok());
    let rows = persist::read_all(&dir.path().join("b.sqlite")).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.agency == A && r.subject == ID));
}

#[tokio::test]
async fn past_the_tracking_cap_untracked_subjects_are_refused() {
    let (_dir, clock, mut b) = setup(&limits(5, 24, 100));
    b.max_tracked = 2;
    fail(&b, A, "092085000101").await;
    fail(&b, A, "092085000102").await;
    assert_eq!(
        b.reserve(A, "092085000103").err().unwrap().scope,
        Scope::Gateway
    );
    // Tracked subjects still work.
    assert!(b.reserve(A, "092085000101").is_ok());
    // Once the window passes, the sweep frees the entries.
    clock.advance(24 * HOUR);
    assert!(b.reserve(A, "092085000103").is_ok());
}

#[test]
fn the_refusal_becomes_resource_exhausted_with_retry_info() {
    use tonic_types::StatusExt;
    let status = tonic::Status::from(RequestError::from(Refusal {
        scope: Scope::Agency,
        limit: 100,
        window: HOUR,
        retry_after: Duration::from_secs(125),
    }));
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    let d = status.get_error_details();
    let info = d.error_info().unwrap();
    assert_eq!(info.reason, "VERIFICATION_LIMIT");
    assert_eq!(info.metadata["scope"], "agency");
    assert_eq!(info.metadata["limit"], "100");
    assert_eq!(info.metadata["window_seconds"], "3600");
    assert_eq!(
        d.retry_info().unwrap().retry_delay,
        Some(Duration::from_secs(125))
    );
    assert!(
        status.message().contains("2 min 5 s"),
        "{}",
        status.message()
    );
}
