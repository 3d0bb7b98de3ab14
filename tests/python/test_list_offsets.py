"""ListOffsets: earliest / latest / timestamp lookups / max timestamp.

The log is produced as four batches with CreateTime timestamps that are not
monotonic across batches:

  batch A  offsets  0..9   ts = T+1000 .. T+1009
  batch B  offsets 10..19  ts = T+500  .. T+509
  batch C  offsets 20..29  ts = T+2000 .. T+2009, except offset 24 = T+9000
  batch D  offsets 30..39  ts = T+3000 .. T+3009

Kafka's rule: a timestamp lookup returns the earliest offset whose timestamp
is >= the target; MAX_TIMESTAMP (v7) returns the offset of the record with the
largest timestamp.
"""

import time

import pytest
from confluent_kafka import (Consumer, IsolationLevel, OFFSET_END,
                             Producer, TopicPartition)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec
from kafka import KafkaConsumer
from kafka import TopicPartition as KTP

T = int(time.time() * 1000) - 3_600_000


def ts_of(off):
    if off < 10:
        return T + 1000 + off
    if off < 20:
        return T + 500 + off - 10
    if off < 30:
        return T + 9000 if off == 24 else T + 2000 + off - 20
    return T + 3000 + off - 30


# target timestamp -> expected offset (-1: none)
LOOKUPS = {
    T: 0,
    T + 505: 0,          # batch A's first record already has ts >= target
    T + 1000: 0,
    T + 1005: 5,
    T + 1009: 9,
    T + 1010: 20,        # nothing in A or B reaches it
    T + 2003: 23,
    T + 2005: 24,        # offset 24 (T+9000) is the first >= target
    T + 3000: 24,
    T + 8999: 24,
    T + 9000: 24,
    T + 9001: -1,
}


@pytest.fixture(scope="module")
def topic(broker):
    name = f"list-offsets-{int(time.time())}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(name, 2, 1)])[name].result(timeout=20)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all",
                  "enable.idempotence": False, "linger.ms": 50})
    for batch in range(4):
        for off in range(batch * 10, batch * 10 + 10):
            p.produce(name, partition=0, key=b"k%d" % off, value=b"v%d" % off,
                      timestamp=ts_of(off))
        assert p.flush(20) == 0
    return name


@pytest.fixture
def consumer(broker):
    c = Consumer({"bootstrap.servers": broker.bootstrap,
                  "group.id": "e2e-assign-only", "enable.auto.commit": False})
    yield c
    c.close()


def test_confluent_watermarks(consumer, topic):
    assert consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 40)
    # The empty partition.
    assert consumer.get_watermark_offsets(TopicPartition(topic, 1), timeout=10) == (0, 0)


def test_confluent_offsets_for_times(consumer, topic):
    # One lookup per call: librdkafka merges duplicate partitions of one call
    # into a single request entry, so several targets for one partition
    # cannot share a call.
    got = {}
    for target in LOOKUPS:
        r = consumer.offsets_for_times([TopicPartition(topic, 0, target)],
                                       timeout=10)[0]
        assert r.error is None, r
        got[target - T] = r.offset
    want = {t - T: (OFFSET_END if o == -1 else o) for t, o in LOOKUPS.items()}
    assert got == want
    # Two partitions in one request; partition 1 is empty: no offset.
    r0, r1 = consumer.offsets_for_times([TopicPartition(topic, 0, T + 2003),
                                         TopicPartition(topic, 1, T)], timeout=10)
    assert (r0.error, r0.offset, r1.error, r1.offset) == (None, 23, None, OFFSET_END)


def test_confluent_admin_list_offsets(broker, topic):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    cases = [
        ({tp0: OffsetSpec.earliest()}, {tp0: 0}),
        ({tp0: OffsetSpec.latest()}, {tp0: 40}),
        ({tp1: OffsetSpec.latest()}, {tp1: 0}),
        ({tp0: OffsetSpec.for_timestamp(T + 1005)}, {tp0: 5}),
        ({tp0: OffsetSpec.for_timestamp(T + 1010)}, {tp0: 20}),
    ]
    for iso in (IsolationLevel.READ_UNCOMMITTED, IsolationLevel.READ_COMMITTED):
        for spec, want in cases:
            futs = admin.list_offsets(spec, isolation_level=iso, request_timeout=15)
            got = {tp: f.result(timeout=20).offset for tp, f in futs.items()}
            got = {tp: got[tp] for tp in spec}
            assert {(t.partition): o for t, o in got.items()} == \
                {(t.partition): o for t, o in want.items()}, (iso, spec)
    # The timestamp that comes back with a lookup is the record's.
    r = admin.list_offsets({tp0: OffsetSpec.for_timestamp(T + 1005)},
                           request_timeout=15)[tp0].result(timeout=20)
    assert (r.offset, r.timestamp) == (5, T + 1005)


def test_confluent_admin_max_timestamp(broker, topic):
    """ListOffsets v7, timestamp -3: the record with the largest timestamp."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    r = admin.list_offsets({tp1: OffsetSpec.max_timestamp()},
                           request_timeout=15)[tp1].result(timeout=20)
    assert (r.offset, r.timestamp) == (-1, -1), "empty partition"
    r = admin.list_offsets({tp0: OffsetSpec.max_timestamp()},
                           request_timeout=15)[tp0].result(timeout=20)
    assert (r.offset, r.timestamp) == (24, T + 9000)


def test_kafka_python_offsets(broker, topic):
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None,
                      enable_auto_commit=False, request_timeout_ms=15000)
    try:
        tp0, tp1 = KTP(topic, 0), KTP(topic, 1)
        assert c.beginning_offsets([tp0, tp1]) == {tp0: 0, tp1: 0}
        assert c.end_offsets([tp0, tp1]) == {tp0: 40, tp1: 0}
        for target, want in LOOKUPS.items():
            r = c.offsets_for_times({tp0: target})[tp0]
            if want == -1:
                assert r is None, (target - T, r)
            else:
                assert r is not None and (r.offset, r.timestamp) == (want, ts_of(want)), \
                    (target - T, r)
        assert c.offsets_for_times({tp1: T}) == {tp1: None}
        # Consuming from a looked-up offset gives that record first.
        c.assign([tp0])
        c.seek(tp0, c.offsets_for_times({tp0: T + 2003})[tp0].offset)
        recs = []
        deadline = time.monotonic() + 30
        while len(recs) < 17 and time.monotonic() < deadline:
            for rs in c.poll(timeout_ms=500).values():
                recs.extend(rs)
        assert [(r.offset, r.value, r.timestamp) for r in recs] == \
            [(o, b"v%d" % o, ts_of(o)) for o in range(23, 40)]
    finally:
        c.close()
