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
import argparse, importlib.util, os, statistics, sys, tempfile

from benchlib import scratch_database, self_signed, start_mmtmtpd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "scripts")


def ack_bench():
    spec = importlib.util.spec_from_file_location("bench_tmtp_ack", os.path.join(SCRIPTS, "bench-tmtp-ack.py"))
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


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
    url, drop = scratch_database(a.postgres, a.mysql, "mmmail_instances_%d" % os.getpid(), tmp)
    self_signed(tmp)
    procs = []
    try:
        for tag in ("a", "b"):
            d, port = start_mmtmtpd(a.bin, tmp, url, tag, max_clients=1000)
            procs.append((d, f"127.0.0.1:{port}"))
        (_, addr_a), (_, addr_b) = procs
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
        for d, _ in procs:
            d.terminate(); d.wait()
        drop()


if __name__ == "__main__":
    main()
