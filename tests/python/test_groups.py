"""Consumer groups with real clients: confluent-kafka (librdkafka) with the
classic protocol and with KIP-848 (group.protocol=consumer), and kafka-python
(classic only).

Scenarios (issue 5):
  1. one partition, three members: one consumes everything, two stay idle
  2. six partitions, three members, one killed with SIGKILL in a child
     process: its partitions move to the others after the session timeout and
     they resume from its last commits, nothing lost
  3. two groups on one topic each receive every message
  4. CreatePartitions makes the group cover the new partitions; a regex
     subscription picks up a newly created matching topic
  5. committed offsets survive a broker restart (same port and data dir)
  6. static membership (group.instance.id): a member restarted within the
     session timeout does not disturb the others
  7. `shardline groups describe` shows lag = log end - committed while a
     producer runs ahead of a slow consumer

Each member of a group runs its poll loop on its own thread (so a blocking
join in one client never starves another); the test thread only watches.
The broker's view (DescribeGroups / ConsumerGroupDescribe through
confluent-kafka's AdminClient) must agree with the members' own views before
a test produces anything.
"""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pytest
from confluent_kafka import (Consumer, ConsumerGroupState, ConsumerGroupTopicPartitions,
                             Producer, TopicPartition)
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

BROKER_ARGS = ["--set", "group_initial_rebalance_delay_ms=0",
               "--set", "group_consumer_session_timeout_ms=8000",
               "--set", "group_consumer_heartbeat_interval_ms=1000"]

VARIANTS = ["ck-classic", "ck-consumer", "kp-classic"]
CLASSIC_SESSION_MS = 6000
SETTLE_S = 40
CONSUME_S = 40


# --- clients ---------------------------------------------------------------------

def ck_conf(broker, group, client_id, protocol, **extra):
    conf = {
        "bootstrap.servers": broker.bootstrap,
        "group.id": group,
        "client.id": client_id,
        "group.protocol": protocol,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 100,
        "socket.timeout.ms": 10000,
        # Classic: notice new partitions and regex matches quickly.
        "topic.metadata.refresh.interval.ms": 1000,
    }
    if protocol == "classic":
        conf.update({"session.timeout.ms": CLASSIC_SESSION_MS,
                     "heartbeat.interval.ms": 1000})
    conf.update(extra)
    return conf


def kp_conf(broker, group, client_id, **extra):
    conf = dict(bootstrap_servers=broker.bootstrap, group_id=group,
                client_id=client_id, enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=CLASSIC_SESSION_MS, heartbeat_interval_ms=1000,
                metadata_max_age_ms=1000, fetch_max_wait_ms=100)
    conf.update(extra)
    return conf


class Member:
    """One group member. `step()` polls once, records what it got and, with
    commit_each, commits each message synchronously after recording it."""

    def __init__(self, client_id, commit_each=False, delay=0.0):
        self.client_id = client_id
        self.commit_each = commit_each
        self.delay = delay
        self.limit = None           # stop recording after this many messages
        self.lock = threading.Lock()
        self.received = []          # (topic, partition, offset, value)
        self.committed = {}         # (topic, partition) -> next offset (acknowledged)
        self.commit_errors = []
        self.errors = []
        self.events = []            # (monotonic time, "assign"/"revoke"/"lost", partitions)
        self._assigned = frozenset()
        self._member_id = None
        self._generation = None
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._idle = threading.Event()
        self._thread = None
        self.closed = False

    # client specific: _poll(timeout_s) -> [(t, p, o, v)], _commit(t, p, next), _refresh()
    def step(self, timeout_s=None):
        try:
            msgs = self._poll(timeout_s)
        except Exception as e:  # recorded; the test decides whether it matters
            self.errors.append(repr(e))
            time.sleep(0.1)
            msgs = []
        for t, p, o, v in msgs:
            with self.lock:
                if self.limit is not None and len(self.received) >= self.limit:
                    break
            if self.delay:
                time.sleep(self.delay)
            with self.lock:
                self.received.append((t, p, o, v))
            if self.commit_each:
                try:
                    self._commit(t, p, o + 1)
                    with self.lock:
                        self.committed[(t, p)] = o + 1
                except Exception as e:
                    self.commit_errors.append(f"{t}/{p}@{o + 1}: {e!r}")
        self._refresh()

    def assignment(self):
        return self._assigned

    def member_id(self):
        return self._member_id

    def start(self):
        def loop():
            while not self._stop.is_set():
                if self._paused.is_set():
                    self._idle.set()
                    time.sleep(0.05)
                    continue
                self.step()
        self._thread = threading.Thread(target=loop, daemon=True,
                                        name=f"member-{self.client_id}")
        self._thread.start()
        return self

    def pause(self):
        self._idle.clear()
        self._paused.set()
        assert self._idle.wait(20), f"{self.client_id} did not pause"

    def resume(self):
        self._paused.clear()

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def close(self):
        if self.closed:
            return
        self.stop()
        self.closed = True
        self._close()

    def snapshot(self):
        with self.lock:
            return list(self.received), dict(self.committed)

    def __repr__(self):
        return (f"<{self.client_id} assigned={sorted(self._assigned)} "
                f"received={len(self.received)} errors={self.errors[-3:]} "
                f"commit_errors={self.commit_errors[-3:]}>")


