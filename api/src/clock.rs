//! Time as the API stores it (unix milliseconds) and shows it (RFC 3339, whole seconds, UTC).

use time::OffsetDateTime;

pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

pub fn millis(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The instant `millis` unix milliseconds name (the epoch for nonsense).
pub fn from_millis(millis: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// As the contract writes a timestamp (`ckrv_wit::timestamp`).
pub fn rfc3339(at: OffsetDateTime) -> String {
    ckrv_wit::timestamp::format(at)
}

/// A contract timestamp read back; `None` for anything else.
pub fn parse(text: &str) -> Option<OffsetDateTime> {
    ckrv_wit::timestamp::parse(text)
}

/// Runs `pass` every `period` (the first at once) until dropped. A pass that fails is logged
/// as `what` and the next one comes on time: background chores must outlive a database blip.
pub async fn every<F, Fut, T, E>(period: std::time::Duration, what: &'static str, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(error) = pass().await {
            tracing::warn!(%error, "{what}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_whole_seconds_in_utc() {
        let at = time::macros::datetime!(2026-11-22 12:34:56.789 +02:00);
        assert_eq!(rfc3339(at), "2026-11-22T10:34:56Z");
        assert_eq!(millis(at), 1_795_343_696_789);
        assert_eq!(millis(from_millis(1_795_343_696_789)), 1_795_343_696_789);
    }
}
