#!/usr/bin/python3
"""NBD client for the integrity tests (libnbd's Python binding, python3-libnbd).

  write URI SEED FIRST COUNT
      Writes records FIRST..FIRST+COUNT-1, each followed by a flush; prints "ack K" once the
      flush of record K returned. On an error prints "error K MESSAGE" and exits 3.
  verify URI SEED LISTFILE  (LISTFILE: record numbers, whitespace separated)
      Reads every record back; prints JSON {"checked": N, "bad": [K...], "errors": [[K, errno, msg]]}.
  read URI OFFSET LENGTH OUT [CHUNK]
      Reads [OFFSET, OFFSET+LENGTH) in CHUNK-byte requests (default 1 MiB) into file OUT (failed
      chunks stay zero); prints JSON {"failed": [[offset, length, errno, msg]...]}.

A record is 64 KiB: 16 bytes (seed, K) then bytes from a PRNG seeded by (seed, K), at offset
((K * 337) mod 4096) * 64 KiB, so 4096 records cover 256 MiB once, in a scattered order.
"""
import json
import random
import struct
import sys

import nbd

RECORD = 64 * 1024
SLOTS = 4096


def record(seed, k):
    body = random.Random(seed * 1_000_003 + k).randbytes(RECORD - 16)
    return struct.pack("<QQ", seed, k) + body


def offset(k):
    return ((k * 337) % SLOTS) * RECORD


def connect(uri):
    h = nbd.NBD()
    h.connect_uri(uri)
    return h


def main(argv):
    cmd, uri = argv[1], argv[2]
    if cmd == "write":
        seed, first, count = int(argv[3]), int(argv[4]), int(argv[5])
        assert first + count <= SLOTS
        h = connect(uri)
        for k in range(first, first + count):
            try:
                h.pwrite(record(seed, k), offset(k))
                h.flush()
            except nbd.Error as e:
                print(f"error {k} {e.string} (errno {e.errno})", flush=True)
                return 3
            print(f"ack {k}", flush=True)
        h.shutdown()
        return 0
    if cmd == "verify":
        seed = int(argv[3])
        with open(argv[4]) as f:
            ks = [int(x) for x in f.read().split()]
        h = connect(uri)
        bad, errors = [], []
        for k in ks:
            try:
                if h.pread(RECORD, offset(k)) != record(seed, k):
                    bad.append(k)
            except nbd.Error as e:
                errors.append([k, e.errno, e.string])
        h.shutdown()
        print(json.dumps({"checked": len(ks), "bad": bad, "errors": errors}))
        return 0
    if cmd == "read":
        start, length, out = int(argv[3]), int(argv[4]), argv[5]
        chunk = int(argv[6]) if len(argv) > 6 else 1 << 20
        h = connect(uri)
        failed = []
        with open(out, "wb") as f:
            f.truncate(length)
            for off in range(start, start + length, chunk):
                n = min(chunk, start + length - off)
                try:
                    data = h.pread(n, off)
                except nbd.Error as e:
                    failed.append([off, n, e.errno, e.string])
                    continue
                f.seek(off - start)
                f.write(data)
        h.shutdown()
        print(json.dumps({"failed": failed}))
        return 0
    print(f"unknown command {cmd}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
