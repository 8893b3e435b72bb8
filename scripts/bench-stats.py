#!/usr/bin/env python3
"""What counting costs: SMTP intake of a real mmsmtpd with counting off, with mmstatd
running, and with mmstatd absent (every update dropped), on SQLite.

Each run starts a fresh mmsmtpd (and mmstatd when wanted) on loopback with per-address
limits, tarpit and flood limit off; CLIENTS concurrent sessions each deliver MESSAGES
messages of SIZE bytes to one box. Prints messages/s per run, the ratio to the run
without counting, whether mmstatd's counts match what was delivered (updates lost to a
full socket queue show here), mmstatd's peak RSS and CPU time.

Usage: scripts/bench-stats.py [--clients 8] [--messages 250] [--size 2048] [--rounds 2]
                              [--bin DIR]
"""
import argparse, json, os, smtplib, socket, sqlite3, subprocess, tempfile, threading, time

from benchlib import free_port, unit_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def wait_log(path, proc):
    for _ in range(400):
        if proc.poll() is not None:
            raise SystemExit(open(path).read())
        if "listening" in open(path).read():
            return
        time.sleep(0.05)
    raise SystemExit(f"{path}: not listening")

def proc_stat(pid):
    hwm = "?"
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = line.split()[1] + " kB"
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return hwm, cpu

def run(a, mode):
    tmp = tempfile.mkdtemp(prefix="mmmail-bench-stats-")
    root_ok = "[privileges]\nallow_root = true\n" if os.geteuid() == 0 else ""
    sock, query = f"{tmp}/stats.sock", f"{tmp}/query.sock"
    procs = []
    statd = None
    if mode == "mmstatd running":
        cfg = f"{tmp}/mmstatd.toml"
        open(cfg, "w").write(f'[stats]\nsocket = "{sock}"\n[statd]\nquery_socket = "{query}"\ndir = "{tmp}/state"\n{root_ok}')
        log = f"{tmp}/mmstatd.log"
        statd = subprocess.Popen([os.path.join(a.bin, "mmstatd"), "-c", cfg], stderr=open(log, "w"))
        procs.append(statd)
        wait_log(log, statd)
    stats = '[stats]\nenabled = false\n' if mode == "counting off" else f'[stats]\nsocket = "{sock}"\n'
    port = free_port()
    cfg = f"{tmp}/mmsmtpd.toml"
    open(cfg, "w").write(
        f'[server]\nname = "bench.test"\n[database]\nurl = "sqlite://{tmp}/bench.db"\n'
        f'[listen]\naddresses = ["127.0.0.1:{port}"]\n'
        "[limits]\nmax_per_address = 0\nconnection_rate = 0\nerror_delay = 0\nmax_clients = 1000\n"
        f"[smtpd]\nflood_messages = 0\n{stats}{root_ok}")
    log = f"{tmp}/mmsmtpd.log"
    smtpd = subprocess.Popen([os.path.join(a.bin, "mmsmtpd"), "-c", cfg], stderr=open(log, "w"),
                             env=unit_env("mmsmtpd"))
    procs.append(smtpd)
    try:
        wait_log(log, smtpd)
        c = sqlite3.connect(f"{tmp}/bench.db")
        c.executescript("insert into \"user\" (user_name, user_passwd) values ('bench', 'x');"
                        "insert into box (box_address, box_user) values ('bench@bench.test', 1);")
        c.commit(); c.close()
        body = ("Subject: bench\r\n\r\n" + ("x" * 70 + "\r\n") * (a.size // 72)).encode()
        errors = []
        def client():
            try:
                s = smtplib.SMTP("127.0.0.1", port, local_hostname="bench.test", timeout=60)
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
        extra = ""
        if statd:
            time.sleep(0.5)
            out = subprocess.run([os.path.join(a.bin, "mmstat"), "-q", query, "show", "mmsmtpd|total|messages-in", "--json"],
                                 capture_output=True, text=True, check=True).stdout
            counted = sum(e["value"] for e in json.loads(out))
            hwm, cpu = proc_stat(statd.pid)
            extra = f"; counted {counted} of {total} messages; mmstatd peak RSS {hwm}, CPU {cpu:.2f} s"
        return total / wall, len(errors), extra
    finally:
        for p in procs: p.terminate(); p.wait()

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--messages", type=int, default=250)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--bin", default=next(d for d in (os.path.join(ROOT, "target", k) for k in ("release", "debug"))
                                          if os.path.exists(os.path.join(d, "mmstatd"))))
    a = ap.parse_args()
    print(f"binaries: {a.bin}; {a.clients} clients x {a.messages} messages of ~{a.size} bytes, SQLite")
    modes = ["counting off", "mmstatd running", "mmstatd absent"]
    best = {}
    for r in range(a.rounds):
        for m in modes:
            rate, errors, extra = run(a, m)
            best[m] = max(best.get(m, 0), rate)
            print(f"round {r + 1}: {m:16} {rate:7.0f} messages/s, errors {errors}{extra}")
    base = best["counting off"]
    for m in modes:
        print(f"best of {a.rounds}: {m:16} {best[m]:7.0f} messages/s ({best[m] / base:.2f} x counting off)")

if __name__ == "__main__":
    main()
