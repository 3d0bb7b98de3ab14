"""confluent-kafka (librdkafka) producer and consumer against Shardline."""

import time
import zlib

import pytest
from confluent_kafka import (Consumer, KafkaError, KafkaException, Producer,
                             TopicPartition, TIMESTAMP_CREATE_TIME, OFFSET_BEGINNING)
from confluent_kafka.admin import AdminClient, NewTopic

from helpers import describe, make_messages

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
N = 300
DEADLINE_S = 60


def producer(broker, **extra):
    conf = {
        "bootstrap.servers": broker.bootstrap,
        "acks": "all",
        "enable.idempotence": False,
        "linger.ms": 20,
        "batch.num.messages": 40,
        "message.timeout.ms": 30000,
        "socket.timeout.ms": 10000,
    }
    conf.update(extra)
    return Producer(conf)


def consumer(broker, **extra):
    conf = {
        "bootstrap.servers": broker.bootstrap,
        # confluent-kafka refuses to build a Consumer without a group.id even
        # for assign(); nothing here subscribes or commits.
        "group.id": "shardline-e2e-assign-only",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "socket.timeout.ms": 10000,
        "fetch.wait.max.ms": 100,
    }
    conf.update(extra)
    return Consumer(conf)


def produce_all(p, topic, msgs, partition=None):
    """Produce msgs; return delivery reports in produce order (or fail)."""
    reports = [None] * len(msgs)

    def cb_for(i):
        def cb(err, msg):
            reports[i] = (err, msg.partition(), msg.offset())
        return cb

    for i, m in enumerate(msgs):
        kw = {}
        if partition is not None:
            kw["partition"] = partition
        p.produce(topic, key=m["key"], value=m["value"], headers=m["headers"] or None,
                  timestamp=m["timestamp"], on_delivery=cb_for(i), **kw)
        p.poll(0)
        if i == len(msgs) // 2:
            assert p.flush(30) == 0, "flush timed out (half way)"
    remaining = p.flush(30)
    assert remaining == 0, f"{remaining} messages not delivered within 30 s"
    errs = [(i, r) for i, r in enumerate(reports) if r is None or r[0] is not None]
    assert not errs, f"delivery failures: {errs[:5]}"
    return reports


def wait_for_high_watermark(c, topic, partition, want, deadline_s=DEADLINE_S):
    """Polls the partition's high watermark until it is exactly `want`."""
    deadline = time.monotonic() + deadline_s
    high = None
    while time.monotonic() < deadline:
        _, high = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        if high >= want:
            break
        time.sleep(0.05)
    assert high == want, f"high watermark {high}, want {want}"


def consume_partition(c, topic, partition, expect_count, start=OFFSET_BEGINNING):
    """Assign one partition at `start`, read until EOF after expect_count msgs."""
    c.assign([TopicPartition(topic, partition, start)])
    return read_until(c, expect_count)


def read_until(c, expect_count, deadline_s=DEADLINE_S):
    got = []
    eof = False
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                eof = True
                if len(got) >= expect_count:
                    break
                continue
            raise AssertionError(f"consumer error: {m.error()}")
        got.append(m)
        eof = False
    else:
        raise AssertionError(f"timed out after {deadline_s}s with {len(got)}/"
                             f"{expect_count} messages (eof={eof})")
    return got


def norm_headers(h):
    return list(h) if h else []


def check_exact(got, msgs, first_offset=0, partition=0):
    """got must be exactly msgs[first_offset:], in order, fields intact."""
    want = msgs[first_offset:]
    assert len(got) == len(want), f"got {len(got)} messages, want {len(want)}"
    for j, (g, w) in enumerate(zip(got, want)):
        off = first_offset + j
        ctx = f"offset {off}: want {describe(w)}"
        assert g.partition() == partition, ctx
        assert g.offset() == off, f"{ctx}; got offset {g.offset()}"
        assert g.key() == w["key"], f"{ctx}; got key {g.key()!r}"
        assert g.value() == w["value"], (
            f"{ctx}; got value len {None if g.value() is None else len(g.value())}")
        assert norm_headers(g.headers()) == w["headers"], f"{ctx}; got {g.headers()}"
        assert g.timestamp() == (TIMESTAMP_CREATE_TIME, w["timestamp"]), (
            f"{ctx}; got timestamp {g.timestamp()}")


