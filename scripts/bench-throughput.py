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
import argparse, os, poplib, smtplib, tempfile, threading, time

from benchlib import Mmmail, message, vmhwm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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
    backend, url = ("postgres", a.postgres) if a.postgres else ("mysql", a.mysql) if a.mysql else ("sqlite", None)
    mm = Mmmail(tmp, a.bin, backend, url, statd=False)
    smtp_port, pop_port = mm.smtp_port, mm.port
    try:
        body = message(a.size)
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
        print(f"peak RSS: mmsmtpd {vmhwm(mm.smtpd.pid)}, mmpop3d {vmhwm(mm.pop3d.pid)}")
    finally:
        mm.stop()

if __name__ == "__main__":
    main()
