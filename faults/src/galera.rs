//! A MariaDB Galera cluster of our own (issue 17): three nodes on loopback, each with its
//! own data directory and ports, run as user `mysql` (rsync state transfer needs it);
//! nodes killed, started again (they rejoin with a state transfer), and cut off from the
//! others with Galera's own `gmcast.isolate`, which drops the node's group links as a
//! network partition would. Never the shared MariaDB.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::config::DatabaseConfig;
use common::store::Store;
use common::testing::{Daemon, TestCert};

use crate::db::{Proc, free_port, mariadbd, quiet, tail, wait_for};

/// The Galera provider library Debian's `galera-4` installs.
const PROVIDER: &str = "/usr/lib/galera/libgalera_smm.so";

/// One node: its data directory, its client port and its group, incremental-transfer
/// and state-transfer ports.
pub struct Node {
    data: PathBuf,
    log: PathBuf,
    /// The client (SQL) port on 127.0.0.1.
    pub port: u16,
    group: u16,
    ist: u16,
    sst: u16,
    /// The server process.
    pub proc: Proc,
}

/// A running cluster; every node is killed when it is dropped.
pub struct Galera {
    /// The nodes, in the order they joined.
    pub nodes: Vec<Node>,
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
}

impl Galera {
    /// Whether MariaDB with the Galera provider, rsync and the `mysql` user are here.
    pub fn available() -> bool {
        Path::new("/usr/sbin/mariadbd").exists()
            && Path::new(PROVIDER).exists()
            && quiet(Command::new("sh").args(["-c", "command -v rsync && command -v mariadb-install-db"]))
            && nix::unistd::User::from_name("mysql").ok().flatten().is_some()
    }

    /// Creates `n` nodes under `parent` (which the `mysql` user must be able to reach),
    /// bootstraps the first, joins the others one by one and creates database `mmmail`.
    ///
    /// # Panics
    /// If any node does not install, start or reach `Synced` within 120 s.
    pub fn create(parent: &Path, n: usize) -> Galera {
        let user = nix::unistd::User::from_name("mysql").ok().flatten().expect("user mysql");
        let mut cluster = Galera { nodes: Vec::new(), uid: user.uid, gid: user.gid };
        for i in 0..n {
            let data = parent.join(format!("node{i}"));
            install(&data);
            cluster.chown(&data);
            let node = Node {
                log: parent.join(format!("node{i}.log")),
                proc: Proc::new(parent.join(format!("node{i}.stderr"))),
                data,
                port: free_port(),
                group: free_port(),
                ist: free_port(),
                sst: free_port(),
            };
            cluster.nodes.push(node);
        }
        for i in 0..n {
            cluster.start_node(i, i == 0);
        }
        cluster.sql(0, "CREATE DATABASE mmmail CHARACTER SET utf8mb4 COLLATE utf8mb4_bin");
        cluster
    }

    fn chown(&self, dir: &Path) {
        let ok = quiet(Command::new("chown").arg("-R").arg(format!("{}:{}", self.uid, self.gid)).arg(dir));
        assert!(ok, "chown {}", dir.display());
    }

