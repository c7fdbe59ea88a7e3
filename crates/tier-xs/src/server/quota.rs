//! Quotas per tenant: what one tenant may write in a UTC day, and how many KV entries it may
//! keep, so that a runaway agent or a leaked token costs at most a known amount. The rate
//! limit bounds requests a minute; these bound the volume those requests carry and what stays
//! stored, which is what AWS bills.
//!
//! Daily use is counted in the server process, as the rate limit is: a restart (a Spot
//! replacement) starts the day's counts again, and each server task counts for itself. What
//! a tenant keeps is the store's own count (at most a minute old) plus what this server has
//! added since.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::runtime::{RuntimeError, Tenant, now_secs};

/// A tenant's KV writes a day, in KiB (each write counts its key and value, rounded up to
/// whole KiB, as DynamoDB bills write units): 1 GiB, about $0.66 of DynamoDB writes.
pub const KV_KIB_PER_DAY: u64 = 1024 * 1024;
/// A tenant's events a day: 100,000, about $0.10 on EventBridge (and, on small, $0.31 of
/// events-table writes).
pub const EVENTS_PER_DAY: u64 = 100_000;

/// KV entries a tenant may keep: 100,000. With values of at most 350 KiB that bounds what a
/// tenant stores at about 33 GiB (about $8.40 a month of DynamoDB storage); entries expire
/// after 24 hours unless written with `no_expiry`.
pub const KV_ENTRIES: u64 = 100_000;

/// MiB of files a tenant may keep in a layer's file store (the small tier's artifacts): 5 GiB,
/// about $0.12 a month in S3 Standard (the bucket keeps overwritten and deleted versions 90
/// days more).
pub const STORED_MIB: u64 = 5 * 1024;

/// What a tenant keeps, counted by its store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kept {
    /// KV entries.
    KvEntries,
    /// Bytes of files (artifacts).
    StoredBytes,
}

/// How long a tenant's counted entries are trusted before the store is asked again.
const KEPT_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(60);

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

/// The limits (0: no limit): daily KiB of KV writes and events, KV entries and MiB of files
/// kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaLimits {
    pub kv_kib: u64,
    pub events: u64,
    pub kv_entries: u64,
    pub stored_mib: u64,
}

impl Default for QuotaLimits {
    fn default() -> Self {
        QuotaLimits {
            kv_kib: KV_KIB_PER_DAY,
            events: EVENTS_PER_DAY,
            kv_entries: KV_ENTRIES,
            stored_mib: STORED_MIB,
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

/// Each tenant's use today, and the KV entries it keeps.
pub struct DailyQuota {
    limits: Mutex<QuotaLimits>,
    /// (tenant, meter) -> (UTC day number, used that day).
    used: Mutex<HashMap<(Tenant, Meter), (u64, u64)>>,
    /// (tenant, what) -> (amount kept, when the store counted it).
    kept: Mutex<HashMap<(Tenant, Kept), (u64, std::time::Instant)>>,
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
            kept: Mutex::new(HashMap::new()),
        }
    }

    /// Sets the limits (before serving, from the server's flags).
    pub fn set_limits(&self, limits: QuotaLimits) {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner()) = limits;
    }

    pub fn limits(&self) -> QuotaLimits {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the tenant keeps, if its store counted it less than a minute ago.
    pub fn kept(&self, tenant: &Tenant, what: Kept) -> Option<u64> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.get(&(tenant.clone(), what))
            .filter(|(_, at)| at.elapsed() < KEPT_MAX_AGE)
            .map(|(n, _)| *n)
    }

