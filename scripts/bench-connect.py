#!/usr/bin/env python3
"""Connection burst: CLIENTS clients connect to a real mmsmtpd at the same moment; how
many are greeted (220) within 2 seconds, and how long the slowest waited.

Starts mmsmtpd on loopback against a throw-away SQLite database, with max_clients above
the burst and the per-address and rate limits off, once per [listen] backlog given
(default: 128, Rust's own default before issue 16, then unset, which is the kernel's
net.core.somaxconn). All connections are opened in one tight loop (non-blocking), then
each waits for its greeting, timed from the start of the burst; all stay open until
every client is done or 30 s passed. Needs `ulimit -n` above 2 x CLIENTS.

Usage: scripts/bench-connect.py [--clients 1000] [--backlogs 128,default] [--bin DIR]
"""
import argparse, os, statistics, subprocess, tempfile, time

from benchlib import burst, free_port, unit_env, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--backlogs", default="128,default")
    ap.add_argument("--bin", default=next(d for d in (os.path.join(ROOT, "target", k) for k in ("release", "debug"))
                                          if os.path.exists(os.path.join(d, "mmsmtpd"))))
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="mmmail-bench-connect-")
    root_ok = "[privileges]\nallow_root = true\n" if os.geteuid() == 0 else ""
    somaxconn = open("/proc/sys/net/core/somaxconn").read().strip()
    print(f"{a.clients} clients connecting at once to mmsmtpd ({a.bin}); net.core.somaxconn = {somaxconn}")
    print("| backlog | greeted within 2 s | greeted at all | median wait | slowest |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for backlog in a.backlogs.split(","):
        port = free_port()
        setting = "" if backlog == "default" else f"backlog = {int(backlog)}\n"
        cfg = os.path.join(tmp, f"mmsmtpd-{backlog}.toml")
        with open(cfg, "w") as f:
            f.write(f'[server]\nname = "bench.test"\n[database]\nurl = "sqlite://{tmp}/b-{backlog}.db"\n'
                    f'[listen]\naddresses = ["127.0.0.1:{port}"]\n{setting}'
                    f"[limits]\nmax_clients = {a.clients * 3}\nmax_per_address = 0\nconnection_rate = 0\n"
                    f"[stats]\nenabled = false\n{root_ok}")
        proc = subprocess.Popen([os.path.join(a.bin, "mmsmtpd"), "-c", cfg], env=unit_env("mmsmtpd"),
                                stderr=open(os.path.join(tmp, f"mmsmtpd-{backlog}.log"), "w"))
        try:
            wait_port(port)
            time.sleep(0.5)
            results = burst(port, a.clients)
        finally:
            proc.terminate(); proc.wait()
        waits = sorted(t for t, ok in results if ok)
        fast = sum(1 for t, ok in results if ok and t <= 2.0)
        label = f"{backlog} (somaxconn)" if backlog == "default" else backlog
        median = f"{statistics.median(waits):.3f} s" if waits else "–"
        slowest = f"{waits[-1]:.3f} s" if waits else "–"
        print(f"| {label} | {fast} of {a.clients} | {len(waits)} | {median} | {slowest} |")

if __name__ == "__main__":
    main()
