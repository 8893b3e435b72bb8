//! mmadmin as a black box on all three backends (style.md P11 (e)): the README's whole
//! admin session, the refusals an administrator meets, and `check` finding and repairing
//! what plain SQL left behind.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::address::Address;
use common::password::{Verified, verify};
use common::store::{Resolution, Usage};
use common::testing::{Backend, TestDb, run_with_stdin};

struct Admin {
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Admin {
    fn new(url: &str) -> Admin {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("mmsmtpd.toml");
        std::fs::write(&config, format!("[database]\nurl = \"{url}\"\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
        Admin { config, _dir: dir }
    }

    fn run(&self, args: &[&str], stdin: &str) -> Output {
        run(&self.config, args, stdin)
    }

    /// Runs a command that must succeed; its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args, "");
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs a command that must fail (1, or clap's 2 for a bad argument); its standard
    /// error.
    fn refused(&self, args: &[&str]) -> String {
        let o = self.run(args, "");
        assert!(matches!(o.status.code(), Some(1 | 2)), "{args:?} should fail: {}", String::from_utf8_lossy(&o.stdout));
        String::from_utf8_lossy(&o.stderr).into_owned()
    }
}

fn run(config: &Path, args: &[&str], stdin: &str) -> Output {
    run_with_stdin(Command::new(env!("CARGO_BIN_EXE_mmadmin")).arg("-c").arg(config).args(args), stdin.as_bytes())
}

/// The README's admin session, with mmadmin instead of SQL, on every backend: what it
/// stores is what the daemons then use.
#[tokio::test(flavor = "multi_thread")]
async fn the_admin_session_on_every_backend() {
    for db in TestDb::all().await {
        let a = Admin::new(&db.url);
        let o = a.run(&["user", "add", "mmondor", "--stdin"], "someuserpassword\n");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        a.run(&["user", "add", "bob", "--stdin"], "bobs password\n");
        a.ok(&["box", "add", "MMondor@Example.org", "--user", "mmondor", "--max-size", "10M", "--max-mails", "1000"]);
        a.ok(&["box", "add", "sales@example.org", "--user", "mmondor"]);
        a.ok(&["box", "add", "bob@corp.test", "--user", "bob"]);
        a.ok(&["alias", "add", "*@Example.org", "mmondor@example.org"]);
        a.ok(&["alias", "add", "sales-*@example.org", "sales@example.org"]);
        a.ok(&["nofrom", "add", "127.0.0.1"]);

        // Stored as the mail rules look them up, owned by the right users.
        let boxes = db.store.admin_boxes().await.unwrap();
        let find = |addr: &str| boxes.iter().find(|b| b.address == addr).unwrap().clone();
        assert_eq!(find("mmondor@example.org").max_size, 10 << 20);
        assert_eq!(find("mmondor@example.org").max_mails, 1000);
        assert_eq!(find("bob@corp.test").owner.as_deref(), Some("bob"), "{:?}", db.backend);
        let resolve = |s: &str| {
            let store = db.store.clone();
            let a = Address::parse(s, true).unwrap();
            async move { store.resolve(&a).await.unwrap() }
        };
        match resolve("Anyone@EXAMPLE.org").await {
            Resolution::Boxes(b) => assert_eq!(b[0].address, "mmondor@example.org"),
            other => panic!("{other:?}"),
        }
        assert!(db.store.nofrom_allows(&["127.0.0.1"]).await.unwrap());
        let bob = db.store.user_password("bob").await.unwrap().unwrap();
        assert_eq!(verify(b"bobs password", &bob.passwd), Verified::Yes);

        let list = a.ok(&["box", "list"]);
        assert!(list.lines().any(|l| l.starts_with("bob@corp.test") && l.contains(" bob ")), "{list}");
        let users = a.ok(&["user", "list"]);
        assert!(users.lines().any(|l| l.starts_with("mmondor") && l.trim_end().ends_with('2')), "{users}");
        assert!(a.ok(&["alias", "list"]).contains("*@example.org"));
        assert_eq!(a.ok(&["nofrom", "list"]), "127.0.0.1\n");

        // Limits change, the rest stays.
        a.ok(&["box", "limits", "mmondor@example.org", "--max-size", "512K"]);
        let b = db.store.find_box("mmondor@example.org").await.unwrap().unwrap();
        assert_eq!((b.max_size, b.max_mails), (512 << 10, 1000));

        // A new password, from standard input.
        let o = a.run(&["user", "passwd", "bob", "--stdin"], "new one\n");
        assert!(o.status.success());
        let bob = db.store.user_password("bob").await.unwrap().unwrap();
        assert_eq!(verify(b"new one", &bob.passwd), Verified::Yes);

        // Refusals in plain words.
        assert!(a.refused(&["user", "add", "bob", "--stdin"]).contains("empty password"));
        let o = a.run(&["user", "add", "bob", "--stdin"], "x\n");
        assert!(String::from_utf8_lossy(&o.stderr).contains("user \"bob\" exists"), "{o:?}");
        assert!(a.refused(&["box", "add", "bob@corp.test", "--user", "bob"]).contains("box bob@corp.test exists"));
        assert!(a.refused(&["box", "add", "x@corp.test", "--user", "nobody"]).contains("no user named \"nobody\""));
        assert!(a.refused(&["box", "add", "not an address", "--user", "bob"]).contains("is not a mailbox"));
        assert!(a.refused(&["box", "add", "y@corp.test", "--user", "bob", "--max-size", "10T"]).contains("not a size"));
        assert!(a.refused(&["alias", "add", "*@corp.test", "ghost@corp.test"]).contains("no box ghost@corp.test"));
        assert!(a.refused(&["user", "del", "bob"]).contains("still owns boxes"));
        assert!(a.refused(&["nofrom", "del", "10.0.0.1"]).contains("no nofrom pattern"));

        // Deleting: the box with its aliases and messages, then its user.
        db.sql("INSERT INTO alias (alias_pattern, alias_box, alias_user) VALUES ('*@corp.test', 'bob@corp.test', 0)")
            .await;
        a.ok(&["box", "del", "bob@corp.test"]);
        assert!(!a.ok(&["alias", "list"]).contains("corp.test"));
        a.ok(&["user", "del", "bob"]);
        assert!(db.store.user_password("bob").await.unwrap().is_none());
        a.ok(&["alias", "del", "sales-*@example.org"]);
        a.ok(&["nofrom", "del", "127.0.0.1"]);
        // Bans made by the daemons: listed and lifted.
        let until = common::store::unix_now() + 3600;
        db.store.ban("192.0.2.7", until, "login").await.unwrap();
        let listed = a.ok(&["ban", "list"]);
        assert!(listed.starts_with("192.0.2.7") && listed.contains("until 20"), "{listed}");
        a.ok(&["ban", "del", "192.0.2.7"]);
        assert!(a.refused(&["ban", "del", "192.0.2.7"]).contains("no ban of 192.0.2.7"));
        assert_eq!(a.ok(&["ban", "list"]), "");
        assert_eq!(a.ok(&["check"]), "no problems found\n", "{:?}", db.backend);
    }
}

/// `mmadmin check` finds what plain SQL left behind and `--fix` repairs what it can, in
/// one transaction; the rest stays reported with exit status 1.
#[tokio::test(flavor = "multi_thread")]
async fn check_finds_and_repairs() {
    for db in TestDb::all().await {
        let a = Admin::new(&db.url);
        let u = db.add_user("u", "").await;
        db.add_box("drift@example.org", u, 0, 0).await;
        db.add_box("fine@example.org", u, 0, 0).await;
        // Counters that disagree with the copies, a body no copy refers to, a lease
        // left behind long ago, and a box from before migration 0004.
        db.sql("UPDATE box SET box_size = 999, box_mails = 7 WHERE box_address = 'drift@example.org'").await;
        db.sql("INSERT INTO message (message_size, message_created, message_data) VALUES (3, 0, 'abc')").await;
        db.sql("INSERT INTO pop3_lock (lock_box, lock_owner, lock_expires) VALUES ('fine@example.org', 'gone', 1)")
            .await;
        let lift = match db.backend {
            Backend::Postgres => "ALTER TABLE box DROP CONSTRAINT box_address_lowercase",
            Backend::MySql | Backend::Sqlite => "DROP TRIGGER box_address_lowercase_insert",
        };
        db.sql(lift).await;
        db.add_box("Mixed@Example.org", u, 0, 0).await;

        let o = a.run(&["check"], "");
        assert_eq!(o.status.code(), Some(1));
        let out = String::from_utf8_lossy(&o.stdout);
        for want in [
            "box Mixed@Example.org: not in lowercase",
            "box drift@example.org: counters say 999 bytes in 7 messages, its messages are 0 bytes in 0",
            "1 message bodies belong to no box",
            "box fine@example.org: POP3 lease of gone expired",
        ] {
            assert!(out.contains(want), "{want:?} missing on {:?}:\n{out}", db.backend);
        }

        let o = a.run(&["check", "--fix"], "");
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("repaired: counters of 1 box(es), 1 message bodies deleted, 1 lease(s) deleted"), "{out}");
        assert_eq!(o.status.code(), Some(1), "the mixed-case box is the administrator's decision");
        assert_eq!(db.counters("drift@example.org").await, Usage::default());
        let again = a.run(&["check"], "");
        let out = String::from_utf8_lossy(&again.stdout);
        assert_eq!(out.lines().count(), 1, "only the mixed-case box is left: {out}");
    }
}

/// On SQLite, where the sqlite3 shell does not enforce foreign keys by default, an alias
/// can point at no box and a box at no user: check reports both.
#[tokio::test]
async fn check_reports_dangling_rows_on_sqlite() {
    let db = TestDb::create(Backend::Sqlite).await.unwrap();
    let a = Admin::new(&db.url);
    db.sql(
        "PRAGMA foreign_keys = OFF; \
         INSERT INTO alias (alias_pattern, alias_box, alias_user) VALUES ('*@lost.test', 'gone@lost.test', 0); \
         INSERT INTO box (box_address, box_user) VALUES ('orphan@lost.test', 42); \
         PRAGMA foreign_keys = ON;",
    )
    .await;
    let o = a.run(&["check"], "");
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1));
    assert!(out.contains("alias *@lost.test: its box gone@lost.test does not exist"), "{out}");
    assert!(out.contains("box orphan@lost.test: its user does not exist"), "{out}");
}

/// The README's plain-SQL blocks, run as printed on their backends for a user that is
/// not the first: the box and alias go to that user.
#[tokio::test]
async fn readme_sql_blocks_work_for_any_user() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let block = |heading: &str| {
        let after = &readme[readme.find(heading).unwrap_or_else(|| panic!("{heading} missing"))..];
        let start = after.find("```sql\n").unwrap() + "```sql\n".len();
        after[start..start + after[start..].find("```").unwrap()].to_owned()
    };
    for (backend, heading) in [
        (Backend::MySql, "**MySQL / MariaDB**"),
        (Backend::Postgres, "**PostgreSQL**"),
        (Backend::Sqlite, "**SQLite**"),
    ] {
        let Some(db) = TestDb::create(backend).await else { continue };
        db.add_user("first", "").await;
        for stmt in block(heading).lines().filter(|l| !l.trim().is_empty()) {
            db.sql(stmt).await;
        }
        let owner = db.store.box_owner("mmondor@example.org").await.unwrap().unwrap();
        assert_eq!(owner.user_name, "some user", "{backend:?}");
        let aliases = db.store.admin_aliases().await.unwrap();
        assert_eq!(aliases, [("*@example.org".to_owned(), "mmondor@example.org".to_owned())]);
    }
}
