"""What the benchmark scripts share: free loopback ports, waiting for a daemon to listen,
a connection burst, a lean POP3 client, a daemon's environment as its systemd unit sets
it, a scratch database on a server, a self-signed certificate, a running mmtmtpd, and a
running mmmail (mmsmtpd + mmpop3d, with
mmstatd counting when asked) on a scratch database. Imported by the scripts beside it
(run as `scripts/<name>.py`)."""
import os, selectors, socket, sqlite3, subprocess, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def scratch_database(postgres, mysql, name, sqlite_dir):
    """A new database `name` on the PostgreSQL server of URL `postgres`, or else on the
    MySQL/MariaDB server of URL `mysql`, or else a SQLite file in `sqlite_dir`: its URL
    and a function that drops it."""
    if postgres:
        subprocess.run(["psql", postgres, "-qc", f"create database {name}"], check=True)
        drop = lambda: subprocess.run(["psql", postgres, "-qc", f"drop database if exists {name} with (force)"])
        return postgres.rpartition("/")[0] + "/" + name, drop
    if mysql:
        host = mysql.split("@")[-1].split("/")[0].split(":")[0]
        subprocess.run(["mysql", "-uroot", "-h", host, "-e", f"create database {name}"], check=True)
        drop = lambda: subprocess.run(["mysql", "-uroot", "-h", host, "-e", f"drop database if exists {name}"])
        return mysql.rpartition("/")[0] + "/" + name, drop
    return f"sqlite://{sqlite_dir}/bench.db", lambda: None

def self_signed(tmp):
    """A P-256 certificate for `localhost` and its key: `tmp`/cert.pem and `tmp`/key.pem."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-addext", "basicConstraints=critical,CA:FALSE",
                    "-keyout", f"{tmp}/key.pem", "-out", f"{tmp}/cert.pem"], check=True, capture_output=True)

def start_mmtmtpd(bindir, tmp, url, tag, max_clients=10000, pool=None):
    """mmtmtpd on `url` with the certificate of `self_signed(tmp)`, its own config and log
    (`tmp`/mmtmtpd-`tag`.toml and .log), its unit's environment, limits and counting off:
    (process, port), once it listens. Exits the script if it does not start."""
    port = free_port()
    root_ok = "[privileges]\nallow_root = true\n" if os.geteuid() == 0 else ""
    cfg, log = f"{tmp}/mmtmtpd-{tag}.toml", f"{tmp}/mmtmtpd-{tag}.log"
    open(cfg, "w").write(
        f'[server]\nname = "bench.test"\n[database]\nurl = "{url}"\n'
        + (f"max_connections = {pool}\n" if pool else "")
        + f'[listen]\ntls_addresses = ["127.0.0.1:{port}"]\n[tls]\ncert = "{tmp}/cert.pem"\nkey = "{tmp}/key.pem"\n'
        f"[limits]\nmax_clients = {max_clients}\nmax_per_address = 0\nconnection_rate = 0\n[stats]\nenabled = false\n"
        + root_ok)
    d = subprocess.Popen([os.path.join(bindir, "mmtmtpd"), "-c", cfg], stderr=open(log, "w"), env=unit_env("mmtmtpd"))
    for _ in range(400):
        if "listening" in open(log).read():
            return d, port
        if d.poll() is not None:
            break
        time.sleep(0.05)
    d.terminate(); d.wait()
    raise SystemExit(f"mmtmtpd {tag} did not start:\n" + open(log).read()[-2000:])

def wait_port(port, seconds=20):
    """Returns once 127.0.0.1:port accepts a connection; exits the script after `seconds`."""
    for _ in range(int(seconds / 0.05)):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close(); return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")

def unit_env(daemon):
    """The environment to start `daemon` with: this one plus the `Environment=` lines of its
    systemd unit under etc/systemd (glibc malloc settings), so that a benchmark measures the
    daemon as installed. The units hold one unquoted NAME=value per line."""
    env = dict(os.environ)
    unit = os.path.join(ROOT, "etc", "systemd", f"{daemon}.service")
    if os.path.exists(unit):
        for line in open(unit):
            if line.startswith("Environment="):
                name, _, value = line.strip().split("=", 1)[1].partition("=")
                env[name] = value
    return env

def vmhwm(pid):
    """Peak resident memory of process `pid` as /proc says it ("12345 kB")."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return line.split()[1] + " kB"
    return "?"