@pytest.mark.parametrize("codec", CODECS)
def test_produce_consume_codec(broker, topic_name, codec):
    msgs = make_messages(N, seed=zlib.crc32(codec.encode()))
    p = producer(broker, **{"compression.type": codec})
    reports = produce_all(p, topic_name, msgs)
    assert [r[1:] for r in reports] == [(0, i) for i in range(N)], \
        "delivery reports: partitions/offsets not 0..N-1 in order"

    c = consumer(broker)
    try:
        got = consume_partition(c, topic_name, 0, N)
        check_exact(got, msgs)

        # Seek back to a middle offset: everything from there, exactly once.
        mid = N // 2 + 3
        c.seek(TopicPartition(topic_name, 0, mid))
        got = read_until(c, N - mid)
        check_exact(got, msgs, first_offset=mid)

        # A fresh assignment that starts at a middle offset.
        c.unassign()
        got = consume_partition(c, topic_name, 0, N - 17, start=17)
        check_exact(got, msgs, first_offset=17)

        # Nothing more arrives after the end.
        extra = [m for m in (c.poll(0.3) for _ in range(3))
                 if m is not None and not m.error()]
        assert extra == [], f"unexpected extra messages: {[m.offset() for m in extra]}"
    finally:
        c.close()


def test_multi_partition_keys(broker, topic_name):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    fut = admin.create_topics([NewTopic(topic_name, num_partitions=4,
                                        replication_factor=1)],
                              operation_timeout=10, request_timeout=15)
    fut[topic_name].result(timeout=20)
    md = admin.list_topics(topic=topic_name, timeout=10)
    assert sorted(md.topics[topic_name].partitions) == [0, 1, 2, 3]

    msgs = make_messages(400, seed=4)
    # Keyed messages only: the partitioner must send equal keys to one partition.
    for i, m in enumerate(msgs):
        m["key"] = f"user-{i % 23}".encode()
    p = producer(broker, **{"compression.type": "lz4"})
    reports = produce_all(p, topic_name, msgs)

    per_part = {0: [], 1: [], 2: [], 3: []}
    key_part = {}
    for m, (_, part, off) in zip(msgs, reports):
        assert key_part.setdefault(m["key"], part) == part, \
            f"key {m['key']!r} went to two partitions"
        per_part[part].append((off, m))
    assert all(per_part.values()), \
        f"expected all 4 partitions used: {[len(v) for v in per_part.values()]}"

    c = consumer(broker)
    try:
        for part, items in per_part.items():
            offs = [o for o, _ in items]
            assert offs == list(range(len(items))), \
                f"partition {part}: delivery offsets not 0..n-1: {offs[:10]}"
            got = consume_partition(c, topic_name, part, len(items))
            check_exact(got, [m for _, m in items], partition=part)
            c.unassign()
        # Explicit partition choice works too.
        extra = make_messages(5, seed=44)
        rep = produce_all(p, topic_name, extra, partition=2)
        n2 = len(per_part[2])
        assert [r[1:] for r in rep] == [(2, n2 + i) for i in range(5)]
        got = consume_partition(c, topic_name, 2, 5, start=n2)
        check_exact(got, [m for _, m in per_part[2]] + extra, first_offset=n2,
                    partition=2)
    finally:
        c.close()


def test_acks_zero_and_one(broker, topic_name):
    """acks=0 and acks=1 deliver the same data (acks=0 gets no offsets back)."""
    msgs = make_messages(60, seed=7)
    c = consumer(broker)
    try:
        for acks in ("0", "1"):
            p = producer(broker, acks=acks, **{"compression.type": "gzip"})
            produce_all(p, topic_name, msgs)
            # An acks=0 flush returns once the requests are written, not once
            # the broker appended them; the acks=1 producer's connection would
            # race them. Wait for the first 60 to land before sending the rest.
            wait_for_high_watermark(c, topic_name, 0, 60 if acks == "0" else 120)
        got = consume_partition(c, topic_name, 0, 120)
        check_exact(got, msgs + msgs)
    finally:
        c.close()


def test_fetch_out_of_range_resets(broker, topic_name):
    """Assigning past the log end with auto.offset.reset=earliest goes back."""
    msgs = make_messages(10, seed=8)
    produce_all(producer(broker), topic_name, msgs)
    c = consumer(broker, **{"auto.offset.reset": "earliest"})
    try:
        got = consume_partition(c, topic_name, 0, 10, start=1000)
        check_exact(got, msgs)
    finally:
        c.close()


def test_unknown_partition_produce_fails(broker, topic_name):
    p = producer(broker, **{"message.timeout.ms": 5000})
    produce_all(p, topic_name, make_messages(1, seed=9))
    errs = []
    try:
        p.produce(topic_name, value=b"x", partition=7,
                  on_delivery=lambda err, msg: errs.append(err))
    except KafkaException as e:
        errs.append(e.args[0])
    p.flush(15)
    assert len(errs) == 1 and errs[0] is not None
    assert errs[0].code() in (KafkaError._UNKNOWN_PARTITION,
                              KafkaError.UNKNOWN_TOPIC_OR_PART), errs[0]
