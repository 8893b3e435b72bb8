#!/usr/bin/env python3
"""Under attack, real users still get in: runs the attacks of issue 13 against a real
mmpop3d and mmsmtpd (fresh SQLite database, default limits, bans with an empty
allow-list so that loopback attackers count) and prints what a legitimate client sees
meanwhile, and the daemons' memory.

1. Password guessing: CONNS POP3 connections from ADDRS loopback addresses each trying
   wrong passwords over and over; meanwhile a user logs in from a clean address every
   second. Prints the user's login times (connect to +OK after PASS), how many guesses
   were answered, how many attacking connections were refused as banned.
2. Slow SMTP: HOLD connections from HOLD/4 addresses that greet nothing and hold their
   place; meanwhile a client delivers a message every second. Prints its delivery times
   and whether any was refused (stress mode closes the idle ones instead).
3. Stalled TLS handshakes on POP3S: how long the daemon keeps them.

Peak RSS (VmHWM) of each daemon after each attack. Timings are printed, never asserted:
the test suite runs small versions of these attacks with assertions on outcomes
(pop3d/tests/attack.rs, smtpd/tests/tcp.rs, smtpd/tests/limits.rs).

Usage: scripts/bench-attack.py [--bin target/release] [--conns 100] [--addrs 25]
                               [--hold 128] [--seconds 20] [--before]

--before runs binaries built from an older commit (without [bans]) for a side-by-side.
"""
import argparse, os, smtplib, socket, subprocess, tempfile, threading, time

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


