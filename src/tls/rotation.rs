//! Pure rotation timing for self-managed certificates: given `now` and what the
//! Secret holds, what to do next and when. No clock, no I/O.
//!
//! The CA handover, so that no client ever sees a certificate it cannot verify:
//! 1. `BeginHandover` (signing CA nearing expiry): a new CA is created and published
//!    in the bundle next to the signing CA; serving certificates still come from the
//!    signing CA.
//! 2. `CompleteHandover` (`handover` after publication): the new CA signs a new
//!    serving certificate; the old CA stays in the bundle as the previous CA.
//! 3. `RetirePrevious` (`handover` after the switch, by which time every replica
//!    serves a certificate from the new CA): the old CA leaves the bundle.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::{Error, Result};

/// Validity and renewal windows. Tests use seconds; production, days.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotationPolicy {
    pub ca_validity: Duration,
    /// Start a CA handover this long before the signing CA expires.
    pub ca_renew_before: Duration,
    pub cert_validity: Duration,
    /// Renew the serving certificate this long before it expires.
    pub cert_renew_before: Duration,
    /// How long a new CA is published before serving certificates it signed are
    /// used, and how long the previous CA stays published after the switch. Must
    /// cover writing the caBundle to the webhook configuration, the apiserver
    /// picking it up, and every replica re-reading the Secret.
    pub handover: Duration,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        RotationPolicy {
            ca_validity: Duration::from_secs(365 * DAY),
            ca_renew_before: Duration::from_secs(60 * DAY),
            cert_validity: Duration::from_secs(30 * DAY),
            cert_renew_before: Duration::from_secs(10 * DAY),
            handover: Duration::from_secs(10 * 60),
        }
    }
}

impl RotationPolicy {
    /// Rejects windows that could never rotate in time.
    pub fn validate(&self) -> Result<()> {
        let fail = |msg: &str| Err(Error::Config(format!("certificate rotation: {msg} ({self:?})")));
        if self.cert_renew_before.is_zero() || self.ca_renew_before.is_zero() {
            return fail("renew-before windows must be positive");
        }
        if self.cert_validity <= self.cert_renew_before {
            return fail("cert validity must exceed cert renew-before");
        }
        if self.ca_validity <= self.ca_renew_before {
            return fail("CA validity must exceed CA renew-before");
        }
        if self.ca_renew_before <= self.handover {
            return fail("CA renew-before must be longer than the handover, or the CA expires mid-handover");
        }
        Ok(())
    }
}

/// The previous CA, still published after a handover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Previous {
    /// When the serving certificate switched away from it.
    pub retired_at: Timestamp,
    pub not_after: Timestamp,
}

/// What the Secret holds, as far as timing goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    pub signing_ca_not_after: Timestamp,
    pub cert_not_after: Timestamp,
    /// The serving certificate is signed by the signing CA and names exactly the
    /// configured DNS names and IPs.
    pub cert_current: bool,
    /// A new CA is being handed over; when it was published.
    pub next_ca_published_at: Option<Timestamp>,
    pub previous_ca: Option<Previous>,
}

/// One change to the Secret. Declared in priority order: when several are due,
/// the first wins (the others follow on the next pass).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RotationStep {
    /// The signing CA has expired (signoff was down too long): start over.
    Regenerate,
    CompleteHandover,
    RetirePrevious,
    BeginHandover,
    RenewCert,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    Now(RotationStep),
    /// Nothing to do before this instant.
    WaitUntil(Timestamp),
}

fn minus(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_sub(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)).unwrap_or(Timestamp::MIN)
}

fn plus(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)).unwrap_or(Timestamp::MAX)
}

/// What to do next, and when.
pub fn plan(now: Timestamp, observed: &Observed, policy: &RotationPolicy) -> Plan {
    if now >= observed.signing_ca_not_after {
        return Plan::Now(RotationStep::Regenerate);
    }
    let mut due = Vec::with_capacity(3);
    match observed.next_ca_published_at {
        Some(published) => due.push((plus(published, policy.handover), RotationStep::CompleteHandover)),
        None => due.push((minus(observed.signing_ca_not_after, policy.ca_renew_before), RotationStep::BeginHandover)),
    }
    if let Some(prev) = observed.previous_ca {
        due.push((plus(prev.retired_at, policy.handover).min(prev.not_after), RotationStep::RetirePrevious));
    }
    if !observed.cert_current {
        due.push((now, RotationStep::RenewCert));
    } else if observed.cert_not_after < observed.signing_ca_not_after {
        // A certificate already capped at the CA's expiry is replaced by the handover;
        // renewing it from the same CA would not extend it.
        due.push((minus(observed.cert_not_after, policy.cert_renew_before), RotationStep::RenewCert));
    }
    if let Some(step) = due.iter().filter(|(at, _)| *at <= now).map(|(_, s)| *s).min() {
        return Plan::Now(step);
    }
    Plan::WaitUntil(due.iter().map(|(at, _)| *at).min().unwrap_or(observed.signing_ca_not_after))
}

