//! Rate limits on what an attacker would repeat: device authorizations, user-code entry (RFC
//! 8628 §5.1: the codes are short, so guessing must be slow) and sign-in attempts. Each limit is
//! a GCRA bucket per key (client address, code, email) from the `governor` crate, kept in memory
//! per API process.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::RetryAfter;

/// The limits one API process enforces.
pub struct Limits {
    device_by_address: DefaultKeyedRateLimiter<IpAddr>,
    code_by_address: DefaultKeyedRateLimiter<IpAddr>,
    code: DefaultKeyedRateLimiter<String>,
    sign_in_by_address: DefaultKeyedRateLimiter<IpAddr>,
    sign_in_by_email: DefaultKeyedRateLimiter<String>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Limits")
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // A CLI asks once per login.
            device_by_address: keyed(10, Duration::from_secs(60)),
            // A person types a code a few times; a guesser types thousands.
            code_by_address: keyed(20, Duration::from_secs(60)),
            code: keyed(10, Duration::from_secs(600)),
            // Sign-ins are rare (a session lasts a day); guessing passwords is not.
            sign_in_by_address: keyed(20, Duration::from_secs(60)),
            sign_in_by_email: keyed(10, Duration::from_secs(900)),
        }
    }
}

/// `burst` requests at once, then one per `period / burst`.
fn keyed<K: std::hash::Hash + Eq + Clone>(
    burst: u32,
    period: Duration,
) -> DefaultKeyedRateLimiter<K> {
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(period / burst.get())
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst);
    RateLimiter::keyed(quota)
}

fn check<K: std::hash::Hash + Eq + Clone>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
) -> Result<(), RetryAfter> {
    limiter
        .check_key(key)
        .map_err(|not_until| RetryAfter(not_until.wait_time_from(DefaultClock::default().now())))
}

impl Limits {
    pub fn device_authorization(&self, from: IpAddr) -> Result<(), RetryAfter> {
        check(&self.device_by_address, &from)
    }

    /// One look-up or decision of a user code.
    pub fn user_code(&self, from: IpAddr, code: &str) -> Result<(), RetryAfter> {
        check(&self.code_by_address, &from)?;
        check(&self.code, &code.to_string())
    }

    /// One sign-in attempt, counted before the password is checked, so that hitting the limit
    /// cannot reveal whether a guess was right.
    pub fn sign_in(&self, from: IpAddr, email: &str) -> Result<(), RetryAfter> {
        check(&self.sign_in_by_address, &from)?;
        check(&self.sign_in_by_email, &email.trim().to_ascii_lowercase())
    }

    /// Forgets keys whose buckets are full again, so memory follows current traffic.
    pub fn forget_idle(&self) {
        self.device_by_address.retain_recent();
        self.code_by_address.retain_recent();
        self.code.retain_recent();
        self.sign_in_by_address.retain_recent();
        self.sign_in_by_email.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_caller_is_told_how_long_to_wait() {
        let limits = Limits::default();
        let here: IpAddr = [127, 0, 0, 1].into();
        let there: IpAddr = [127, 0, 0, 2].into();
        for _ in 0..10 {
            assert!(limits.device_authorization(here).is_ok());
        }
        let wait = limits.device_authorization(here).unwrap_err();
        assert!((1..=6).contains(&wait.seconds()), "{wait:?}");
        // Another address has its own bucket.
        assert!(limits.device_authorization(there).is_ok());
    }

    #[test]
    fn one_code_is_limited_across_addresses() {
        let limits = Limits::default();
        for n in 0..10u8 {
            assert!(limits.user_code([127, 0, 0, n].into(), "BCDF-2345").is_ok());
        }
        assert!(
            limits
                .user_code([127, 0, 1, 1].into(), "BCDF-2345")
                .is_err()
        );
        assert!(limits.user_code([127, 0, 1, 1].into(), "BCDF-2346").is_ok());
    }

    #[test]
    fn sign_ins_are_limited_per_email_whatever_its_case() {
        let limits = Limits::default();
        for n in 0..10u8 {
            let email = if n % 2 == 0 {
                "dev@example.com"
            } else {
                "DEV@example.com"
            };
            assert!(limits.sign_in([127, 0, 0, n].into(), email).is_ok());
        }
        assert!(
            limits
                .sign_in([127, 0, 0, 99].into(), "dev@example.com")
                .is_err()
        );
    }
}