    /// The store's count of what the tenant keeps.
    pub fn counted(&self, tenant: &Tenant, what: Kept, amount: u64) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.insert((tenant.clone(), what), (amount, std::time::Instant::now()));
    }

    /// What this server added (or removed) since the count.
    pub fn kept_changed(&self, tenant: &Tenant, what: Kept, by: i64) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((n, _)) = kept.get_mut(&(tenant.clone(), what)) {
            *n = n.saturating_add_signed(by);
        }
    }

    /// Forgets the count (something went whose size this server does not know): the next
    /// check asks the store.
    pub fn recount(&self, tenant: &Tenant, what: Kept) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.remove(&(tenant.clone(), what));
    }

    /// Refuses a new KV entry of a tenant that keeps `kept` of them, at its limit.
    pub fn admit_entry(&self, tenant: &Tenant, kept: u64) -> Result<(), RuntimeError> {
        let limit = self.limits().kv_entries;
        if limit == 0 || kept < limit {
            return Ok(());
        }
        Err(RuntimeError::Rejected(
            "quota",
            format!(
                "tenant {tenant} keeps {kept} KV entries, its limit is {limit}: delete some (kv_delete) or let them expire \
                 before adding new keys; existing keys can still be written. The server's --quota-kv-entries sets it"
            ),
        ))
    }

    /// Refuses `adding` bytes of files for a tenant that keeps `kept` bytes, past its limit.
    pub fn admit_bytes(&self, tenant: &Tenant, kept: u64, adding: u64) -> Result<(), RuntimeError> {
        let limit = self.limits().stored_mib.saturating_mul(1024 * 1024);
        if limit == 0 || kept.saturating_add(adding) <= limit {
            return Ok(());
        }
        Err(RuntimeError::Rejected(
            "quota",
            format!(
                "tenant {tenant} keeps {} MiB of files and this one adds {} MiB, past its limit of {} MiB: \
                 delete some first. The server's --quota-stored-mib sets it",
                kept.div_ceil(1024 * 1024),
                adding.div_ceil(1024 * 1024),
                limit / (1024 * 1024)
            ),
        ))
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
            kv_entries: 0,
            stored_mib: 0,
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
            kv_entries: 0,
            stored_mib: 0,
        });
        q.take_at(&t("a"), Meter::Events, u64::MAX, 0).unwrap();
        assert_eq!(kv_kib("k", ""), 1);
        assert_eq!(kv_kib("k", &"v".repeat(1023)), 1);
        assert_eq!(kv_kib("k", &"v".repeat(1024)), 2);
        assert_eq!(QuotaLimits::default().kv_kib, 1_048_576);
    }

    #[test]
    fn a_tenant_at_its_entry_limit_may_not_add_a_key_and_counts_age_out() {
        let q = DailyQuota::new(QuotaLimits {
            kv_entries: 3,
            ..QuotaLimits::default()
        });
        let kv = Kept::KvEntries;
        assert_eq!(q.kept(&t("a"), kv), None, "never counted");
        q.counted(&t("a"), kv, 2);
        assert_eq!(q.kept(&t("a"), kv), Some(2));
        assert_eq!(q.kept(&t("a"), Kept::StoredBytes), None, "counted apart");
        q.admit_entry(&t("a"), 2).unwrap();
        q.kept_changed(&t("a"), kv, 1);
        let e = q
            .admit_entry(&t("a"), q.kept(&t("a"), kv).unwrap())
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("keeps 3 KV entries, its limit is 3"),
            "{text}"
        );
        assert!(text.contains("--quota-kv-entries"), "{text}");
        q.kept_changed(&t("a"), kv, -1);
        q.admit_entry(&t("a"), q.kept(&t("a"), kv).unwrap())
            .unwrap();
        // Never below zero; another tenant has its own count.
        q.kept_changed(&t("a"), kv, -10);
        assert_eq!(q.kept(&t("a"), kv), Some(0));
        assert_eq!(q.kept(&t("b"), kv), None);
        // No limit, no refusal.
        q.set_limits(QuotaLimits {
            kv_entries: 0,
            ..QuotaLimits::default()
        });
        q.admit_entry(&t("a"), u64::MAX).unwrap();
    }

    #[test]
    fn files_past_the_stored_limit_are_refused_in_whole_mib() {
        let q = DailyQuota::new(QuotaLimits {
            stored_mib: 2,
            ..QuotaLimits::default()
        });
        let mib = 1024 * 1024;
        q.admit_bytes(&t("a"), mib, mib).unwrap();
        let text = q
            .admit_bytes(&t("a"), mib, mib + 1)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("keeps 1 MiB of files and this one adds 2 MiB, past its limit of 2 MiB"),
            "{text}"
        );
        assert!(text.contains("--quota-stored-mib"), "{text}");
    }
}
