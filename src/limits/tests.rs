use super::*;

fn rate(per_second: f64, burst: u32) -> Rate {
    Rate { per_second, burst }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn a_bucket_starts_full_and_refills_at_its_rate() {
    let t0 = Instant::now();
    let mut b = Bucket::default();
    let r = rate(10.0, 3);
    for _ in 0..3 {
        assert!(b.take(t0, r).is_ok());
    }
    // Empty: the next token is 100 ms away.
    assert_eq!(b.take(t0, r), Err(ms(100)));
    // 50 ms later, half a token: 50 ms more.
    let wait = b.take(t0 + ms(50), r).unwrap_err();
    assert!((ms(49)..=ms(51)).contains(&wait), "{wait:?}");
    assert!(b.take(t0 + ms(100), r).is_ok());
    // A long pause refills to the burst, no further.
    for _ in 0..3 {
        assert!(b.take(t0 + Duration::from_secs(60), r).is_ok());
    }
    assert!(b.take(t0 + Duration::from_secs(60), r).is_err());
}

#[test]
fn a_changed_rate_applies_to_the_bucket_on_its_next_use() {
    let t0 = Instant::now();
    let mut b = Bucket::default();
    assert!(b.take(t0, rate(1.0, 1)).is_ok());
    assert_eq!(b.take(t0, rate(1.0, 1)), Err(ms(1000)));
    // Raised to 100/s: 10 ms after, a token is there.
    assert!(b.take(t0 + ms(10), rate(100.0, 1)).is_ok());
    // A lower burst caps what was saved.
    let mut b = Bucket::default();
    assert!(b.take(t0, rate(1.0, 100)).is_ok());
    assert!(b.take(t0, rate(1.0, 2)).is_ok());
    assert!(b.take(t0, rate(1.0, 2)).is_ok());
    assert!(b.take(t0, rate(1.0, 2)).is_err());
}

#[test]
fn the_retry_delay_is_never_below_a_millisecond_nor_time_backwards() {
    let t0 = Instant::now() + Duration::from_secs(1);
    let mut b = Bucket::default();
    let r = rate(1_000_000.0, 1);
    assert!(b.take(t0, r).is_ok());
    assert_eq!(b.take(t0, r), Err(ms(1)));
    // An earlier instant than the last use refills nothing.
    let mut b = Bucket::default();
    assert!(b.take(t0, rate(1.0, 1)).is_ok());
    assert!(b.take(t0 - ms(500), rate(1.0, 1)).is_err());
}

fn limits(rate: Option<Rate>, max_in_flight: Option<usize>) -> AgencyLimits {
    AgencyLimits {
        rate,
        max_in_flight,
    }
}

fn reason_of(e: &RequestError) -> &'static str {
    match e {
        RequestError::ResourceExhausted { reason, .. } => reason,
        other => panic!("not RESOURCE_EXHAUSTED: {other:?}"),
    }
}

#[test]
fn in_flight_slots_are_per_agency_and_given_back() {
    let l = AgencyLimiter::default();
    let two = limits(None, Some(2));
    let now = Instant::now();
    let a1 = l.admit("A", &two, now).unwrap();
    let _a2 = l.admit("A", &two, now).unwrap();
    let e = l.admit("A", &two, now).unwrap_err();
    assert_eq!(reason_of(&e), reason::TOO_MANY_IN_FLIGHT);
    // Another agency has its own share.
    let _b = l.admit("B", &two, now).unwrap();
    drop(a1);
    let _a3 = l.admit("A", &two, now).unwrap();
}

#[test]
fn a_call_refused_for_its_rate_holds_no_slot() {
    let l = AgencyLimiter::default();
    let both = limits(Some(rate(1.0, 1)), Some(1));
    let now = Instant::now();
    let first = l.admit("A", &both, now).unwrap();
    // The slot is taken: refused for in-flight, and no token spent.
    assert_eq!(
        reason_of(&l.admit("A", &both, now).unwrap_err()),
        reason::TOO_MANY_IN_FLIGHT
    );
    drop(first);
    let e = l.admit("A", &both, now).unwrap_err();
    assert_eq!(reason_of(&e), reason::RATE_LIMITED);
    let RequestError::ResourceExhausted { retry_after, .. } = e else {
        unreachable!()
    };
    assert_eq!(retry_after, ms(1000));
    // The rate refusal gave its slot back.
    let _ok = l.admit("A", &both, now + ms(1000)).unwrap();
}

#[test]
fn unlimited_agencies_leave_no_state() {
    let l = AgencyLimiter::default();
    for _ in 0..1000 {
        let _ = l
            .admit("A", &AgencyLimits::default(), Instant::now())
            .unwrap();
    }
    assert!(lock(&l.agencies).is_empty());
}
