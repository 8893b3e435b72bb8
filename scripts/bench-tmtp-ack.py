#!/usr/bin/env python3
"""TMTP ack and delivery latency against any TMTP server (mmtmtpd, mnm): registers two
users over the protocol, logs both in, and has the first post N small messages to the
second one at a time, each after the previous one's ack. Prints, per post, the time
from writing the request to the sender's ack, and to the delivery on the recipient's
link (which acks it at once), as p50/p90/p99 and mean, in milliseconds.

Usage: scripts/bench-tmtp-ack.py HOST:PORT [--recipient HOST:PORT] [--posts 500]
                                   [--size 200] [--rounds 1]

--recipient registers the recipient on another instance of the server (several mmtmtpd
on one database: scripts/bench-tmtp-instances.py). The server's certificate is not
checked (loopback benchmarking only).
"""
import argparse, json, socket, ssl, statistics, threading, time


def frame(head, data=b""):
    j = json.dumps(head, separators=(",", ":")).encode()
    return b"%04x" % len(j) + j + data


class Link:
    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        raw = socket.create_connection((host, int(port)))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.s = ctx.wrap_socket(raw)
        self.buf = b""
        self.lock = threading.Lock()

    def send(self, head, data=b""):
        with self.lock:
            self.s.sendall(frame(head, data))

    def _fill(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("server closed the link")
            self.buf += chunk

    def read(self):
        self._fill(4)
        n = int(self.buf[:4], 16)
        self._fill(4 + n)
        head = json.loads(self.buf[4:4 + n])
        self.buf = self.buf[4 + n:]
        dl = int(head.get("datalen", 0))
        self._fill(dl)
        data, self.buf = self.buf[:dl], self.buf[dl:]
        return head, data

    def until(self, op, ack_queued=True):
        while True:
            head, data = self.read()
            if ack_queued and "from" in head and "id" in head:
                self.send({"Op": 10, "Id": head["id"], "Type": "ok"})
            if head.get("op") == "quit":
                raise RuntimeError("quit: %s" % head)
            if head.get("op") == op:
                return head, data


def register(addr, alias):
    l = Link(addr)
    l.send({"Op": 0, "Id": "1"})
    l.send({"Op": 1, "Id": "r", "NewNode": "bench", "NewAlias": alias})
    head, _ = l.until("registered")
    l.until("info")
    return l, head["uid"], head["nodeid"]


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def measure(addr, recipient_addr, posts, size, rounds, settle=0.3):
    """Registers a sender at `addr` and a recipient at `recipient_addr`, waits `settle`
    seconds, then posts `posts` messages of `size` bytes one at a time, `rounds` times.
    Prints each round's figures; returns [(acks, deliveries)] per round, in ms."""
    tag = "%d%d" % (time.time(), threading.get_ident() % 1000)
    sender, _, _ = register(addr, "bench-a-" + tag)
    recipient, ruid, _ = register(recipient_addr, "bench-b-" + tag)
    delivered = {}
    done = threading.Event()

    def reader():
        try:
            while not done.is_set():
                head, data = recipient.read()
                if "from" in head and "id" in head:
                    recipient.send({"Op": 10, "Id": head["id"], "Type": "ok"})
                if head.get("op") == "delivery":
                    delivered[data[:16].decode(errors="replace").split(" ")[0]] = time.perf_counter()
        except (EOFError, OSError):
            pass

    threading.Thread(target=reader, daemon=True).start()
    time.sleep(settle)
    out = []
    for r in range(rounds):
        acks, deliveries, sent = [], [], {}
        for i in range(posts):
            key = "p%d-%d" % (r, i)
            data = (key + " ").encode().ljust(size, b"x")
            t0 = time.perf_counter()
            sent[key] = t0
            sender.send({"Op": 7, "Id": key, "Datalen": len(data), "For": [{"Id": ruid, "Type": 1}]}, data)
            head, _ = sender.until("ack")
            acks.append((time.perf_counter() - t0) * 1000)
        deadline = time.time() + 10
        while len([k for k in sent if k in delivered]) < len(sent) and time.time() < deadline:
            time.sleep(0.01)
        deliveries = [(delivered[k] - t) * 1000 for k, t in sent.items() if k in delivered]
        where = addr if recipient_addr == addr else "%s (recipient on %s)" % (addr, recipient_addr)
        print("round %d: %d posts of %d bytes to %s" % (r + 1, posts, size, where))
        for name, xs in (("ack", acks), ("delivery", deliveries)):
            if xs:
                print("  %-8s p50 %6.2f ms  p90 %6.2f ms  p99 %6.2f ms  mean %6.2f ms  (%d)"
                      % (name, pct(xs, 50), pct(xs, 90), pct(xs, 99), statistics.mean(xs), len(xs)))
        print("  delivered %d of %d" % (len(deliveries), len(sent)), flush=True)
        out.append((acks, deliveries))
    done.set()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("addr")
    ap.add_argument("--recipient")
    ap.add_argument("--posts", type=int, default=500)
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=1)
    a = ap.parse_args()
    measure(a.addr, a.recipient or a.addr, a.posts, a.size, a.rounds)


if __name__ == "__main__":
    main()
