#!/usr/bin/env python3
"""mmmail side by side with Postfix and Dovecot (issue 16): the same clients against both.

Postfix 3.7 and Dovecot 2.3 come from Debian (postfix, dovecot-pop3d; installed if
missing, with policy-rc.d keeping the system instances from starting). Each runs as a
private instance: its own configuration and directories under a temporary directory,
loopback on free high ports (never port 25), stopped at the end. Postfix delivers
through virtual(8) into the Maildirs Dovecot serves; Dovecot's passwd-file holds the
very Argon2id hash mmpasswd makes (m=64 MiB, t=3, p=1; Dovecot verifies it with
libsodium). mmmail runs mmsmtpd and mmpop3d with mmstatd counting, on SQLite, and on
PostgreSQL / MariaDB when --postgres / --mysql name a server where a scratch database may
be created. Rounds are interleaved; the table gives medians and ratios to Postfix /
Dovecot (above 1: mmmail is better).

Workloads, each round, each server:
  * SMTP intake: Postfix's own smtp-source, 20 sessions in parallel, one message per
    connection: MESSAGES messages of SIZE bytes to one box, then BIG messages of 100 KiB
    to another (messages/s, time until the last 250);
  * POP3, one session: RETR and DELE of each of the MESSAGES messages, one command at a
    time, then QUIT (messages/s, the QUIT included, the login not);
  * POP3, ten sessions at once, each RETR+DELE of 200 messages of SIZE bytes in a box of
    its own, timed from when all are logged in (messages/s in all);
  * LOGINS sequential POP3 logins (USER/PASS) each followed by QUIT (ms per login);
  * a burst of BURST clients connecting at once to the SMTP and to the POP3 port, each
    saying QUIT once greeted (how many greeted within 2 s, the slowest).
Both retrieval workloads run mmpop3-load (cargo build --release -p tmtp-load), a
compiled client with a thread per session: the Python clients used before (ten
processes of benchlib.Pop3) spent more CPU per message than either server, so on two
cores they measured mostly themselves. Before retrieval is timed, the intake's writes
are synced to disk; before each server's round the machine is let go quiet (the server
before it may still be working off its burst). Logins use benchlib.Pop3 (poplib's
line-by-line reading cost more per message than either server).

Usage: scripts/bench-peers.py [--messages 2000] [--size 4096] [--big 200] [--logins 100]
                              [--burst 1000] [--rounds 3] [--postgres URL] [--mysql URL]
                              [--bin DIR]
"""
import argparse, os, pwd, shutil, statistics, subprocess, tempfile, threading, time

from benchlib import Mmmail, Pop3, burst, free_port, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOBODY = 65534
SESSIONS, PER_SESSION = 10, 200
BOXES = ["bench", "big"] + [f"s{i}" for i in range(SESSIONS)]