def message(size):
    """A message of about `size` bytes: a Subject and 72-byte lines."""
    return ("Subject: bench\r\n\r\n" + ("x" * 70 + "\r\n") * (size // 72)).encode()

def burst(port, n, limit=30.0, hold=True):
    """Opens n non-blocking connections in one tight loop (a real burst of SYNs), then
    waits for each greeting; returns (seconds from the burst's start, greeted) each.
    With hold, every connection stays open until all are done; without, each says QUIT
    and closes once greeted (short sessions, as clients of a process-per-connection
    server need)."""
    socks = []
    t0 = time.monotonic()
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ, i)
    done = {}
    while len(done) < n and time.monotonic() - t0 < limit:
        for key, _ in sel.select(timeout=0.5):
            try:
                data = key.fileobj.recv(512)
            except OSError:
                data = b""
            done[key.data] = (time.monotonic() - t0, data.startswith((b"220", b"+OK")))
            sel.unregister(key.fileobj)
            if not hold:
                try:
                    key.fileobj.send(b"QUIT\r\n")
                except OSError:
                    pass
                key.fileobj.close()
    for s in socks:
        s.close()
    return [done.get(i, (limit, False)) for i in range(n)]

class Pop3:
    """A POP3 client that costs little next to the server it measures: one recv per
    reply where it can, a multi-line reply found by its end, no line-by-line parsing
    (poplib spends more per message than the servers do). One command at a time."""
    def __init__(self, port, user, password):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=300)
        self.buf = bytearray()
        self.line()
        self.cmd(f"USER {user}"); self.cmd(f"PASS {password}")

    def _fill(self):
        data = self.s.recv(262144)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buf += data

    def line(self):
        while (i := self.buf.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self.buf[:i]); del self.buf[:i + 2]
        if not line.startswith(b"+OK"):
            raise RuntimeError(line.decode(errors="replace"))
        return line

    def cmd(self, text):
        self.s.sendall(text.encode() + b"\r\n")
        return self.line()

    def multi(self, text):
        """The data of a multi-line reply (dot-stuffing left in), in bytes."""
        self.cmd(text)
        while not (self.buf.endswith(b"\r\n.\r\n") or self.buf == b".\r\n"):
            self._fill()
        n = len(self.buf); self.buf.clear(); return n

    def stat(self):
        return int(self.cmd("STAT").split()[1])

    def quit(self):
        self.cmd("QUIT"); self.s.close()

