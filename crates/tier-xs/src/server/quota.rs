//! Daily quotas per tenant: what one tenant may write in a UTC day, so that a runaway agent
//! or a leaked token costs at most a known amount. The rate limit bounds requests a minute;
//! these bound the volume those requests carry, which is what AWS bills.
//!
//! Counted in the server process, as the rate limit is: a restart (a Spot replacement)
//! starts the day's counts again, and each server task counts for itself.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::runtime::{RuntimeError, Tenant, now_secs};

/// A tenant's KV writes a day, in KiB (each write counts its key and value, rounded up to
/// whole KiB, as DynamoDB bills write units): 1 GiB, about $0.66 of DynamoDB writes.
pub const KV_KIB_PER_DAY: u64 = 1024 * 1024;
/// A tenant's events a day: 100,000, about $0.10 on EventBridge (and, on small, $0.31 of
/// events-table writes).
pub const EVENTS_PER_DAY: u64 = 100_000;

/// What a quota counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Meter {
    /// KiB of KV keys and values written.
    KvKib,
    /// Events published.
    Events,
}

impl Meter {
    fn what(self) -> &'static str {
        match self {
            Meter::KvKib => "KiB of KV writes",
            Meter::Events => "events",
        }
    }
    fn flag(self) -> &'static str {
        match self {
            Meter::KvKib => "--quota-kv-kib-per-day",
            Meter::Events => "--quota-events-per-day",
        }
    }
}

/// The daily limits (0: no limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaLimits {
    pub kv_kib: u64,
    pub events: u64,
}

impl Default for QuotaLimits {
    fn default() -> Self {
        QuotaLimits {
            kv_kib: KV_KIB_PER_DAY,
            events: EVENTS_PER_DAY,
        }
    }
}

impl QuotaLimits {
    fn of(&self, meter: Meter) -> u64 {
        match meter {
            Meter::KvKib => self.kv_kib,
            Meter::Events => self.events,
        }
    }
}

/// The KiB a KV write of `key` and `value` counts.
pub fn kv_kib(key: &str, value: &str) -> u64 {
    ((key.len() + value.len()) as u64).div_ceil(1024).max(1)
}

/// Each tenant's use today.
pub struct DailyQuota {
    limits: Mutex<QuotaLimits>,
    /// (tenant, meter) -> (UTC day number, used that day).
    used: Mutex<HashMap<(Tenant, Meter), (u64, u64)>>,
}

impl Default for DailyQuota {
    fn default() -> Self {
        DailyQuota::new(QuotaLimits::default())
    }
}

impl DailyQuota {
    pub fn new(limits: QuotaLimits) -> Self {
        DailyQuota {
            limits: Mutex::new(limits),
            used: Mutex::new(HashMap::new()),
        }
    }

    /// Sets the limits (before serving, from the server's flags).
    pub fn set_limits(&self, limits: QuotaLimits) {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner()) = limits;
    }

    pub fn limits(&self) -> QuotaLimits {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts `amount` against the tenant's quota of `meter` for today, or refuses it (and
    /// counts nothing) when it would go over.
    pub fn take(&self, tenant: &Tenant, meter: Meter, amount: u64) -> Result<(), RuntimeError> {
        self.take_at(tenant, meter, amount, now_secs())
    }

    fn take_at(
        &self,
        tenant: &Tenant,
        meter: Meter,
        amount: u64,
        now: u64,
    ) -> Result<(), RuntimeError> {
        let limit = self.limits().of(meter);
        if limit == 0 {
            return Ok(());
        }
        let day = now / 86_400;
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        // Yesterday's counts go: the map holds one entry per tenant and meter.
        let entry = used.entry((tenant.clone(), meter)).or_insert((day, 0));
        if entry.0 != day {
            *entry = (day, 0);
        }
        if entry.1.saturating_add(amount) > limit {
            let resets_in = (day + 1) * 86_400 - now;
            return Err(RuntimeError::Rejected(
                "quota",
                format!(
                    "tenant {tenant} has used {} of its {limit} {} today (UTC); this request needs {amount} more. \
                     The quota starts again in {}h{:02}m (00:00 UTC); the server's {} sets it",
                    entry.1,
                    meter.what(),
                    resets_in / 3600,
                    resets_in % 3600 / 60,
                    meter.flag()
                ),
            ));
        }
        entry.1 += amount;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Tenant {
        Tenant::new(s).unwrap()
    }

    #[test]
    fn a_tenant_writes_up_to_its_daily_quota_and_not_a_byte_more() {
        let q = DailyQuota::new(QuotaLimits {
            kv_kib: 10,
            events: 2,
        });
        let noon = 20_000 * 86_400 + 43_200;
        q.take_at(&t("a"), Meter::KvKib, 6, noon).unwrap();
        q.take_at(&t("a"), Meter::KvKib, 4, noon).unwrap();
        let e = q.take_at(&t("a"), Meter::KvKib, 1, noon).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("used 10 of its 10 KiB of KV writes today"),
            "{text}"
        );
        assert!(text.contains("starts again in 12h00m"), "{text}");
        assert!(text.contains("--quota-kv-kib-per-day"), "{text}");
        // A refused request counts nothing; another tenant and another meter are untouched.
        q.take_at(&t("b"), Meter::KvKib, 10, noon).unwrap();
        q.take_at(&t("a"), Meter::Events, 2, noon).unwrap();
        assert!(q.take_at(&t("a"), Meter::Events, 1, noon).is_err());
        // The next UTC day starts from zero.
        q.take_at(&t("a"), Meter::KvKib, 10, noon + 43_200).unwrap();
    }

    #[test]
    fn a_zero_limit_is_no_limit_and_a_write_counts_whole_kib() {
        let q = DailyQuota::new(QuotaLimits {
            kv_kib: 0,
            events: 0,
        });
        q.take_at(&t("a"), Meter::Events, u64::MAX, 0).unwrap();
        assert_eq!(kv_kib("k", ""), 1);
        assert_eq!(kv_kib("k", &"v".repeat(1023)), 1);
        assert_eq!(kv_kib("k", &"v".repeat(1024)), 2);
        assert_eq!(QuotaLimits::default().kv_kib, 1_048_576);
    }
}
