#!/bin/sh
# install.sh: build and install mmmail, or run it locally for a quick try.
#
#   ./install.sh --local [local options]   build, then run the suite from ./local on
#                                 SQLite (loopback high ports, foreground; Ctrl-C stops it)
#   ./install.sh [options]        build and install (as root for a system install)
#   ./install.sh --uninstall      stop and remove binaries, man pages and units;
#                                 configs, databases and the mmmail user stay
#
# Local options (defaults in brackets; each also from the environment variable named,
# and a port once chosen is remembered in local/etc/ports for the next run):
#   --smtp-port N        mmsmtpd, SMTP with STARTTLS    [2525, MMMAIL_SMTP_PORT]
#   --pop3-port N        mmpop3d, POP3 with STLS        [2110, MMMAIL_POP3_PORT]
#   --pop3s-port N       mmpop3d, POP3 over TLS         [2995, MMMAIL_POP3S_PORT]
#   --tmtp-port N        mmtmtpd, TMTP over TLS         [2443, MMMAIL_TMTP_PORT]
#   --metrics-port N     mmstatd, Prometheus metrics    [2112, MMMAIL_METRICS_PORT]
#   --local-dir DIR      where configs, database and logs live   [./local]
#   --binaries DIR       run the binaries found in DIR instead of building
# Every run rewrites the configs in local/etc from these settings (so a changed port
# applies); the database and the certificate are kept. A second run while one is
# running says so and changes nothing.
#
# Install options (defaults in brackets):
#   --prefix DIR         programs in DIR/sbin and DIR/bin, man pages in
#                        DIR/share/man                                  [/usr/local]
#   --sysconfdir DIR     configs in DIR/mmmail                                 [/etc]
#   --localstatedir DIR  databases in DIR/lib/mmmail                           [/var]
#   --unitdir DIR        systemd units                         [/etc/systemd/system]
#   --destdir DIR        stage everything under DIR (packaging; also $DESTDIR); no
#                        user is created and nothing is started or stopped
#   --binaries DIR       install the binaries found in DIR instead of building
#   --no-user            do not create the mmmail user and group
#   --no-systemd         do not install or enable systemd units
#   -h, --help           this text
#
# What a system install does: builds release binaries (cargo build --release); stops
# running mmmail daemons (systemd units, or processes named in /run/mmmail/*.pid);
# installs mmstatd, mmsmtpd, mmpop3d and mmtmtpd in PREFIX/sbin and mmpasswd, mmadmin and
# mmstat in PREFIX/bin; man pages in PREFIX/share/man/man{5,7,8}; example configs in
# SYSCONFDIR/mmmail, mode 0640 root:mmmail, never overwriting one (a changed example is
# written beside it as FILE.new); creates the system group and user mmmail (no login
# shell, home LOCALSTATEDIR/lib/mmmail) and that directory (0750 mmmail:mmmail), and the
# group and user mmstat that mmstatd runs as (its socket group: the daemons join it with
# [privileges] groups); installs the systemd units and, when systemd runs, enables them;
# and starts again the daemons it stopped.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
prefix=/usr/local
sysconfdir=/etc
localstatedir=/var
unitdir=/etc/systemd/system
destdir=${DESTDIR:-}
binaries=""
make_user=yes
systemd=yes
mode=install
# In start order: mmstatd first, so the others' first counts reach it.
daemons="mmstatd mmsmtpd mmpop3d mmtmtpd"
tools="mmpasswd mmadmin mmstat"
local=$here/local
opt_smtp_port=${MMMAIL_SMTP_PORT:-}
opt_pop3_port=${MMMAIL_POP3_PORT:-}
opt_pop3s_port=${MMMAIL_POP3S_PORT:-}
opt_tmtp_port=${MMMAIL_TMTP_PORT:-}
opt_metrics_port=${MMMAIL_METRICS_PORT:-}

# The comment block at the top, up to the first line that is not a comment.
usage() { sed -n '2,/^[^#]/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --local) mode=local ;;
        --uninstall) mode=uninstall ;;
        --prefix) prefix=$2; shift ;;
        --sysconfdir) sysconfdir=$2; shift ;;
        --localstatedir) localstatedir=$2; shift ;;
        --unitdir) unitdir=$2; shift ;;
        --destdir) destdir=$2; shift ;;
        --binaries) binaries=$2; shift ;;
        --no-user) make_user=no ;;
        --no-systemd) systemd=no ;;
        --smtp-port) opt_smtp_port=$2; shift ;;
        --pop3-port) opt_pop3_port=$2; shift ;;
        --pop3s-port) opt_pop3s_port=$2; shift ;;
        --tmtp-port) opt_tmtp_port=$2; shift ;;
        --metrics-port) opt_metrics_port=$2; shift ;;
        --local-dir) local=$2; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

