"""confluent-kafka (librdkafka) transactions and idempotent producing.

- Transactions over 3 partitions, some committed and some aborted: a
  read_committed consumer sees exactly the committed records, in order; a
  read_uncommitted one sees every record.
- An open transaction holds back read_committed consumers (last stable
  offset) until it commits.
- A read-process-write loop: consume in a group, produce transformed records
  and send_offsets_to_transaction in one transaction, abort every third one
  and rewind; the output holds each transformed record once (read_committed)
  and the group's committed offsets are the ends of the input.
- A zombie transactional producer is fenced by a new incarnation.
- An idempotent producer (enable.idempotence=true) over 3 partitions, with
  the broker killed (SIGKILL) and restarted on the same port and data
  directory while it produces: every message is acknowledged and read back
  exactly once, in order.
"""

import time
import uuid

import pytest
from confluent_kafka import (Consumer, KafkaError, KafkaException, OFFSET_BEGINNING,
                             OFFSET_INVALID, Producer, TopicPartition)
from confluent_kafka.admin import AdminClient, NewTopic

BROKER_ARGS = ["--set", "num_partitions=3", "--set", "group_initial_rebalance_delay_ms=0"]
NPARTS = 3
DEADLINE_S = 60
TXN_TIMEOUT_S = 30


def uid():
    return uuid.uuid4().hex[:8]


def create_topic(broker, name, partitions=NPARTS):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, "socket.timeout.ms": 10000})
    fut = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)],
                              operation_timeout=15, request_timeout=20)[name]
    fut.result(timeout=30)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        md = admin.list_topics(topic=name, timeout=10)
        t = md.topics.get(name)
        if t is not None and t.error is None and len(t.partitions) == partitions \
                and all(p.leader >= 0 for p in t.partitions.values()):
            return
        time.sleep(0.1)
    raise AssertionError(f"topic {name} not ready in metadata")


def txn_producer(broker, txn_id, **extra):
    conf = {
        "bootstrap.servers": broker.bootstrap,
        "transactional.id": txn_id,
        "transaction.timeout.ms": TXN_TIMEOUT_S * 1000,
        "socket.timeout.ms": 10000,
        "linger.ms": 5,
    }
    conf.update(extra)
    p = Producer(conf)
    p.init_transactions(30)
    return p


def plain_consumer(broker, isolation, **extra):
    conf = {
        "bootstrap.servers": broker.bootstrap,
        "group.id": f"assign-only-{uid()}",  # required by the client; never joined
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "isolation.level": isolation,
        "socket.timeout.ms": 10000,
        "fetch.wait.max.ms": 100,
    }
    conf.update(extra)
    return Consumer(conf)


def read_topic(broker, topic, isolation, expect, nparts=NPARTS, grace_s=1.5):
    """Read every partition of topic from the start at the given isolation
    level until `expect` messages arrived and every partition is at its end
    (EOF), then poll grace_s longer for extras. Returns {partition: [value]}.
    """
    c = plain_consumer(broker, isolation)
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(nparts)])
        got = {p: [] for p in range(nparts)}
        offsets = {p: [] for p in range(nparts)}
        at_eof = set()
        n = 0
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline and not (n >= expect and len(at_eof) == nparts):
            for m in c.consume(num_messages=500, timeout=0.5):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        at_eof.add(m.partition())
                        continue
                    raise AssertionError(f"consume error: {m.error()}")
                at_eof.discard(m.partition())
                got[m.partition()].append(m.value().decode())
                offsets[m.partition()].append(m.offset())
                n += 1
        assert n >= expect and len(at_eof) == nparts, (
            f"{isolation}: {n} of {expect} messages within {DEADLINE_S} s; "
            f"partitions at end: {sorted(at_eof)}; per partition: "
            f"{ {p: len(v) for p, v in got.items()} }")
        end = time.monotonic() + grace_s
        while time.monotonic() < end:
            for m in c.consume(num_messages=500, timeout=0.2):
                if not m.error():
                    got[m.partition()].append(m.value().decode())
                    n += 1
        for p, offs in offsets.items():
            assert offs == sorted(set(offs)), f"partition {p}: offsets not increasing: {offs}"
        return got
    finally:
        c.close()


def value(txn, p, i):
    return f"txn{txn}-p{p}-{i}"


