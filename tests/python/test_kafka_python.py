"""kafka-python (pure Python client) producer, consumer and admin client.

No api_version is pinned: kafka-python probes the broker with ApiVersions and
must pick versions Shardline supports on its own.
"""

import time
import zlib

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import (TopicAlreadyExistsError, UnknownTopicOrPartitionError)

from helpers import describe, make_messages

CODECS = [None, "gzip", "snappy", "lz4", "zstd"]
N = 250
DEADLINE_S = 60


def producer(broker, **extra):
    conf = dict(bootstrap_servers=broker.bootstrap, acks="all",
                enable_idempotence=False, linger_ms=20, batch_size=16384,
                request_timeout_ms=15000, max_block_ms=15000, retries=0)
    conf.update(extra)
    return KafkaProducer(**conf)


def consumer(broker, **extra):
    conf = dict(bootstrap_servers=broker.bootstrap, group_id=None,
                enable_auto_commit=False, fetch_max_wait_ms=100,
                request_timeout_ms=15000, auto_offset_reset="earliest")
    conf.update(extra)
    return KafkaConsumer(**conf)


def produce_all(p, topic, msgs, partition=None):
    futs = []
    for i, m in enumerate(msgs):
        headers = [(k, v) for k, v in m["headers"]]
        futs.append(p.send(topic, key=m["key"], value=m["value"], headers=headers,
                           timestamp_ms=m["timestamp"], partition=partition))
        if i == len(msgs) // 2:
            p.flush(timeout=30)
    p.flush(timeout=30)
    return [f.get(timeout=30) for f in futs]


def read(c, tp, expect_count, deadline_s=DEADLINE_S):
    got = []
    deadline = time.monotonic() + deadline_s
    while len(got) < expect_count and time.monotonic() < deadline:
        for recs in c.poll(timeout_ms=500).values():
            got.extend(recs)
    assert len(got) >= expect_count, \
        f"timed out with {len(got)}/{expect_count} messages"
    # Nothing beyond the end.
    for _ in range(2):
        for recs in c.poll(timeout_ms=300).values():
            got.extend(recs)
    return got


def check_exact(got, msgs, first_offset=0, partition=0):
    want = msgs[first_offset:]
    assert len(got) == len(want), f"got {len(got)} messages, want {len(want)}"
    for j, (g, w) in enumerate(zip(got, want)):
        off = first_offset + j
        ctx = f"offset {off}: want {describe(w)}"
        assert g.partition == partition, ctx
        assert g.offset == off, f"{ctx}; got offset {g.offset}"
        assert g.key == w["key"], f"{ctx}; got key {g.key!r}"
        assert g.value == w["value"], (
            f"{ctx}; got value len {None if g.value is None else len(g.value)}")
        assert list(g.headers) == w["headers"], f"{ctx}; got {g.headers}"
        assert (g.timestamp_type, g.timestamp) == (0, w["timestamp"]), \
            f"{ctx}; got timestamp {g.timestamp_type} {g.timestamp}"


@pytest.mark.parametrize("codec", CODECS, ids=[str(c) for c in CODECS])
def test_produce_consume_codec(broker, topic_name, codec):
    msgs = make_messages(N, seed=zlib.crc32(str(codec).encode()), header_none=False)
    p = producer(broker, compression_type=codec)
    try:
        md = produce_all(p, topic_name, msgs)
    finally:
        p.close(timeout=10)
    assert [(m.partition, m.offset) for m in md] == [(0, i) for i in range(N)]

    tp = TopicPartition(topic_name, 0)
    c = consumer(broker)
    try:
        c.assign([tp])
        c.seek_to_beginning(tp)
        check_exact(read(c, tp, N), msgs)

        mid = N // 2 + 1
        c.seek(tp, mid)
        check_exact(read(c, tp, N - mid), msgs, first_offset=mid)

        c.seek(tp, 0)
        check_exact(read(c, tp, N), msgs)
        assert c.position(tp) == N
    finally:
        c.close()


def test_multi_partition(broker, topic_name):
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap,
                             request_timeout_ms=15000)
    try:
        admin.create_topics([NewTopic(topic_name, num_partitions=4,
                                      replication_factor=1)], timeout_ms=10000)
    finally:
        admin.close()
    msgs = make_messages(200, seed=12, header_none=False)
    for i, m in enumerate(msgs):
        m["key"] = f"acct-{i % 19}".encode()
    p = producer(broker, compression_type="zstd")
    try:
        md = produce_all(p, topic_name, msgs)
    finally:
        p.close(timeout=10)
    per_part = {}
    key_part = {}
    for m, r in zip(msgs, md):
        assert key_part.setdefault(m["key"], r.partition) == r.partition
        per_part.setdefault(r.partition, []).append((r.offset, m))
    assert sorted(per_part) == [0, 1, 2, 3]
    c = consumer(broker)
    try:
        for part, items in per_part.items():
            assert [o for o, _ in items] == list(range(len(items)))
            tp = TopicPartition(topic_name, part)
            c.assign([tp])
            c.seek(tp, 0)
            check_exact(read(c, tp, len(items)), [m for _, m in items], partition=part)
    finally:
        c.close()


def test_admin_create_delete(broker, topic_name):
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap,
                             request_timeout_ms=15000)
    try:
        admin.create_topics([NewTopic(topic_name, num_partitions=2,
                                      replication_factor=1)], timeout_ms=10000)
        assert topic_name in admin.list_topics()
        desc = {d["name"]: d for d in admin.describe_topics([topic_name])}
        assert desc[topic_name]["error_code"] == 0
        assert sorted(p["partition_index"]
                      for p in desc[topic_name]["partitions"]) == [0, 1]

        # validate_only does not create anything.
        admin.create_topics([NewTopic(topic_name + "-v", 1, 1)],
                            timeout_ms=10000, validate_only=True)
        assert topic_name + "-v" not in admin.list_topics()

        with pytest.raises(TopicAlreadyExistsError):
            admin.create_topics([NewTopic(topic_name, 1, 1)], timeout_ms=10000)

        admin.delete_topics([topic_name], timeout_ms=10000)
        deadline = time.monotonic() + 10
        while topic_name in admin.list_topics() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert topic_name not in admin.list_topics()

        with pytest.raises(UnknownTopicOrPartitionError):
            admin.delete_topics([topic_name], timeout_ms=10000)
    finally:
        admin.close()
