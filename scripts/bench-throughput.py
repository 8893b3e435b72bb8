#!/usr/bin/env python3
"""Throughput benchmark: SMTP intake and POP3 retrieval of a real mmsmtpd and mmpop3d.

Starts both daemons on loopback against a throw-away database (SQLite by default, or
--postgres URL / --mysql URL of a server where a scratch database may be created), with
per-address limits, tarpit and flood limit off. Then:
  * SMTP: CLIENTS concurrent smtplib sessions each deliver MESSAGES messages of SIZE bytes
    to one box (one connection per client, one transaction per message);
  * POP3: one session lists and retrieves every message, then deletes them at QUIT.
Prints messages/s, MiB/s and each daemon's peak resident memory (VmHWM).

Usage: scripts/bench-throughput.py [--clients 8] [--messages 250] [--size 2048]
                                   [--postgres URL | --mysql URL] [--bin DIR]
"""
import argparse, os, poplib, smtplib, socket, sqlite3, subprocess, sys, tempfile, threading, time

from benchlib import free_port, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def vmhwm(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return line.split()[1] + " kB"
    return "?"

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--messages", type=int, default=250)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--postgres"); ap.add_argument("--mysql")
    ap.add_argument("--bin", default=next(d for d in (os.path.join(ROOT, "target", k) for k in ("release", "debug"))
                                          if os.path.exists(os.path.join(d, "mmsmtpd"))))
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="mmmail-bench-")
    name = "mmmail_bench_%d" % os.getpid()
    admin = None
    if a.postgres or a.mysql:
        url = a.postgres or a.mysql
        base, _, _ = url.rpartition("/")
        admin = ("psql", url) if a.postgres else ("mysql", url)
        if a.postgres:
            subprocess.run(["psql", url, "-qc", f"create database {name}"], check=True)
        else:
            host = url.split("@")[-1].split("/")[0].split(":")[0]
            subprocess.run(["mysql", "-uroot", "-h", host, "-e", f"create database {name}"], check=True)
        db_url = f"{base}/{name}"
    else:
        db_url = f"sqlite://{tmp}/bench.db"
    root_ok = "[privileges]\nallow_root = true\n" if os.geteuid() == 0 else ""
    limits = "[limits]\nmax_per_address = 0\nconnection_rate = 0\nerror_delay = 0\nmax_clients = 1000\n"
    smtp_port, pop_port = free_port(), free_port()
    procs = []
    for daemon, port, extra in (("mmsmtpd", smtp_port, "[smtpd]\nflood_messages = 0\n"), ("mmpop3d", pop_port, "")):
        cfg = os.path.join(tmp, daemon + ".toml")
        with open(cfg, "w") as f:
            f.write(f'[server]\nname = "bench.test"\n[database]\nurl = "{db_url}"\n'
                    f'[listen]\naddresses = ["127.0.0.1:{port}"]\n{limits}{extra}{root_ok}')
        procs.append(subprocess.Popen([os.path.join(a.bin, daemon), "-c", cfg],
                                      stderr=open(os.path.join(tmp, daemon + ".log"), "w")))
        wait_port(port)
    try:
        hashed = subprocess.run([os.path.join(a.bin, "mmpasswd"), "--stdin"], input="bench\n",
                                capture_output=True, text=True, check=True).stdout.strip()
        seed = (f"insert into {'`user`' if a.mysql else chr(34) + 'user' + chr(34)} (user_name, user_passwd) values ('bench', '{hashed}');"
                "insert into box (box_address, box_user) values ('bench@bench.test', 1);")
        if a.postgres:
            subprocess.run(["psql", db_url, "-qc", seed], check=True)
        elif a.mysql:
            subprocess.run(["mysql", "-uroot", "-h", host, name, "-e", seed], check=True)
        else:
            c = sqlite3.connect(f"{tmp}/bench.db"); c.executescript(seed); c.commit(); c.close()

        body = ("Subject: bench\r\n\r\n" + ("x" * 70 + "\r\n") * (a.size // 72)).encode()
        errors = []
        def client():
            try:
                s = smtplib.SMTP("127.0.0.1", smtp_port, local_hostname="bench.test", timeout=60)
                for _ in range(a.messages):
                    s.sendmail("load@bench.test", ["bench@bench.test"], body)
                s.quit()
            except Exception as e:
                errors.append(e)
        threads = [threading.Thread(target=client) for _ in range(a.clients)]
        t = time.monotonic()
        for th in threads: th.start()
        for th in threads: th.join()
        wall = time.monotonic() - t
        total = a.clients * a.messages
        backend = "postgres" if a.postgres else "mysql" if a.mysql else "sqlite"
        print(f"SMTP intake ({backend}, {a.clients} clients x {a.messages} messages of {len(body)} bytes): "
              f"{total / wall:.0f} messages/s, {total * len(body) / wall / 2**20:.2f} MiB/s; errors: {len(errors)}")

        p = poplib.POP3("127.0.0.1", pop_port, timeout=120)
        p.user("bench@bench.test"); p.pass_("bench")
        count, size = p.stat()
        t = time.monotonic()
        for i in range(1, count + 1):
            p.retr(i); p.dele(i)
        t_quit = time.monotonic()
        p.quit()
        wall = time.monotonic() - t
        print(f"POP3 retrieval ({backend}, one session, RETR+DELE of {count} messages, QUIT commits): "
              f"{count / wall:.0f} messages/s, {size / wall / 2**20:.2f} MiB/s; "
              f"of which QUIT {(time.monotonic() - t_quit) * 1000:.0f} ms")
        print(f"peak RSS: mmsmtpd {vmhwm(procs[0].pid)}, mmpop3d {vmhwm(procs[1].pid)}")
    finally:
        for p_ in procs: p_.terminate(); p_.wait()
        if a.postgres:
            subprocess.run(["psql", a.postgres, "-qc", f"drop database if exists {name} with (force)"])
        elif a.mysql:
            subprocess.run(["mysql", "-uroot", "-h", host, "-e", f"drop database if exists {name}"])

if __name__ == "__main__":
    main()
