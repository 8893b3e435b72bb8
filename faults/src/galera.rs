//! A MariaDB Galera cluster of our own (issue 17): three nodes on loopback, each with its
//! own data directory and ports, run as user `mysql` (rsync state transfer needs it);
//! nodes killed, started again (they rejoin with a state transfer), and cut off from the
//! others with Galera's own `gmcast.isolate`, which drops the node's group links as a
//! network partition would. Never the shared MariaDB.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::db::{Proc, free_port, quiet, wait_for};

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
    /// If any node does not install, start or reach `Synced` within 60 s.
    pub fn create(parent: &Path, n: usize) -> Galera {
        let user = nix::unistd::User::from_name("mysql").ok().flatten().expect("user mysql");
        let mut cluster = Galera { nodes: Vec::new(), uid: user.uid, gid: user.gid };
        for i in 0..n {
            let data = parent.join(format!("node{i}"));
            let ok = quiet(
                Command::new("mariadb-install-db")
                    .args([
                        "--no-defaults",
                        "--user=mysql",
                        "--auth-root-authentication-method=normal",
                        "--skip-test-db",
                    ])
                    .arg(format!("--datadir={}", data.display())),
            );
            assert!(ok, "mariadb-install-db {}", data.display());
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
    /// If it is not synced within 60 s.
    pub fn start_node(&mut self, i: usize, bootstrap: bool) {
        let members = self.members();
        let node = &mut self.nodes[i];
        let mut cmd = Command::new("/usr/sbin/mariadbd");
        cmd.args(["--no-defaults", "--user=mysql", "--bind-address=127.0.0.1", "--skip-log-bin"])
            .arg(format!("--datadir={}", node.data.display()))
            .arg(format!("--port={}", node.port))
            .arg(format!("--socket={}", node.data.join("sock").display()))
            .arg(format!("--pid-file={}", node.data.join("pid").display()))
            .arg(format!("--log-error={}", node.log.display()))
            .args(["--binlog-format=ROW", "--default-storage-engine=InnoDB", "--innodb-autoinc-lock-mode=2"])
            .args(["--innodb-buffer-pool-size=32M", "--innodb-log-file-size=8M", "--innodb-flush-method=fsync"])
            .args(["--max-connections=300", "--wsrep-on=ON", "--wsrep-cluster-name=mmmail-test"])
            .arg(format!("--wsrep-provider={PROVIDER}"))
            .arg(format!("--wsrep-cluster-address={members}"))
            .arg(format!("--wsrep-node-name=node{i}"))
            .arg(format!("--wsrep-node-address=127.0.0.1:{}", node.group))
            .arg(format!(
                "--wsrep-provider-options=gmcast.listen_addr=tcp://127.0.0.1:{};ist.recv_addr=127.0.0.1:{};gcache.size=64M;evs.suspect_timeout=PT3S;evs.inactive_timeout=PT6S;pc.wait_prim_timeout=PT20S",
                node.group, node.ist
            ))
            .args(["--wsrep-sst-method=rsync"])
            .arg(format!("--wsrep-sst-receive-address=127.0.0.1:{}", node.sst))
            .current_dir("/");
        if bootstrap {
            cmd.arg("--wsrep-new-cluster");
        }
        let port = node.port;
        node.proc
            .start("Galera node", &mut cmd, || status(port, "wsrep_local_state_comment").as_deref() == Some("Synced"));
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
        let out = Command::new("mariadb")
            .args(["-h127.0.0.1", &format!("-P{}", self.nodes[i].port), "-uroot", "-e", sql])
            .output()
            .expect("mariadb client");
        assert!(out.status.success(), "{sql} on node {i}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Node `i`'s error log.
    pub fn log_text(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }
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
