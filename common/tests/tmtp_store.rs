#![allow(clippy::unwrap_used)] // tests fail by panicking

//! The TMTP store on every backend (spec/tmtp.md §8, §10): accounts and nodes, aliases
//! and their namespace shared with groups, group members, and the per-node queues with
//! their durability and retention rules.

use common::store::{
    AddAlias, AddNode, Member, MemberStatus, Node, Queued, ReadyMessage, TmtpMessage, UploadPart, Wake, WholeMessage,
};
use common::testing::TestDb;

fn node(uid: &str, num: i64) -> Node {
    Node { uid: uid.into(), num }
}

fn member(uid: &str, alias: &str, status: MemberStatus) -> Member {
    Member { uid: uid.into(), alias: alias.into(), status }
}

fn queued(prio: &str, message: i64) -> Queued {
    Queued { prio: prio.into(), message }
}

#[tokio::test]
async fn accounts_nodes_and_aliases() {
    for db in TestDb::all().await {
        let s = &db.store;
        s.tmtp_register("UID1", "HASH1", None).await.unwrap();
        s.tmtp_register("UID2", "HASH2", Some(r#"{"Subject":"s"}"#)).await.unwrap();
        assert!(s.tmtp_register("UID1", "HASH3", None).await.is_err(), "{}: uid is unique", db.store.backend());
        assert!(s.tmtp_register("UID3", "HASH1", None).await.is_err(), "node hashes are unique");
        assert_eq!(s.tmtp_node("HASH2").await.unwrap(), Some(node("UID2", 1)));
        assert_eq!(s.tmtp_node("hash2").await.unwrap(), None, "hashes compare exactly");
        assert!(s.tmtp_user_exists("UID1").await.unwrap());
        assert!(!s.tmtp_user_exists("uid1").await.unwrap(), "uids compare exactly");
        let nodes_of = |uid: &'static str| async move { s.tmtp_users_nodes(&[uid]).await.unwrap().remove(uid) };
        assert_eq!(nodes_of("UID1").await, Some(vec![1]));
        assert_eq!(nodes_of("uid1").await, None, "no such account");
        let known = |v: &[&str]| v.iter().map(|u| u.to_string()).collect::<std::collections::HashSet<_>>();
        assert_eq!(s.tmtp_users_among(&["UID1", "uid1", "nobody", "UID2"]).await.unwrap(), known(&["UID1", "UID2"]));
        let many: Vec<String> = (0..140).map(|i| if i == 135 { "UID2".into() } else { format!("none{i}") }).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(s.tmtp_users_among(&many).await.unwrap(), known(&["UID2"]), "past the first chunk");
        assert!(s.tmtp_users_among(&[]).await.unwrap().is_empty());

        assert_eq!(s.tmtp_add_alias("UID1", "test1234").await.unwrap(), AddAlias::Added);
        assert_eq!(s.tmtp_add_alias("UID1", "test1234").await.unwrap(), AddAlias::Added, "re-adding one's own alias");
        assert_eq!(s.tmtp_add_alias("UID2", "test1234").await.unwrap(), AddAlias::Taken);
        assert_eq!(s.tmtp_add_alias("UID2", "Test1234").await.unwrap(), AddAlias::Added, "aliases are case-sensitive");
        assert_eq!(s.tmtp_alias_owner("Test1234").await.unwrap().as_deref(), Some("UID2"));
        assert_eq!(s.tmtp_alias_owner("nobody-at-all").await.unwrap(), None);
        s.tmtp_set_members(
            "talktalk",
            &[member("UID1", "test1234", MemberStatus::Joined), member("UID2", "Test1234", MemberStatus::Invited)],
        )
        .await
        .unwrap();
        assert_eq!(s.tmtp_add_alias("UID1", "talktalk").await.unwrap(), AddAlias::NotAvailable);
        assert!(s.tmtp_group_exists("talktalk").await.unwrap());
        assert_eq!(s.tmtp_group_nodes("talktalk").await.unwrap(), vec![node("UID1", 1)], "joined members only");
        assert!(!s.tmtp_group_exists("test1234").await.unwrap());
        s.tmtp_set_members("talktalk", &[member("UID2", "Test1234", MemberStatus::Joined)]).await.unwrap();
        assert_eq!(
            s.tmtp_members("talktalk").await.unwrap(),
            vec![member("UID1", "test1234", MemberStatus::Joined), member("UID2", "Test1234", MemberStatus::Joined)]
        );
        // Overlong names are just unknown, never an error (spec §15.1).
        let long = "x".repeat(300);
        assert_eq!(s.tmtp_alias_owner(&long).await.unwrap(), None);
        assert!(!s.tmtp_user_exists(&long).await.unwrap());
        assert!(!s.tmtp_group_exists(&long).await.unwrap());

        // Nodes: numbered on, at most `max` live ones.
        assert_eq!(s.tmtp_add_node("UID1", "HASH1b", 1, 3).await.unwrap(), AddNode::Added(2));
        assert_eq!(s.tmtp_add_node("UID1", "HASH1c", 1, 3).await.unwrap(), AddNode::Added(3));
        assert_eq!(s.tmtp_add_node("UID1", "HASH1d", 1, 3).await.unwrap(), AddNode::TooMany);
        assert_eq!(nodes_of("UID1").await, Some(vec![1, 2, 3]));
        assert_eq!(s.tmtp_node("HASH1c").await.unwrap(), Some(node("UID1", 3)));
        // Several accounts' nodes at once: exact uids, none for a uid without an account,
        // an empty list for an account whose nodes are all defunct.
        s.tmtp_register("UID3", "HASH3x", None).await.unwrap();
        db.sql("UPDATE tmtp_node SET node_defunct = 1 WHERE node_uid = 'UID3'").await;
        let accounts = |list: &[(&str, &[i64])]| {
            list.iter().map(|(u, n)| (u.to_string(), n.to_vec())).collect::<std::collections::HashMap<_, _>>()
        };
        let all = s.tmtp_users_nodes(&["UID1", "uid1", "nobody", "UID2", "UID3"]).await.unwrap();
        assert_eq!(all, accounts(&[("UID1", &[1, 2, 3]), ("UID2", &[1]), ("UID3", &[])]), "{}", db.store.backend());
        let many: Vec<String> = (0..140).map(|i| if i == 135 { "UID1".into() } else { format!("none{i}") }).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(s.tmtp_users_nodes(&many).await.unwrap(), accounts(&[("UID1", &[1, 2, 3])]), "past the first chunk");
        assert!(s.tmtp_users_nodes(&[]).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn queues_deliver_in_order_and_messages_leave_with_the_last_ack() {
    for db in TestDb::all().await {
        let s = &db.store;
        let name = db.store.backend();
        s.tmtp_register("A", "HA", None).await.unwrap();
        s.tmtp_register("B", "HB", None).await.unwrap();
        assert_eq!(s.tmtp_add_node("B", "HB2", 1, 100).await.unwrap(), AddNode::Added(2));
        let nodes = |list: &[(&str, i64)]| list.iter().map(|(u, n)| node(u, *n)).collect::<Vec<_>>();
        assert_eq!(s.tmtp_max_message_id().await.unwrap(), 0);

        // A 200 KB post in three chunks, to A.1, B.1 and B.2, in three writes as mmtmtpd
        // streams it: the first begins the message, the last makes it deliverable.
        let big = 1_795_000_000_000_000_100i64;
        let chunk: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        s.tmtp_upload(big, UploadPart { begin: true, chunk: Some((0, chunk.clone())), ready: None }).await.unwrap();
        s.tmtp_put_chunk(big, 1, &chunk).await.unwrap();
        assert_eq!(s.tmtp_message(big).await.unwrap(), None, "{name}: not deliverable before commit");
        let to = nodes(&[("A", 1), ("B", 1), ("B", 2)]);
        let ready =
            ReadyMessage { header: b"0010{\"op\":\"delivery\"}", size: 3 * 65536, prio: "M", nodes: &to, remote: None };
        s.tmtp_upload(big, UploadPart { begin: false, chunk: Some((2, chunk.clone())), ready: Some(ready) })
            .await
            .unwrap();
        // A `user` message sent later overtakes it; an older `M` message stays before.
        let old = big - 50;
        s.tmtp_begin_message(old).await.unwrap();
        s.tmtp_commit_message(old, b"old", 0, "M", &nodes(&[("B", 1)]), None).await.unwrap();
        let user = big + 7;
        s.tmtp_begin_message(user).await.unwrap();
        s.tmtp_commit_message(user, b"user", 0, "E", &nodes(&[("B", 1), ("B", 2)]), None).await.unwrap();
        assert_eq!(
            s.tmtp_queue("B", 1).await.unwrap(),
            vec![queued("E", user), queued("M", old), queued("M", big)],
            "{name}"
        );
        assert_eq!(s.tmtp_max_message_id().await.unwrap(), user);
        assert_eq!(s.tmtp_queue_page("B", 1, None, 1).await.unwrap(), vec![queued("E", user)]);
        assert_eq!(s.tmtp_queue_page("nobody", 1, None, 1).await.unwrap(), vec![]);
        let first = queued("E", user);
        assert_eq!(
            s.tmtp_queue_page("B", 1, Some(&first), 5).await.unwrap(),
            s.tmtp_queue("B", 1).await.unwrap()[1..].to_vec(),
            "the next page starts after the key given"
        );
        let TmtpMessage { header, size, first } = s.tmtp_message(big).await.unwrap().unwrap();
        assert_eq!((header.as_slice(), size), (&b"0010{\"op\":\"delivery\"}"[..], 3 * 65536));
        assert_eq!(first.as_ref(), Some(&chunk), "{name}: the first chunk comes with the header");
        assert_eq!(s.tmtp_chunks(big, 1, 8).await.unwrap(), vec![chunk.clone(), chunk.clone()], "{name}: the rest");
        assert_eq!(s.tmtp_chunks(big, 2, 1).await.unwrap(), vec![chunk.clone()]);
        assert_eq!(s.tmtp_chunks(big, 3, 1).await.unwrap(), Vec::<Vec<u8>>::new());
        assert_eq!(s.tmtp_message(old).await.unwrap().unwrap().first, None, "{name}: no data, no chunk");

        // A new node of B starts with B.2's pending messages.
        let AddNode::Added(b3) = s.tmtp_add_node("B", "HB3", 2, 100).await.unwrap() else { panic!("a third node") };
        assert_eq!(s.tmtp_queue("B", b3).await.unwrap(), vec![queued("E", user), queued("M", big)]);

        // Acks: each node's own row; the message goes with the last one.
        assert!(s.tmtp_ack("A", 1, big).await.unwrap());
        assert!(!s.tmtp_ack("A", 1, big).await.unwrap(), "a second ack changes nothing");
        assert!(!s.tmtp_ack("A", 1, old).await.unwrap(), "not queued there");
        for (u, n) in [("B", 1), ("B", 2)] {
            assert!(s.tmtp_ack(u, n, big).await.unwrap());
        }
        assert!(s.tmtp_message(big).await.unwrap().is_some(), "B.3 has not acked yet");
        assert!(s.tmtp_ack("B", b3, big).await.unwrap());
        assert_eq!(s.tmtp_message(big).await.unwrap(), None);
        assert!(s.tmtp_chunks(big, 0, 8).await.unwrap().is_empty(), "{name}: chunks go with their message");

        // A message with no recipient is not kept.
        let lonely = big + 100;
        s.tmtp_begin_message(lonely).await.unwrap();
        s.tmtp_put_chunk(lonely, 0, b"x").await.unwrap();
        s.tmtp_commit_message(lonely, b"h", 1, "M", &[], None).await.unwrap();
        assert_eq!(s.tmtp_message(lonely).await.unwrap(), None);
        assert!(s.tmtp_chunks(lonely, 0, 1).await.unwrap().is_empty());

        // An upload cut off (a crash) is removed at start; committed ones stay.
        let cut = big + 200;
        s.tmtp_begin_message(cut).await.unwrap();
        s.tmtp_put_chunk(cut, 0, b"partial").await.unwrap();
        assert_eq!(s.tmtp_cleanup().await.unwrap(), 1);
        assert!(s.tmtp_chunks(cut, 0, 1).await.unwrap().is_empty());
        assert!(s.tmtp_message(old).await.unwrap().is_some());
        // An explicit discard (resolution error after the upload).
        let refused = big + 300;
        s.tmtp_begin_message(refused).await.unwrap();
        s.tmtp_put_chunk(refused, 0, b"data").await.unwrap();
        s.tmtp_discard(refused).await.unwrap();
        assert!(s.tmtp_chunks(refused, 0, 1).await.unwrap().is_empty());

        // A run of chunks ends at a missing one: data is never sent out of order.
        let holed = big + 400;
        s.tmtp_begin_message(holed).await.unwrap();
        for seq in [0, 1, 3] {
            s.tmtp_put_chunk(holed, seq, &[seq as u8]).await.unwrap();
        }
        assert_eq!(s.tmtp_chunks(holed, 0, 8).await.unwrap(), vec![vec![0u8], vec![1u8]], "{name}");
        assert_eq!(s.tmtp_chunks(holed, 2, 8).await.unwrap(), Vec::<Vec<u8>>::new(), "{name}");
    }
}

/// Queue rows go in and out in chunks of several rows per statement: a message for more
/// nodes than one statement names, and one batch of acks spanning several statements,
/// with a repeated ack and a stray one.
#[tokio::test]
async fn many_recipients_and_many_acks_in_one_batch() {
    for db in TestDb::all().await {
        let s = &db.store;
        let name = s.backend();
        let many: Vec<Node> = (1..=37).map(|n| node("M", n)).collect();
        let data = vec![5u8; 1000];
        let whole = [
            WholeMessage { id: 1, header: b"h1", data: &data, prio: "M", nodes: &many },
            WholeMessage { id: 2, header: b"h2", data: b"", prio: "E", nodes: &many[..3] },
        ];
        s.tmtp_store_messages(&whole, None).await.unwrap();
        s.tmtp_begin_message(3).await.unwrap();
        s.tmtp_put_chunk(3, 0, b"x").await.unwrap();
        s.tmtp_commit_message(3, b"h3", 1, "M", &many[..17], None).await.unwrap();
        assert_eq!(s.tmtp_queue("M", 1).await.unwrap(), vec![queued("E", 2), queued("M", 1), queued("M", 3)], "{name}");
        assert_eq!(s.tmtp_queue("M", 17).await.unwrap(), vec![queued("M", 1), queued("M", 3)], "{name}");
        assert_eq!(s.tmtp_queue("M", 18).await.unwrap(), vec![queued("M", 1)], "{name}");
        assert_eq!(s.tmtp_queue("M", 37).await.unwrap(), vec![queued("M", 1)], "{name}");

        // Message 1 acked by all but M.37, message 2 by all three, one ack twice, one
        // for a message never queued there.
        let mut acks: Vec<(Node, i64)> = many[..36].iter().map(|n| (n.clone(), 1)).collect();
        acks.extend(many[..3].iter().map(|n| (n.clone(), 2)));
        acks.push((node("M", 1), 1));
        acks.push((node("M", 20), 99));
        assert_eq!(s.tmtp_acks(&acks).await.unwrap(), 39, "{name}: each queue row once");
        assert!(s.tmtp_message(1).await.unwrap().is_some(), "{name}: M.37 has not acked");
        assert_eq!(s.tmtp_message(2).await.unwrap(), None, "{name}: acked by all");
        assert_eq!(s.tmtp_queue("M", 1).await.unwrap(), vec![queued("M", 3)], "{name}");
        assert_eq!(s.tmtp_queue("M", 36).await.unwrap(), vec![], "{name}");
        assert_eq!(s.tmtp_acks(&[(node("M", 37), 1)]).await.unwrap(), 1);
        assert_eq!(s.tmtp_message(1).await.unwrap(), None, "{name}: gone with the last ack");
        assert!(s.tmtp_chunks(1, 0, 1).await.unwrap().is_empty(), "{name}: with its chunk");
        assert_eq!(s.tmtp_message(3).await.unwrap().unwrap().first.as_deref(), Some(&b"x"[..]));

        // Uids are data, whatever they hold (PostgreSQL takes a batch's uids as one array).
        let odd = [node(r#"q"u\o,te{}"#, 1), node("NULL", 2)];
        let whole = [WholeMessage { id: 4, header: b"h4", data: b"y", prio: "M", nodes: &odd }];
        s.tmtp_store_messages(&whole, None).await.unwrap();
        let acks: Vec<(Node, i64)> = odd.iter().map(|n| (n.clone(), 4)).collect();
        assert_eq!(s.tmtp_acks(&acks).await.unwrap(), 2, "{name}: odd uids acked");
        assert_eq!(s.tmtp_message(4).await.unwrap(), None, "{name}: gone with both acks");
    }
}

/// Several mmtmtpd instances on one database (issue 19): a node's link is held by one
/// instance at a time, until released or until its lease runs out; a message queued for
/// a node connected to another instance leaves that instance work, and so does an ohi
/// note; id blocks never overlap.
#[tokio::test]
async fn instances_share_links_work_and_ids() {
    for db in TestDb::all().await {
        let s = &db.store;
        let name = s.backend();
        let (a1, b1, b2) = (node("A", 1), node("B", 1), node("B", 2));
        assert!(s.tmtp_link_take(&a1, "one", 1, 30).await.unwrap());
        assert!(!s.tmtp_link_take(&a1, "two", 7, 30).await.unwrap(), "{name}: held by instance one");
        assert!(s.tmtp_link_take(&a1, "one", 2, 30).await.unwrap(), "a stale row of one's own is taken over");
        s.tmtp_link_release(&a1, "one", 1).await.unwrap();
        assert!(!s.tmtp_link_take(&a1, "two", 7, 30).await.unwrap(), "an old link's release leaves the new one");
        s.tmtp_link_release(&a1, "one", 2).await.unwrap();
        assert!(s.tmtp_link_take(&a1, "two", 7, 30).await.unwrap(), "released");
        // A lease that ran out (an instance that died) is taken over.
        assert!(s.tmtp_link_take(&b1, "dead", 1, -5).await.unwrap());
        assert!(s.tmtp_link_take(&b1, "one", 3, 30).await.unwrap(), "{name}: an expired lease is free");
        assert!(s.tmtp_link_take(&b2, "two", 8, 30).await.unwrap());

        // One's message for A.1 (on two), B.1 (on one itself) and B.2 (on two).
        let m = WholeMessage {
            id: 10,
            header: b"h",
            data: b"data",
            prio: "M",
            nodes: &[a1.clone(), b1.clone(), b2.clone()],
        };
        s.tmtp_store_messages(&[m], Some("one")).await.unwrap();
        assert_eq!(s.tmtp_wakes("one", 100).await.unwrap(), vec![], "nothing for the sender's own instance");
        let mut work = s.tmtp_wakes("two", 100).await.unwrap();
        work.sort_by(|x, y| x.node.cmp(&y.node));
        assert_eq!(work, vec![Wake { node: a1.clone(), frame: None }, Wake { node: b2.clone(), frame: None }]);
        assert_eq!(s.tmtp_wakes("two", 100).await.unwrap(), vec![], "work is taken once");
        // Without `remote` (every recipient is local) no work is left.
        let m = WholeMessage { id: 11, header: b"h", data: b"", prio: "E", nodes: std::slice::from_ref(&a1) };
        s.tmtp_store_messages(&[m], None).await.unwrap();
        assert_eq!(s.tmtp_wakes("two", 100).await.unwrap(), vec![]);
        assert_eq!(s.tmtp_queue_page("A", 1, None, 10).await.unwrap(), vec![queued("E", 11), queued("M", 10)]);
        assert_eq!(s.tmtp_message(10).await.unwrap().unwrap().first.as_deref(), Some(&b"data"[..]));

        // An ohi note for every instance where a node of B is connected, but this one.
        assert!(s.tmtp_wake_uid("B", "one", b"ohi").await.unwrap());
        assert_eq!(
            s.tmtp_wakes("two", 100).await.unwrap(),
            vec![Wake { node: node("B", 0), frame: Some(b"ohi".to_vec()) }]
        );
        assert!(!s.tmtp_wake_uid("A", "two", b"ohi").await.unwrap(), "A is only on two");

        // Renewal; giving the leases up frees them at once.
        assert_eq!(s.tmtp_link_renew("two", 30, 60).await.unwrap(), 2);
        assert!(!s.tmtp_link_take(&b2, "one", 4, 30).await.unwrap());
        assert_eq!(s.tmtp_link_renew("two", -1, 60).await.unwrap(), 2);
        assert!(s.tmtp_link_take(&b2, "one", 4, 30).await.unwrap(), "{name}: given up");

        // Id blocks: above the floor, never overlapping, whichever floor comes.
        let first = s.tmtp_take_ids(1_000, 100).await.unwrap();
        assert!(first >= 1_100);
        let second = s.tmtp_take_ids(5, 100).await.unwrap();
        assert_eq!(second, first + 100, "a floor behind the counter takes the next block");
        let third = s.tmtp_take_ids(first + 10_000, 100).await.unwrap();
        assert_eq!(third, first + 10_100, "a clock ahead of the counter raises it");
    }
}

/// Posts stored at once from many clients (a group commit on SQLite and PostgreSQL):
/// each call returns only once its own messages are committed and readable, each keeps
/// its own `remote` (work for another instance only for the calls that asked), and a
/// call that fails stores nothing.
#[tokio::test]
async fn posts_at_once_are_each_committed_before_their_answer() {
    for db in TestDb::all().await {
        let name = db.store.backend();
        let (a1, b1) = (node("A", 1), node("B", 1));
        assert!(db.store.tmtp_link_take(&b1, "two", 1, 30).await.unwrap());
        let posts: Vec<_> = (0..120i64)
            .map(|i| {
                let s = db.store.clone();
                let to = if i % 2 == 0 { a1.clone() } else { b1.clone() };
                tokio::spawn(async move {
                    let (id, data) = (1000 + i, vec![i as u8; i as usize * 50]);
                    let header = format!("h{i}");
                    let remote = (i % 3 == 0).then_some("one");
                    let m = WholeMessage { id, header: header.as_bytes(), data: &data, prio: "M", nodes: &[to] };
                    s.tmtp_store_messages(&[m], remote).await.unwrap();
                    // Readable the moment the call returns: its sender may be acked now.
                    let stored = s.tmtp_message(id).await.unwrap().expect("committed before the answer");
                    assert_eq!((stored.header, stored.size), (header.into_bytes(), data.len() as i64));
                    assert_eq!(stored.first.unwrap_or_default(), data);
                })
            })
            .collect();
        for p in posts {
            p.await.unwrap();
        }
        let a_queue = db.store.tmtp_queue("A", 1).await.unwrap();
        assert_eq!(a_queue, (0..120).step_by(2).map(|i| queued("M", 1000 + i)).collect::<Vec<_>>(), "{name}");
        assert_eq!(db.store.tmtp_queue("B", 1).await.unwrap().len(), 60, "{name}");
        // Work for instance two: one row per post to B.1 whose call named a remote (i odd
        // and a multiple of 3: 3, 9, ..., 117), none for the others of the same batches.
        let work = db.store.tmtp_wakes("two", 1000).await.unwrap();
        assert_eq!(work.len(), (0..120).filter(|i| i % 2 == 1 && i % 3 == 0).count(), "{name}");
        assert!(work.iter().all(|w| w.node == b1 && w.frame.is_none()), "{name}");

        // A call the database refuses (a message id stored already) stores none of its
        // messages, and the calls written together with it are stored all the same.
        let calls: Vec<_> = (0..40i64)
            .map(|i| {
                let s = db.store.clone();
                let a1 = a1.clone();
                tokio::spawn(async move {
                    let fresh = WholeMessage {
                        id: 5000 + i,
                        header: b"y",
                        data: b"z",
                        prio: "M",
                        nodes: std::slice::from_ref(&a1),
                    };
                    if i == 20 {
                        let again = WholeMessage {
                            id: 1000,
                            header: b"x",
                            data: b"",
                            prio: "M",
                            nodes: std::slice::from_ref(&a1),
                        };
                        s.tmtp_store_messages(&[fresh, again], None).await.is_ok()
                    } else {
                        s.tmtp_store_messages(&[fresh], None).await.is_ok()
                    }
                })
            })
            .collect();
        for (i, c) in calls.into_iter().enumerate() {
            assert_eq!(c.await.unwrap(), i != 20, "{name}: call {i}");
        }
        assert_eq!(db.store.tmtp_message(5020).await.unwrap(), None, "{name}: nothing of the refused call");
        for i in (0..40).filter(|i| *i != 20) {
            assert!(db.store.tmtp_message(5000 + i).await.unwrap().is_some(), "{name}: {i}");
        }
    }
}
