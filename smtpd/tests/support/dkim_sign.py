#!/usr/bin/env python3
"""Signs the message on stdin with dkimpy for tests/checks.rs (issue 14); writes it, signed,
to stdout.

    dkim_sign.py MODE KEY.pem SELECTOR DOMAIN

MODE: "valid" (a DKIM-Signature over From, To and Subject), "expired" (the same, made
two days ago with x= one day ago: dkimpy has no option for x=, so its header builder is
given the tag) or "arc" (an ARC set sealed by DOMAIN as a forwarder whose authserv-id is
DOMAIN: the message must carry that forwarder's Authentication-Results field).
"""
import sys
import time

import dkim

mode, key_path, selector, domain = sys.argv[1:5]
message = sys.stdin.buffer.read()
key = open(key_path, "rb").read()
if mode == "arc":
    sealed = dkim.arc_sign(message, selector.encode(), domain.encode(), key, domain.encode(),
                           include_headers=[b"from", b"to", b"subject"])
    sys.stdout.buffer.write(b"".join(sealed) + message)
    sys.exit(0)
signer = dkim.DKIM(message)
if mode == "expired":
    now = time.time()
    build = signer.gen_header

    def with_expiry(fields, *rest):
        return build(fields[:-1] + [(b"x", str(int(now - 86400)).encode())] + fields[-1:], *rest)

    signer.gen_header = with_expiry
    time.time = lambda: now - 2 * 86400
signature = signer.sign(selector.encode(), domain.encode(), key, include_headers=[b"from", b"to", b"subject"])
sys.stdout.buffer.write(signature + message)
