//! Group operations (spec/tmtp.md §5.10, §5.11, §10.5): GroupInvite and GroupEdit
//! (`join`, `alias`, `drop`), with mnm's checks and texts; member rows in the store, the
//! `invite` and `member` notes to the members.

use common::StoreError;
use common::store::{Member, MemberStatus};

use crate::hub::now_ms;
use crate::proto::Quit;
use crate::proto::header::{Header, Target};
use crate::proto::message::{self, posted};
use crate::queue::wire_id;
use crate::session::{
    Body, MAX_NAME, MIN_NAME, Queueing, Session, Step, copy_data_fields, printable, queue_all, resolve, standard,
    store_small,
};

fn member(uid: &str, alias: &str, status: MemberStatus) -> Member {
    Member { uid: uid.to_owned(), alias: alias.to_owned(), status }
}

impl Session {
    pub(crate) async fn group_invite(&mut self, h: &Header, data: &[u8]) -> Result<Step, StoreError> {
        let hub = self.hub.clone();
        let Some((key, _)) = self.me() else { return Ok(Step::Quit(Quit::Unauthenticated)) };
        let uid = key.uid.clone();
        let id = h.id.clone().unwrap_or_default();
        let (gid, from, to) =
            (h.gid.clone().unwrap_or_default(), h.from.clone().unwrap_or_default(), h.to.clone().unwrap_or_default());
        let soft = |e: String| Ok(Step::Reply(message::ack(&id, Some(&e), None)));
        if gid.len() < MIN_NAME {
            return soft("gid must be 8+ characters".into());
        }
        if hub.store.tmtp_alias_owner(&from).await?.as_deref() != Some(uid.as_str()) {
            return soft(format!("GroupInvite: iByAlias {from} not for iByUid {uid}"));
        }
        let Some(invitee) = hub.store.tmtp_alias_owner(&to).await? else {
            return soft(format!("GroupInvite: iAlias {to} not found"));
        };
        if hub.store.tmtp_alias_owner(&gid).await?.is_some() || gid.len() > MAX_NAME {
            return soft(format!("GroupInvite: gid {gid} not available"));
        }
        if !printable(&gid) {
            return soft(format!("GroupInvite: invalid string '{gid}'"));
        }
        let members = hub.store.tmtp_members(&gid).await?;
        let mut rows: Vec<Member> = Vec::new();
        if members.is_empty() {
            // The inviter founds the group.
            rows.push(member(&uid, &from, MemberStatus::Joined));
        } else {
            if !members.iter().any(|m| m.uid == uid && m.status == MemberStatus::Joined) {
                return soft(format!("GroupInvite: iByUid {uid} not a member"));
            }
            if members.iter().any(|m| m.uid == invitee && m.status == MemberStatus::Joined) {
                return soft(format!("GroupInvite: iAlias {to} already joined"));
            }
        }
        rows.push(member(&invitee, &to, MemberStatus::Invited));
        hub.store.tmtp_set_members(&gid, &rows).await?;

        let t = now_ms();
        let inv = hub.next_id().await?;
        let mut f = standard("invite", &uid, inv, t, data.len() as i64);
        for (k, v) in [("alias", from.clone()), ("gid", gid.clone()), ("to", to.clone())] {
            f.insert(k.into(), v.into());
        }
        copy_data_fields(&mut f, h);
        let nodes = resolve(&hub, &key, &[Target { id: invitee, kind: 1 }], true).await?.unwrap_or_default();
        let invite = Queueing { body: Body::Whole { id: inv, data: data.to_vec() }, header: f, prio: b'M', nodes };
        let mem = hub.next_id().await?;
        let mut f = standard("member", &uid, mem, now_ms(), 0);
        for (k, v) in [("act", "invite".to_owned()), ("alias", to), ("gid", gid.clone())] {
            f.insert(k.into(), v.into());
        }
        let nodes = match resolve(&hub, &key, &[Target { id: gid, kind: 2 }], true).await? {
            Ok(n) => n,
            Err(_) => resolve(&hub, &key, &[], true).await?.unwrap_or_default(),
        };
        // The invitation and the member note in one commit.
        let note = Queueing { body: Body::Whole { id: mem, data: Vec::new() }, header: f, prio: b'M', nodes };
        queue_all(&hub, vec![invite, note]).await?;
        Ok(Step::Reply(message::ack(&id, None, Some((&wire_id(inv), &posted(t))))))
    }