class Mmmail:
    """mmsmtpd and mmpop3d on loopback against a scratch database: SQLite under `tmp`, or
    a new database on the PostgreSQL / MariaDB server of `url` (dropped by stop()). One
    user `bench` (password "bench", hashed by mmpasswd unless `hashed` is given) owns the
    boxes `<local>@bench.test` for each name in `boxes`. Per-address limits, tarpit,
    flood limit and bans are off. With `statd`, mmstatd runs and both daemons count to
    it; otherwise counting is off."""
    def __init__(self, tmp, bindir, backend="sqlite", url=None, boxes=("bench",), hashed=None, statd=True):
        self.name = f"mmmail {backend}"
        self.backend, self.admin_url, self.tmp = backend, url, tmp
        self.db = f"mmmail_bench_{os.getpid()}_{backend}"
        self.procs = []
        if backend == "sqlite":
            db_url = f"sqlite://{tmp}/{self.db}.db"
        else:
            self.host = url.split("@")[-1].split("/")[0].split(":")[0]
            self.admin(f"create database {self.db}", admin_db=True)
            db_url = f"{url.rpartition('/')[0]}/{self.db}"
        self.db_url = db_url
        root_ok = "[privileges]\nallow_root = true\n" if os.geteuid() == 0 else ""
        limits = ("[limits]\nmax_per_address = 0\nconnection_rate = 0\nerror_delay = 0\nmax_clients = 3000\n")
        stats = "[stats]\nenabled = false\n"
        if statd:
            sock = f"{tmp}/statd-{backend}.sock"
            cfg = os.path.join(tmp, f"mmstatd-{backend}.toml")
            with open(cfg, "w") as f:
                f.write(f'[stats]\nsocket = "{sock}"\n[statd]\nquery_socket = "{tmp}/query-{backend}.sock"\n'
                        f'dir = "{tmp}/statd-{backend}"\n{root_ok}')
            self.procs.append(subprocess.Popen([os.path.join(bindir, "mmstatd"), "-c", cfg], env=unit_env("mmstatd"),
                                               stderr=open(os.path.join(tmp, f"mmstatd-{backend}.log"), "w")))
            for _ in range(200):
                if os.path.exists(sock):
                    break
                time.sleep(0.05)
            stats = f'[stats]\nsocket = "{sock}"\n'
        self.smtp_port, self.port = free_port(), free_port()
        for daemon, port, extra in (("mmsmtpd", self.smtp_port, "[smtpd]\nflood_messages = 0\n"),
                                    ("mmpop3d", self.port, "[bans]\nenabled = false\n")):
            cfg = os.path.join(tmp, f"{daemon}-{backend}.toml")
            with open(cfg, "w") as f:
                f.write(f'[server]\nname = "bench.test"\n[database]\nurl = "{db_url}"\n'
                        f'[listen]\naddresses = ["127.0.0.1:{port}"]\n{limits}{extra}{stats}{root_ok}')
            self.procs.append(subprocess.Popen([os.path.join(bindir, daemon), "-c", cfg], env=unit_env(daemon),
                                               stdout=subprocess.DEVNULL,
                                               stderr=open(os.path.join(tmp, f"{daemon}-{backend}.log"), "w")))
            wait_port(port)
        self.smtpd, self.pop3d = self.procs[-2], self.procs[-1]
        if hashed is None:
            hashed = subprocess.run([os.path.join(bindir, "mmpasswd"), "--stdin"], input="bench\n",
                                    capture_output=True, text=True, check=True).stdout.strip()
        user = "`user`" if backend == "mysql" else '"user"'
        seed = f"insert into {user} (user_name, user_passwd) values ('bench', '{hashed}');" + "".join(
            f"insert into box (box_address, box_user) values ('{b}@bench.test', 1);" for b in boxes)
        # The daemons listen before their migrations are done: retry until the schema is there.
        for attempt in range(60):
            try:
                self.admin(seed, quiet=True); break
            except (subprocess.CalledProcessError, sqlite3.Error):
                if attempt == 59:
                    self.stop(); raise
                time.sleep(0.5)

    def admin(self, sql, admin_db=False, quiet=False):
        """Runs SQL statements on the scratch database (or, with admin_db, on the server's
        own database the URL names, to create or drop the scratch one)."""
        err = subprocess.DEVNULL if quiet else None
        if self.backend == "sqlite":
            c = sqlite3.connect(self.db_url[len("sqlite://"):])
            try:
                c.executescript(sql); c.commit()
            finally:
                c.close()
        elif self.backend == "postgres":
            subprocess.run(["psql", self.admin_url if admin_db else self.db_url, "-v", "ON_ERROR_STOP=1", "-qc", sql],
                           check=True, stderr=err)
        else:
            args = ["mysql", "-uroot", "-h", self.host] + ([] if admin_db else [self.db])
            subprocess.run(args + ["-e", sql], check=True, stderr=err)

    def stop(self):
        for p in reversed(self.procs):
            p.terminate(); p.wait()
        self.procs = []
        if self.backend == "postgres":
            subprocess.run(["psql", self.admin_url, "-qc", f"drop database if exists {self.db} with (force)"])
        elif self.backend == "mysql":
            subprocess.run(["mysql", "-uroot", "-h", self.host, "-e", f"drop database if exists {self.db}"])