class CKMember(Member):
    def __init__(self, conf, topics, commit_each=False, delay=0.0):
        super().__init__(conf["client.id"], commit_each, delay)
        self.c = Consumer(conf)

        def cb(kind):
            def f(_consumer, parts):
                self.events.append((time.monotonic(), kind,
                                    sorted((tp.topic, tp.partition) for tp in parts)))
            return f
        self.c.subscribe(topics, on_assign=cb("assign"), on_revoke=cb("revoke"),
                         on_lost=cb("lost"))

    def _poll(self, timeout_s=None):
        out = []
        for m in self.c.consume(num_messages=100, timeout=0.1 if timeout_s is None else timeout_s):
            if m.error():
                self.errors.append(str(m.error()))
                continue
            v = m.value()
            out.append((m.topic(), m.partition(), m.offset(),
                        None if v is None else v.decode()))
        return out

    def _commit(self, t, p, nxt):
        self.c.commit(offsets=[TopicPartition(t, p, nxt)], asynchronous=False)

    def _refresh(self):
        try:
            self._assigned = frozenset((tp.topic, tp.partition) for tp in self.c.assignment())
        except Exception as e:
            self.errors.append(repr(e))
        try:
            self._member_id = self.c.memberid()
        except Exception:
            pass

    def _close(self):
        self.c.close()


class KPMember(Member):
    def __init__(self, conf, topics=None, pattern=None, commit_each=False, delay=0.0):
        from kafka import KafkaConsumer
        from kafka.consumer.subscription_state import ConsumerRebalanceListener
        super().__init__(conf["client_id"], commit_each, delay)
        self.c = KafkaConsumer(**conf)
        self.poll_ms = 100
        self.join_nudges = 0
        events = self.events

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                events.append((time.monotonic(), "revoke",
                               sorted((tp.topic, tp.partition) for tp in revoked)))

            def on_partitions_assigned(self, assigned):
                events.append((time.monotonic(), "assign",
                               sorted((tp.topic, tp.partition) for tp in assigned)))

        if pattern is not None:
            self.c.subscribe(pattern=pattern, listener=Listener())
        else:
            self.c.subscribe(topics=topics, listener=Listener())

    def _poll(self, timeout_s=None):
        out = []
        ms = self.poll_ms if timeout_s is None else int(timeout_s * 1000)
        for tp, recs in sorted(self.c.poll(timeout_ms=ms).items()):
            for r in recs:
                out.append((tp.topic, tp.partition, r.offset,
                            None if r.value is None else r.value.decode()))
        return out

    def _commit(self, t, p, nxt):
        from kafka import TopicPartition as KTP
        from kafka.structs import OffsetAndMetadata
        self.c.commit({KTP(t, p): OffsetAndMetadata(nxt, "", -1)})

    def _refresh(self):
        self._unstick_join()
        self._assigned = frozenset((tp.topic, tp.partition) for tp in self.c.assignment())
        gen = getattr(getattr(self.c, "_coordinator", None), "_generation", None)
        if gen is not None:
            self._member_id = gen.member_id or None
            self._generation = gen.generation_id

    def _unstick_join(self):
        """Work around a kafka-python 3.0.12 bug.

        When the client itself triggers a rejoin (a new topic matching the
        pattern; the leader seeing new partitions) and poll()'s timeout
        expires while JoinGroup/SyncGroup are in flight, the join task is
        left running; but the join already updated _joined_subscription /
        _assignment_snapshot, so need_rejoin() is False on the next poll and
        the finished join is never applied: the member keeps its old
        assignment, sends no heartbeats and is evicted after the session
        timeout. (A rejoin requested by the broker is not affected: its
        rejoin_needed flag stays set, and the next poll joins again.) Here a
        finished, unapplied join is treated the same way: join again.
        """
        coord = getattr(self.c, "_coordinator", None)
        task = getattr(coord, "_join_task", None)
        if task is not None and getattr(task, "is_done", False) and not coord.need_rejoin():
            coord.rejoin_needed = True
            self.join_nudges += 1

    def _close(self):
        self.c.close()


def new_member(variant, broker, group, client_id, topics=None, pattern=None,
               commit_each=False, delay=0.0, **extra):
    """A member of `group` subscribed to `topics` (a list) or `pattern`."""
    client, protocol = variant.split("-")
    if client == "ck":
        subs = topics if pattern is None else [pattern]
        return CKMember(ck_conf(broker, group, client_id, protocol, **extra), subs,
                        commit_each=commit_each, delay=delay)
    assert protocol == "classic"
    return KPMember(kp_conf(broker, group, client_id, **extra), topics=topics,
                    pattern=pattern, commit_each=commit_each, delay=delay)


