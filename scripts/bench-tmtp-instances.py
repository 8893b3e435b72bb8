#!/usr/bin/env python3
"""Delivery latency across two mmtmtpd instances on one database (issue 19): starts two
release mmtmtpd on a scratch database of the PostgreSQL (or MariaDB/MySQL) server given,
then, round after round, has a sender on instance A post small messages one at a time
(each after the previous one's ack) to a recipient on A ("within"), and to a recipient on
B ("across"): the recipient's instance learns of each message from A (PostgreSQL NOTIFY;
elsewhere a look every `[tmtpd] wake_poll` ms). Prints p50/p90/p99 of post -> delivery
for both, and the difference of the medians against the target on PostgreSQL (at most
50 ms more across than within). Uses scripts/bench-tmtp-ack.py for the clients.

Usage: scripts/bench-tmtp-instances.py --postgres URL | --mysql URL [--bin DIR]
                                       [--posts 300] [--size 200] [--rounds 3]
"""
import argparse, importlib.util, os, statistics, subprocess, sys, tempfile, time

from benchlib import free_port, unit_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "scripts")


def ack_bench():
    spec = importlib.util.spec_from_file_location("bench_tmtp_ack", os.path.join(SCRIPTS, "bench-tmtp-ack.py"))
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


def start(bindir, tmp, url, tag):
    """One mmtmtpd on `url`, its own config, port and log; (process, address)."""
    port = free_port()
    root_ok = "[privileges]\nallow_root = true\n" if os.geteuid() == 0 else ""
    cfg = f"{tmp}/mmtmtpd-{tag}.toml"
    log = f"{tmp}/mmtmtpd-{tag}.log"
    open(cfg, "w").write(
        f'[server]\nname = "bench.test"\n[database]\nurl = "{url}"\n'
        f'[listen]\ntls_addresses = ["127.0.0.1:{port}"]\n[tls]\ncert = "{tmp}/cert.pem"\nkey = "{tmp}/key.pem"\n'
        "[limits]\nmax_clients = 1000\nmax_per_address = 0\nconnection_rate = 0\n[stats]\nenabled = false\n"
        + root_ok)
    d = subprocess.Popen([os.path.join(bindir, "mmtmtpd"), "-c", cfg], stderr=open(log, "w"), env=unit_env("mmtmtpd"))
    for _ in range(400):
        if "listening" in open(log).read():
            return d, f"127.0.0.1:{port}"
        if d.poll() is not None:
            break
        time.sleep(0.05)
    d.terminate()
    sys.exit(f"mmtmtpd {tag} did not start:\n" + open(log).read()[-2000:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--postgres"); ap.add_argument("--mysql")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release"))
    ap.add_argument("--posts", type=int, default=300)
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    if not (a.postgres or a.mysql):
        sys.exit("two instances share a database server: give --postgres URL or --mysql URL")
    bench = ack_bench()
    tmp = tempfile.mkdtemp(prefix="mmmail-bench-instances-")
    name = "mmmail_instances_%d" % os.getpid()
    if a.postgres:
        subprocess.run(["psql", a.postgres, "-qc", f"create database {name}"], check=True)
        url = a.postgres.rpartition("/")[0] + "/" + name
    else:
        host = a.mysql.split("@")[-1].split("/")[0].split(":")[0]
        subprocess.run(["mysql", "-uroot", "-h", host, "-e", f"create database {name}"], check=True)
        url = a.mysql.rpartition("/")[0] + "/" + name
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", f"{tmp}/key.pem", "-out", f"{tmp}/cert.pem"], check=True, capture_output=True)
    procs = []
    try:
        da, addr_a = start(a.bin, tmp, url, "a")
        procs.append(da)
        db_, addr_b = start(a.bin, tmp, url, "b")
        procs.append(db_)
        within, across = [], []
        for r in range(a.rounds):
            # Instances look for each other once a second: let B's recipient be seen first.
            for where, dest in ((addr_a, within), (addr_b, across)):
                [(_, deliveries)] = bench.measure(addr_a, where, a.posts, a.size, 1, settle=1.5)
                dest.append(statistics.median(deliveries) if deliveries else float("inf"))
        w, x = statistics.median(within), statistics.median(across)
        backend = "PostgreSQL" if a.postgres else "MySQL/MariaDB"
        print(f"\ntwo mmtmtpd on one {backend} database, {a.rounds} rounds of {a.posts} posts of {a.size} bytes")
        print("| | p50 post -> delivery, by round | median |")
        print("| --- | --- | ---: |")
        print("| recipient on the sender's instance | " + ", ".join(f"{v:.2f}" for v in within) + f" ms | {w:.2f} ms |")
        print("| recipient on the other instance | " + ", ".join(f"{v:.2f}" for v in across) + f" ms | {x:.2f} ms |")
        if a.postgres:
            print(f"across - within: {x - w:+.2f} ms (target on PostgreSQL: at most +50 ms): "
                  + ("met" if x - w <= 50 else "NOT met"))
        else:
            print(f"across - within: {x - w:+.2f} ms (no NOTIFY here: the other instance looks every wake_poll ms)")
    finally:
        for p in procs:
            p.terminate(); p.wait()
        if a.postgres:
            subprocess.run(["psql", a.postgres, "-qc", f"drop database if exists {name} with (force)"])
        else:
            subprocess.run(["mysql", "-uroot", "-h", host, "-e", f"drop database if exists {name}"])


if __name__ == "__main__":
    main()