sbindir=$prefix/sbin
bindir=$prefix/bin
mandir=$prefix/share/man
confdir=$sysconfdir/mmmail
datadir=$localstatedir/lib/mmmail
statdir=$localstatedir/lib/mmstatd
rundir=/run/mmmail
# Live actions (users, services) only for a real install on this system.
live=yes
[ -n "$destdir" ] && live=no
systemd_running=no
[ "$systemd" = yes ] && [ "$live" = yes ] && [ -d /run/systemd/system ] && systemd_running=yes

say() { echo "==> $*"; }

stop_running() {
    stopped=""
    [ "$live" = yes ] || return 0
    for d in $daemons; do
        if [ "$systemd_running" = yes ] && systemctl is-active --quiet "$d" 2>/dev/null; then
            say "stopping $d (systemd)"
            systemctl stop "$d"
            stopped="$stopped systemd:$d"
        elif [ -f "$rundir/$d.pid" ] && kill -0 "$(cat "$rundir/$d.pid")" 2>/dev/null; then
            pid=$(cat "$rundir/$d.pid")
            say "stopping $d (pid $pid)"
            kill -TERM "$pid"
            i=0
            while kill -0 "$pid" 2>/dev/null && [ $i -lt 60 ]; do sleep 1; i=$((i + 1)); done
            stopped="$stopped plain:$d"
        fi
    done
}

start_again() {
    for s in $stopped; do
        d=${s#*:}
        case "$s" in
            systemd:*) say "starting $d (systemd)"; systemctl start "$d" ;;
            plain:*)
                say "starting $d again (log: $localstatedir/log/mmmail/$d.log)"
                mkdir -p "$localstatedir/log/mmmail"
                nohup "$sbindir/$d" -c "$confdir/$d.toml" >> "$localstatedir/log/mmmail/$d.log" 2>&1 &
                ;;
        esac
    done
}

if [ "$mode" = uninstall ]; then
    stop_running
    for d in $daemons; do
        if [ "$systemd_running" = yes ]; then systemctl disable "$d" 2>/dev/null || true; fi
        rm -f "$destdir$sbindir/$d" "$destdir$unitdir/$d.service" \
            "$destdir$mandir/man8/$d.8" "$destdir$mandir/man5/$d.toml.5"
    done
    for t in $tools; do rm -f "$destdir$bindir/$t" "$destdir$mandir/man8/$t.8"; done
    rm -f "$destdir$mandir/man7/mmmail.7"
    [ "$systemd_running" = yes ] && systemctl daemon-reload
    say "removed programs, man pages and units; $confdir, $datadir and the mmmail user are kept"
    exit 0
fi

# A port option is a number from 1 to 65535.
check_port() {
    case "$2" in
        ''|*[!0-9]*) echo "install.sh: $1 needs a port number, not \"$2\"" >&2; exit 2 ;;
    esac
    if [ "$2" -lt 1 ] || [ "$2" -gt 65535 ]; then
        echo "install.sh: $1 $2 is not a port (1-65535)" >&2
        exit 2
    fi
}