    pub(crate) async fn group_edit(&mut self, h: &Header) -> Result<Step, StoreError> {
        let hub = self.hub.clone();
        let Some((key, _)) = self.me() else { return Ok(Step::Quit(Quit::Unauthenticated)) };
        let uid = key.uid.clone();
        let id = h.id.clone().unwrap_or_default();
        let gid = h.gid.clone().unwrap_or_default();
        let act = h.act.clone().unwrap_or_default();
        let newalias = h.newalias.clone().filter(|a| !a.is_empty());
        let to = h.to.clone().filter(|a| !a.is_empty());
        match act.as_str() {
            "join" => {}
            "alias" if newalias.is_some() => {}
            "drop" if to.is_some() => {}
            _ => return Ok(Step::Quit(Quit::InvalidHeader)),
        }
        let soft = |e: String| Ok(Step::Reply(message::ack(&id, Some(&e), None)));
        let members = if gid.len() > MAX_NAME { Vec::new() } else { hub.store.tmtp_members(&gid).await? };
        let mine = members.iter().find(|m| m.uid == uid).cloned();
        let owns = |alias: &str| {
            let hub = hub.clone();
            let alias = alias.to_owned();
            let uid = uid.clone();
            async move { Ok::<bool, StoreError>(hub.store.tmtp_alias_owner(&alias).await?.as_deref() == Some(uid.as_str())) }
        };
        let mut extra_target: Option<String> = None;
        let (alias_shown, new_shown) = match act.as_str() {
            "join" => {
                let what = "GroupJoin";
                if members.is_empty() {
                    return soft(format!("{what}: iGid {gid} not found"));
                }
                let Some(m) = mine.filter(|m| m.status != MemberStatus::Barred) else {
                    return soft(format!("{what}: iUid {uid} not invited"));
                };
                let alias = match &newalias {
                    Some(a) if a != &m.alias => {
                        if !owns(a).await? {
                            return soft(format!("{what}: iNewAlias {a} not for iUid {uid}"));
                        }
                        a.clone()
                    }
                    _ => m.alias.clone(),
                };
                hub.store.tmtp_set_members(&gid, &[member(&uid, &alias, MemberStatus::Joined)]).await?;
                (alias, None)
            }
            "alias" => {
                let what = "GroupAlias";
                let a = newalias.clone().unwrap_or_default();
                if members.is_empty() {
                    return soft(format!("{what}: iGid {gid} not found"));
                }
                let Some(m) = mine.filter(|m| m.status == MemberStatus::Joined) else {
                    return soft(format!("{what}: iUid {uid} not a member"));
                };
                if a != m.alias {
                    if !owns(&a).await? {
                        return soft(format!("{what}: iNewAlias {a} not for iUid {uid}"));
                    }
                    hub.store.tmtp_set_members(&gid, &[member(&uid, &a, MemberStatus::Joined)]).await?;
                }
                (m.alias, Some(a))
            }
            _ => {
                let what = "GroupQuit";
                let to = to.clone().unwrap_or_default();
                if members.is_empty() {
                    return soft(format!("{what}: iGid {gid} not found"));
                }
                let target_uid = hub.store.tmtp_alias_owner(&to).await?;
                let Some(target) =
                    target_uid.and_then(|t| members.iter().find(|m| m.uid == t && m.alias == to).cloned())
                else {
                    return soft(format!("{what}: iAlias {to} not a member"));
                };
                if target.uid == uid {
                    // Leaving: back to invited, as mnm does.
                    if target.status == MemberStatus::Joined {
                        hub.store.tmtp_set_members(&gid, &[member(&uid, &to, MemberStatus::Invited)]).await?;
                    }
                } else {
                    if mine.is_none_or(|m| m.status != MemberStatus::Joined) {
                        return soft(format!("{what}: iByUid {uid} not a member"));
                    }
                    if target.status != MemberStatus::Barred {
                        hub.store.tmtp_set_members(&gid, &[member(&target.uid, &to, MemberStatus::Barred)]).await?;
                    }
                }
                extra_target = Some(target.uid);
                (to, None)
            }
        };
        let mid = hub.next_id().await?;
        let mut f = standard("member", &uid, mid, now_ms(), 0);
        f.insert("act".into(), act.clone().into());
        f.insert("alias".into(), alias_shown.into());
        f.insert("gid".into(), gid.clone().into());
        if let Some(n) = new_shown {
            f.insert("newalias".into(), n.into());
        }
        let mut targets = vec![Target { id: gid, kind: 2 }];
        if let Some(t) = extra_target {
            targets.push(Target { id: t, kind: 1 });
        }
        let nodes = match resolve(&hub, &key, &targets, true).await? {
            Ok(n) => n,
            // After a self-drop the sender may no longer be a joined member.
            Err(_) => resolve(&hub, &key, &targets[1..], true).await?.unwrap_or_default(),
        };
        store_small(&hub, mid, f, &[], b'M', nodes).await?;
        Ok(Step::Reply(message::ack(&id, None, None)))
    }
}