def hwm(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    return -1


def summary(times):
    if not times:
        return "none completed"
    t = sorted(times)
    return f"n={len(t)} median {t[len(t) // 2]:.3f} s, max {t[-1]:.3f} s"


def every_second(seconds, what, attempt):
    """Runs attempt(n) once a second for `seconds`, n = 1, 2, ...; returns the times of
    those that succeeded and how many raised (each printed)."""
    times, failed, n = [], 0, 0
    end = time.time() + seconds
    while time.time() < end:
        n += 1
        t0 = time.time()
        try:
            attempt(n)
            times.append(time.time() - t0)
        except Exception as e:
            failed += 1
            print(f"   {what} failed: {e}")
        time.sleep(1)
    return times, failed


def connect_from(port, source, timeout=30):
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release"))
    ap.add_argument("--conns", type=int, default=100)
    ap.add_argument("--addrs", type=int, default=25)
    ap.add_argument("--hold", type=int, default=128)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--before", action="store_true",
                    help="binaries from before issue 13: no [bans] section in their configs")
    a = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="mmmail-bench-attack-")
    db = f"{tmp}/mail.db"
    root_ok = "[privileges]\nallow_root = true\n" if os.geteuid() == 0 else ""
    cert, key = f"{tmp}/cert.pem", f"{tmp}/key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    pop, pops, smtp = free_port(), free_port(), free_port()
    common = (f'[server]\nname = "bench.test"\n[database]\nurl = "sqlite://{db}"\n'
              f'[tls]\ncert = "{cert}"\nkey = "{key}"\n[stats]\nenabled = false\n'
              + ("" if a.before else "[bans]\nallow = []\n") + root_ok)
    open(f"{tmp}/mmpop3d.toml", "w").write(
        common + f'[listen]\naddresses = ["127.0.0.1:{pop}"]\ntls_addresses = ["127.0.0.1:{pops}"]\n'
        "[pop3d]\nallow_plaintext_auth = true\n")
    open(f"{tmp}/mmsmtpd.toml", "w").write(common + f'[listen]\naddresses = ["127.0.0.1:{smtp}"]\n')
    procs = {}
    try:
        for name in ["mmsmtpd", "mmpop3d"]:
            log = f"{tmp}/{name}.log"
            procs[name] = subprocess.Popen([os.path.join(a.bin, name), "-c", f"{tmp}/{name}.toml"],
                                           stderr=open(log, "w"), env=unit_env(name))
            wait_log(log, procs[name])
        admin = [os.path.join(a.bin, "mmadmin"), "-c", f"{tmp}/mmsmtpd.toml"]
        subprocess.run(admin + ["user", "add", "user", "--stdin"], input=b"right\n", check=True, capture_output=True)
        subprocess.run(admin + ["box", "add", "--user", "user", "user@bench.test"], check=True, capture_output=True)

        # 1. Password guessing.
        stop = threading.Event()
        answered, banned = [0], [0]
        lock = threading.Lock()

        def guesser(i):
            source = f"127.0.{10 + i % a.addrs // 250}.{1 + i % a.addrs % 250}"
            while not stop.is_set():
                try:
                    s = connect_from(pop, source)
                    f = s.makefile("rb")
                    line = f.readline()
                    if b"Too many failures" in line or not line.startswith(b"+OK"):
                        with lock:
                            banned[0] += 1
                        s.close(); time.sleep(0.5); continue
                    while not stop.is_set():
                        s.sendall(b"USER user@bench.test\r\n"); f.readline()
                        s.sendall(b"PASS wrong\r\n"); r = f.readline()
                        with lock:
                            answered[0] += 1
                        if not r.startswith(b"-ERR [AUTH]"):
                            break
                    s.close()
                except OSError:
                    time.sleep(0.2)

        threads = [threading.Thread(target=guesser, args=(i,), daemon=True) for i in range(a.conns)]
        for t in threads:
            t.start()
        time.sleep(2)
        def login(n):
            # Each login from an address of its own: users, not one client over its
            # connection rate.
            s = connect_from(pop, f"127.0.3.{n % 250 + 1}", timeout=60)
            f = s.makefile("rb")
            replies = [f.readline()]
            for line in [b"USER user@bench.test\r\n", b"PASS right\r\n", b"QUIT\r\n"]:
                s.sendall(line)
                replies.append(f.readline())
            s.close()
            if not all(r.startswith(b"+OK") for r in replies):
                raise OSError(b" / ".join(r.strip() for r in replies).decode(errors="replace"))

        logins, failed = every_second(a.seconds, "user login", login)
        stop.set()
        print(f"1. password guessing, {a.conns} connections from {a.addrs} addresses:")
        print(f"   user's logins: {summary(logins)}; failed: {failed}")
        if logins:
            print(f"   first login (attackers not yet known): {logins[0]:.3f} s")
        print(f"   guesses answered: {answered[0]}; attacking connections refused as banned: {banned[0]}")
        print(f"   mmpop3d peak RSS {hwm(procs['mmpop3d'].pid)} MiB")
        time.sleep(1)

        # 2. Slow SMTP connections holding places.
        held = []
        for i in range(a.hold):
            try:
                held.append(connect_from(smtp, f"127.0.{20 + i // 4 // 250}.{1 + i // 4 % 250}"))
            except OSError:
                pass
        time.sleep(1)
        def deliver(n):
            s = smtplib.SMTP("127.0.0.1", smtp, local_hostname="client.test", timeout=60,
                             source_address=(f"127.0.4.{n % 250 + 1}", 0))
            s.sendmail("a@client.test", ["user@bench.test"], b"Subject: during\r\n\r\nhello\r\n")
            s.quit()

        deliveries, refused = every_second(a.seconds, "delivery", deliver)
        for s in held:
            s.close()
        print(f"2. {len(held)} idle SMTP connections from {a.hold // 4} addresses:")
        print(f"   deliveries: {summary(deliveries)}; refused: {refused}")
        print(f"   mmsmtpd peak RSS {hwm(procs['mmsmtpd'].pid)} MiB")

        # 3. Stalled TLS handshakes.
        t0 = time.time()
        s = connect_from(pops, "127.0.0.99", timeout=120)
        try:
            data = s.recv(1)
            print(f"3. stalled POP3S handshake closed after {time.time() - t0:.1f} s ({'EOF' if not data else 'data'})")
        except OSError as e:
            print(f"3. stalled POP3S handshake: {e} after {time.time() - t0:.1f} s")
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait()


if __name__ == "__main__":
    main()