class Members:
    """Closes every member it was given, whatever happens in the test."""

    def __init__(self):
        self.all = []

    def add(self, m, start=True):
        self.all.append(m)
        return m.start() if start else m

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for m in self.all:
            m._stop.set()
        for m in self.all:
            try:
                m.close()
            except Exception:
                pass


# --- broker side helpers ---------------------------------------------------------

@pytest.fixture
def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap, "socket.timeout.ms": 10000})


def uid():
    return uuid.uuid4().hex[:8]


def create_topic(admin, name, partitions):
    fs = admin.create_topics([NewTopic(name, num_partitions=partitions,
                                       replication_factor=1)],
                             operation_timeout=10, request_timeout=15)
    fs[name].result(timeout=20)
    wait_partitions(admin, name, partitions)


def wait_partitions(admin, name, partitions, timeout=15):
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        md = admin.list_topics(name, timeout=10).topics.get(name)
        got = None if md is None or md.error else len(md.partitions)
        if got == partitions:
            return
        time.sleep(0.2)
    raise AssertionError(f"topic {name}: {got} partitions in metadata, want {partitions}")


def producer(broker):
    return Producer({"bootstrap.servers": broker.bootstrap, "acks": "all",
                     "enable.idempotence": False, "linger.ms": 5,
                     "message.timeout.ms": 30000, "socket.timeout.ms": 10000})


def produce(broker, items, p=None):
    """Produce [(topic, partition, value)]; returns [(topic, partition, offset, value)]."""
    p = p or producer(broker)
    reports = []

    def cb(err, msg):
        reports.append((err, msg.topic(), msg.partition(), msg.offset(),
                        msg.value().decode()))

    for t, part, v in items:
        p.produce(t, value=v.encode(), partition=part, on_delivery=cb)
        p.poll(0)
    left = p.flush(30)
    assert left == 0, f"{left} messages not delivered within 30 s"
    bad = [r for r in reports if r[0] is not None]
    assert not bad, f"delivery failures: {bad[:5]}"
    assert len(reports) == len(items)
    return [r[1:] for r in reports]


def describe(admin, group):
    return admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)


def parts_of(desc_member):
    return frozenset((tp.topic, tp.partition)
                     for tp in desc_member.assignment.topic_partitions)


def settle(admin, group, members, parts, sizes=None, timeout=SETTLE_S):
    """Wait until the group is Stable with exactly `members` (matched by client
    id), the broker's assignment of each equals the member's own, and the
    assignments are disjoint and cover `parts`. Returns the description."""
    parts = frozenset(parts)
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        local = {m.client_id: m.assignment() for m in members}
        try:
            d = describe(admin, group)
        except Exception as e:
            last = f"describe failed: {e!r}; local={local}"
            time.sleep(0.3)
            continue
        remote = {}
        for dm in d.members:
            remote.setdefault(dm.client_id, []).append(parts_of(dm))
        union = frozenset().union(*local.values()) if local else frozenset()
        last = (f"state={d.state} remote={ {k: [sorted(x) for x in v] for k, v in remote.items()} } "
                f"local={ {k: sorted(v) for k, v in local.items()} } want={sorted(parts)} "
                f"members={members}")
        ok = (d.state == ConsumerGroupState.STABLE
              and len(d.members) == len(members)
              and all(remote.get(c) == [a] for c, a in local.items())
              and union == parts
              and sum(len(a) for a in local.values()) == len(parts)
              and (sizes is None or sorted(len(a) for a in local.values()) == sorted(sizes)))
        if ok:
            return d
        time.sleep(0.3)
    raise AssertionError(f"group {group} did not settle in {timeout} s: {last}")


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def keyset(msgs):
    return [(t, p, o) for t, p, o, _v in msgs]


def check_exactly_once(received, produced, who):
    got = sorted(keyset(received))
    want = sorted(keyset(produced))
    dups = sorted({k for k in got if got.count(k) > 1})
    assert not dups, f"{who}: duplicates {dups[:10]}"
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    assert not missing and not extra, \
        f"{who}: missing {missing[:10]} ({len(missing)}), unexpected {extra[:10]} ({len(extra)})"
    vals = {(t, p, o): v for t, p, o, v in produced}
    wrong = [(k, v) for *k, v in received if vals[tuple(k)] != v]
    assert not wrong, f"{who}: wrong values {wrong[:5]}"


def committed_offsets(admin, group, tps):
    req = [ConsumerGroupTopicPartitions(group, [TopicPartition(t, p) for t, p in tps])]
    res = admin.list_consumer_group_offsets(req, request_timeout=10)[group].result(timeout=15)
    return {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions}


