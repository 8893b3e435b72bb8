#!/usr/bin/env python3
"""Writes the fuzz targets' seeds into fuzz/seeds/<target>.json from the project's own
protocol tests: the byte-string literals of the SMTP, POP3 and mmstatd tests and parsers,
the address and pattern examples, the DATA smuggling variants, and the client frames of
mnm's recorded TMTP run (spec/mnm-verify-transcript.jsonl, when ../shared is there).

Each file is a JSON array of strings, one seed each, bytes mapped one to one onto
characters (Latin-1). The seeds are committed; scripts/fuzz.sh expands them into
fuzz/corpus/<target>/. Run this again after adding protocol tests:
    python3 fuzz/seeds.py
"""

import ast
import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fuzz" / "seeds"

# b"..." literals (Rust byte strings without raw-string forms), and "..." ones.
BYTES = re.compile(rb'(?<![\w"])b"((?:[^"\\]|\\.)*)"')
TEXT = re.compile(rb'(?<![b\w])"((?:[^"\\]|\\.)*)"')


def unescape(raw: bytes) -> bytes:
    """A Rust string literal body to its bytes (the escapes the tests use)."""
    s = raw.decode("utf-8", "replace")
    s = re.sub(r"\\u\{([0-9a-fA-F]+)\}", lambda m: "\\U%08x" % int(m.group(1), 16), s)
    s = s.replace("\\0", "\\x00")
    try:
        return ast.literal_eval('b"' + s.encode("unicode_escape").decode().replace("\\\\", "\\") + '"')
    except (ValueError, SyntaxError):
        return raw


def literals(paths, pattern):
    out = set()
    for p in paths:
        for m in pattern.finditer(p.read_bytes()):
            b = unescape(m.group(1))
            if b:
                out.add(b)
    return out


def write(target, seeds):
    seeds = sorted(s for s in seeds if len(s) <= 4096)
    OUT.mkdir(parents=True, exist_ok=True)
    text = json.dumps([s.decode("latin-1") for s in seeds], indent=0, ensure_ascii=True)
    (OUT / f"{target}.json").write_text(text + "\n")
    print(f"{target}: {len(seeds)} seeds")


def files(*globs):
    out = []
    for g in globs:
        out.extend(sorted(ROOT.glob(g)))
    return out


def lines_of(seeds):
    """Each literal, and each of its CRLF-separated lines."""
    out = set()
    for s in seeds:
        out.add(s)
        for line in s.split(b"\r\n"):
            if line:
                out.add(line)
    return out


smtp = lines_of(literals(files("smtpd/tests/*.rs", "smtpd/src/**/*.rs"), BYTES))
write("smtp_command", {s for s in smtp if len(s) < 600 and b"\r\n" not in s})
# DATA: two split bytes, then the data (see fuzz_targets/smtp_data.rs).
data = {s for s in literals(files("smtpd/tests/*.rs", "smtpd/src/proto/data.rs"), BYTES) if b"\r\n" in s or b"\n" in s}
write("smtp_data", {b"\x05\x20" + s for s in data})
pop3 = lines_of(literals(files("pop3d/tests/*.rs", "pop3d/src/**/*.rs"), BYTES))
write("pop3_command", {s for s in pop3 if len(s) < 600 and b"\r\n" not in s})
stats = literals(files("statd/tests/*.rs", "statd/src/*.rs", "common/src/stats.rs"), BYTES)
stats |= {s for s in literals(files("statd/src/*.rs"), TEXT) if re.match(rb"^[USRD] [PV] ", s)}
write("stats_datagram", stats)
addresses = {
    s
    for s in literals(files("common/src/address.rs", "smtpd/tests/*.rs", "common/tests/*.rs"), TEXT)
    if b"@" in s and len(s) < 300
}
write("address", addresses)
patterns = {s for s in literals(files("common/src/pattern.rs", "common/tests/*.rs"), TEXT) if b"*" in s or b"?" in s}
write("pattern", {p + b"\x00" + a for p in sorted(patterns) for a in sorted(addresses)[:4]} | patterns)

tmtp = set()
transcript = ROOT.parent / "shared" / "spec" / "mnm-verify-transcript.jsonl"
if transcript.exists():
    for line in transcript.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("dir") == "C->S" and "text" in rec:
            tmtp.add(rec["text"].encode())
        elif rec.get("dir") == "C->S" and "b64" in rec:
            import base64

            tmtp.add(base64.b64decode(rec["b64"]))
tests = json.loads((ROOT.parent / "shared" / "spec" / "mnm-test.json").read_text()) if (
    ROOT.parent / "shared" / "spec" / "mnm-test.json"
).exists() else []
for t in tests:
    if isinstance(t, dict) and "msg" in t:
        tmtp.add(t["msg"].encode())
if tmtp:
    write("tmtp_frame", tmtp)
else:
    print("tmtp_frame: ../shared not found; seeds kept")
