#!/usr/bin/env python3
"""TMTP load: mmtmtpd-load (mnm's simulation over TCP+TLS) against a fresh release
mmtmtpd on a throw-away database (SQLite by default, or --postgres URL / --mysql URL of
a server where a scratch database may be created). Prints the generator's figures.

Usage: scripts/bench-tmtp.py [--clients 100] [--cycles 2] [--sleep-scale 0]
                             [--sizes-2017] [--postgres URL | --mysql URL] [--bin DIR]
                             [--server HOST:PORT --ca CERT.pem [--server-pid PID]]

--server runs the generator against a TMTP server already running (mnm, for a side by
side comparison; start it with a fresh store for each run): --ca is its certificate,
--server-pid lets the generator report its peak RSS.
"""
import argparse, os, socket, subprocess, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--cycles", type=int, default=2)
    ap.add_argument("--sleep-scale", default="0")
    ap.add_argument("--sizes-2017", action="store_true")
    ap.add_argument("--postgres"); ap.add_argument("--mysql")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release"))
    ap.add_argument("--server"); ap.add_argument("--ca"); ap.add_argument("--server-pid")
    a = ap.parse_args()
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
    name = "mmmail_tmtp_%d" % os.getpid()
    if a.postgres:
        subprocess.run(["psql", a.postgres, "-qc", f"create database {name}"], check=True)
        url = a.postgres.rpartition("/")[0] + "/" + name
    elif a.mysql:
        host = a.mysql.split("@")[-1].split("/")[0].split(":")[0]
        subprocess.run(["mysql", "-uroot", "-h", host, "-e", f"create database {name}"], check=True)
        url = a.mysql.rpartition("/")[0] + "/" + name
    else:
        url = f"sqlite://{tmp}/bench.db"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-addext", "basicConstraints=critical,CA:FALSE",
                    "-keyout", f"{tmp}/key.pem", "-out", f"{tmp}/cert.pem"], check=True, capture_output=True)
    port = free_port()
    root_ok = "[privileges]\nallow_root = true\n" if os.geteuid() == 0 else ""
    cfg = f"{tmp}/mmtmtpd.toml"
    open(cfg, "w").write(
        f'[server]\nname = "bench.test"\n[database]\nurl = "{url}"\nmax_connections = 16\n'
        f'[listen]\ntls_addresses = ["127.0.0.1:{port}"]\n[tls]\ncert = "{tmp}/cert.pem"\nkey = "{tmp}/key.pem"\n'
        "[limits]\nmax_clients = 10000\nmax_per_address = 0\nconnection_rate = 0\n[stats]\nenabled = false\n" + root_ok)
    log = f"{tmp}/mmtmtpd.log"
    d = subprocess.Popen([os.path.join(a.bin, "mmtmtpd"), "-c", cfg], stderr=open(log, "w"))
    try:
        for _ in range(400):
            if "listening" in open(log).read():
                break
            time.sleep(0.05)
        args = [os.path.join(a.bin, "mmtmtpd-load"), "--addr", f"127.0.0.1:{port}", "--ca", f"{tmp}/cert.pem",
                "--clients", str(a.clients), "--cycles", str(a.cycles), "--sleep-scale", a.sleep_scale,
                "--server-pid", str(d.pid)]
        if a.sizes_2017:
            args.append("--sizes-2017")
        backend = "postgres" if a.postgres else "mysql" if a.mysql else "sqlite"
        print(f"mmtmtpd on {backend}: {a.clients} clients x {a.cycles} cycles, sleep scale {a.sleep_scale}")
        subprocess.run(args, check=False)
    finally:
        d.terminate(); d.wait()
        if a.postgres:
            subprocess.run(["psql", a.postgres, "-qc", f"drop database if exists {name} with (force)"])
        elif a.mysql:
            subprocess.run(["mysql", "-uroot", "-h", host, "-e", f"drop database if exists {name}"])

if __name__ == "__main__":
    main()
