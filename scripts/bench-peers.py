#!/usr/bin/env python3
"""mmpop3d side by side with Dovecot (issue 16): the same POP3 client against both.

Dovecot comes from Debian (dovecot-pop3d; installed if missing, with policy-rc.d
keeping the system instance from starting). It runs as a private instance: its own
configuration, base and state directories under a temporary directory, loopback on a
free high port, a passwd-file holding the very Argon2id hash mmpasswd makes (m=64 MiB,
t=3, p=1; Dovecot verifies it with libsodium), a Maildir it serves; it is stopped at
the end. mmpop3d runs on SQLite, and on PostgreSQL / MariaDB when --postgres /
--mysql name a server where a scratch database may be created; its messages arrive
through mmsmtpd. Rounds are interleaved; the table gives medians and ratios to Dovecot
(above 1: mmmail is faster).

Workloads:
  * one POP3 session: RETR and DELE of each of MESSAGES messages of SIZE bytes, one
    command at a time, then QUIT (messages/s);
  * LOGINS sequential logins (USER/PASS) each followed by QUIT (ms per login).

Postfix (the SMTP side of the issue) is not part of this script yet. mmstatd is not
running during the runs (the daemons' counting datagrams go nowhere).

Usage: scripts/bench-peers.py [--messages 2000] [--size 4096] [--logins 100]
                              [--rounds 3] [--postgres URL] [--mysql URL] [--bin DIR]
"""
import argparse, os, poplib, shutil, smtplib, socket, sqlite3, statistics, subprocess
import tempfile, threading, time

from benchlib import free_port, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOBODY = 65534