# --- 1. one partition, three members -----------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_one_partition_three_members(broker, admin, variant):
    topic, group = f"g1-{variant}-{uid()}", f"grp1-{variant}-{uid()}"
    create_topic(admin, topic, 1)
    with Members() as ms:
        members = [ms.add(new_member(variant, broker, group, f"c{k}-{uid()}", [topic]))
                   for k in range(3)]
        before = settle(admin, group, members, {(topic, 0)}, sizes=[0, 0, 1])
        produced = produce(broker, [(topic, 0, f"m{i}") for i in range(60)])
        wait_for(lambda: sum(len(m.received) for m in members) >= 60, CONSUME_S,
                 f"60 messages ({members})")
        time.sleep(1.5)  # anything extra would show up now
        busy = [m for m in members if m.received]
        assert len(busy) == 1, f"members that received messages: {busy}"
        assert busy[0].assignment() == {(topic, 0)}
        check_exactly_once(busy[0].received, produced, busy[0].client_id)
        # The idle members are still in the group, with the same assignment.
        after = settle(admin, group, members, {(topic, 0)}, sizes=[0, 0, 1], timeout=10)
        assert sorted(m.member_id for m in after.members) == \
            sorted(m.member_id for m in before.members)
        for m in members:
            assert not m.errors, f"{m.client_id}: {m.errors}"


# --- 2. a member killed with SIGKILL ------------------------------------------------

CHILD = r'''
import json, sys, time
cfg = json.loads(sys.argv[1])

def out(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()

deadline = time.monotonic() + cfg["max_s"]
if cfg["client"] == "ck":
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer(cfg["conf"])
    c.subscribe([cfg["topic"]])

    def poll():
        res = []
        for m in c.consume(num_messages=20, timeout=0.1):
            if m.error():
                out(ev="error", err=str(m.error()))
                continue
            res.append((m.topic(), m.partition(), m.offset(), m.value().decode()))
        return res

    def commit(t, p, o):
        c.commit(offsets=[TopicPartition(t, p, o)], asynchronous=False)
else:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata
    c = KafkaConsumer(cfg["topic"], **cfg["conf"])

    def poll():
        res = []
        for tp, recs in sorted(c.poll(timeout_ms=1000).items()):
            for r in recs:
                res.append((tp.topic, tp.partition, r.offset, r.value.decode()))
        return res

    def commit(t, p, o):
        c.commit({TopicPartition(t, p): OffsetAndMetadata(o, "", -1)})

last = None

def report_assignment():
    global last
    a = sorted([tp.topic, tp.partition] for tp in c.assignment())
    if a != last:
        out(ev="assigned", parts=a)
        last = a

out(ev="started")
while time.monotonic() < deadline:
    batch = poll()
    report_assignment()
    for t, p, o, v in batch:
        time.sleep(cfg["delay"])
        # Printed before the commit: a kill between the two makes the message
        # consumed-but-uncommitted, which the survivors must read again.
        out(ev="msg", t=t, p=p, o=o, v=v)
        try:
            commit(t, p, o + 1)
            out(ev="committed", t=t, p=p, o=o + 1)
        except Exception as e:
            out(ev="commit_error", err=repr(e))
    report_assignment()
'''


