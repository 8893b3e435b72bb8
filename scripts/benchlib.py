"""What the benchmark scripts share: a free loopback port, and waiting for a daemon to
listen on one. Imported by the scripts beside it (run as `scripts/<name>.py`)."""
import socket, time

def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def wait_port(port, seconds=20):
    """Returns once 127.0.0.1:port accepts a connection; exits the script after `seconds`."""
    for _ in range(int(seconds / 0.05)):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close(); return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")
