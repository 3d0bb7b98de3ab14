"""confluent-kafka AdminClient: CreateTopics, Metadata, DeleteTopics."""

import time

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

TIMEOUTS = {"operation_timeout": 10, "request_timeout": 15}


@pytest.fixture(scope="module")
def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap,
                        "socket.timeout.ms": 10000})


def topic_names(admin):
    # Metadata for all topics: never auto-creates anything.
    return set(admin.list_topics(timeout=10).topics)


def result_error(fut):
    try:
        fut.result(timeout=20)
    except KafkaException as e:
        return e.args[0]
    return None


def test_create_validate_only(admin, topic_name):
    futs = admin.create_topics([NewTopic(topic_name, num_partitions=3,
                                         replication_factor=1)],
                               validate_only=True, **TIMEOUTS)
    assert result_error(futs[topic_name]) is None
    assert topic_name not in topic_names(admin), \
        "validate_only=True created the topic"


def test_create_list_exists_delete(admin, topic_name):
    other = topic_name + "-b"
    futs = admin.create_topics(
        [NewTopic(topic_name, num_partitions=3, replication_factor=1),
         NewTopic(other, num_partitions=1, replication_factor=1)], **TIMEOUTS)
    assert result_error(futs[topic_name]) is None
    assert result_error(futs[other]) is None

    md = admin.list_topics(timeout=10)
    assert {topic_name, other} <= set(md.topics)
    t = md.topics[topic_name]
    assert t.error is None
    assert sorted(t.partitions) == [0, 1, 2]
    for p in t.partitions.values():
        assert p.leader == 0 and list(p.replicas) == [0] and list(p.isrs) == [0]
    assert sorted(md.topics[other].partitions) == [0]

    # Creating it again: TOPIC_ALREADY_EXISTS (also with validate_only).
    for vo in (False, True):
        futs = admin.create_topics([NewTopic(topic_name, num_partitions=1,
                                             replication_factor=1)],
                                   validate_only=vo, **TIMEOUTS)
        err = result_error(futs[topic_name])
        assert err is not None and err.code() == KafkaError.TOPIC_ALREADY_EXISTS, \
            f"validate_only={vo}: {err}"
    # The existing topic was not touched.
    assert sorted(admin.list_topics(timeout=10).topics[topic_name].partitions) == [0, 1, 2]

    futs = admin.delete_topics([topic_name, other], **TIMEOUTS)
    assert result_error(futs[topic_name]) is None
    assert result_error(futs[other]) is None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        names = topic_names(admin)
        if topic_name not in names and other not in names:
            break
        time.sleep(0.2)
    assert topic_name not in names and other not in names, "deleted topics still listed"


def test_delete_unknown_topic(admin, topic_name):
    futs = admin.delete_topics([topic_name + "-nope"], **TIMEOUTS)
    err = result_error(futs[topic_name + "-nope"])
    assert err is not None and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, err


def test_recreate_after_delete_is_empty(admin, broker, topic_name):
    from confluent_kafka import Producer, Consumer, TopicPartition
    futs = admin.create_topics([NewTopic(topic_name, 1, 1)], **TIMEOUTS)
    assert result_error(futs[topic_name]) is None
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all",
                  "enable.idempotence": False})
    for i in range(5):
        p.produce(topic_name, value=b"old-%d" % i)
    assert p.flush(20) == 0
    futs = admin.delete_topics([topic_name], **TIMEOUTS)
    assert result_error(futs[topic_name]) is None
    deadline = time.monotonic() + 10
    while topic_name in topic_names(admin) and time.monotonic() < deadline:
        time.sleep(0.2)
    futs = admin.create_topics([NewTopic(topic_name, 2, 1)], **TIMEOUTS)
    assert result_error(futs[topic_name]) is None
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "e2e-assign-only",
                  "enable.auto.commit": False})
    try:
        for part in (0, 1):
            lo, hi = c.get_watermark_offsets(TopicPartition(topic_name, part),
                                             timeout=10)
            assert (lo, hi) == (0, 0), f"partition {part} of the recreated topic"
    finally:
        c.close()


@pytest.mark.parametrize("bad", [
    {"num_partitions": 0, "code": KafkaError.INVALID_PARTITIONS},
    {"num_partitions": 1, "replication_factor": 3,
     "code": KafkaError.INVALID_REPLICATION_FACTOR},
], ids=["zero-partitions", "rf3-on-one-broker"])
def test_create_invalid(admin, topic_name, bad):
    nt = NewTopic(topic_name, num_partitions=bad["num_partitions"],
                  replication_factor=bad.get("replication_factor", 1))
    futs = admin.create_topics([nt], **TIMEOUTS)
    err = result_error(futs[topic_name])
    assert err is not None and err.code() == bad["code"], err
    assert topic_name not in topic_names(admin)


def test_create_invalid_name(admin):
    name = "bad/name"
    futs = admin.create_topics([NewTopic(name, 1, 1)], **TIMEOUTS)
    err = result_error(futs[name])
    assert err is not None and err.code() == KafkaError.TOPIC_EXCEPTION, err