def test_commit_and_abort_three_partitions(broker):
    topic = f"py-txn-{uid()}"
    create_topic(broker, topic)
    p = txn_producer(broker, f"py-txn-{uid()}")
    committed = {q: [] for q in range(NPARTS)}
    everything = {q: [] for q in range(NPARTS)}
    failures = []

    def on_delivery(err, msg):
        if err is not None:
            failures.append(err)

    per = 10
    for txn in range(6):
        abort = txn % 3 == 1
        p.begin_transaction()
        for i in range(per):
            for q in range(NPARTS):
                v = value(txn, q, i)
                p.produce(topic, value=v.encode(), key=f"k{i}".encode(), partition=q,
                          on_delivery=on_delivery)
                everything[q].append(v)
                if not abort:
                    committed[q].append(v)
        if abort:
            # Make the records reach the log first, so that the abort has
            # something to abort.
            assert p.flush(30) == 0
            p.abort_transaction(30)
        else:
            p.commit_transaction(30)
    assert p.flush(30) == 0
    assert not failures, f"delivery failures: {failures[:5]}"

    total_committed = sum(len(v) for v in committed.values())
    got = read_topic(broker, topic, "read_committed", total_committed)
    assert got == committed, "read_committed must see exactly the committed records, in order"
    got = read_topic(broker, topic, "read_uncommitted", sum(len(v) for v in everything.values()))
    assert got == everything, "read_uncommitted must see every record, in order"


def test_open_transaction_holds_back_read_committed(broker):
    topic = f"py-lso-{uid()}"
    create_topic(broker, topic, 1)
    plain = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    plain.produce(topic, value=b"before", partition=0)
    assert plain.flush(30) == 0
    txn = txn_producer(broker, f"py-lso-{uid()}")
    txn.begin_transaction()
    txn.produce(topic, value=b"in-txn", partition=0)
    assert txn.flush(30) == 0
    plain.produce(topic, value=b"after", partition=0)
    assert plain.flush(30) == 0

    # The open transaction's first offset is the last stable offset: the
    # record after it stays hidden from read_committed consumers too.
    assert read_topic(broker, topic, "read_committed", 1, nparts=1) == {0: ["before"]}
    assert read_topic(broker, topic, "read_uncommitted", 3, nparts=1) == \
        {0: ["before", "in-txn", "after"]}
    c = plain_consumer(broker, "read_committed")
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)
        assert (lo, hi) == (0, 1), "ListOffsets(read_committed) must give the last stable offset"
    finally:
        c.close()
    txn.commit_transaction(30)
    assert read_topic(broker, topic, "read_committed", 3, nparts=1) == \
        {0: ["before", "in-txn", "after"]}


def test_send_offsets_read_process_write(broker):
    src, dst = f"py-rpw-in-{uid()}", f"py-rpw-out-{uid()}"
    group = f"py-rpw-{uid()}"
    per = 20
    create_topic(broker, src)
    create_topic(broker, dst)
    plain = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    for q in range(NPARTS):
        for i in range(per):
            plain.produce(src, value=f"in-p{q}-{i}".encode(), partition=q)
    assert plain.flush(30) == 0

    c = Consumer({
        "bootstrap.servers": broker.bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "session.timeout.ms": 10000,
        "fetch.wait.max.ms": 100,
        "socket.timeout.ms": 10000,
    })
    p = txn_producer(broker, f"py-rpw-{uid()}")
    want = {f"out:in-p{q}-{i}" for q in range(NPARTS) for i in range(per)}
    committed_out = []
    aborted_out = 0
    txns = 0
    try:
        c.subscribe([src])
        deadline = time.monotonic() + 90
        while len(committed_out) < len(want) and time.monotonic() < deadline:
            msgs = c.consume(num_messages=7, timeout=1.0)
            if not msgs:
                continue
            for m in msgs:
                assert not m.error(), f"consume error: {m.error()}"
            p.begin_transaction()
            outs = []
            for m in msgs:
                v = "out:" + m.value().decode()
                p.produce(dst, value=v.encode(), partition=m.partition())
                outs.append(v)
            positions = [tp for tp in c.position(c.assignment()) if tp.offset >= 0]
            p.send_offsets_to_transaction(positions, c.consumer_group_metadata(), 30)
            if txns % 3 == 2:
                assert p.flush(30) == 0
                p.abort_transaction(30)
                aborted_out += len(outs)
                # Rewind to the committed offsets: the aborted input is
                # processed again.
                for tp in c.committed(c.assignment(), timeout=10):
                    if tp.offset == OFFSET_INVALID:
                        tp.offset = OFFSET_BEGINNING
                    c.seek(tp)
            else:
                p.commit_transaction(30)
                committed_out += outs
            txns += 1
        assert sorted(committed_out) == sorted(want), (
            f"committed {len(committed_out)} transformed records in {txns} transactions, "
            f"want each of {len(want)} once")
        assert aborted_out > 0, "no transaction was aborted"
        # The group's committed offsets are the ends of the input.
        committed = c.committed([TopicPartition(src, q) for q in range(NPARTS)], timeout=10)
        assert {tp.partition: tp.offset for tp in committed} == {q: per for q in range(NPARTS)}
    finally:
        c.close()

    got = read_topic(broker, dst, "read_committed", len(want))
    seen = [v for q in range(NPARTS) for v in got[q]]
    assert sorted(seen) == sorted(want), "read_committed output: each transformed record once"
    for q in range(NPARTS):
        assert got[q] == [f"out:in-p{q}-{i}" for i in range(per)], f"partition {q} out of order"
    got = read_topic(broker, dst, "read_uncommitted", len(want) + aborted_out)
    assert sum(len(v) for v in got.values()) == len(want) + aborted_out


