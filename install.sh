#!/bin/sh
# install.sh: build and install mmmail, or run it locally for a quick try.
#
#   ./install.sh --local                 build, then run the suite from ./local on SQLite
#   ./install.sh [--prefix DIR] [--sysconfdir DIR] [--destdir DIR]
#                                        build and install binaries, man pages, configs
#   ./install.sh --help
#
# The system install puts mmsmtpd and mmpop3d in PREFIX/sbin, mmpasswd in PREFIX/bin, man pages in
# PREFIX/share/man, and example configs in SYSCONFDIR/mmmail; an existing config is
# never overwritten (the new example goes beside it as FILE.new). Creating the system
# user, the state directories and service units is left to the administrator for now
# (see README.md).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
prefix=/usr/local
sysconfdir=/etc
destdir=${DESTDIR:-}
mode=install

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --local) mode=local ;;
        --prefix) prefix=$2; shift ;;
        --sysconfdir) sysconfdir=$2; shift ;;
        --destdir) destdir=$2; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

command -v cargo >/dev/null 2>&1 || { echo "install.sh: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }

echo "==> building release binaries"
(cd "$here" && cargo build --release --locked --bins)
bin=$here/target/release

if [ "$mode" = install ]; then
    echo "==> installing under ${destdir}${prefix}"
    install -d "$destdir$prefix/sbin" "$destdir$prefix/bin" "$destdir$prefix/share/man/man5" \
        "$destdir$prefix/share/man/man8" "$destdir$sysconfdir/mmmail"
    install -m 0755 "$bin/mmsmtpd" "$destdir$prefix/sbin/mmsmtpd"
    install -m 0755 "$bin/mmpop3d" "$destdir$prefix/sbin/mmpop3d"
    install -m 0755 "$bin/mmpasswd" "$destdir$prefix/bin/mmpasswd"
    for page in "$here"/man/*.5; do install -m 0644 "$page" "$destdir$prefix/share/man/man5/"; done
    for page in "$here"/man/*.8; do install -m 0644 "$page" "$destdir$prefix/share/man/man8/"; done
    for conf in "$here"/etc/*.toml; do
        target=$destdir$sysconfdir/mmmail/$(basename "$conf")
        if [ -e "$target" ]; then
            install -m 0640 "$conf" "$target.new"
            echo "    kept $target; the new example is $target.new"
        else
            install -m 0640 "$conf" "$target"
        fi
    done
    echo "==> done. Edit $sysconfdir/mmmail/mmsmtpd.toml, check it with"
    echo "    mmsmtpd --check-config -c $sysconfdir/mmmail/mmsmtpd.toml"
    exit 0
fi

# --local: everything under ./local, SQLite, loopback high ports, in the foreground.
local=$here/local
mkdir -p "$local/etc" "$local/var"
db=$local/var/mmmail.db
smtp_port=${MMMAIL_SMTP_PORT:-2525}
pop3_port=${MMMAIL_POP3_PORT:-2110}
pop3s_port=${MMMAIL_POP3S_PORT:-2995}

tls=""
if command -v openssl >/dev/null 2>&1; then
    if [ ! -f "$local/etc/cert.pem" ]; then
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
            -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
            -keyout "$local/etc/key.pem" -out "$local/etc/cert.pem" 2>/dev/null
    fi
    tls="[tls]
cert = \"$local/etc/cert.pem\"
key = \"$local/etc/key.pem\""
fi

# The daemons refuse to stay root unless told; a local try as root is told so.
root_ok=""
if [ "$(id -u)" = 0 ]; then
    root_ok="[privileges]
allow_root = true   # install.sh --local was run as root"
fi

if [ ! -f "$local/etc/mmsmtpd.toml" ]; then
    cat > "$local/etc/mmsmtpd.toml" <<CONF
# Local quick-start configuration written by install.sh --local (see etc/mmsmtpd.toml).
[server]
name = "localhost"
[database]
url = "sqlite://$db"
[listen]
addresses = ["127.0.0.1:$smtp_port"]
$tls
[smtpd]
null_sender = "accept"
$root_ok
CONF
fi

if [ ! -f "$local/etc/mmpop3d.toml" ]; then
    pop3s=""
    [ -n "$tls" ] && pop3s="tls_addresses = [\"127.0.0.1:$pop3s_port\"]"
    cat > "$local/etc/mmpop3d.toml" <<CONF
# Local quick-start configuration written by install.sh --local (see etc/mmpop3d.toml).
[server]
name = "localhost"
[database]
url = "sqlite://$db"
[listen]
addresses = ["127.0.0.1:$pop3_port"]
$pop3s
$tls
$root_ok
CONF
fi

pids=""
stop() {
    trap - INT TERM EXIT
    [ -n "$pids" ] && kill $pids 2>/dev/null || true
    wait 2>/dev/null || true
    echo
    echo "==> stopped"
}
trap stop INT TERM EXIT

# start NAME: runs NAME with its local config, logging to local/var/NAME.log, and waits
# until it listens.
start() {
    echo "==> starting $1 (log: $local/var/$1.log)"
    "$bin/$1" -c "$local/etc/$1.toml" 2> "$local/var/$1.log" &
    pid=$!
    pids="$pids $pid"
    i=0
    until grep -q listening "$local/var/$1.log" 2>/dev/null; do
        i=$((i + 1))
        if [ $i -gt 100 ] || ! kill -0 $pid 2>/dev/null; then
            echo "install.sh: $1 did not start:" >&2
            cat "$local/var/$1.log" >&2
            exit 1
        fi
        sleep 0.1
    done
}
# mmsmtpd first: it creates the database schema.
start mmsmtpd
start mmpop3d

# The demo account: user "demo" (password "demo"), box demo@example.test, and every
# other address at example.test reaching it through a wildcard alias.
hash=$(printf 'demo\n' | "$bin/mmpasswd" --stdin)
sql="INSERT OR IGNORE INTO \"user\" (user_id, user_name, user_passwd, user_created) VALUES (1, 'demo', '$hash', CURRENT_TIMESTAMP);
INSERT OR IGNORE INTO box VALUES ('demo@example.test', 1, 10485760, 0, 1000, 0, CURRENT_TIMESTAMP, NULL, NULL);
INSERT OR IGNORE INTO alias VALUES ('*@example.test', 'demo@example.test', 1, CURRENT_TIMESTAMP);
INSERT OR IGNORE INTO nofrom VALUES ('127.0.0.1');"
if command -v sqlite3 >/dev/null 2>&1; then
    printf '%s\n' "$sql" | sqlite3 "$db"
elif command -v python3 >/dev/null 2>&1; then
    python3 -c 'import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()' "$db" "$sql"
else
    echo "install.sh: need sqlite3 or python3 to create the demo box" >&2
    exit 1
fi

cat <<MSG

mmmail is running from $local (database $db).
  demo box: demo@example.test (user "demo", password "demo"); *@example.test reaches it

Send it a message:
  swaks --server 127.0.0.1:$smtp_port --to demo@example.test --from you@example.net
  printf 'Subject: hi\r\n\r\nhello\r\n' | curl -sS smtp://127.0.0.1:$smtp_port --mail-from you@example.net --mail-rcpt anything@example.test -T -
$( [ -n "$tls" ] && echo "  (STARTTLS works too: swaks --tls ..., curl --ssl-reqd --cacert $local/etc/cert.pem ...)" )

Fetch it over POP3 (user demo@example.test, or mmmail style demo.example.test):
  curl -sS -u demo@example.test:demo pop3://127.0.0.1:$pop3_port/        # list
  curl -sS -u demo@example.test:demo pop3://127.0.0.1:$pop3_port/1       # retrieve message 1
$( [ -n "$tls" ] && echo "  curl -sS --cacert $local/etc/cert.pem -u demo@example.test:demo pop3s://localhost:$pop3s_port/1" )

Press Ctrl-C to stop.
MSG
wait
