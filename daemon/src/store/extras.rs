//! What the store keeps for the IM contract besides the inbox:
//! - `settings`: `(app_id, channel_id)` -> packed [`Settings`] (channel "" is
//!   app-wide), durable because they are the user's choice;
//! - `revoked`: app id -> reason of a forced logout the app has not been told
//!   about yet (it was not connected), handed out at its next hello;
//! - `collapse`: `(app_id, collapse_key)` -> arrival of the newest message
//!   with that key, so a newer one replaces it while it is still pending
//!   (entries may point at acked arrivals: removing a missing one is a no-op);
//! - drop counters by reason in `meta_u64` (`drops.<reason>`), for Status.

use redb::ReadableTable;

use super::db::Store;
use super::error::{StoreError, dberr};
use super::schema::{
    DROPS_PREFIX, INBOX, META_U64, REVOKED, SETTINGS, TOKENS, add_drop, lookup, purge_inbox,
};
use crate::settings::Settings;

/// Why the daemon dropped (or did not show) a message.
pub const DROP_REASONS: [&str; 4] = ["expired", "collapsed", "revoked", "disabled"];

impl Store {
    /// The settings in force for `app_id`'s messages on `channel_id` ("" for none).
    pub fn display_settings(
        &self,
        app_id: &str,
        channel_id: &str,
    ) -> Result<(Settings, Settings), StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(SETTINGS).map_err(dberr)?;
        lookup(&t, app_id, channel_id)
    }

    /// Stores one level of an app's settings (channel "" = app-wide).
    pub fn set_settings(
        &self,
        app_id: &str,
        channel_id: &str,
        s: Settings,
    ) -> Result<(), StoreError> {
        let txn = self.write()?;
        txn.open_table(SETTINGS)
            .map_err(dberr)?
            .insert((app_id, channel_id), s.pack())
            .map_err(dberr)?;
        self.finish(txn.commit())
    }

    /// Every stored level of an app's settings: (channel id, settings), "" first.
    pub fn app_settings(&self, app_id: &str) -> Result<Vec<(String, Settings)>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(SETTINGS).map_err(dberr)?;
        let mut out = Vec::new();
        for entry in t
            .range((app_id, "")..=(app_id, "\u{10FFFF}"))
            .map_err(dberr)?
        {
            let (k, v) = entry.map_err(dberr)?;
            out.push((k.value().1.to_string(), Settings::unpack(v.value())));
        }
        Ok(out)
    }

    /// Drop counts by reason, every reason present, exact as of `now_ms`
    /// (gateway wall clock): messages that expired in the inbox but were not
    /// swept yet (their app has not connected since) count as `expired`
    /// already. The sweep later moves them into the counter and out of the
    /// inbox in one transaction, so nothing is counted twice, and no timer
    /// has to wake the daemon to keep the figure right.
    pub fn drops(&self, now_ms: u64) -> Result<Vec<(String, u64)>, StoreError> {
        let txn = self.read()?;
        let meta = txn.open_table(META_U64).map_err(dberr)?;
        let mut unswept = 0u64;
        for entry in txn
            .open_table(INBOX)
            .map_err(dberr)?
            .iter()
            .map_err(dberr)?
        {
            let (_, v) = entry.map_err(dberr)?;
            let (expires, _, _) = v.value();
            if expires != 0 && expires < now_ms {
                unswept += 1;
            }
        }
        DROP_REASONS
            .iter()
            .map(|r| {
                let key = format!("{DROPS_PREFIX}{r}");
                let mut n = meta
                    .get(key.as_str())
                    .map_err(dberr)?
                    .map_or(0, |v| v.value());
                if *r == "expired" {
                    n += unswept;
                }
                Ok(((*r).to_string(), n))
            })
            .collect()
    }

    /// A write transaction that commits (doctor's "store writable").
    pub fn probe_write(&self, now_ms: u64) -> Result<(), StoreError> {
        let txn = self.write()?;
        txn.open_table(META_U64)
            .map_err(dberr)?
            .insert("doctor_probe", now_ms)
            .map_err(dberr)?;
        self.finish(txn.commit())
    }

    /// Counts `n` drops for `reason`.
    pub fn count_drop(&self, reason: &str, n: u64) -> Result<(), StoreError> {
        let txn = self.write()?;
        {
            let mut meta = txn.open_table(META_U64).map_err(dberr)?;
            add_drop(&mut meta, reason, n)?;
        }
        self.finish(txn.commit())
    }

    /// The gateway revoked `token` of `app_id`: if it is the app's token here,
    /// drop it and every pending message of the app (counted "revoked") and
    /// remember the revocation for the app's next hello, in one transaction.
    /// Returns the number of dropped messages, or None for a token that is
    /// not (or no longer) the app's (already handled: nothing to tell).
    pub fn revoke(
        &self,
        app_id: &str,
        token: &str,
        reason: &str,
    ) -> Result<Option<u64>, StoreError> {
        let txn = self.write()?;
        let dropped = {
            let mut tokens = txn.open_table(TOKENS).map_err(dberr)?;
            let current = tokens
                .get(app_id)
                .map_err(dberr)?
                .map(|v| v.value().to_string());
            if current.as_deref() != Some(token) {
                return Ok(None);
            }
            tokens.remove(app_id).map_err(dberr)?;
            let n = purge_inbox(&txn, app_id)?;
            let mut meta = txn.open_table(META_U64).map_err(dberr)?;
            add_drop(&mut meta, "revoked", n)?;
            txn.open_table(REVOKED)
                .map_err(dberr)?
                .insert(app_id, reason)
                .map_err(dberr)?;
            n
        };
        self.finish(txn.commit())?;
        Ok(Some(dropped))
    }

    /// A revocation the app has not been told about, if any.
    pub fn pending_revocation(&self, app_id: &str) -> Result<Option<String>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(REVOKED).map_err(dberr)?;
        Ok(t.get(app_id).map_err(dberr)?.map(|v| v.value().to_string()))
    }

    /// The app was told (or registered again): forget the revocation.
    pub fn clear_revocation(&self, app_id: &str) -> Result<(), StoreError> {
        let txn = self.write()?;
        txn.open_table(REVOKED)
            .map_err(dberr)?
            .remove(app_id)
            .map_err(dberr)?;
        self.finish(txn.commit())
    }
}