    /// The `gcomm://` address of every node.
    fn members(&self) -> String {
        let list: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.group)).collect();
        format!("gcomm://{}", list.join(","))
    }

    /// Starts node `i` (a new cluster when `bootstrap`) and waits until it is `Synced`
    /// (after a kill: once it has rejoined and caught up by a state transfer).
    ///
    /// # Panics
    /// If it is not synced within 120 s, with the end of its error log.
    pub fn start_node(&mut self, i: usize, bootstrap: bool) {
        let members = self.members();
        let node = &mut self.nodes[i];
        let mut cmd = mariadbd("mysql", &node.data, node.port, &node.log);
        cmd.args(["--binlog-format=ROW", "--default-storage-engine=InnoDB", "--innodb-autoinc-lock-mode=2"])
            .args(["--innodb-buffer-pool-size=32M", "--innodb-log-file-size=8M"])
            .args(["--wsrep-on=ON", "--wsrep-cluster-name=mmmail-test"])
            .arg(format!("--wsrep-provider={PROVIDER}"))
            .arg(format!("--wsrep-cluster-address={members}"))
            .arg(format!("--wsrep-node-name=node{i}"))
            .arg(format!("--wsrep-node-address=127.0.0.1:{}", node.group))
            .arg(format!(
                "--wsrep-provider-options=gmcast.listen_addr=tcp://127.0.0.1:{};ist.recv_addr=127.0.0.1:{};gcache.size=64M;evs.suspect_timeout=PT3S;evs.inactive_timeout=PT6S;pc.wait_prim_timeout=PT20S",
                node.group, node.ist
            ))
            .args(["--wsrep-sst-method=rsync"])
            .arg(format!("--wsrep-sst-receive-address=127.0.0.1:{}", node.sst));
        if bootstrap {
            cmd.arg("--wsrep-new-cluster");
        }
        let port = node.port;
        // A joiner's state transfer on a busy machine (two clusters of two tests at once on
        // two cores) can take well over the 60 s a single server gets.
        let limit = Duration::from_secs(120);
        let synced = node
            .proc
            .start_within(&mut cmd, limit, || status(port, "wsrep_local_state_comment").as_deref() == Some("Synced"));
        assert!(
            synced,
            "Galera node {i} not synced after {limit:?}; its error log ends:\n{}\nits standard error ends:\n{}",
            tail(&node.log, 40),
            node.proc.log_tail(10),
        );
    }

    /// SIGKILL to node `i` (and its state-transfer helpers).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].proc.kill();
    }

    /// Cuts node `i` off from the others (`isolate`) or lets it back; on the way back,
    /// waits until it is `Synced` again. A node cut off is a non-primary component of
    /// one: it refuses reads and writes (1047) while the other two keep the quorum.
    ///
    /// # Panics
    /// If the node does not leave or rejoin the primary component within 60 s.
    pub fn isolate(&self, i: usize, isolate: bool) {
        let port = self.nodes[i].port;
        let value = u8::from(isolate);
        self.sql(i, &format!("SET GLOBAL wsrep_provider_options = 'gmcast.isolate={value}'"));
        if isolate {
            wait_for("node to leave the primary component", Duration::from_secs(60), || {
                status(port, "wsrep_cluster_status").as_deref() == Some("non-Primary")
            });
        } else {
            wait_for("node to rejoin", Duration::from_secs(60), || {
                status(port, "wsrep_local_state_comment").as_deref() == Some("Synced")
                    && status(port, "wsrep_cluster_status").as_deref() == Some("Primary")
            });
        }
    }

    /// Waits until every node reports a primary component of `size` nodes.
    ///
    /// # Panics
    /// If that does not happen within 60 s.
    pub fn wait_size(&self, size: usize) {
        let want = size.to_string();
        let ports: Vec<u16> = self.nodes.iter().map(|n| n.port).collect();
        wait_for("cluster size", Duration::from_secs(60), || {
            ports.iter().filter(|p| status(**p, "wsrep_cluster_size").as_deref() == Some(want.as_str())).count() >= size
        });
    }

    /// The URL of database `mmmail` through node `i`.
    pub fn url(&self, i: usize) -> String {
        format!("mysql://root@127.0.0.1:{}/mmmail", self.nodes[i].port)
    }

    /// Runs `sql` through node `i` with the `mariadb` client.
    ///
    /// # Panics
    /// If it fails.
    pub fn sql(&self, i: usize, sql: &str) {
        // Seen in a CI run, on `SET GLOBAL`.
        let out = while_settling(|| {
            Command::new("mariadb")
                .args(["-h127.0.0.1", &format!("-P{}", self.nodes[i].port), "-uroot", "-e", sql])
                .output()
                .expect("mariadb client")
        });
        assert!(out.status.success(), "{sql} on node {i}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// What node `i` says about itself, for a failure message: its wsrep status, its
    /// sessions, the answers to sqlx's session setup statements one by one, and the end
    /// of its error log.
    pub fn diagnose(&self, i: usize) -> String {
        let port = self.nodes[i].port;
        let run = |sql: &str| {
            let out = Command::new("mariadb")
                .args(["-h127.0.0.1", &format!("-P{port}"), "-uroot", "-B", "-e", sql])
                .output()
                .map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
                .unwrap_or_else(|e| e.to_string());
            format!("> {sql}\n{out}")
        };
        let mut text = String::new();
        for sql in [
            "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_local_state_comment','wsrep_cluster_status','wsrep_cluster_size','wsrep_ready','wsrep_connected','wsrep_desync_count','wsrep_local_recv_queue','wsrep_flow_control_paused')",
            "SELECT 1",
            "SET time_zone='+00:00'",
            "SET NAMES utf8mb4",
            "SET sql_mode=(SELECT CONCAT(@@sql_mode, ',PIPES_AS_CONCAT'))",
            "SHOW FULL PROCESSLIST",
        ] {
            text.push_str(&run(sql));
        }
        text.push_str(&format!("error log ends:\n{}", tail(&self.nodes[i].log, 40)));
        text
    }

    /// Node `i`'s error log.
    pub fn log_text(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }
}

/// `mariadb-install-db` into `data`, tried up to three times (it starts a bootstrap
/// server of its own, which can fail while the machine is busy).
///
/// # Panics
/// If every try fails, with the last one's output.
fn install(data: &Path) {
    let mut last = String::new();
    for _ in 0..3 {
        let _ = std::fs::remove_dir_all(data);
        match Command::new("mariadb-install-db")
            .args(["--no-defaults", "--user=mysql", "--auth-root-authentication-method=normal", "--skip-test-db"])
            .arg(format!("--datadir={}", data.display()))
            .output()
        {
            Ok(out) if out.status.success() => return,
            Ok(out) => {
                last = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    panic!("mariadb-install-db {}: {last}", data.display());
}

/// A `SHOW STATUS` value of the node at `port`, if it answers.
pub fn status(port: u16, name: &str) -> Option<String> {
    let out = Command::new("mariadb")
        .args(["-h127.0.0.1", &format!("-P{port}"), "-uroot", "-N", "-B", "-e"])
        .arg(format!("SHOW STATUS LIKE '{name}'"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split('\t').nth(1).map(|v| v.trim().to_owned())
}

// --- The suite on a cluster: daemons per node, fixtures ---

/// The password of user `galera`.
pub const PASSWORD: &str = "galera-password";

/// A temporary directory the `mysql` user can reach.
///
/// # Panics
/// If it cannot be made.
pub fn reachable_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::Builder::new().prefix("mmmail-galera-").tempdir().expect("temp dir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

/// The configuration of `program` (`mmsmtpd`, `mmpop3d`, `mmtmtpd`) on node URL `url`,
/// listening on `port`; `cert` holds `cert.pem` and `key.pem` for mmtmtpd. Limits and
/// counting off.
pub fn config(program: &str, url: &str, port: u16, cert: &Path) -> String {
    let base = format!(
        "[server]\nname = \"galera.test\"\n[database]\nurl = \"{url}\"\nmax_connections = 8\nacquire_timeout = 5\n\
         [limits]\nmax_clients = 500\nmax_per_address = 0\nconnection_rate = 0\nerror_delay = 0\nmax_errors = 1000\n\
         shutdown_grace = 5\n[stats]\nenabled = false\n[privileges]\nallow_root = true\n"
    );
    match program {
        "mmsmtpd" => format!("{base}[listen]\naddresses = [\"127.0.0.1:{port}\"]\n[smtpd]\nflood_messages = 0\n"),
        "mmpop3d" => format!("{base}[listen]\naddresses = [\"127.0.0.1:{port}\"]\n[pop3d]\nlock_lease = 6\n"),
        _ => format!(
            "{base}[listen]\ntls_addresses = [\"127.0.0.1:{port}\"]\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n[tmtpd]\nauth = 0\n",
            cert.join("cert.pem").display(),
            cert.join("key.pem").display()
        ),
    }
}

/// The daemons of one node, by program name.
pub struct NodeDaemons(pub HashMap<&'static str, Daemon>);

impl NodeDaemons {
    /// Where `program` listens.
    pub fn addr(&self, program: &str) -> SocketAddr {
        self.0[program].addr()
    }
}

/// Starts `programs` on every node at the same moment (each daemon migrates, or waits
/// for the one that does), and waits until all serve.
///
/// # Panics
/// If a daemon does not start.
pub async fn start_all(
    cluster: &Galera,
    dir: &Path,
    programs: &'static [&'static str],
) -> (Vec<NodeDaemons>, TestCert) {
    let cert = dir.join("tls");
    std::fs::create_dir_all(&cert).expect("cert dir");
    let made = TestCert::generate(&cert);
    let mut handles = Vec::new();
    for node in 0..cluster.nodes.len() {
        for program in programs {
            let (url, dir, cert) = (cluster.url(node), dir.join(format!("node{node}")), cert.clone());
            std::fs::create_dir_all(&dir).expect("daemon dir");
            let package = &program[2..program.len() - 1];
            let bin = crate::bin(program, package);
            handles.push((
                node,
                *program,
                tokio::task::spawn_blocking(move || {
                    Daemon::start(&bin, &dir, |port| config(program, &url, port, &cert))
                }),
            ));
        }
    }
    let mut nodes: Vec<NodeDaemons> = (0..cluster.nodes.len()).map(|_| NodeDaemons(HashMap::new())).collect();
    for (node, program, h) in handles {
        nodes[node].0.insert(program, h.await.expect("daemon start"));
    }
    (nodes, made)
}

/// The test's own connection, through node `i`.
///
/// # Panics
/// If it cannot connect.
pub async fn store(cluster: &Galera, i: usize) -> Store {
    match Store::connect(&DatabaseConfig::from_url(cluster.url(i))).await {
        Ok(s) => s,
        Err(e) => panic!("connect to node {i}: {e}\n{}", cluster.diagnose(i)),
    }
}

/// The MySQL pool of a cluster store.
pub fn pool(store: &Store) -> &sqlx::MySqlPool {
    match store {
        Store::MySql(p) => p,
        _ => unreachable!("a Galera store is MySQL"),
    }
}

/// Adds user `galera` and `boxes` (address, max_mails), returns the user id.
///
/// # Panics
/// If an insert fails.
pub async fn fixtures(store: &Store, boxes: &[(&str, i64)]) -> i64 {
    let hash = common::password::hash(PASSWORD.as_bytes()).expect("hash");
    let sql = |s: String| async move { store.execute_admin_sql(&s).await.unwrap_or_else(|e| panic!("{s}: {e}")) };
    sql(format!("INSERT INTO user (user_name, user_passwd, user_created) VALUES ('galera', '{hash}', NOW())")).await;
    let uid = store.user_password("galera").await.expect("user").expect("user row").id;
    for (address, max) in boxes {
        sql(format!(
            "INSERT INTO box (box_address, box_user, box_max_size, box_size, box_max_mails, box_mails) \
             VALUES ('{address}', {uid}, 0, 0, {max}, 0)"
        ))
        .await;
    }
    uid
}

/// Runs `command` until it succeeds, fails for another reason than a deadlock (1213,
/// "Deadlock found"), or has been tried for 30 s: a Galera node still settling into its
/// cluster can abort any statement, even a connection's setup, that way. Its last output.
pub fn while_settling(mut command: impl FnMut() -> std::process::Output) -> std::process::Output {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let out = command();
        if out.status.success() || !String::from_utf8_lossy(&out.stderr).contains("Deadlock found") || attempt == 60 {
            return out;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}