def test_zombie_producer_is_fenced(broker):
    topic = f"py-fence-{uid()}"
    create_topic(broker, topic, 1)
    txn_id = f"py-fence-{uid()}"
    old = txn_producer(broker, txn_id)
    old.begin_transaction()
    old.produce(topic, value=b"zombie", partition=0)
    assert old.flush(30) == 0
    new = txn_producer(broker, txn_id)  # bumps the epoch, aborts old's transaction
    new.begin_transaction()
    new.produce(topic, value=b"new", partition=0)
    new.commit_transaction(30)
    with pytest.raises(KafkaException) as exc:
        old.produce(topic, value=b"zombie-2", partition=0)
        old.flush(30)
        old.commit_transaction(30)
    err = exc.value.args[0]
    assert err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                          KafkaError.INVALID_PRODUCER_EPOCH), f"unexpected error: {err}"
    assert read_topic(broker, topic, "read_committed", 1, nparts=1) == {0: ["new"]}


# Last in the module: it kills the module's broker and starts it again.
def test_idempotent_producer_survives_kill9(broker):
    topic = f"py-idem-{uid()}"
    create_topic(broker, topic)
    p = Producer({
        "bootstrap.servers": broker.bootstrap,
        "enable.idempotence": True,
        "linger.ms": 2,
        "socket.timeout.ms": 10000,
        "reconnect.backoff.max.ms": 500,
        "message.timeout.ms": 120000,
    })
    acked = []     # (n, partition, offset)
    failures = []

    def cb_for(n):
        def cb(err, msg):
            if err is not None:
                failures.append((n, err))
            else:
                acked.append((n, msg.partition(), msg.offset()))
        return cb

    total = 6000
    kill_at = {1500, 3000, 4500}
    kills = 0
    for n in range(total):
        p.produce(topic, value=str(n).encode(), key=f"k{n % 17}".encode(), on_delivery=cb_for(n))
        p.poll(0)
        if n % 100 == 99:
            time.sleep(0.005)
        if n in kill_at:
            # Let some of these be in flight, then crash the broker.
            p.poll(0.05)
            broker.kill()
            kills += 1
            broker.start(port=broker.port)
    remaining = p.flush(120)
    assert kills == 3
    assert remaining == 0, f"{remaining} messages not delivered"
    assert not failures, f"{len(failures)} delivery failures, first: {failures[:5]}"
    assert len(acked) == total
    by_pos = {}
    for n, q, off in acked:
        assert (q, off) not in by_pos, f"messages {by_pos[(q, off)]} and {n} both at {q}/{off}"
        by_pos[(q, off)] = n

    got = read_topic(broker, topic, "read_uncommitted", total)
    seen = {}
    for q, vals in got.items():
        nums = [int(v) for v in vals]
        assert nums == sorted(nums), f"partition {q}: not in produce order"
        for off, n in enumerate(nums):
            assert n not in seen, f"message {n} read twice"
            seen[n] = (q, off)
    assert len(seen) == total, f"{total - len(seen)} acknowledged messages missing"
    for n, q, off in acked:
        assert seen[n] == (q, off), f"message {n} read at {seen[n]}, acknowledged at {(q, off)}"
