"""Shared message sets and checks for the client tests."""

import random
import time


def make_messages(n, seed, header_none=True):
    """Messages with varied keys, values, headers and explicit timestamps.

    Covers null keys, null values (tombstones), empty values, large
    compressible and incompressible values, repeated and empty headers.
    Timestamps are distinct, increasing, and in the recent past (a broker
    with retention must not treat them as expired).
    """
    rnd = random.Random(seed)
    base_ts = int(time.time() * 1000) - 60_000
    msgs = []
    for i in range(n):
        key = None if i % 11 == 3 else f"key-{i % 7}".encode()
        kind = i % 6
        if kind == 0:
            value = (f"compressible value {i} " * (1 + i % 40)).encode()
        elif kind == 1:
            value = bytes(rnd.getrandbits(8) for _ in range(1 + rnd.randrange(2000)))
        elif kind == 2:
            value = b""
        elif kind == 3 and i % 12 == 3:
            value = None
        elif kind == 4 and i % 50 == 4:
            value = b"x" * 60_000 + str(i).encode()
        else:
            value = f"v{i}".encode()
        if key is None and value is None:
            key = b"tombstone-key"  # kafka-python refuses key=value=None
        headers = [("idx", str(i).encode())]
        if i % 3 == 0:
            headers += [("dup", b"a"), ("dup", b"b"), ("empty", b"")]
        if header_none and i % 9 == 0:
            headers.append(("nullv", None))
        if i % 5 == 4:
            headers = []
        msgs.append({"key": key, "value": value, "headers": headers,
                     "timestamp": base_ts + i * 7})
    return msgs


def describe(m):
    v = m.get("value")
    return (f"key={m.get('key')!r} value_len={None if v is None else len(v)} "
            f"headers={m.get('headers')!r} ts={m.get('timestamp')}")
