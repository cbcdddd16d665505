//! Monthly job quotas: each tier includes a number of jobs per calendar month (UTC). And the
//! operator's model budgets, for every tier or one: what one job, and one account in a month,
//! may spend on models through the gateway.

use std::collections::BTreeMap;

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

/// The operator's model budgets (`--max-job-model-cost-usd`, `--max-account-model-cost-usd`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelBudgets {
    /// The most one job may spend: a job's own `max_cost_usd` may ask for less, never more.
    pub job: TierBudget,
    /// The most an account's jobs may spend in a calendar month.
    pub account_month: TierBudget,
}

/// A budget in micro-dollars, for every tier and for some tiers in particular.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TierBudget {
    every: Option<u64>,
    tiers: BTreeMap<&'static str, u64>,
}

impl TierBudget {
    /// Budgets as the operator gave them, in order: a later one for the same tiers wins.
    pub fn new(entries: impl IntoIterator<Item = BudgetEntry>) -> Self {
        let mut budget = Self::default();
        for entry in entries {
            match entry.tier {
                Some(tier) => {
                    budget.tiers.insert(tier.as_str(), entry.micros);
                }
                None => budget.every = Some(entry.micros),
            }
        }
        budget
    }

    /// `tier`'s budget: its own, else the one for every tier.
    pub fn for_tier(&self, tier: SubscriptionTier) -> Option<u64> {
        self.tiers.get(tier.as_str()).copied().or(self.every)
    }
}

/// One `[TIER=]USD` of the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetEntry {
    pub tier: Option<SubscriptionTier>,
    pub micros: u64,
}

/// The largest budget taken, in US dollars: its micro-dollars fit any counter.
const MAX_BUDGET_USD: f64 = 1e9;

/// Reads `USD` (every tier) or `TIER=USD`, a positive amount of US dollars.
pub fn parse_budget(text: &str) -> Result<BudgetEntry, String> {
    let (tier, usd) = match text.split_once('=') {
        Some((tier, usd)) => {
            let tier: SubscriptionTier = tier.trim().parse().map_err(|_| {
                let tiers: Vec<&str> = SubscriptionTier::ALL.iter().map(|t| t.as_str()).collect();
                format!(
                    "`{tier}` is not a tier; give USD for every tier, or TIER=USD with TIER one of {}",
                    tiers.join(", ")
                )
            })?;
            (Some(tier), usd)
        }
        None => (None, text),
    };
    match usd.trim().parse::<f64>() {
        Ok(usd) if usd.is_finite() && usd > 0.0 && usd <= MAX_BUDGET_USD => Ok(BudgetEntry {
            tier,
            micros: dollars_to_micros(usd),
        }),
        _ => Err(format!("`{usd}` is not a positive number of US dollars")),
    }
}

/// Whole micro-dollars of a positive amount of `usd`.
pub fn dollars_to_micros(usd: f64) -> u64 {
    // A float's cast to an integer saturates: an absurd budget is the largest there is.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let micros = (usd * 1_000_000.0).round() as u64;
    micros
}

/// US dollars of `micros`, for people to read.
pub fn micros_to_dollars(micros: u64) -> f64 {
    micros as f64 / 1_000_000.0
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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_tiers_own_budget_wins_over_the_one_for_every_tier() {
        let budget = TierBudget::new(
            ["free=5", "20", "pro=0.5", "free=2.25"].map(|t| parse_budget(t).unwrap()),
        );
        assert_eq!(budget.for_tier(SubscriptionTier::Free), Some(2_250_000));
        assert_eq!(budget.for_tier(SubscriptionTier::Pro), Some(500_000));
        assert_eq!(
            budget.for_tier(SubscriptionTier::Enterprise),
            Some(20_000_000)
        );
        let only_free = TierBudget::new([parse_budget("free=1").unwrap()]);
        assert_eq!(only_free.for_tier(SubscriptionTier::Pro), None);
        assert_eq!(TierBudget::default().for_tier(SubscriptionTier::Free), None);
    }

    #[test]
    fn a_budget_names_what_is_wrong_with_it() {
        assert_eq!(
            parse_budget("gold=5").unwrap_err(),
            "`gold` is not a tier; give USD for every tier, or TIER=USD with TIER one of free, pro, enterprise"
        );
        for bad in ["0", "-1", "NaN", "inf", "1e10", "five", "pro=", "pro=0"] {
            let err = parse_budget(bad).unwrap_err();
            assert!(
                err.ends_with("is not a positive number of US dollars"),
                "{bad}: {err}"
            );
        }
    }

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