def ensure(binary, package, debconf=None):
    """Installs Debian's `package` unless `binary` is there, never starting its service."""
    if shutil.which(binary):
        return
    guard, made = "/usr/sbin/policy-rc.d", False
    if not os.path.exists(guard):
        with open(guard, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(guard, 0o755); made = True
    try:
        if debconf:
            subprocess.run(["debconf-set-selections"], input=debconf, text=True, check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"), stdout=subprocess.DEVNULL)
    finally:
        if made:
            os.remove(guard)

def smtp_source(port, count, size, rcpt, sessions=20):
    """Seconds for smtp-source to deliver `count` messages of `size` payload bytes."""
    t = time.monotonic()
    subprocess.run(["smtp-source", "-s", str(sessions), "-m", str(count), "-l", str(size), "-f", "load@bench.test",
                    "-t", f"{rcpt}@bench.test", f"127.0.0.1:{port}"], check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - t

def pop3_load(bindir, port, boxes, expect):
    """Messages/s of mmpop3-load, one session per box, each RETR+DELE of the `expect`
    messages of its box and QUIT, timed from when all are logged in to the last QUIT's
    answer."""
    out = subprocess.run([os.path.join(bindir, "mmpop3-load"), "--addr", f"127.0.0.1:{port}",
                          "--expect", str(expect)] + [f"{b}@bench.test" for b in boxes],
                         input="bench\n", capture_output=True, text=True, check=True).stdout
    return float(out.split()[-2])

def drain(port, box):
    """Deletes every message of `box` (DELE only)."""
    p = Pop3(port, f"{box}@bench.test", "bench")
    for i in range(1, p.stat() + 1):
        p.cmd(f"DELE {i}")
    p.quit()

def logins(port, n):
    """Milliseconds per login + QUIT, n in a row."""
    t = time.monotonic()
    for _ in range(n):
        Pop3(port, "bench@bench.test", "bench").quit()
    return (time.monotonic() - t) * 1000 / n

def burst_figures(port, n):
    """(greeted within 2 s, slowest greeting in seconds) for n clients at once."""
    results = burst(port, n, hold=False)
    waits = [t for t, ok in results if ok]
    return sum(1 for t in waits if t <= 2.0), (max(waits) if len(waits) == n else float("inf"))

class Peers:
    """Postfix delivering into Dovecot's Maildirs, Dovecot serving them."""
    name = "Postfix / Dovecot"

    def __init__(self, tmp, hashed):
        self.dir = os.path.join(tmp, "peers")
        self.mail = os.path.join(self.dir, "mail")
        for d in ("run", "state", "mail", "pf/conf", "pf/spool", "pf/data"):
            os.makedirs(os.path.join(self.dir, d), exist_ok=True)
        os.chmod(tmp, 0o755); os.chmod(self.dir, 0o755)
        os.chown(self.mail, NOBODY, NOBODY)
        self.port, self.smtp_port = free_port(), free_port()
        self.dovecot_conf = os.path.join(self.dir, "dovecot.conf")
        with open(os.path.join(self.dir, "passwd"), "w") as f:
            f.writelines(f"{b}@bench.test:{{ARGON2ID}}{hashed}\n" for b in BOXES)
        with open(self.dovecot_conf, "w") as f:
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
  args = uid={NOBODY} gid={NOBODY} home={self.mail}/%u
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
        pf = os.path.join(self.dir, "pf")
        self.pf_conf = os.path.join(pf, "conf")
        owner = pwd.getpwnam("postfix")
        os.chown(os.path.join(pf, "data"), owner.pw_uid, owner.pw_gid)
        with open(os.path.join(self.pf_conf, "vmailbox"), "w") as f:
            f.writelines(f"{b}@bench.test {b}@bench.test/Maildir/\n" for b in BOXES)
        with open(os.path.join(self.pf_conf, "main.cf"), "w") as f:
            f.write(f"""compatibility_level = 3.6
queue_directory = {pf}/spool
data_directory = {pf}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.test
mydomain = bench.test
myorigin = bench.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
virtual_mailbox_domains = bench.test
virtual_mailbox_base = {self.mail}
virtual_mailbox_maps = texthash:{self.pf_conf}/vmailbox
virtual_uid_maps = static:{NOBODY}
virtual_gid_maps = static:{NOBODY}
alias_maps =
alias_database =
local_recipient_maps =
biff = no
smtputf8_enable = no
maillog_file_prefixes = {pf}
maillog_file = {pf}/maillog
""")
        services = ["pickup unix n - n 60 1 pickup", "cleanup unix n - n - 0 cleanup", "qmgr unix n - n 300 1 qmgr",
                    "rewrite unix - - n - - trivial-rewrite", "bounce unix - - n - 0 bounce",
                    "defer unix - - n - 0 bounce", "trace unix - - n - 0 bounce", "verify unix - - n - 1 verify",
                    "flush unix n - n 1000? 0 flush", "proxymap unix - - n - - proxymap",
                    "smtp unix - - n - - smtp", "relay unix - - n - - smtp", "showq unix n - n - - showq",
                    "error unix - - n - - error", "retry unix - - n - - error", "discard unix - - n - - discard",
                    "local unix - n n - - local", "virtual unix - n n - - virtual", "anvil unix - - n - 1 anvil",
                    "scache unix - - n - 1 scache", "postlog unix-dgram n - n - 1 postlogd"]
        with open(os.path.join(self.pf_conf, "master.cf"), "w") as f:
            f.write(f"127.0.0.1:{self.smtp_port} inet n - n - - smtpd\n" + "\n".join(services) + "\n")
        subprocess.run(["dovecot", "-c", self.dovecot_conf], check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.postfix("start")
        wait_port(self.port); wait_port(self.smtp_port)

    def postfix(self, what):
        subprocess.run(["postfix", "-c", self.pf_conf, what], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=what == "start")

    def delivered(self, box, count, seconds=300):
        """Waits until virtual(8) has put `count` messages into `box`'s Maildir."""
        new = os.path.join(self.mail, f"{box}@bench.test", "Maildir", "new")
        for _ in range(seconds * 20):
            if os.path.isdir(new) and len(os.listdir(new)) >= count:
                return
            time.sleep(0.05)
        raise SystemExit(f"Postfix delivered {len(os.listdir(new)) if os.path.isdir(new) else 0} of {count} to {box}")

    def stop(self):
        self.postfix("stop")
        subprocess.run(["dovecot", "-c", self.dovecot_conf, "stop"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

class Ours:
    """mmsmtpd and mmpop3d with mmstatd counting, on one backend."""
    def __init__(self, tmp, bindir, backend, url, hashed):
        self.mm = Mmmail(tmp, bindir, backend, url, boxes=BOXES, hashed=hashed, statd=True)
        self.name, self.port, self.smtp_port = self.mm.name, self.mm.port, self.mm.smtp_port

    def delivered(self, box, count):
        pass  # mmsmtpd answers 250 only once the message is stored in the box

    def stop(self):
        self.mm.stop()

COLUMNS = [("intake", "SMTP intake, {messages} x {size} B, 20 sessions (msg/s)", True),
           ("intake_big", "SMTP intake, {big} x 100 KiB, 20 sessions (msg/s)", True),
           ("one", "POP3, one session RETR+DELE {messages} x {size} B (msg/s)", True),
           ("ten", "POP3, 10 sessions x 200 (msg/s)", True),
           ("login", "{logins} sequential logins + QUIT (ms each)", False),
           ("burst_smtp", "{burst} clients connecting at once, SMTP", False),
           ("burst_pop3", "{burst} clients connecting at once, POP3", False)]

def settle():
    """Writes what the intake left in the page cache out to disk before retrieval is
    timed, so that the kernel's writeback does not share its time (it took a core for
    seconds on a virtual disk here)."""
    os.sync(); time.sleep(1)

def cpu_busy(seconds=1.0):
    """The share of the machine's CPU time (0-1) not idle or waiting over `seconds`."""
    def sample():
        v = list(map(int, open("/proc/stat").readline().split()[1:]))
        return v[3] + v[4], sum(v)
    idle0, total0 = sample(); time.sleep(seconds); idle1, total1 = sample()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)

def quiet(limit=60):
    """Waits until the machine is quiet (under 10% busy over a second), at most `limit`
    seconds: what the server measured before is still busy for seconds after its round
    (Postfix and Dovecot work off the connections of the burst they did not greet for up
    to 10 s), and that time would otherwise be taken from the next server's intake."""
    t = time.monotonic()
    while cpu_busy() > 0.10:
        if time.monotonic() - t > limit:
            print(f"note: the machine was still busy after {limit} s; measuring anyway", flush=True)
            return

def one_round(s, a):
    fig = {}
    fig["intake"] = a.messages / smtp_source(s.smtp_port, a.messages, a.size, "bench")
    fig["intake_big"] = a.big / smtp_source(s.smtp_port, a.big, 102400, "big")
    s.delivered("bench", a.messages)
    settle()
    fig["one"] = pop3_load(a.bin, s.port, ["bench"], a.messages)
    s.delivered("big", a.big)
    drain(s.port, "big")
    fill = [threading.Thread(target=smtp_source, args=(s.smtp_port, PER_SESSION, a.size, f"s{i}", 2))
            for i in range(SESSIONS)]
    for th in fill: th.start()
    for th in fill: th.join()
    for i in range(SESSIONS):
        s.delivered(f"s{i}", PER_SESSION)
    settle()
    fig["ten"] = pop3_load(a.bin, s.port, [f"s{i}" for i in range(SESSIONS)], PER_SESSION)
    fig["login"] = logins(s.port, a.logins)
    greeted, fig["burst_smtp"] = burst_figures(s.smtp_port, a.burst)
    fig["burst_smtp_2s"] = greeted
    greeted, fig["burst_pop3"] = burst_figures(s.port, a.burst)
    fig["burst_pop3_2s"] = greeted
    return fig

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--big", type=int, default=200)
    ap.add_argument("--logins", type=int, default=100)
    ap.add_argument("--burst", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--postgres"); ap.add_argument("--mysql")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release"))
    a = ap.parse_args()
    ensure("dovecot", "dovecot-pop3d")
    ensure("postfix", "postfix", "postfix postfix/main_mailer_type select No configuration\n")
    tmp = tempfile.mkdtemp(prefix="mmmail-peers-")
    hashed = subprocess.run([os.path.join(a.bin, "mmpasswd"), "--stdin"], input="bench\n",
                            capture_output=True, text=True, check=True).stdout.strip()
    servers = []
    try:
        servers.append(Peers(tmp, hashed))
        for backend, url in (("sqlite", None), ("postgres", a.postgres), ("mysql", a.mysql)):
            if backend == "sqlite" or url:
                servers.append(Ours(tmp, a.bin, backend, url, hashed))
        figs = {s.name: [] for s in servers}
        for r in range(a.rounds):
            for s in servers:
                quiet()
                figs[s.name].append(one_round(s, a))
                f = figs[s.name][-1]
                print(f"round {r + 1}, {s.name}: " + ", ".join(f"{k} {f[k]:.3g}" for k in sorted(f)), flush=True)
        med = {name: {k: statistics.median(f[k] for f in rounds) for k in rounds[0]} for name, rounds in figs.items()}
        ref = med[servers[0].name]
        print(f"\nmedians of {a.rounds} interleaved rounds; ratios to {servers[0].name} (above 1: better); "
              "mmstatd counting for mmmail")
        print("| workload | " + " | ".join(s.name for s in servers) + " |")
        print("| --- |" + " ---: |" * len(servers))
        for key, label, higher in COLUMNS:
            cells = []
            for s in servers:
                v = med[s.name][key]
                if key.startswith("burst"):
                    within = med[s.name][key + "_2s"]
                    cell = (f"{within:.0f} within 2 s, slowest {v:.2f} s" if v != float("inf")
                            else f"{within:.0f} within 2 s, not all greeted within 30 s")
                else:
                    cell = f"{v:.0f}"
                    if s is not servers[0] and v and ref[key]:
                        cell += f" · {(v / ref[key] if higher else ref[key] / v):.2f}x"
                cells.append(cell)
            print(f"| {label.format(**vars(a))} | " + " | ".join(cells) + " |")
    finally:
        for s in servers:
            s.stop()

if __name__ == "__main__":
    main()
