//! Monthly job quotas: each tier includes a number of jobs per calendar month (UTC).

use ckrv_wit::types::SubscriptionTier;
use time::{Date, Month, OffsetDateTime, Time};

/// Jobs a tier includes per cycle.
pub const fn monthly_limit(tier: SubscriptionTier) -> u32 {
    match tier {
        SubscriptionTier::Free => 100,
        SubscriptionTier::Pro => 1_000,
        SubscriptionTier::Enterprise => 10_000,
    }
}

/// The current cycle as `[start, end)`.
pub fn cycle(now: OffsetDateTime) -> (OffsetDateTime, OffsetDateTime) {
    let now = now.to_offset(time::UtcOffset::UTC);
    let start = first_of(now.year(), now.month());
    let end = match now.month() {
        Month::December => first_of(now.year() + 1, Month::January),
        month => first_of(now.year(), month.next()),
    };
    (start, end)
}

fn first_of(year: i32, month: Month) -> OffsetDateTime {
    Date::from_calendar_date(year, month, 1)
        .map(|d| d.with_time(Time::MIDNIGHT).assume_utc())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_cycle_is_the_calendar_month() {
        let (start, end) = cycle(datetime!(2026-11-22 16:00 UTC));
        assert_eq!(start, datetime!(2026-11-01 0:00 UTC));
        assert_eq!(end, datetime!(2026-12-01 0:00 UTC));
        let (start, end) = cycle(datetime!(2026-12-31 23:59:59 UTC));
        assert_eq!(start, datetime!(2026-12-01 0:00 UTC));
        assert_eq!(end, datetime!(2027-01-01 0:00 UTC));
    }
}