def ensure_dovecot():
    if shutil.which("dovecot"):
        return
    guard, made = "/usr/sbin/policy-rc.d", False
    if not os.path.exists(guard):
        with open(guard, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(guard, 0o755); made = True
    try:
        subprocess.run(["apt-get", "install", "-y", "-qq", "dovecot-pop3d"], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"), stdout=subprocess.DEVNULL)
    finally:
        if made:
            os.remove(guard)

def body(size):
    return ("Subject: bench\r\n\r\n" + ("x" * 70 + "\r\n") * (size // 72)).encode()

def pop3_session(port, user):
    """Seconds for RETR+DELE of every message and the QUIT; the message count."""
    p = poplib.POP3("127.0.0.1", port, timeout=300)
    p.user(user); p.pass_("bench")
    count, _ = p.stat()
    t = time.monotonic()
    for i in range(1, count + 1):
        p.retr(i); p.dele(i)
    p.quit()
    return time.monotonic() - t, count

def logins(port, user, n):
    """Milliseconds per login + QUIT, n in a row."""
    t = time.monotonic()
    for _ in range(n):
        p = poplib.POP3("127.0.0.1", port, timeout=60)
        p.user(user); p.pass_("bench"); p.quit()
    return (time.monotonic() - t) * 1000 / n

class Dovecot:
    def __init__(self, tmp, hashed):
        self.dir = os.path.join(tmp, "dovecot")
        for d in ("run", "state", "mail"):
            os.makedirs(os.path.join(self.dir, d), exist_ok=True)
        os.chmod(tmp, 0o755); os.chmod(self.dir, 0o755)
        self.port = free_port()
        with open(os.path.join(self.dir, "passwd"), "w") as f:
            f.write(f"bench@bench.test:{{ARGON2ID}}{hashed}\n")
        self.conf = os.path.join(self.dir, "dovecot.conf")
        with open(self.conf, "w") as f:
            f.write(f"""protocols = pop3
listen = 127.0.0.1
base_dir = {self.dir}/run
state_dir = {self.dir}/state
log_path = {self.dir}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
passdb {{
  driver = passwd-file
  args = {self.dir}/passwd
}}
userdb {{
  driver = static
  args = uid={NOBODY} gid={NOBODY} home={self.dir}/mail/%u
}}
mail_location = maildir:~/Maildir
first_valid_uid = 1
service pop3-login {{
  inet_listener pop3 {{
    port = {self.port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
}}
""")
        subprocess.run(["dovecot", "-c", self.conf], check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def fill(self, n, size):
        md = os.path.join(self.dir, "mail", "bench@bench.test", "Maildir")
        shutil.rmtree(md, ignore_errors=True)
        for d in ("new", "cur", "tmp"):
            os.makedirs(os.path.join(md, d))
        data = body(size)
        for i in range(n):
            with open(os.path.join(md, "new", f"{int(time.time())}.M{i}P1.bench"), "wb") as f:
                f.write(data)
        for root, dirs, files in os.walk(os.path.join(self.dir, "mail")):
            for x in dirs + files:
                os.chown(os.path.join(root, x), NOBODY, NOBODY)
        os.chown(os.path.join(self.dir, "mail"), NOBODY, NOBODY)

    def stop(self):
        subprocess.run(["dovecot", "-c", self.conf, "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

class Mmmail:
    def __init__(self, tmp, bindir, backend, url, hashed):
        self.name = f"mmmail {backend}"
        self.backend, self.admin_url = backend, url
        self.db = f"mmmail_peers_{os.getpid()}"
        if backend == "sqlite":
            db_url = f"sqlite://{tmp}/peers.db"
        else:
            base = url.rpartition("/")[0]
            self.host = url.split("@")[-1].split("/")[0].split(":")[0]
            self.admin(f"create database {self.db}", admin_db=True)
            db_url = f"{base}/{self.db}"
        self.db_url, self.tmp = db_url, tmp
        root_ok = "[privileges]\nallow_root = true\n" if os.geteuid() == 0 else ""
        limits = "[limits]\nmax_per_address = 0\nconnection_rate = 0\nerror_delay = 0\nmax_clients = 1000\n"
        self.smtp_port, self.port = free_port(), free_port()
        self.procs = []
        for daemon, port, extra in (("mmsmtpd", self.smtp_port, "[smtpd]\nflood_messages = 0\n"),
                                    ("mmpop3d", self.port, "[bans]\nenabled = false\n")):
            cfg = os.path.join(tmp, f"{daemon}-{backend}.toml")
            with open(cfg, "w") as f:
                f.write(f'[server]\nname = "bench.test"\n[database]\nurl = "{db_url}"\n'
                        f'[listen]\naddresses = ["127.0.0.1:{port}"]\n{limits}{extra}{root_ok}')
            self.procs.append(subprocess.Popen([os.path.join(bindir, daemon), "-c", cfg], stdout=subprocess.DEVNULL,
                                               stderr=open(os.path.join(tmp, f"{daemon}-{backend}.log"), "w")))
            wait_port(port)
        user = "`user`" if backend == "mysql" else '"user"'
        seed = (f"insert into {user} (user_name, user_passwd) values ('bench', '{hashed}');"
                "insert into box (box_address, box_user) values ('bench@bench.test', 1);")
        # The daemons listen before their migrations are done: retry until the schema is there.
        for attempt in range(60):
            try:
                self.admin(seed, quiet=True); break
            except (subprocess.CalledProcessError, sqlite3.Error):
                if attempt == 59:
                    self.stop(); raise
                time.sleep(0.5)

    def admin(self, sql, admin_db=False, quiet=False):
        err = subprocess.DEVNULL if quiet else None
        if self.backend == "sqlite":
            c = sqlite3.connect(f"{self.tmp}/peers.db")
            try:
                c.executescript(sql); c.commit()
            finally:
                c.close()
        elif self.backend == "postgres":
            subprocess.run(["psql", self.admin_url if admin_db else self.db_url, "-v", "ON_ERROR_STOP=1", "-qc", sql],
                           check=True, stderr=err)
        else:
            args = ["mysql", "-uroot", "-h", self.host] + ([] if admin_db else [self.db])
            subprocess.run(args + ["-e", sql], check=True, stderr=err)

    def fill(self, n, size):
        data, per = body(size), 8
        def client(k):
            s = smtplib.SMTP("127.0.0.1", self.smtp_port, local_hostname="bench.test", timeout=60)
            for _ in range(k):
                s.sendmail("load@bench.test", ["bench@bench.test"], data)
            s.quit()
        threads = [threading.Thread(target=client, args=(n // per + (1 if i < n % per else 0),)) for i in range(per)]
        for t in threads: t.start()
        for t in threads: t.join()

    def stop(self):
        for p in self.procs:
            p.terminate(); p.wait()
        if self.backend == "postgres":
            subprocess.run(["psql", self.admin_url, "-qc", f"drop database if exists {self.db} with (force)"])
        elif self.backend == "mysql":
            subprocess.run(["mysql", "-uroot", "-h", self.host, "-e", f"drop database if exists {self.db}"])

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--logins", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--postgres"); ap.add_argument("--mysql")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release"))
    a = ap.parse_args()
    ensure_dovecot()
    tmp = tempfile.mkdtemp(prefix="mmmail-peers-")
    hashed = subprocess.run([os.path.join(a.bin, "mmpasswd"), "--stdin"], input="bench\n",
                            capture_output=True, text=True, check=True).stdout.strip()
    peers = []
    try:
        peers.append(("Dovecot", Dovecot(tmp, hashed)))
        for backend, url in (("sqlite", None), ("postgres", a.postgres), ("mysql", a.mysql)):
            if backend == "sqlite" or url:
                peers.append((f"mmmail {backend}", Mmmail(tmp, a.bin, backend, url, hashed)))
        session = {name: [] for name, _ in peers}
        login = {name: [] for name, _ in peers}
        for r in range(a.rounds):
            for name, peer in peers:
                peer.fill(a.messages, a.size)
                wall, count = pop3_session(peer.port, "bench@bench.test")
                if count != a.messages:
                    raise SystemExit(f"{name}: {count} messages listed, {a.messages} expected")
                session[name].append(count / wall)
                login[name].append(logins(peer.port, "bench@bench.test", a.logins))
            print(f"round {r + 1}: " + ", ".join(f"{n} {session[n][-1]:.0f} msg/s {login[n][-1]:.0f} ms"
                                                for n, _ in peers), flush=True)
        ref_s, ref_l = statistics.median(session["Dovecot"]), statistics.median(login["Dovecot"])
        print(f"\nPOP3, one session RETR+DELE {a.messages} x {a.size} B, and {a.logins} sequential logins + QUIT; "
              f"medians of {a.rounds} interleaved rounds")
        print("| server | messages/s | vs Dovecot | ms per login | vs Dovecot |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name, _ in peers:
            s, l = statistics.median(session[name]), statistics.median(login[name])
            print(f"| {name} | {s:.0f} | {s / ref_s:.2f}x | {l:.0f} | {ref_l / l:.2f}x |")
    finally:
        for _, peer in peers:
            peer.stop()

if __name__ == "__main__":
    main()