# alive FILE: the pid in FILE names a running process.
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if [ "$mode" = local ]; then
    case "$local" in /*) ;; *) local=$(pwd)/$local ;; esac
    # Before anything is built or written: a local suite already running from this
    # directory is left alone, logs and configs included.
    for p in install mmstatd mmsmtpd mmpop3d mmtmtpd; do
        if alive "$local/var/$p.pid"; then
            echo "install.sh: the local suite is already running from $local" >&2
            echo "    ($p, pid $(cat "$local/var/$p.pid")); stop it with Ctrl-C where it runs, or" >&2
            echo "    kill $(cat "$local/var/$p.pid"), then run ./install.sh --local again. Nothing was changed." >&2
            exit 1
        fi
    done
    # Ports: option or environment, else what the last run used, else the default.
    if [ -f "$local/etc/ports" ]; then
        # shellcheck disable=SC1091
        . "$local/etc/ports"
    fi
    smtp_port=${opt_smtp_port:-${smtp_port:-2525}}
    pop3_port=${opt_pop3_port:-${pop3_port:-2110}}
    pop3s_port=${opt_pop3s_port:-${pop3s_port:-2995}}
    tmtp_port=${opt_tmtp_port:-${tmtp_port:-2443}}
    metrics_port=${opt_metrics_port:-${metrics_port:-2112}}
    check_port --smtp-port "$smtp_port"
    check_port --pop3-port "$pop3_port"
    check_port --pop3s-port "$pop3s_port"
    check_port --tmtp-port "$tmtp_port"
    check_port --metrics-port "$metrics_port"
fi

if [ -z "$binaries" ]; then
    command -v cargo >/dev/null 2>&1 || { echo "install.sh: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }
    say "building release binaries"
    (cd "$here" && cargo build --release --locked --bins)
    bin=$here/target/release
else
    bin=$binaries
fi

if [ "$mode" = install ]; then
    for b in $daemons $tools; do
        [ -x "$bin/$b" ] || { echo "install.sh: $bin/$b is missing" >&2; exit 1; }
    done
    stop_running

    if [ "$live" = yes ] && [ "$make_user" = yes ] && [ "$(id -u)" = 0 ]; then
        if ! getent group mmmail >/dev/null; then
            say "creating group mmmail"
            groupadd --system mmmail
        fi
        if ! getent passwd mmmail >/dev/null; then
            say "creating user mmmail"
            useradd --system --gid mmmail --home-dir "$datadir" --no-create-home \
                --shell /usr/sbin/nologin --comment "mmmail daemons" mmmail
        fi
        if ! getent group mmstat >/dev/null; then
            say "creating group mmstat"
            groupadd --system mmstat
        fi
        if ! getent passwd mmstat >/dev/null; then
            say "creating user mmstat"
            useradd --system --gid mmstat --home-dir "$statdir" --no-create-home \
                --shell /usr/sbin/nologin --comment "mmmail counters daemon" mmstat
        fi
    fi

    say "installing under ${destdir:-/}"
    install -d "$destdir$sbindir" "$destdir$bindir" "$destdir$mandir/man5" "$destdir$mandir/man7" \
        "$destdir$mandir/man8" "$destdir$confdir"
    for d in $daemons; do install -m 0755 "$bin/$d" "$destdir$sbindir/$d"; done
    for t in $tools; do install -m 0755 "$bin/$t" "$destdir$bindir/$t"; done
    for page in "$here"/man/*.5; do install -m 0644 "$page" "$destdir$mandir/man5/"; done
    for page in "$here"/man/*.7; do install -m 0644 "$page" "$destdir$mandir/man7/"; done
    for page in "$here"/man/*.8; do install -m 0644 "$page" "$destdir$mandir/man8/"; done

    group=root
    getent group mmmail >/dev/null 2>&1 && group=mmmail
    owner_ok=no
    [ "$(id -u)" = 0 ] && owner_ok=yes
    for d in $daemons; do
        target=$destdir$confdir/$d.toml
        if [ -e "$target" ]; then
            if ! cmp -s "$here/etc/$d.toml" "$target"; then
                install -m 0640 "$here/etc/$d.toml" "$target.new"
                [ "$owner_ok" = yes ] && chown "root:$group" "$target.new"
                echo "    kept $target; the new example is $target.new (compare and merge)"
            fi
        else
            install -m 0640 "$here/etc/$d.toml" "$target"
            [ "$owner_ok" = yes ] && chown "root:$group" "$target"
        fi
    done

    install -d -m 0750 "$destdir$datadir" "$destdir$statdir"
    if [ "$owner_ok" = yes ] && getent passwd mmmail >/dev/null 2>&1; then
        chown mmmail:mmmail "$destdir$datadir"
    fi
    if [ "$owner_ok" = yes ] && getent passwd mmstat >/dev/null 2>&1; then
        chown mmstat:mmstat "$destdir$statdir"
    fi

    if [ "$systemd" = yes ]; then
        install -d "$destdir$unitdir"
        for d in $daemons; do
            sed -e "s|@SBINDIR@|$sbindir|g" -e "s|@SYSCONFDIR@|$sysconfdir|g" \
                -e "s|@LOCALSTATEDIR@|$localstatedir|g" \
                "$here/etc/systemd/$d.service" > "$destdir$unitdir/$d.service"
            chmod 0644 "$destdir$unitdir/$d.service"
        done
        if [ "$systemd_running" = yes ]; then
            systemctl daemon-reload
            for d in $daemons; do systemctl enable "$d" >/dev/null 2>&1 && say "enabled $d"; done
        fi
    fi

    start_again
    say "done. Next: edit $confdir/*.toml (database url, listen addresses, [tls]),"
    echo "    check with: $sbindir/mmsmtpd --check-config -c $confdir/mmsmtpd.toml"
    echo "    add users and boxes (man 7 mmmail), then: systemctl start mmstatd mmsmtpd mmpop3d mmtmtpd"
    echo "    mmtmtpd needs [tls] cert/key (mmtmtpd.toml); TMTP accounts: man 8 mmtmtpd"
    echo "    counters: mmstat show    (man 8 mmstat)"
    exit 0
fi

# --local: everything under ./local (or --local-dir), SQLite, loopback ports, in the
# foreground. Nothing runs from here yet (checked above).
mkdir -p "$local/etc" "$local/var"
db=$local/var/mmmail.db
echo "$$" > "$local/var/install.pid"
cat > "$local/etc/ports" <<PORTS
# Ports of the local suite, written by install.sh --local and read by its next run.
smtp_port=$smtp_port
pop3_port=$pop3_port
pop3s_port=$pop3s_port
tmtp_port=$tmtp_port
metrics_port=$metrics_port
PORTS

tls=""
if command -v openssl >/dev/null 2>&1; then
    if [ ! -f "$local/etc/cert.pem" ]; then
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
            -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
            -addext basicConstraints=critical,CA:FALSE \
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

stats="[stats]
socket = \"$local/var/mmstatd.sock\""
# Loopback only, and the clients are your own tests: no per-address limits.
limits="[limits]
max_per_address = 0
connection_rate = 0"
header="# Written by install.sh --local on every run: change ports with its options (see
# ./install.sh --help), other keys in a copy passed with -c (see etc/"

cat > "$local/etc/mmstatd.toml" <<CONF
${header}mmstatd.toml).
$stats
[statd]
query_socket = "$local/var/mmstatd-query.sock"
dir = "$local/var/mmstatd"
prometheus = "127.0.0.1:$metrics_port"
$root_ok
CONF

cat > "$local/etc/mmsmtpd.toml" <<CONF
${header}mmsmtpd.toml).
[server]
name = "localhost"
[database]
url = "sqlite://$db"
[listen]
addresses = ["127.0.0.1:$smtp_port"]
$tls
$limits
[smtpd]
# RFC 5321 4.5.1: mail to postmaster must reach a box; here the demo box.
postmaster = "demo@example.test"
# Your own tests from this machine are not a flood (the default, 300 per 30 minutes,
# is for a public MX).
flood_exempt = ["127.0.0.0/8", "::1/128"]
$stats
$root_ok
CONF

pop3s=""
[ -n "$tls" ] && pop3s="tls_addresses = [\"127.0.0.1:$pop3s_port\"]"
cat > "$local/etc/mmpop3d.toml" <<CONF
${header}mmpop3d.toml).
[server]
name = "localhost"
[database]
url = "sqlite://$db"
[listen]
addresses = ["127.0.0.1:$pop3_port"]
$pop3s
$tls
$limits
$stats
$root_ok
CONF

rm -f "$local/etc/mmtmtpd.toml"
if [ -n "$tls" ]; then
    cat > "$local/etc/mmtmtpd.toml" <<CONF
${header}mmtmtpd.toml).
[server]
name = "localhost"
[database]
url = "sqlite://$db"
[listen]
tls_addresses = ["127.0.0.1:$tmtp_port"]
$tls
$limits
[tmtpd]
name = "mmmail local"
$stats
$root_ok
CONF

    # Mail clients set up for the demo box: POP3 with STLS, checking the local
    # certificate (hence "localhost", the name it is issued to), keeping the mail.
    cat > "$local/etc/fetchmailrc" <<CONF
# fetchmail -f $local/etc/fetchmailrc   (written by install.sh --local)
poll localhost protocol pop3 port $pop3_port
  user "demo@example.test" password "demo"
  sslproto tls1.2+ sslcertck sslcertfile "$local/etc/cert.pem"
  keep mda "cat >> $local/var/fetchmail.out"
CONF
    chmod 0600 "$local/etc/fetchmailrc"
    cat > "$local/etc/mpoprc" <<CONF
# mpop -C $local/etc/mpoprc local   (written by install.sh --local)
account local
host localhost
port $pop3_port
user demo@example.test
password demo
tls on
tls_starttls on
tls_trust_file $local/etc/cert.pem
keep on
delivery mbox $local/var/mpop.mbox
CONF
    chmod 0600 "$local/etc/mpoprc"
fi

pids=""
stop() {
    trap - INT TERM EXIT
    [ -n "$pids" ] && kill $pids 2>/dev/null || true
    wait 2>/dev/null || true
    rm -f "$local/var/install.pid" "$local/var/mmstatd.pid" "$local/var/mmsmtpd.pid" \
        "$local/var/mmpop3d.pid" "$local/var/mmtmtpd.pid"
    echo
    echo "==> stopped"
}
trap stop INT TERM EXIT

# start NAME OPTION PORT...: runs NAME with its local config, logging to
# local/var/NAME.log, and waits until it listens; on failure names the option that
# moves each port.
start() {
    name=$1
    shift
    echo "==> starting $name (log: $local/var/$name.log)"
    # The environment its systemd unit gives it (glibc malloc settings), as installed.
    # shellcheck disable=SC2046
    env $(sed -n 's/^Environment=//p' "$here/etc/systemd/$name.service" 2>/dev/null) \
        "$bin/$name" -c "$local/etc/$name.toml" 2> "$local/var/$name.log" &
    pid=$!
    pids="$pids $pid"
    echo "$pid" > "$local/var/$name.pid"
    i=0
    until grep -q listening "$local/var/$name.log" 2>/dev/null; do
        i=$((i + 1))
        if [ $i -gt 300 ] || ! kill -0 $pid 2>/dev/null; then
            echo "install.sh: $name did not start:" >&2
            cat "$local/var/$name.log" >&2
            if grep -qi "in use" "$local/var/$name.log"; then
                while [ $# -gt 0 ]; do
                    echo "install.sh: if port $2 is the one taken, choose another: ./install.sh --local $1 N" >&2
                    shift 2
                done
            fi
            exit 1
        fi
        sleep 0.1
    done
}
# mmstatd first, so it counts from the start; then mmsmtpd, which creates the schema.
start mmstatd --metrics-port "$metrics_port"
start mmsmtpd --smtp-port "$smtp_port"
if [ -n "$tls" ]; then
    start mmpop3d --pop3-port "$pop3_port" --pop3s-port "$pop3s_port"
    start mmtmtpd --tmtp-port "$tmtp_port"
else
    start mmpop3d --pop3-port "$pop3_port"
fi

# The demo account, made once: user "demo" (password "demo"), box demo@example.test,
# and every other address at example.test reaching it through a wildcard alias.
admin() { "$bin/mmadmin" -c "$local/etc/mmsmtpd.toml" "$@"; }
if ! admin user list | awk 'NR > 1 { print $1 }' | grep -qx demo; then
    printf 'demo\n' | admin user add demo --stdin >/dev/null
    admin box add --user demo --max-size 10M --max-mails 1000 demo@example.test >/dev/null
    admin alias add '*@example.test' demo@example.test >/dev/null
fi

cat <<MSG

mmmail is running from $local (database $db).
  demo box: demo@example.test (user "demo", password "demo"); *@example.test reaches it
  ports: SMTP $smtp_port, POP3 $pop3_port$( [ -n "$tls" ] && echo ", POP3S $pop3s_port, TMTP $tmtp_port"), metrics $metrics_port
  (change them with --smtp-port N and the like: ./install.sh --help)

Send it a message:
  swaks --server 127.0.0.1:$smtp_port --to demo@example.test --from you@example.net
  printf 'Subject: hi\r\n\r\nhello\r\n' | curl -sS smtp://127.0.0.1:$smtp_port --mail-from you@example.net --mail-rcpt anything@example.test -T -
$( [ -n "$tls" ] && echo "  swaks --server 127.0.0.1:$smtp_port --tls --to demo@example.test --from you@example.net   # STARTTLS" )

Fetch it over POP3 (user demo@example.test, or mmmail style demo.example.test):
  curl -sS -u demo@example.test:demo pop3://127.0.0.1:$pop3_port/        # list
  curl -sS -u demo@example.test:demo pop3://127.0.0.1:$pop3_port/1       # retrieve message 1
$( [ -n "$tls" ] && echo "  curl -sS --cacert $local/etc/cert.pem -u demo@example.test:demo pop3s://localhost:$pop3s_port/1
  fetchmail -f $local/etc/fetchmailrc      # STLS, keeps the mail
  mpop -C $local/etc/mpoprc local           # STLS, keeps the mail" )

$( [ -n "$tls" ] && echo "TMTP (mnm clients) over TLS on 127.0.0.1:$tmtp_port (self-signed: =127.0.0.1:$tmtp_port); accounts:
  $bin/mmtmtpd -c $local/etc/mmtmtpd.toml admin add-user --nodes 1" )

Manage users, boxes and aliases:
  $bin/mmadmin -c $local/etc/mmsmtpd.toml box list

See the counters (mmstatd):
  $bin/mmstat -q $local/var/mmstatd-query.sock show
  $bin/mmstat -q $local/var/mmstatd-query.sock watch 'mmsmtpd|total|*'
  curl -sS http://127.0.0.1:$metrics_port/metrics                   # Prometheus

Press Ctrl-C to stop.
MSG
wait
