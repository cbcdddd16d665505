//! The contract's `timestamp`: RFC 3339 in UTC with whole seconds (`2026-11-22T10:34:56Z`), so
//! stored strings sort by time. The API, the worker and the CLI all write it here.

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// `at` as the contract writes it.
pub fn format(at: OffsetDateTime) -> String {
    let utc = at.to_offset(UtcOffset::UTC);
    utc.replace_nanosecond(0)
        .unwrap_or(utc)
        .format(&Rfc3339)
        .unwrap_or_else(|_| utc.unix_timestamp().to_string())
}

/// Now, as the contract writes it.
pub fn now() -> String {
    format(OffsetDateTime::now_utc())
}

/// A timestamp as the contract writes it (any RFC 3339 is read); `None` for anything else.
pub fn parse(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_whole_seconds_in_utc() {
        let at = time::OffsetDateTime::from_unix_timestamp_nanos(1_795_343_696_789_000_000)
            .expect("in range")
            .to_offset(time::UtcOffset::from_hms(2, 0, 0).expect("an offset"));
        assert_eq!(super::format(at), "2026-11-22T10:34:56Z");
        assert_eq!(
            super::parse("2026-11-22T10:34:56Z")
                .map(super::format)
                .as_deref(),
            Some("2026-11-22T10:34:56Z")
        );
        assert_eq!(super::parse("yesterday"), None);
        assert!(super::now().ends_with('Z'));
        assert_eq!(super::now().len(), "2026-11-22T10:34:56Z".len());
    }
}
