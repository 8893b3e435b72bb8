#!/usr/bin/env python3
"""Bandwidth shaping benchmark: real rates of a real mmpop3d.

Starts mmpop3d on loopback with [shaping] per_connection_out = 256 KiB/s and
global_out = 1024 KiB/s on a throw-away SQLite database, stores one 2 MiB message in
several boxes, then has 1 and then 6 POP3 clients RETR it at once, and prints each
client's rate and the total. Expect about 256 KiB/s for one client (a little more: each
bucket starts with one second of tokens) and about 1024 KiB/s shared by six.

Usage: scripts/bench-shaping.py [path/to/mmpop3d]   (default target/release, then debug)
"""
import os, poplib, socket, sqlite3, subprocess, sys, tempfile, threading, time

from benchlib import free_port, unit_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = sys.argv[1] if len(sys.argv) > 1 else next(
    p for p in (os.path.join(ROOT, "target", k, "mmpop3d") for k in ("release", "debug")) if os.path.exists(p))
PER_CONN, GLOBAL, SIZE, CLIENTS = 256, 1024, 2 * 1024 * 1024, 6
PASSWORD = "bench"

def main():
    tmp = tempfile.mkdtemp(prefix="mmmail-bench-")
    db, port = os.path.join(tmp, "bench.db"), free_port()
    cfg = os.path.join(tmp, "mmpop3d.toml")
    root_ok = "[privileges]\nallow_root = true\n" if os.geteuid() == 0 else ""
    with open(cfg, "w") as f:
        f.write(f"""[server]\nname = "bench.test"\n[database]\nurl = "sqlite://{db}"\n
[listen]\naddresses = ["127.0.0.1:{port}"]\n[limits]\nmax_per_address = 0\nconnection_rate = 0\n
[shaping]\nper_connection_out = {PER_CONN}\nglobal_out = {GLOBAL}\n{root_ok}""")
    log = open(os.path.join(tmp, "mmpop3d.log"), "w")
    proc = subprocess.Popen([BIN, "-c", cfg], stderr=log, env=unit_env("mmpop3d"))
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close(); break
            except OSError:
                time.sleep(0.1)
        hashed = subprocess.run([os.path.join(os.path.dirname(BIN), "mmpasswd"), "--stdin"],
                                input=PASSWORD + "\n", capture_output=True, text=True, check=True).stdout.strip()
        c = sqlite3.connect(db)
        c.execute("insert into \"user\" (user_name, user_passwd) values ('bench', ?)", (hashed,))
        body = b"Subject: bench\r\n\r\n" + b"x" * 78 + b"\r\n"
        body = body * (SIZE // len(body))
        mid = c.execute("insert into message (message_size, message_created, message_data) values (?, 0, ?)",
                        (len(body), body)).lastrowid
        for i in range(CLIENTS):
            c.execute("insert into box values (?, 1, 0, ?, 0, 1, CURRENT_TIMESTAMP, NULL, NULL)",
                      (f"b{i}@bench.test", len(body)))
            c.execute("insert into mail (mail_uid, mail_box, mail_message, mail_size, mail_created, mail_trace) "
                      "values (?, ?, ?, ?, 0, x'')", (f"u{i}", f"b{i}@bench.test", mid, len(body)))
        c.commit()

        def fetch(i, out):
            p = poplib.POP3("127.0.0.1", port, timeout=120)
            p.user(f"b{i}@bench.test"); p.pass_(PASSWORD)
            t = time.monotonic(); _, lines, octets = p.retr(1); out[i] = (octets, time.monotonic() - t); p.quit()

        for n in (1, CLIENTS):
            out = {}
            threads = [threading.Thread(target=fetch, args=(i, out)) for i in range(n)]
            t = time.monotonic()
            for th in threads: th.start()
            for th in threads: th.join()
            wall = time.monotonic() - t
            rates = [o / s / 1024 for o, s in out.values()]
            total = sum(o for o, _ in out.values()) / wall / 1024
            print(f"{n} client(s), {SIZE // 1024} KiB each, limits {PER_CONN} KiB/s per connection, {GLOBAL} KiB/s global:")
            print(f"  per client: {', '.join(f'{r:.0f}' for r in rates)} KiB/s;  total: {total:.0f} KiB/s over {wall:.1f} s")
    finally:
        proc.terminate(); proc.wait()

if __name__ == "__main__":
    main()
