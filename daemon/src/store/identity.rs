//! Who this device is and which apps hold tokens: enrolled credentials and
//! each app's push token.

use redb::ReadableTable;

use super::db::Store;
use super::error::{StoreError, dberr};
use super::schema::{
    DEVICE_ID, DEVICE_SECRET, INBOX, LAST_COMMITTED_SEQ, META_STR, META_U64, TOKENS,
};

impl Store {
    /// Stored credentials (device id, secret).
    pub fn credentials(&self) -> Result<Option<(String, String)>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(META_STR).map_err(dberr)?;
        let id = t
            .get(DEVICE_ID)
            .map_err(dberr)?
            .map(|v| v.value().to_string());
        let secret = t
            .get(DEVICE_SECRET)
            .map_err(dberr)?
            .map(|v| v.value().to_string());
        Ok(id.zip(secret))
    }

    /// Stores enrolled credentials. A new identity means a new sequence space,
    /// so the resume point starts over.
    pub fn set_credentials(&self, device_id: &str, secret: &str) -> Result<(), StoreError> {
        let txn = self.write()?;
        {
            let mut t = txn.open_table(META_STR).map_err(dberr)?;
            t.insert(DEVICE_ID, device_id).map_err(dberr)?;
            t.insert(DEVICE_SECRET, secret).map_err(dberr)?;
            let mut m = txn.open_table(META_U64).map_err(dberr)?;
            m.insert(LAST_COMMITTED_SEQ, 0).map_err(dberr)?;
        }
        self.finish(txn.commit())
    }
    /// Stores an app's token.
    pub fn set_token(&self, app_id: &str, token: &str) -> Result<(), StoreError> {
        let txn = self.write()?;
        txn.open_table(TOKENS)
            .map_err(dberr)?
            .insert(app_id, token)
            .map_err(dberr)?;
        self.finish(txn.commit())
    }

    /// Removes an app's token if it is `token` (or any, with `None`).
    pub fn remove_token(&self, app_id: &str, token: Option<&str>) -> Result<bool, StoreError> {
        let txn = self.write()?;
        let removed = {
            let mut t = txn.open_table(TOKENS).map_err(dberr)?;
            let current = t.get(app_id).map_err(dberr)?.map(|v| v.value().to_string());
            match (current, token) {
                (Some(cur), Some(want)) if cur != want => false,
                (Some(_), _) => {
                    t.remove(app_id).map_err(dberr)?;
                    true
                }
                (None, _) => false,
            }
        };
        self.finish(txn.commit())?;
        Ok(removed)
    }

    /// An app's token.
    pub fn token(&self, app_id: &str) -> Result<Option<String>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(TOKENS).map_err(dberr)?;
        Ok(t.get(app_id).map_err(dberr)?.map(|v| v.value().to_string()))
    }

    /// Every app id with a token or pending messages, sorted.
    pub fn known_apps(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.read()?;
        let mut apps = std::collections::BTreeSet::new();
        let tokens = txn.open_table(TOKENS).map_err(dberr)?;
        for entry in tokens.iter().map_err(dberr)? {
            apps.insert(entry.map_err(dberr)?.0.value().to_string());
        }
        // Skip-scan the inbox: one lookup per app, not one per message.
        let inbox = txn.open_table(INBOX).map_err(dberr)?;
        let mut next = inbox
            .first()
            .map_err(dberr)?
            .map(|(k, _)| k.value().0.to_string());
        while let Some(app) = next {
            next = inbox
                .range::<(&str, u64)>((
                    std::ops::Bound::Excluded((app.as_str(), u64::MAX)),
                    std::ops::Bound::Unbounded,
                ))
                .map_err(dberr)?
                .next()
                .transpose()
                .map_err(dberr)?
                .map(|(k, _)| k.value().0.to_string());
            apps.insert(app);
        }
        Ok(apps.into_iter().collect())
    }
}