/// Expiry of a new certificate issued at `now`: `now + validity` rounded up to a
/// whole second (X.509 keeps seconds), capped at `cap` (its CA's expiry).
pub fn not_after(now: Timestamp, validity: Duration, cap: Option<Timestamp>) -> Timestamp {
    let end = plus(now, validity);
    let whole = if end.subsec_nanosecond() > 0 {
        Timestamp::from_second(end.as_second() + 1).unwrap_or(Timestamp::MAX)
    } else {
        end
    };
    cap.map_or(whole, |cap| whole.min(cap))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn policy() -> RotationPolicy {
        RotationPolicy {
            ca_validity: secs(100),
            ca_renew_before: secs(30),
            cert_validity: secs(20),
            cert_renew_before: secs(5),
            handover: secs(10),
        }
    }

    fn steady() -> Observed {
        Observed {
            signing_ca_not_after: t(100),
            cert_not_after: t(20),
            cert_current: true,
            next_ca_published_at: None,
            previous_ca: None,
        }
    }

    #[test]
    fn steady_state_waits_for_the_cert_renewal() {
        assert_eq!(plan(t(0), &steady(), &policy()), Plan::WaitUntil(t(15)));
        assert_eq!(plan(t(15), &steady(), &policy()), Plan::Now(RotationStep::RenewCert));
        assert_eq!(plan(t(19), &steady(), &policy()), Plan::Now(RotationStep::RenewCert));
        // expired cert, still renewed
        assert_eq!(plan(t(25), &steady(), &policy()), Plan::Now(RotationStep::RenewCert));
    }

    #[test]
    fn a_valid_secret_is_reused() {
        // a replica starting at t=1 against a fresh Secret does nothing
        assert!(matches!(plan(t(1), &steady(), &policy()), Plan::WaitUntil(_)));
    }

    #[test]
    fn wrong_names_or_issuer_renew_now() {
        let o = Observed { cert_current: false, ..steady() };
        assert_eq!(plan(t(1), &o, &policy()), Plan::Now(RotationStep::RenewCert));
    }

    #[test]
    fn ca_handover_sequence() {
        let p = policy();
        let capped = Observed { cert_not_after: t(100), ..steady() };
        // capped at the CA's expiry: no renewal, the handover is next
        assert_eq!(plan(t(50), &capped, &p), Plan::WaitUntil(t(70)));
        assert_eq!(plan(t(70), &capped, &p), Plan::Now(RotationStep::BeginHandover));
        let handing = Observed { next_ca_published_at: Some(t(70)), ..capped };
        assert_eq!(plan(t(71), &handing, &p), Plan::WaitUntil(t(80)));
        assert_eq!(plan(t(80), &handing, &p), Plan::Now(RotationStep::CompleteHandover));
        let switched = Observed {
            signing_ca_not_after: t(180),
            cert_not_after: t(100),
            cert_current: true,
            next_ca_published_at: None,
            previous_ca: Some(Previous { retired_at: t(80), not_after: t(100) }),
        };
        assert_eq!(plan(t(81), &switched, &p), Plan::WaitUntil(t(90)));
        assert_eq!(plan(t(90), &switched, &p), Plan::Now(RotationStep::RetirePrevious));
        // the previous CA expiring first retires it sooner
        let short = Observed { previous_ca: Some(Previous { retired_at: t(80), not_after: t(85) }), ..switched };
        assert_eq!(plan(t(85), &short, &p), Plan::Now(RotationStep::RetirePrevious));
    }

    #[test]
    fn priorities_and_expired_ca() {
        let p = policy();
        let everything_due = Observed {
            signing_ca_not_after: t(100),
            cert_not_after: t(50),
            cert_current: false,
            next_ca_published_at: Some(t(0)),
            previous_ca: Some(Previous { retired_at: t(0), not_after: t(100) }),
        };
        assert_eq!(plan(t(60), &everything_due, &p), Plan::Now(RotationStep::CompleteHandover));
        assert_eq!(plan(t(100), &everything_due, &p), Plan::Now(RotationStep::Regenerate));
        assert_eq!(plan(t(500), &steady(), &p), Plan::Now(RotationStep::Regenerate));
    }

    #[test]
    fn not_after_rounds_up_and_caps() {
        let now = t(0).checked_add(SignedDuration::from_millis(300)).unwrap();
        assert_eq!(not_after(now, secs(2), None), t(3));
        assert_eq!(not_after(t(0), secs(2), None), t(2));
        assert_eq!(not_after(now, secs(20), Some(t(10))), t(10));
    }

    #[test]
    fn validation() {
        assert!(RotationPolicy::default().validate().is_ok());
        assert!(policy().validate().is_ok());
        assert!(RotationPolicy { handover: secs(30), ..policy() }.validate().is_err());
        assert!(RotationPolicy { cert_validity: secs(5), ..policy() }.validate().is_err());
        assert!(RotationPolicy { ca_validity: secs(30), ..policy() }.validate().is_err());
        assert!(RotationPolicy { cert_renew_before: secs(0), ..policy() }.validate().is_err());
    }

    /// A fake Secret driven by `plan` through years of fake time, checking at every
    /// step that clients trusting the published bundle can verify the served
    /// certificate, and that a new CA was published `handover` before it is used.
    fn simulate(p: &RotationPolicy, start: Timestamp, until: Timestamp, jitter: i64) -> (u32, u32) {
        #[derive(Clone, Copy)]
        struct Ca {
            id: u32,
            not_after: Timestamp,
            published: Timestamp,
        }
        let mut ids = 0;
        let mut new_ca = |now: Timestamp| {
            ids += 1;
            Ca { id: ids, not_after: not_after(now, p.ca_validity, None), published: now }
        };
        let mut now = start;
        let mut signing = new_ca(now);
        let mut next: Option<Ca> = None;
        let mut previous: Option<(Ca, Timestamp)> = None;
        let mut cert = (signing.id, not_after(now, p.cert_validity, Some(signing.not_after)));
        let (mut renewals, mut handovers) = (0, 0);
        while now < until {
            let bundle: BTreeSet<u32> =
                [Some(signing.id), next.map(|c| c.id), previous.map(|(c, _)| c.id)].into_iter().flatten().collect();
            assert!(bundle.contains(&cert.0), "served cert's CA {} not in bundle {bundle:?} at {now}", cert.0);
            assert!(cert.1 > now, "served cert expired at {now}");
            assert!(signing.not_after > now, "signing CA expired at {now}");
            let observed = Observed {
                signing_ca_not_after: signing.not_after,
                cert_not_after: cert.1,
                cert_current: cert.0 == signing.id,
                next_ca_published_at: next.map(|c| c.published),
                previous_ca: previous.map(|(c, at)| Previous { retired_at: at, not_after: c.not_after }),
            };
            match plan(now, &observed, p) {
                Plan::WaitUntil(at) => {
                    assert!(at > now);
                    // wake late by up to `jitter` seconds, as a busy replica would
                    now = at.checked_add(SignedDuration::from_secs(jitter)).unwrap();
                }
                Plan::Now(RotationStep::Regenerate) => panic!("CA expired at {now}"),
                Plan::Now(RotationStep::BeginHandover) => next = Some(new_ca(now)),
                Plan::Now(RotationStep::CompleteHandover) => {
                    let n = next.take().unwrap();
                    assert!(now >= plus(n.published, p.handover), "switched to CA {} too early", n.id);
                    previous = Some((signing, now));
                    signing = n;
                    cert = (signing.id, not_after(now, p.cert_validity, Some(signing.not_after)));
                    handovers += 1;
                }
                Plan::Now(RotationStep::RetirePrevious) => previous = None,
                Plan::Now(RotationStep::RenewCert) => {
                    let renewed = not_after(now, p.cert_validity, Some(signing.not_after));
                    assert!(renewed > cert.1, "renewal at {now} does not extend the cert");
                    cert = (signing.id, renewed);
                    renewals += 1;
                }
            }
        }
        (renewals, handovers)
    }

    #[test]
    fn simulated_years_never_serve_an_unverifiable_cert() {
        let start = t(0);
        let years = start.checked_add(SignedDuration::from_hours(24 * 365 * 3)).unwrap();
        let (renewals, handovers) = simulate(&RotationPolicy::default(), start, years, 0);
        assert!(handovers >= 3, "{handovers}");
        assert!(renewals >= 40, "{renewals}");
        let (_, late) = simulate(&RotationPolicy::default(), start, years, 60);
        assert!(late >= 3);
    }

    #[test]
    fn simulated_test_timings() {
        // the integration test's windows: a rotation every second or so
        let p = RotationPolicy {
            ca_validity: secs(3),
            ca_renew_before: secs(2),
            cert_validity: secs(2),
            cert_renew_before: Duration::from_millis(1200),
            handover: Duration::from_millis(700),
        };
        p.validate().unwrap();
        // The serving certificate is always capped at its CA's expiry here, so it
        // changes with each handover: about once a second.
        let (_, handovers) = simulate(&p, t(0), t(60), 0);
        assert!(handovers >= 50, "{handovers}");
        // With a longer-lived CA, same-CA renewals happen between handovers.
        let p = RotationPolicy { ca_validity: secs(6), ca_renew_before: secs(3), ..p };
        let (renewals, handovers) = simulate(&p, t(0), t(60), 0);
        assert!(handovers >= 15 && renewals >= 15, "{handovers} handovers, {renewals} renewals");
    }
}
