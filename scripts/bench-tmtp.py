#!/usr/bin/env python3
"""TMTP load: mmtmtpd-load (mnm's simulation over TCP+TLS) against a fresh release
mmtmtpd on a throw-away database (SQLite by default, or --postgres URL / --mysql URL of
a server where a scratch database may be created). Prints the generator's figures.

Usage: scripts/bench-tmtp.py [--clients 100] [--cycles 2] [--sleep-scale 0]
                             [--sizes-2017] [--postgres URL | --mysql URL] [--bin DIR]
                             [--pool N]
                             [--server HOST:PORT --ca CERT.pem [--server-pid PID]]
                             [--table [--table-scale N]]

--server runs the generator against a TMTP server already running (mnm, for a side by
side comparison; start it with a fresh store for each run): --ca is its certificate,
--server-pid lets the generator report its peak RSS.

--table runs the three loads of issue 19 one after another (100 clients x 1 cycle with
no pauses; 100 x 2 with mnm's pauses x 0.02; 1000 x 1 with pauses x 0.05), each on a
fresh mmtmtpd and store (with --server: the same server, so restart it between loads by
hand, or run the loads one by one), and prints one Markdown row per load: messages/s,
latency p50 and p99, peak RSS, deliveries missing. --table-scale N divides the client
counts (a quick look).

mmtmtpd runs with its unit's environment (etc/systemd) and its configuration's defaults
but for the listener, the limits on clients, and counting (off); --pool N sets
[database] max_connections (default: the daemon's own, 8).
"""
import argparse, os, re, subprocess, sys, tempfile

from benchlib import scratch_database, self_signed, start_mmtmtpd, unit_env

LOADS = [(100, 1, "0"), (100, 2, "0.02"), (1000, 1, "0.05")]

def table(a, passthrough):
    print("| load | messages/s | p50 | p99 | peak RSS | missing |")
    print("| --- | --- | --- | --- | --- | --- |")
    for clients, cycles, scale in LOADS:
        clients = max(1, clients // a.table_scale)
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--clients", str(clients), "--cycles",
                              str(cycles), "--sleep-scale", scale] + passthrough,
                             capture_output=True, text=True).stdout
        def grab(pat):
            m = re.search(pat, out)
            return m.group(1) if m else "?"
        row = [f"{clients} clients, {cycles} cycle(s), pauses x {scale}", grab(r"stored +\d+ \(([0-9.]+)/s"),
               grab(r"p50 ([0-9.]+ ms)"), grab(r"p99 ([0-9.]+ ms)"), grab(r"peak RSS +([0-9.]+ MiB)"),
               grab(r"missing (\d+)")]
        print("| " + " | ".join(row) + " |", flush=True)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--cycles", type=int, default=2)
    ap.add_argument("--sleep-scale", default="0")
    ap.add_argument("--sizes-2017", action="store_true")
    ap.add_argument("--postgres"); ap.add_argument("--mysql")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release"))
    ap.add_argument("--pool", type=int)
    ap.add_argument("--server"); ap.add_argument("--ca"); ap.add_argument("--server-pid")
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--table-scale", type=int, default=1)
    a = ap.parse_args()
    if a.table:
        passthrough = []
        for flag in ("postgres", "mysql", "bin", "server", "ca", "server_pid", "pool"):
            v = getattr(a, flag)
            v = None if v is None else str(v)
            if v and not (flag == "bin" and v == os.path.join(ROOT, "target", "release")):
                passthrough += ["--" + flag.replace("_", "-"), v]
        if a.sizes_2017:
            passthrough.append("--sizes-2017")
        table(a, passthrough)
        return
    if a.server:
        args = [os.path.join(a.bin, "mmtmtpd-load"), "--addr", a.server, "--ca", a.ca, "--clients", str(a.clients),
                "--cycles", str(a.cycles), "--sleep-scale", a.sleep_scale]
        if a.server_pid:
            args += ["--server-pid", a.server_pid]
        if a.sizes_2017:
            args.append("--sizes-2017")
        print(f"{a.server}: {a.clients} clients x {a.cycles} cycles, sleep scale {a.sleep_scale}")
        subprocess.run(args, check=False)
        return
    tmp = tempfile.mkdtemp(prefix="mmmail-bench-tmtp-")
    url, drop = scratch_database(a.postgres, a.mysql, "mmmail_tmtp_%d" % os.getpid(), tmp)
    self_signed(tmp)
    d = None
    try:
        # With the environment its systemd unit gives it (glibc malloc settings), as installed.
        d, port = start_mmtmtpd(a.bin, tmp, url, "bench", pool=a.pool)
        args = [os.path.join(a.bin, "mmtmtpd-load"), "--addr", f"127.0.0.1:{port}", "--ca", f"{tmp}/cert.pem",
                "--clients", str(a.clients), "--cycles", str(a.cycles), "--sleep-scale", a.sleep_scale,
                "--server-pid", str(d.pid)]
        if a.sizes_2017:
            args.append("--sizes-2017")
        backend = "postgres" if a.postgres else "mysql" if a.mysql else "sqlite"
        env = unit_env("mmtmtpd")
        print(f"mmtmtpd on {backend}: {a.clients} clients x {a.cycles} cycles, sleep scale {a.sleep_scale}"
              + "".join(f", {k}={v}" for k, v in env.items() if os.environ.get(k) != v))
        subprocess.run(args, check=False)
    finally:
        if d:
            d.terminate(); d.wait()
        drop()

if __name__ == "__main__":
    main()