def _child_setup():
    """Own process group (a SIGKILL hits only the child); dies with pytest."""
    os.setpgrp()
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class ChildMember:
    """A member in a child process (CHILD), watched through its stdout."""

    def __init__(self, variant, broker, group, client_id, topic, delay, workdir):
        client, protocol = variant.split("-")
        conf = (ck_conf(broker, group, client_id, protocol) if client == "ck"
                else kp_conf(broker, group, client_id))
        cfg = dict(client=client, conf=conf, topic=topic, delay=delay, max_s=150)
        self.client_id = client_id
        self.lines = []
        self.stderr_path = os.path.join(workdir, f"{client_id}.stderr")
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(cfg)],
                                     stdout=subprocess.PIPE, stderr=self._stderr,
                                     text=True, bufsize=1,
                                     preexec_fn=_child_setup)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                self.lines.append({"ev": "garbage", "line": line})

    def events(self, ev):
        return [x for x in list(self.lines) if x["ev"] == ev]

    def assignment(self):
        a = self.events("assigned")
        return frozenset((t, p) for t, p in a[-1]["parts"]) if a else frozenset()

    @property
    def received(self):
        return [(x["t"], x["p"], x["o"], x["v"]) for x in self.events("msg")]

    def kill9(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(10)

    def close(self):
        if self.proc.poll() is None:
            self.kill9()
        self._stderr.close()

    def stderr_tail(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode(errors="replace")[-3000:]
        except OSError:
            return ""

    def __repr__(self):
        return f"<child {self.client_id} assigned={sorted(self.assignment())} msgs={len(self.received)}>"


@pytest.mark.parametrize("variant", VARIANTS)
def test_killed_member_partitions_move_without_loss(broker, admin, variant):
    topic, group = f"g2-{variant}-{uid()}", f"grp2-{variant}-{uid()}"
    create_topic(admin, topic, 6)
    all_parts = {(topic, p) for p in range(6)}
    workdir = tempfile.mkdtemp(prefix="shardline-child-")
    child = None
    with Members() as ms:
        try:
            child = ChildMember(variant, broker, group, f"child-{uid()}", topic,
                                delay=0.15, workdir=workdir)
            survivors = [ms.add(new_member(variant, broker, group, f"s{k}-{uid()}", [topic],
                                           commit_each=True)) for k in range(2)]
            try:
                settle(admin, group, survivors + [child], all_parts, sizes=[2, 2, 2])
            except AssertionError as e:
                raise AssertionError(f"{e}\nchild stderr:\n{child.stderr_tail()}")
            child_parts = child.assignment()

            produced = produce(broker, [(topic, p, f"a{p}-{i}")
                                        for i in range(20) for p in range(6)])
            wait_for(lambda: len(child.events("msg")) >= 5, 30,
                     f"the child to consume 5 messages ({child})")
            child.kill9()
            killed_at = time.monotonic()
            done_by_child = child.events("msg")
            assert len(done_by_child) < 40, "the child consumed everything before the kill"
            child_committed = {}
            for x in child.events("committed"):
                child_committed[(x["t"], x["p"])] = x["o"]
            child_last = {}
            for x in done_by_child:
                child_last[(x["t"], x["p"])] = x["o"]

            produced += produce(broker, [(topic, p, f"b{p}-{i}")
                                         for i in range(10) for p in range(6)])
            want = set(keyset(produced))

            def covered():
                got = set(keyset(child.received))
                for m in survivors:
                    got |= set(keyset(m.snapshot()[0]))
                return want <= got
            wait_for(lambda: frozenset().union(*(m.assignment() for m in survivors)) == all_parts,
                     CONSUME_S, f"the survivors to own all 6 partitions ({survivors})")
            took_over_after = time.monotonic() - killed_at
            wait_for(covered, CONSUME_S, f"every message consumed ({survivors}, {child})")
            settle(admin, group, survivors, all_parts, sizes=[3, 3], timeout=15)

            # The survivors resumed the dead member's partitions from its last
            # commit: at the last committed offset, or one past the last
            # message it printed (killed between commit and report).
            for tp in child_parts:
                firsts = [o for m in survivors for t, p, o, _ in m.snapshot()[0] if (t, p) == tp]
                assert firsts, f"{tp}: the survivors consumed nothing"
                resumed = min(firsts)
                allowed = {child_committed.get(tp, 0)}
                if tp in child_last:
                    allowed.add(child_last[tp] + 1)
                assert resumed in allowed, \
                    (f"{tp}: survivors resumed at {resumed}, the dead member had committed "
                     f"{child_committed.get(tp)} and consumed up to {child_last.get(tp)}")
            # Every message was consumed and committed by someone.
            ends = {}
            for t, p, o, _ in produced:
                ends[(t, p)] = max(ends.get((t, p), 0), o + 1)
            have = None
            for _ in range(30):
                have = committed_offsets(admin, group, all_parts)
                if have == ends:
                    break
                time.sleep(0.5)
            assert have == ends, f"committed offsets {have}, want the log ends {ends}"
            # Within the survivors, nothing twice: commits made while a
            # rebalance is being prepared are accepted (as Kafka accepts them).
            for m in survivors:
                got = keyset(m.received)
                dups = {k for k in got if got.count(k) > 1}
                assert not dups, (f"{m.client_id}: duplicates {sorted(dups)[:10]} "
                                  f"(commit errors: {m.commit_errors[-3:]})")
            print(f"{variant}: partitions moved {took_over_after:.1f} s after the kill; "
                  f"child consumed {len(done_by_child)}")
        finally:
            if child is not None:
                child.close()


# --- 3. two groups, one topic ---------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_two_groups_each_get_everything(broker, admin, variant):
    topic = f"g3-{variant}-{uid()}"
    ga, gb = f"grp3a-{variant}-{uid()}", f"grp3b-{variant}-{uid()}"
    create_topic(admin, topic, 4)
    parts = {(topic, p) for p in range(4)}
    with Members() as ms:
        a = [ms.add(new_member(variant, broker, ga, f"a{k}-{uid()}", [topic])) for k in range(2)]
        b = [ms.add(new_member(variant, broker, gb, f"b0-{uid()}", [topic]))]
        settle(admin, ga, a, parts, sizes=[2, 2])
        settle(admin, gb, b, parts, sizes=[4])
        produced = produce(broker, [(topic, i % 4, f"m{i}") for i in range(120)])
        for name, group in (("A", a), ("B", b)):
            wait_for(lambda: sum(len(m.received) for m in group) >= 120, CONSUME_S,
                     f"group {name} to get 120 messages ({group})")
        time.sleep(1)
        check_exactly_once(a[0].received + a[1].received, produced, "group A")
        check_exactly_once(b[0].received, produced, "group B")
        for m in a:
            assert {(t, p) for t, p, _, _ in m.received} <= m.assignment()


# --- 4. new partitions; regex subscription ----------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_create_partitions_rebalances(broker, admin, variant):
    topic, group = f"g4-{variant}-{uid()}", f"grp4-{variant}-{uid()}"
    create_topic(admin, topic, 2)
    with Members() as ms:
        members = [ms.add(new_member(variant, broker, group, f"c{k}-{uid()}", [topic],
                                     commit_each=True)) for k in range(2)]
        settle(admin, group, members, {(topic, 0), (topic, 1)}, sizes=[1, 1])
        produced = produce(broker, [(topic, i % 2, f"a{i}") for i in range(20)])
        wait_for(lambda: sum(len(m.received) for m in members) >= 20, CONSUME_S,
                 f"20 messages ({members})")

        fs = admin.create_partitions([NewPartitions(topic, 4)], operation_timeout=10,
                                     request_timeout=15)
        fs[topic].result(timeout=20)
        wait_partitions(admin, topic, 4)
        settle(admin, group, members, {(topic, p) for p in range(4)}, sizes=[2, 2])
        produced += produce(broker, [(topic, i % 4, f"b{i}") for i in range(40)])
        wait_for(lambda: sum(len(m.received) for m in members) >= 60, CONSUME_S,
                 f"60 messages ({members})")
        time.sleep(1)
        received = [r for m in members for r in m.snapshot()[0]]
        check_exactly_once(received, produced, "group")
        assert {p for _, p, _, _ in received} == {0, 1, 2, 3}


@pytest.mark.parametrize("variant", VARIANTS)
def test_regex_subscription_picks_up_new_topic(broker, admin, variant):
    prefix = f"rx{uid()}-"
    first, second, other = prefix + "a", prefix + "b", f"no{prefix}c"
    group = f"grp4r-{variant}-{uid()}"
    create_topic(admin, first, 2)
    create_topic(admin, other, 1)
    pattern = f"^{prefix}.*"
    with Members() as ms:
        members = [ms.add(new_member(variant, broker, group, f"c{k}-{uid()}",
                                     pattern=pattern, commit_each=True)) for k in range(2)]
        settle(admin, group, members, {(first, 0), (first, 1)}, sizes=[1, 1])
        produced = produce(broker, [(first, i % 2, f"a{i}") for i in range(20)])
        wait_for(lambda: sum(len(m.received) for m in members) >= 20, CONSUME_S,
                 f"20 messages ({members})")

        create_topic(admin, second, 2)
        settle(admin, group, members,
               {(first, 0), (first, 1), (second, 0), (second, 1)}, sizes=[2, 2])
        produced += produce(broker, [(second, i % 2, f"b{i}") for i in range(20)]
                            + [(first, i % 2, f"c{i}") for i in range(10)])
        produce(broker, [(other, 0, f"x{i}") for i in range(5)])
        wait_for(lambda: sum(len(m.received) for m in members) >= 50, CONSUME_S,
                 f"50 messages ({members})")
        time.sleep(1)
        received = [r for m in members for r in m.snapshot()[0]]
        check_exactly_once(received, produced, "group")
        assert not [r for r in received if r[0] == other]


# --- 5. offsets survive a broker restart ------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_commits_survive_broker_restart(broker, variant):
    topic, group = f"g5-{variant}-{uid()}", f"grp5-{variant}-{uid()}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, "socket.timeout.ms": 10000})
    create_topic(admin, topic, 2)
    parts = {(topic, 0), (topic, 1)}
    produced = produce(broker, [(topic, i % 2, f"a{i}") for i in range(40)])

    m = new_member(variant, broker, group, f"c0-{uid()}", [topic], commit_each=True)
    try:
        m.limit = 25
        wait_for(lambda: (m.step(), len(m.received) >= 25)[1], CONSUME_S,
                 f"25 messages ({m})")
        first_part, committed = m.snapshot()
        assert not m.commit_errors, m.commit_errors
    finally:
        m.close()
    assert len(first_part) == 25
    for (t, p), nxt in committed.items():
        assert nxt == 1 + max(o for tt, pp, o, _ in first_part if (tt, pp) == (t, p))
    before = committed_offsets(admin, group, parts)
    assert before == {tp: committed.get(tp, -1001) for tp in parts}
    del admin

    rc = broker.restart()
    assert rc == 0, f"broker exit code {rc} on SIGTERM"

    admin = AdminClient({"bootstrap.servers": broker.bootstrap, "socket.timeout.ms": 10000})
    after = committed_offsets(admin, group, parts)
    assert after == before, f"committed offsets before the restart {before}, after {after}"
    produced += produce(broker, [(topic, i % 2, f"b{i}") for i in range(10)])
    want = [r for r in produced if r[2] >= committed.get((r[0], r[1]), 0)]
    assert len(want) == 50 - 25

    m = new_member(variant, broker, group, f"c1-{uid()}", [topic], commit_each=True)
    try:
        wait_for(lambda: (m.step(), len(m.received) >= len(want))[1], CONSUME_S,
                 f"{len(want)} messages after the restart ({m})")
        for _ in range(5):  # nothing more arrives (the group is stable by now)
            m.step(0.2)
        check_exactly_once(m.received, want, "after restart")
    finally:
        m.close()


# --- 6. static membership -----------------------------------------------------------------

@pytest.mark.parametrize("variant", ["ck-classic", "kp-classic"])
def test_static_member_restart_keeps_assignment(broker, admin, variant):
    """Each of three static members is restarted in turn (so the group leader
    is always among them): no member ever sees a rebalance, every instance
    keeps its partitions, and (kafka-python shows it) the generation stays."""
    topic, group = f"g6-{variant}-{uid()}", f"grp6-{variant}-{uid()}"
    create_topic(admin, topic, 3)
    parts = {(topic, p) for p in range(3)}
    session_ms = 10000
    if variant.startswith("ck"):
        extra = lambda k: {"group.instance.id": f"{group}-i{k}", "session.timeout.ms": session_ms}  # noqa: E731
    else:
        extra = lambda k: {"group_instance_id": f"{group}-i{k}", "session_timeout_ms": session_ms,  # noqa: E731
                           "heartbeat_interval_ms": 1000}
    ids = [f"c{k}-{uid()}" for k in range(3)]
    t0 = time.monotonic()

    def rebalances(m, since):
        return [(round(t - t0, 2), e, tps) for t, e, tps in m.events[since:]]

    with Members() as ms:
        members = [ms.add(new_member(variant, broker, group, ids[k], [topic], **extra(k)))
                   for k in range(3)]
        before = settle(admin, group, members, parts, sizes=[1, 1, 1])
        instances = {dm.client_id: dm.group_instance_id for dm in before.members}
        assert sorted(instances.values()) == [f"{group}-i{k}" for k in range(3)], \
            f"instance ids in the group description: {instances}"
        old_ids = {dm.client_id: dm.member_id for dm in before.members}
        time.sleep(2)  # let any late callbacks land before taking the baseline
        seen = [len(m.events) for m in members]
        assigned = [m.assignment() for m in members]
        gen = {m._generation for m in members}
        log = []

        for k in range(3):
            old = members[k]
            old.stop()
            assert rebalances(old, seen[k]) == [], \
                (f"{old.client_id} saw a rebalance while others restarted: "
                 f"{rebalances(old, seen[k])}; restarts so far {log}")
            old.close()  # a static member sends no LeaveGroup
            closed_at = time.monotonic()
            new = ms.add(new_member(variant, broker, group, ids[k], [topic], **extra(k)))
            members[k] = new
            wait_for(lambda: new.assignment() == assigned[k], 15,
                     f"restarted {ids[k]} to get {sorted(assigned[k])} back ({new}); "
                     f"restarts so far {log}")
            back_in = time.monotonic() - closed_at
            assert back_in < session_ms / 1000, f"restart took {back_in:.1f} s"
            seen[k] = len(new.events)
            log.append((ids[k], round(closed_at - t0, 2), round(back_in, 2)))

        # Past the first old incarnation's session timeout: no expiry of an
        # old member id may evict the instance that replaced it.
        time.sleep(max(0.0, session_ms / 1000 + 2 - (time.monotonic() - t0 - log[0][1])))
        after = settle(admin, group, members, parts, sizes=[1, 1, 1], timeout=10)
        for k, m in enumerate(members):
            assert rebalances(m, seen[k]) == [], \
                (f"{m.client_id} saw a rebalance after its restart: {rebalances(m, seen[k])}; "
                 f"restarts (id, closed at, back after) {log}; broker log:\n"
                 f"{broker.stderr_tail(n=20, levels=('group', 'member', 'WARN', 'ERROR'))}")
            assert m.assignment() == assigned[k]
        now = {dm.client_id: (dm.group_instance_id, dm.member_id) for dm in after.members}
        for c, instance in instances.items():
            assert now[c][0] == instance, f"{c}: instance {instance} -> {now[c][0]}"
            assert now[c][1] != old_ids[c], f"{c}: member id not replaced"
        if variant.startswith("kp"):
            assert len(gen) == 1 and {m._generation for m in members} == gen, \
                f"generation changed: {gen} -> {[m._generation for m in members]}"

        produced = produce(broker, [(topic, i % 3, f"m{i}") for i in range(30)])
        wait_for(lambda: sum(len(m.received) for m in members) >= 30, CONSUME_S,
                 f"30 messages ({members})")
        for m in members:
            assert {(t, p) for t, p, _, _ in m.received} == m.assignment()
        check_exactly_once([r for m in members for r in m.received], produced, "group")


# --- 7. lag in the groups CLI --------------------------------------------------------------

def cli_describe(broker, group):
    out = subprocess.run([broker.binary, "groups", "--bootstrap-server", broker.bootstrap,
                          "describe", group], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"groups describe failed: {out.stderr}{out.stdout}"
    lines = out.stdout.splitlines()
    m = re.match(r"Consumer group '(.*)' \((.*)\)", lines[0]) if lines else None
    assert m and m.group(1) == group, f"unexpected first line:\n{out.stdout}"
    header = next((i for i, ln in enumerate(lines) if ln.split()[:1] == ["GROUP"]), None)
    assert header is not None and lines[header].split() == [
        "GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG",
        "CONSUMER-ID", "HOST", "CLIENT-ID"], f"unexpected header:\n{out.stdout}"
    rows = {}
    for ln in lines[header + 1:]:
        if not ln.strip():
            continue
        f = ln.split()
        assert len(f) == 9 and f[0] == group, f"unexpected row {ln!r}"
        num = lambda s: None if s == "-" else int(s)  # noqa: E731
        rows[(f[1], int(f[2]))] = dict(current=num(f[3]), end=int(f[4]), lag=num(f[5]),
                                       member=f[6], host=f[7], client=f[8])
    return m.group(2), rows, out.stdout


@pytest.mark.parametrize("variant", VARIANTS)
def test_groups_cli_shows_lag(broker, admin, variant):
    topic, group = f"g7-{variant}-{uid()}", f"grp7-{variant}-{uid()}"
    create_topic(admin, topic, 2)
    parts = [(topic, 0), (topic, 1)]
    with Members() as ms:
        m = ms.add(new_member(variant, broker, group, f"lag-{uid()}", [topic],
                              commit_each=True, delay=0.05))
        settle(admin, group, [m], set(parts))
        mid = m.member_id()
        assert mid

        sent = {tp: 0 for tp in parts}
        acked = {tp: 0 for tp in parts}
        lock = threading.Lock()
        stop = threading.Event()
        failures = []

        def run_producer():
            p = producer(broker)

            def cb(err, msg):
                if err is None:
                    with lock:
                        acked[(msg.topic(), msg.partition())] += 1
                else:
                    failures.append(err)
            try:
                for r in range(25):
                    if stop.is_set():
                        break
                    for i in range(5):
                        for tp in parts:
                            with lock:
                                sent[tp] += 1
                            p.produce(topic, value=f"r{r}-{i}".encode(), partition=tp[1],
                                      on_delivery=cb)
                    p.flush(10)
                    time.sleep(0.1)
            finally:
                p.flush(30)

        prod = threading.Thread(target=run_producer, daemon=True)
        prod.start()
        try:
            saw_lag = False
            for _ in range(3):
                time.sleep(0.7)
                with lock:
                    acked_before = dict(acked)
                committed_before = m.snapshot()[1]
                state, rows, text = cli_describe(broker, group)
                # A commit the CLI saw may not be recorded by the member yet;
                # the message it covers is (recorded before committing).
                received_after = m.snapshot()[0]
                with lock:
                    sent_after = dict(sent)
                for tp in parts:
                    row = rows.get(tp)
                    assert row is not None, f"no row for {tp}:\n{text}"
                    assert acked_before[tp] <= row["end"] <= sent_after[tp], text
                    if row["current"] is None:
                        assert tp not in committed_before, text
                        assert row["lag"] is None, text
                        continue
                    upper = 1 + max(o for t, p, o, _ in received_after if (t, p) == tp)
                    assert committed_before.get(tp, 0) <= row["current"] <= upper, \
                        f"{tp}: committed {committed_before.get(tp)}, received up to {upper}\n{text}"
                    assert row["lag"] == row["end"] - row["current"], text
                    saw_lag |= row["lag"] > 0
                    assert (row["member"], row["client"]) == (mid, m.client_id), text
            assert saw_lag, "the slow consumer never lagged"
        finally:
            prod.join(30)
        assert not failures, failures
        assert not prod.is_alive()

        # Producer done, consumer paused: the table is exact.
        m.pause()
        committed = m.snapshot()[1]
        state, rows, text = cli_describe(broker, group)
        assert state.lower() == "stable", text
        for tp in parts:
            row = rows[tp]
            assert row["end"] == acked[tp] == 125, text
            assert row["current"] == committed.get(tp), f"committed {committed}\n{text}"
            assert row["lag"] == row["end"] - row["current"], text
            assert (row["member"], row["client"]) == (mid, m.client_id), text
        assert sum(r["lag"] for r in rows.values()) > 0, text

        # Caught up: no lag.
        m.delay = 0
        m.resume()
        wait_for(lambda: m.snapshot()[1] == {tp: 125 for tp in parts}, CONSUME_S,
                 f"the consumer to commit everything ({m})")
        state, rows, text = cli_describe(broker, group)
        for tp in parts:
            assert (rows[tp]["current"], rows[tp]["end"], rows[tp]["lag"]) == (125, 125, 0), text
        assert not m.commit_errors, m.commit_errors
