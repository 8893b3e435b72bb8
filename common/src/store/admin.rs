//! The administrator's operations of the [`Store`] (`mmadmin`, design.md "Schema"): users,
//! boxes, aliases and `nofrom` rows, and the check of what the plain-SQL route can leave
//! behind. The SQL is in `sql`, the transactions in `ops`. Names are taken as given:
//! `mmadmin` lowercases box addresses and alias patterns before they get here.

use super::model::{BoxEntry, Findings, OwnsBoxes, Repaired, UserEntry};
use super::{Store, dispatch, mysql, postgres, retrying, sqlite};
use crate::error::StoreError;

/// The administrator's operations. Every method fails with [`StoreError::Db`] on a
/// database error (a duplicate name is the database's unique-key violation), and with
/// [`StoreError::NotFound`] where it says so.
impl Store {
    /// Adds user `name` with stored password value `passwd` (a PHC string).
    ///
    /// # Errors
    /// [`StoreError::Db`], also when the name is taken.
    pub async fn admin_add_user(&self, name: &str, passwd: &str) -> Result<(), StoreError> {
        retrying("user add", || async { dispatch!(self, admin_add_user(name, passwd)) }).await
    }

    /// Every user, by name, with how many boxes each owns.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn admin_users(&self) -> Result<Vec<UserEntry>, StoreError> {
        dispatch!(self, admin_users())
    }

    /// Deletes user `name`, unless boxes still belong to it (`Ok(Err(OwnsBoxes))`).
    ///
    /// # Errors
    /// [`StoreError::NotFound`]: no such user.
    pub async fn admin_delete_user(&self, name: &str) -> Result<Result<(), OwnsBoxes>, StoreError> {
        let user = self.user_password(name).await?.ok_or(StoreError::NotFound)?;
        retrying("user del", || async { dispatch!(self, admin_delete_user(user.id)) }).await
    }

    /// Adds box `address` owned by user `owner`, with limits in bytes and messages (0 =
    /// unlimited).
    ///
    /// # Errors
    /// [`StoreError::NotFound`]: no such user; [`StoreError::Db`], also when the box
    /// exists or the address is not in lowercase (migration 0004).
    pub async fn admin_add_box(
        &self,
        address: &str,
        owner: &str,
        max_size: i64,
        max_mails: i64,
    ) -> Result<(), StoreError> {
        let user = self.user_password(owner).await?.ok_or(StoreError::NotFound)?;
        retrying("box add", || async { dispatch!(self, admin_add_box(address, user.id, max_size, max_mails)) }).await
    }

    /// Sets the limits of box `address` (bytes, messages; 0 = unlimited).
    ///
    /// # Errors
    /// [`StoreError::NotFound`]: no such box.
    pub async fn admin_box_limits(&self, address: &str, max_size: i64, max_mails: i64) -> Result<(), StoreError> {
        let found =
            retrying("box limits", || async { dispatch!(self, admin_box_limits(address, max_size, max_mails)) })
                .await?;
        if found { Ok(()) } else { Err(StoreError::NotFound) }
    }

    /// Every box, by address, with its owner, limits and counters.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn admin_boxes(&self) -> Result<Vec<BoxEntry>, StoreError> {
        dispatch!(self, admin_boxes())
    }

    /// Deletes box `address` in one transaction with its copies, the aliases to it, its
    /// POP3 lease, and the message bodies no other box refers to.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]: no such box.
    pub async fn admin_delete_box(&self, address: &str) -> Result<(), StoreError> {
        let found = retrying("box del", || async { dispatch!(self, admin_delete_box(address)) }).await?;
        if found { Ok(()) } else { Err(StoreError::NotFound) }
    }

    /// Adds alias `pattern` to box `target`, owned by the box's owner.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]: no such box; [`StoreError::Db`], also when the alias
    /// exists.
    pub async fn admin_add_alias(&self, pattern: &str, target: &str) -> Result<(), StoreError> {
        let owner = self.box_owner(target).await?.ok_or(StoreError::NotFound)?;
        retrying("alias add", || async { dispatch!(self, admin_add_alias(pattern, target, owner.user_id)) }).await
    }

    /// Every alias `(pattern, box)`, by pattern then box.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn admin_aliases(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut all: Vec<(String, String)> = dispatch!(self, aliases())?;
        all.sort();
        Ok(all)
    }

    /// Deletes alias `pattern` (to `target` only, when given); how many rows went.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn admin_delete_alias(&self, pattern: &str, target: Option<&str>) -> Result<u64, StoreError> {
        retrying("alias del", || async { dispatch!(self, admin_delete_alias(pattern, target)) }).await
    }

    /// Adds `nofrom` pattern `pattern`.
    ///
    /// # Errors
    /// [`StoreError::Db`], also when it exists.
    pub async fn admin_add_nofrom(&self, pattern: &str) -> Result<(), StoreError> {
        retrying("nofrom add", || async { dispatch!(self, admin_add_nofrom(pattern)) }).await
    }

    /// Every `nofrom` pattern, sorted.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn admin_nofrom(&self) -> Result<Vec<String>, StoreError> {
        let mut all: Vec<String> = dispatch!(self, nofrom())?;
        all.sort();
        Ok(all)
    }

    /// Deletes `nofrom` pattern `pattern`; how many rows went.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn admin_delete_nofrom(&self, pattern: &str) -> Result<u64, StoreError> {
        retrying("nofrom del", || async { dispatch!(self, admin_delete_nofrom(pattern)) }).await
    }

    /// Looks for what the plain-SQL route lets slip (see [`Findings`]).
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn admin_check(&self) -> Result<Findings, StoreError> {
        let mut counter_drift = Vec::new();
        for address in dispatch!(self, admin_counter_drift())? {
            if let Some(b) = self.find_box(&address).await? {
                let stored = super::Usage { bytes: b.size, messages: b.mails };
                counter_drift.push((address.clone(), stored, self.recount(&address).await?));
            }
        }
        Ok(Findings {
            mixed_case_boxes: self.mixed_case_boxes().await?,
            dangling_aliases: dispatch!(self, admin_dangling_aliases())?,
            ownerless_boxes: dispatch!(self, admin_ownerless_boxes())?,
            counter_drift,
            orphan_messages: dispatch!(self, admin_orphan_messages())?,
            stale_leases: dispatch!(self, admin_stale_leases(super::unix_now()))?,
        })
    }

    /// Repairs what can be repaired of `found`, in one transaction: the counters of its
    /// drifted boxes are set to a recount (made in that transaction), message bodies no
    /// copy refers to and expired POP3 leases are deleted. Addresses, aliases and owners
    /// are the administrator's to decide.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub async fn admin_repair(&self, found: &Findings) -> Result<Repaired, StoreError> {
        let boxes: Vec<String> = found.counter_drift.iter().map(|(b, _, _)| b.clone()).collect();
        let now = super::unix_now();
        retrying("repair", || async { dispatch!(self, admin_repair(&boxes, now)) }).await
    }
}
