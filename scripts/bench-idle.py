#!/usr/bin/env python3
"""Idle connections: what each open, idle connection costs a daemon in resident memory.

Starts mmsmtpd, mmpop3d and mmtmtpd (each in turn) on loopback against a throw-away
SQLite database, with max_clients above the load and the per-address, rate and stress
limits off. Opens CONNECTIONS connections to the plain listener (SMTP and POP3: each
reads its greeting) and then, on a fresh daemon, to the implicit-TLS listener (each
completes the TLS handshake and reads the greeting; TMTP sends nothing first). When all
are open and quiet, the daemon's VmRSS is read; the figure printed is (RSS with the
connections - RSS before) / CONNECTIONS. Needs `ulimit -n` above CONNECTIONS + 100 (the
script raises its own soft limit to the hard one). Issue 16's target: 10,000 idle
connections in 100 MB or less, so 10 KB each.

Usage: scripts/bench-idle.py [--connections 10000] [--daemons mmsmtpd,mmpop3d,mmtmtpd]
                             [--bin DIR]
"""
import argparse, os, resource, socket, ssl, subprocess, tempfile, time

from benchlib import free_port, unit_env, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

def settle(pid):
    """RSS once it stopped moving (connections are accepted asynchronously)."""
    last = -1
    for _ in range(40):
        time.sleep(0.25)
        now = rss_kb(pid)
        if now == last:
            return now
        last = now
    return last

def make_cert(tmp):
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=bench.test"],
                   check=True, capture_output=True)
    return cert, key

def open_all(port, n, tls, greets):
    socks = []
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        if tls:
            s = ctx.wrap_socket(s, server_hostname="bench.test")
        if greets:
            if not s.recv(512):
                raise SystemExit("connection closed before the greeting")
        socks.append(s)
    return socks

# Each daemon's own wait for a login, raised so that the connections stay idle.
EXTRA = {"mmpop3d": "[pop3d]\nlogin_timeout = 3600\n", "mmtmtpd": "[tmtpd]\nlogin_timeout = 3600\n"}

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=10000)
    ap.add_argument("--daemons", default="mmsmtpd,mmpop3d,mmtmtpd")
    ap.add_argument("--bin", default=next(d for d in (os.path.join(ROOT, "target", k) for k in ("release", "debug"))
                                          if os.path.exists(os.path.join(d, "mmsmtpd"))))
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < a.connections + 100:
        raise SystemExit(f"ulimit -n is {hard}: too low for {a.connections} connections")
    tmp = tempfile.mkdtemp(prefix="mmmail-bench-idle-")
    cert, key = make_cert(tmp)
    root_ok = "[privileges]\nallow_root = true\n" if os.geteuid() == 0 else ""
    print(f"{a.connections} idle connections per daemon ({a.bin}); resident memory per connection")
    print("| daemon | plain, after the greeting | TLS, after handshake and greeting |")
    print("| --- | ---: | ---: |")
    for daemon in a.daemons.split(","):
        row = []
        for tls in (False, True):
            port = free_port()
            listen = f'tls_addresses = ["127.0.0.1:{port}"]\naddresses = []\n' if tls \
                else f'addresses = ["127.0.0.1:{port}"]\n'
            cfg = os.path.join(tmp, f"{daemon}-{tls}.toml")
            with open(cfg, "w") as f:
                f.write(f'[server]\nname = "bench.test"\n[database]\nurl = "sqlite://{tmp}/{daemon}-{tls}.db"\n'
                        f"[listen]\n{listen}"
                        f'[tls]\ncert = "{cert}"\nkey = "{key}"\n'
                        f"[limits]\nmax_clients = {a.connections * 2}\nmax_per_address = 0\nconnection_rate = 0\n"
                        f"stress_threshold = 100\ninput_timeout = 3600\nsession_timeout = 7200\n"
                        f"[stats]\nenabled = false\n{root_ok}{EXTRA.get(daemon, '')}")
            proc = subprocess.Popen([os.path.join(a.bin, daemon), "-c", cfg], env=unit_env(daemon),
                                    stderr=open(os.path.join(tmp, f"{daemon}-{tls}.log"), "w"))
            socks = []
            try:
                wait_port(port) if not tls else time.sleep(1.0)
                before = settle(proc.pid)
                socks = open_all(port, a.connections, tls, greets=daemon != "mmtmtpd")
                after = settle(proc.pid)
                row.append(f"{(after - before) * 1024 / a.connections / 1000:.1f} KB "
                           f"({before / 1024:.0f} → {after / 1024:.0f} MiB)")
            finally:
                for s in socks:
                    s.close()
                proc.terminate(); proc.wait()
        print(f"| {daemon} | {row[0]} | {row[1]} |")

if __name__ == "__main__":
    main()
