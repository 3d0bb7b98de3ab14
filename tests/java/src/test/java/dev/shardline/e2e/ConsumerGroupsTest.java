package dev.shardline.e2e;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.BooleanSupplier;
import java.util.function.Supplier;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import java.util.stream.IntStream;
import java.util.stream.Stream;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.ConsumerGroupListing;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.CloseOptions;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerGroupMetadata;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.SubscriptionPattern;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.GroupType;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.WakeupException;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Consumer groups with the Java client, for both group protocols: the classic one (JoinGroup /
 * SyncGroup / Heartbeat, client-side assignment) and KIP-848's {@code consumer} protocol
 * (ConsumerGroupHeartbeat, server-side assignment). Every consumer commits synchronously what
 * it polled; every wait is bounded.
 */
class ConsumerGroupsTest {
    /** Classic session timeout (the broker's minimum); KIP-848 session timeout set on the broker. */
    private static final int CLASSIC_SESSION_MS = 6_000;
    private static final int CONSUMER_SESSION_MS = 8_000;
    private static final String[] BROKER_SETTINGS = {
        "group_initial_rebalance_delay_ms=0",
        "group_consumer_session_timeout_ms=" + CONSUMER_SESSION_MS,
        "group_consumer_heartbeat_interval_ms=1000",
    };
    private static final Duration STABLE_DEADLINE = Duration.ofSeconds(45);
    private static final Duration CONSUME_DEADLINE = Duration.ofSeconds(45);

    private static ShardlineBroker broker;
    private static Admin admin;

    @BeforeAll
    static void startBroker() throws Exception {
        broker = ShardlineBroker.start("ConsumerGroupsTest", BROKER_SETTINGS);
        admin = Clients.admin(broker);
    }

    @AfterAll
    static void stopBroker() throws Exception {
        try {
            if (admin != null) {
                admin.close(Duration.ofSeconds(10));
            }
        } finally {
            if (broker != null) {
                broker.close();
            }
        }
    }

    // ------------------------------------------------------------------ configuration

    /** Group settings shared by the in-process members and {@link GroupChildConsumer}. */
    static Map<String, Object> groupConfig(String protocol, String group, String clientId) {
        Map<String, Object> m = new HashMap<>();
        m.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        m.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, protocol);
        m.put(ConsumerConfig.CLIENT_ID_CONFIG, clientId);
        m.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        m.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        m.put(ConsumerConfig.METADATA_MAX_AGE_CONFIG, 1000); // notice new topics and partitions quickly
        m.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 100);
        m.put(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, 15_000);
        m.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 30_000);
        if (protocol.equals("classic")) {
            // the consumer protocol rejects these (the broker decides them)
            m.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, CLASSIC_SESSION_MS);
            m.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, 1000);
        }
        return m;
    }

    private static GroupType groupType(String protocol) {
        return protocol.equals("classic") ? GroupType.CLASSIC : GroupType.CONSUMER;
    }

    // ------------------------------------------------------------------ an in-process member

    /** One consumer polling in its own thread; commits what it polled after every poll. */
    static final class Member implements AutoCloseable {
        final String name;
        final KafkaConsumer<byte[], byte[]> consumer;
        final List<ConsumerRecord<byte[], byte[]>> received = Collections.synchronizedList(new ArrayList<>());
        final List<String> errors = new CopyOnWriteArrayList<>();
        final AtomicInteger assignedCalls = new AtomicInteger();
        final AtomicInteger revokedCalls = new AtomicInteger();
        final AtomicInteger lostCalls = new AtomicInteger();
        final CountDownLatch done = new CountDownLatch(1);
        volatile Set<TopicPartition> assignment = Set.of();
        volatile int generation = -1;
        volatile String memberId = "";
        private volatile boolean stop;
        private volatile CloseOptions closeOptions = CloseOptions.timeout(Duration.ofSeconds(10));
        private final Thread thread;

        interface Subscriber {
            void subscribe(KafkaConsumer<byte[], byte[]> c, ConsumerRebalanceListener l);
        }

        Member(String name, Map<String, Object> config, Subscriber subscriber) {
            this.name = name;
            this.consumer = Clients.consumer(broker, config);
            this.thread = new Thread(() -> run(subscriber), "member-" + name);
            this.thread.setDaemon(true);
            this.thread.start();
        }

        static Member topics(String name, String protocol, String group, Collection<String> topics) {
            return new Member(name, groupConfig(protocol, group, name), (c, l) -> c.subscribe(topics, l));
        }

        private void run(Subscriber subscriber) {
            ConsumerRebalanceListener listener = new ConsumerRebalanceListener() {
                @Override
                public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
                    revokedCalls.incrementAndGet();
                }

                @Override
                public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
                    assignedCalls.incrementAndGet();
                }

                @Override
                public void onPartitionsLost(Collection<TopicPartition> partitions) {
                    lostCalls.incrementAndGet();
                }
            };
            try {
                subscriber.subscribe(consumer, listener);
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(200);
                while (!stop && System.nanoTime() < deadline) {
                    ConsumerRecords<byte[], byte[]> recs;
                    try {
                        recs = consumer.poll(Duration.ofMillis(200));
                    } catch (WakeupException e) {
                        break;
                    } catch (Exception e) {
                        errors.add("poll: " + e);
                        sleepQuietly(200);
                        continue;
                    }
                    if (!recs.isEmpty()) {
                        Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
                        for (ConsumerRecord<byte[], byte[]> r : recs) {
                            received.add(r);
                            offsets.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
                        }
                        try {
                            consumer.commitSync(offsets, Duration.ofSeconds(15));
                        } catch (Exception e) {
                            errors.add("commit " + offsets + ": " + e);
                        }
                    }
                    assignment = Set.copyOf(consumer.assignment());
                    ConsumerGroupMetadata md = consumer.groupMetadata();
                    generation = md.generationId();
                    memberId = md.memberId();
                }
            } catch (Exception e) {
                errors.add("member thread: " + e);
            } finally {
                try {
                    consumer.close(closeOptions);
                } catch (Exception e) {
                    errors.add("close: " + e);
                }
                done.countDown();
            }
        }

        List<String> values() {
            synchronized (received) {
                return received.stream().map(r -> new String(r.value(), StandardCharsets.UTF_8)).collect(Collectors.toList());
            }
        }

        List<ConsumerRecord<byte[], byte[]>> records() {
            synchronized (received) {
                return new ArrayList<>(received);
            }
        }

        /** Stops polling and closes the consumer with these options (static members: stay or leave). */
        void stop(CloseOptions options) throws InterruptedException {
            closeOptions = options.withTimeout(Duration.ofSeconds(10));
            stop = true;
            if (!done.await(30, TimeUnit.SECONDS)) {
                consumer.wakeup();
                done.await(10, TimeUnit.SECONDS);
            }
        }

        @Override
        public void close() throws InterruptedException {
            if (done.getCount() > 0) {
                stop(CloseOptions.timeout(Duration.ofSeconds(10)));
            }
        }

        @Override
        public String toString() {
            return name + "{member=" + memberId + ", gen=" + generation + ", assignment=" + assignment
                    + ", received=" + received.size() + ", errors=" + errors + "}";
        }
    }

    // ------------------------------------------------------------------ helpers

    private static void sleepQuietly(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private static void waitUntil(BooleanSupplier cond, Duration max, Supplier<String> what) {
        long deadline = System.nanoTime() + max.toNanos();
        while (System.nanoTime() < deadline) {
            if (cond.getAsBoolean()) {
                return;
            }
            sleepQuietly(200);
        }
        if (!cond.getAsBoolean()) {
            fail("not within " + max + ": " + what.get() + broker.diagnostics());
        }
    }

    private static <T> T get(KafkaFuture<T> f) throws Exception {
        try {
            return f.get(30, TimeUnit.SECONDS);
        } catch (ExecutionException | java.util.concurrent.TimeoutException e) {
            throw new AssertionError("admin call failed: " + e + broker.diagnostics(), e);
        }
    }

    private static void createTopic(String topic, int partitions) throws Exception {
        get(admin.createTopics(List.of(new NewTopic(topic, partitions, (short) 1))).all());
    }

    private static Set<TopicPartition> partitions(String topic, int n) {
        return IntStream.range(0, n).mapToObj(p -> new TopicPartition(topic, p)).collect(Collectors.toSet());
    }

    /** Sends values tag-from .. tag-(to-1), record i to partition i % partitions; returns the values. */
    private static List<String> produce(String topic, int partitions, String tag, int from, int to) throws Exception {
        List<String> values = new ArrayList<>();
        List<Future<RecordMetadata>> fs = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> p = Clients.producer(broker, Map.of())) {
            for (int i = from; i < to; i++) {
                String v = tag + "-" + i;
                values.add(v);
                fs.add(p.send(new ProducerRecord<>(topic, i % partitions, null, v.getBytes(StandardCharsets.UTF_8))));
            }
            p.flush();
            for (Future<RecordMetadata> f : fs) {
                try {
                    f.get(30, TimeUnit.SECONDS);
                } catch (ExecutionException e) {
                    throw new AssertionError("send to " + topic + " failed: " + e.getCause() + broker.diagnostics(), e);
                }
            }
        }
        return values;
    }

    private static Optional<ConsumerGroupDescription> tryDescribe(String group) {
        try {
            return Optional.of(admin.describeConsumerGroups(List.of(group)).describedGroups().get(group).get(30, TimeUnit.SECONDS));
        } catch (Exception e) {
            return Optional.empty();
        }
    }

    private static ConsumerGroupDescription describe(String group) throws Exception {
        return get(admin.describeConsumerGroups(List.of(group)).describedGroups().get(group));
    }

    private static String show(Optional<ConsumerGroupDescription> d) {
        if (d.isEmpty()) {
            return "<describe failed>";
        }
        ConsumerGroupDescription g = d.get();
        StringBuilder sb = new StringBuilder("group " + g.groupId() + " type=" + g.type() + " state=" + g.groupState()
                + " assignor=" + g.partitionAssignor() + " epoch=" + g.groupEpoch() + " members:");
        for (MemberDescription m : g.members()) {
            sb.append("\n    ").append(m.consumerId()).append(" instance=").append(m.groupInstanceId().orElse("-"))
                    .append(" client=").append(m.clientId()).append(" host=").append(m.host())
                    .append(" assignment=").append(new TreeMap<>(byTopic(m.assignment().topicPartitions())))
                    .append(" epoch=").append(m.memberEpoch());
        }
        return sb.toString();
    }

    private static Map<String, List<Integer>> byTopic(Collection<TopicPartition> tps) {
        Map<String, List<Integer>> m = new TreeMap<>();
        for (TopicPartition tp : tps) {
            m.computeIfAbsent(tp.topic(), k -> new ArrayList<>()).add(tp.partition());
        }
        m.values().forEach(Collections::sort);
        return m;
    }

    /** Whether describe shows a Stable group of `members` members whose assignments split `expected` exactly. */
    private static boolean stable(Optional<ConsumerGroupDescription> d, int members, Set<TopicPartition> expected) {
        if (d.isEmpty()) {
            return false;
        }
        ConsumerGroupDescription g = d.get();
        if (g.groupState() != GroupState.STABLE || g.members().size() != members) {
            return false;
        }
        Set<TopicPartition> union = new HashSet<>();
        int total = 0;
        for (MemberDescription m : g.members()) {
            union.addAll(m.assignment().topicPartitions());
            total += m.assignment().topicPartitions().size();
        }
        return union.equals(expected) && total == expected.size();
    }

    /** Whether the in-process members' own assignments split `expected` exactly. */
    private static boolean locallyAssigned(List<Member> members, Set<TopicPartition> expected) {
        Set<TopicPartition> union = new HashSet<>();
        int total = 0;
        for (Member m : members) {
            Set<TopicPartition> a = m.assignment;
            union.addAll(a);
            total += a.size();
        }
        return union.equals(expected) && total == expected.size();
    }

    /**
     * Waits until describe shows a Stable group with `members` members whose assignments split
     * `expected`, and the in-process members `local` hold their part: all of `expected` when
     * `localHoldsAll`, otherwise what describe gives their member ids (other members live in
     * another process).
     */
    private static ConsumerGroupDescription waitStable(String group, int members, Set<TopicPartition> expected,
                                                       List<Member> local, boolean localHoldsAll) {
        Optional<ConsumerGroupDescription>[] last = new Optional[] {Optional.empty()};
        waitUntil(() -> {
            last[0] = tryDescribe(group);
            if (!stable(last[0], members, expected)) {
                return false;
            }
            // every in-process member is in the group and holds (and has seen the epoch of)
            // exactly what describe gives it
            Map<String, MemberDescription> byId = new HashMap<>();
            last[0].get().members().forEach(m -> byId.put(m.consumerId(), m));
            for (Member m : local) {
                MemberDescription md = byId.get(m.memberId);
                if (md == null || !Set.copyOf(md.assignment().topicPartitions()).equals(m.assignment)) {
                    return false;
                }
                if (md.memberEpoch().isPresent() && md.memberEpoch().get() != m.generation) {
                    return false;
                }
            }
            return !localHoldsAll || locallyAssigned(local, expected);
        }, STABLE_DEADLINE, () -> "group " + group + " Stable with " + members + " members over " + byTopic(expected)
                + "\n  last describe: " + show(last[0]) + "\n  local members: " + local);
        return last[0].get();
    }

    private static Map<TopicPartition, Long> committed(String group) throws Exception {
        Map<TopicPartition, OffsetAndMetadata> m = get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata());
        Map<TopicPartition, Long> out = new HashMap<>();
        m.forEach((tp, om) -> out.put(tp, om == null ? null : om.offset()));
        return out;
    }

    private static void waitCommitted(String group, Map<TopicPartition, Long> expected) {
        Map<TopicPartition, Long>[] last = new Map[] {Map.of()};
        waitUntil(() -> {
            try {
                last[0] = committed(group);
            } catch (Exception | AssertionError e) {
                return false;
            }
            return last[0].equals(expected);
        }, Duration.ofSeconds(30), () -> "committed offsets of " + group + " = " + expected + ", last listed " + last[0]);
    }

    private static Map<TopicPartition, Long> offsetsEach(String topic, int partitions, long offset) {
        Map<TopicPartition, Long> m = new HashMap<>();
        for (int p = 0; p < partitions; p++) {
            m.put(new TopicPartition(topic, p), offset);
        }
        return m;
    }

    /** Every value in `expected` exactly once in `got`, nothing else. */
    private static void assertExactlyOnce(Collection<String> expected, Collection<String> got, String what) {
        Map<String, Integer> counts = new HashMap<>();
        for (String v : got) {
            counts.merge(v, 1, Integer::sum);
        }
        List<String> missing = expected.stream().filter(v -> !counts.containsKey(v)).limit(20).collect(Collectors.toList());
        List<String> dups = counts.entrySet().stream().filter(e -> e.getValue() > 1).map(Map.Entry::getKey).sorted()
                .limit(20).collect(Collectors.toList());
        Set<String> exp = new HashSet<>(expected);
        List<String> extra = counts.keySet().stream().filter(v -> !exp.contains(v)).sorted().limit(20).collect(Collectors.toList());
        if (!missing.isEmpty() || !dups.isEmpty() || !extra.isEmpty()) {
            fail(what + ": expected " + expected.size() + " values once each, got " + got.size()
                    + "; missing (first 20) " + missing + "; duplicated " + dups + "; unexpected " + extra + broker.diagnostics());
        }
    }

    private static List<String> allValues(List<Member> members) {
        List<String> out = new ArrayList<>();
        members.forEach(m -> out.addAll(m.values()));
        return out;
    }

    private static int receivedCount(List<Member> members) {
        return members.stream().mapToInt(m -> m.received.size()).sum();
    }

    private static void assertNoErrors(List<Member> members) {
        for (Member m : members) {
            assertTrue(m.errors.isEmpty(), m.name + " had errors: " + m.errors + broker.diagnostics());
        }
    }

    private static void closeAll(List<Member> members) throws InterruptedException {
        for (Member m : members) {
            m.close();
        }
    }

    private static ConsumerGroupListing listed(String group) throws Exception {
        @SuppressWarnings("deprecation")
        Collection<ConsumerGroupListing> all = get(admin.listConsumerGroups().all());
        return all.stream().filter(l -> l.groupId().equals(group)).findFirst()
                .orElseThrow(() -> new AssertionError("listConsumerGroups lacks " + group + ": " + all + broker.diagnostics()));
    }

    // ------------------------------------------------------------------ 1. one partition, three consumers

    @ParameterizedTest(name = "group.protocol={0}")
    @ValueSource(strings = {"classic", "consumer"})
    void onePartitionThreeConsumers(String protocol) throws Exception {
        String topic = "one-partition-" + protocol;
        String group = "g-one-partition-" + protocol;
        createTopic(topic, 1);
        Set<TopicPartition> tp0 = partitions(topic, 1);
        List<Member> members = new ArrayList<>();
        try {
            for (int i = 0; i < 3; i++) {
                members.add(Member.topics("one-" + protocol + "-" + i, protocol, group, List.of(topic)));
            }
            ConsumerGroupDescription d = waitStable(group, 3, tp0, members, true);
            assertEquals(groupType(protocol), d.type(), show(Optional.of(d)));
            assertFalse(d.isSimpleConsumerGroup(), show(Optional.of(d)));
            long owners = d.members().stream().filter(m -> !m.assignment().topicPartitions().isEmpty()).count();
            assertEquals(1, owners, "members with a partition: " + show(Optional.of(d)));
            Set<String> clientIds = d.members().stream().map(MemberDescription::clientId).collect(Collectors.toSet());
            assertEquals(members.stream().map(m -> m.name).collect(Collectors.toSet()), clientIds, show(Optional.of(d)));
            for (MemberDescription m : d.members()) {
                assertFalse(m.consumerId().isEmpty(), "member id: " + show(Optional.of(d)));
                assertFalse(m.host().isEmpty(), "host: " + show(Optional.of(d)));
            }
            Set<String> describedIds = d.members().stream().map(MemberDescription::consumerId).collect(Collectors.toSet());
            assertEquals(members.stream().map(m -> m.memberId).collect(Collectors.toSet()), describedIds,
                    "member ids the clients hold vs. describe: " + members + "\n" + show(Optional.of(d)));

            int n = 300;
            List<String> sent = produce(topic, 1, "one-" + protocol, 0, n);
            waitUntil(() -> receivedCount(members) >= n, CONSUME_DEADLINE,
                    () -> n + " records consumed by the group; members " + members);
            waitCommitted(group, offsetsEach(topic, 1, n));
            sleepQuietly(1000); // anything redelivered would show up now
            assertExactlyOnce(sent, allValues(members), "group " + group);
            List<Member> busy = members.stream().filter(m -> !m.received.isEmpty()).collect(Collectors.toList());
            assertEquals(1, busy.size(), "exactly one member receives the records: " + members);
            assertEquals(tp0, busy.get(0).assignment, "the busy member owns the partition: " + members);

            // the idle members are still members, and nothing moved
            ConsumerGroupDescription after = waitStable(group, 3, tp0, members, true);
            assertEquals(describedIds, after.members().stream().map(MemberDescription::consumerId).collect(Collectors.toSet()),
                    "members after consuming: " + show(Optional.of(after)));

            ConsumerGroupListing l = listed(group);
            assertEquals(Optional.of(groupType(protocol)), l.type(), "listConsumerGroups: " + l);
            assertEquals(Optional.of(GroupState.STABLE), l.groupState(), "listConsumerGroups: " + l);
            assertFalse(l.isSimpleConsumerGroup(), "listConsumerGroups: " + l);

            assertNoErrors(members);
            closeAll(members);
            // everyone left: the group is empty, its offsets stay
            Optional<ConsumerGroupDescription>[] last = new Optional[] {Optional.empty()};
            waitUntil(() -> {
                last[0] = tryDescribe(group);
                return last[0].isPresent() && last[0].get().groupState() == GroupState.EMPTY && last[0].get().members().isEmpty();
            }, Duration.ofSeconds(20), () -> "group " + group + " Empty after every member closed; last " + show(last[0]));
            assertEquals(offsetsEach(topic, 1, n), committed(group), "committed offsets of the empty group");
            assertEquals(Optional.of(GroupState.EMPTY), listed(group).groupState(), "listConsumerGroups after close");
            assertNoErrors(members);
        } finally {
            closeAll(members);
        }
    }

    // ------------------------------------------------------------------ 2. six partitions, one member killed

    /** A member in a child JVM; its stdout lines are parsed as they come. */
    static final class ChildMember implements AutoCloseable {
        final Process process;
        final Path stderrLog;
        final List<String[]> records = new CopyOnWriteArrayList<>(); // {partition, offset, value}
        final List<String> errors = new CopyOnWriteArrayList<>();
        volatile Set<Integer> assignment = Set.of();
        final AtomicInteger commits = new AtomicInteger();

        ChildMember(String protocol, String group, String topic, String clientId) throws IOException {
            String java = Paths.get(System.getProperty("java.home"), "bin", "java").toString();
            String cp = System.getProperty("java.class.path");
            Path logDir = Paths.get(System.getProperty("shardline.logdir", "target/broker-logs"));
            Files.createDirectories(logDir);
            stderrLog = logDir.resolve("child-" + clientId + ".stderr.log");
            ProcessBuilder pb = new ProcessBuilder(java, "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xmx256m",
                    "-cp", cp, GroupChildConsumer.class.getName(), broker.bootstrap(), group, topic, protocol, clientId);
            pb.redirectError(ProcessBuilder.Redirect.to(stderrLog.toFile()));
            process = pb.start();
            Thread pump = new Thread(() -> {
                try (BufferedReader r = new BufferedReader(new InputStreamReader(process.getInputStream(), StandardCharsets.UTF_8))) {
                    String line;
                    while ((line = r.readLine()) != null) {
                        if (line.startsWith("REC ")) {
                            records.add(line.substring(4).split(" ", 3));
                        } else if (line.startsWith("ASSIGNMENT")) {
                            String rest = line.substring("ASSIGNMENT".length()).trim();
                            Set<Integer> a = new HashSet<>();
                            for (String s : rest.split(",")) {
                                if (!s.isEmpty()) {
                                    a.add(Integer.parseInt(s));
                                }
                            }
                            assignment = Set.copyOf(a);
                        } else if (line.equals("COMMITTED")) {
                            commits.incrementAndGet();
                        } else if (line.startsWith("ERROR")) {
                            errors.add(line);
                        }
                    }
                } catch (IOException e) {
                    // killed
                }
            }, "child-stdout-" + clientId);
            pump.setDaemon(true);
            pump.start();
        }

        List<String> values() {
            return records.stream().map(r -> r[2]).collect(Collectors.toList());
        }

        String stderrTail() {
            try {
                List<String> lines = Files.readAllLines(stderrLog, StandardCharsets.UTF_8);
                return String.join("\n", lines.subList(Math.max(0, lines.size() - 20), lines.size()));
            } catch (IOException e) {
                return "<" + e + ">";
            }
        }

        /** SIGKILL: no LeaveGroup, no last commit. */
        void kill() throws InterruptedException {
            process.destroyForcibly();
            if (!process.waitFor(10, TimeUnit.SECONDS)) {
                throw new AssertionError("child JVM did not die after SIGKILL");
            }
        }

        @Override
        public String toString() {
            return "child{alive=" + process.isAlive() + ", assignment=" + assignment + ", records=" + records.size()
                    + ", commits=" + commits + ", errors=" + errors + "}\n  child stderr tail:\n" + stderrTail();
        }

        @Override
        public void close() throws InterruptedException {
            if (process.isAlive()) {
                kill();
            }
        }
    }

    @ParameterizedTest(name = "group.protocol={0}")
    @ValueSource(strings = {"classic", "consumer"})
    void killedMemberPartitionsMoveWithoutLoss(String protocol) throws Exception {
        String topic = "six-partitions-" + protocol;
        String group = "g-kill-" + protocol;
        int parts = 6;
        int perPartition = 50;
        createTopic(topic, parts);
        Set<TopicPartition> all = partitions(topic, parts);
        List<Member> members = new ArrayList<>();
        try (ChildMember child = new ChildMember(protocol, group, topic, "kill-" + protocol + "-child")) {
            members.add(Member.topics("kill-" + protocol + "-0", protocol, group, List.of(topic)));
            members.add(Member.topics("kill-" + protocol + "-1", protocol, group, List.of(topic)));

            ConsumerGroupDescription d = waitStable(group, 3, all, members, false);
            waitUntil(() -> child.assignment.size() == 2, STABLE_DEADLINE, () -> "the child holds 2 partitions: " + child);
            for (MemberDescription m : d.members()) {
                assertEquals(2, m.assignment().topicPartitions().size(), "2 partitions each: " + show(Optional.of(d)));
            }
            MemberDescription childDesc = d.members().stream().filter(m -> m.clientId().equals("kill-" + protocol + "-child"))
                    .findFirst().orElseThrow(() -> new AssertionError("describe lacks the child: " + show(Optional.of(d))));
            Set<Integer> childParts = childDesc.assignment().topicPartitions().stream().map(TopicPartition::partition)
                    .collect(Collectors.toSet());
            assertEquals(childParts, child.assignment, "the child's own assignment vs. describe: " + show(Optional.of(d)));

            // batch 1: consumed and committed by all three
            int n1 = parts * perPartition;
            List<String> batch1 = produce(topic, parts, "kill1-" + protocol, 0, n1);
            waitUntil(() -> receivedCount(members) + child.records.size() >= n1, CONSUME_DEADLINE,
                    () -> "batch 1 consumed: " + members + "\n" + child);
            waitCommitted(group, offsetsEach(topic, parts, perPartition));
            assertTrue(child.records.size() == 2 * perPartition, "the child consumed its 2 partitions: " + child);

            // kill -9 the child, then produce batch 2 at once
            child.kill();
            long killedAt = System.nanoTime();
            int n2 = parts * perPartition;
            List<String> batch2 = produce(topic, parts, "kill2-" + protocol, n1, n1 + n2);

            int session = protocol.equals("classic") ? CLASSIC_SESSION_MS : CONSUMER_SESSION_MS;
            waitUntil(() -> receivedCount(members) + child.records.size() >= n1 + n2,
                    Duration.ofMillis(session).plus(CONSUME_DEADLINE),
                    () -> "batch 2 consumed by the survivors after the session timeout; " + members + "\n" + show(tryDescribe(group)));
            long movedAfterMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - killedAt);
            System.out.println("[" + protocol + "] the dead member's partitions were consumed " + movedAfterMs
                    + " ms after kill -9 (session timeout " + session + " ms)");

            ConsumerGroupDescription after = waitStable(group, 2, all, members, true);
            waitCommitted(group, offsetsEach(topic, parts, 2L * perPartition));
            sleepQuietly(1000);

            List<String> got = new ArrayList<>(allValues(members));
            got.addAll(child.values());
            List<String> expected = new ArrayList<>(batch1);
            expected.addAll(batch2);
            assertExactlyOnce(expected, got, "group " + group + " across kill -9");

            // the survivors started the dead member's partitions at its last committed offset
            for (int p : childParts) {
                List<Long> offs = new ArrayList<>();
                for (Member m : members) {
                    for (ConsumerRecord<byte[], byte[]> r : m.records()) {
                        if (r.partition() == p) {
                            offs.add(r.offset());
                        }
                    }
                }
                Collections.sort(offs);
                List<Long> want = rangeOf(perPartition, 2L * perPartition);
                assertEquals(want, offs, "offsets of partition " + p + " read by the survivors" + show(Optional.of(after)));
            }
            assertNoErrors(members);
            assertTrue(child.errors.isEmpty(), "child errors: " + child);
        } finally {
            closeAll(members);
        }
    }

    private static List<Long> rangeOf(long from, long to) {
        List<Long> out = new ArrayList<>();
        for (long i = from; i < to; i++) {
            out.add(i);
        }
        return out;
    }

    // ------------------------------------------------------------------ 3. two groups, one topic

    @ParameterizedTest(name = "group.protocol={0}")
    @ValueSource(strings = {"classic", "consumer"})
    void twoGroupsEachReceiveEverything(String protocol) throws Exception {
        String topic = "two-groups-" + protocol;
        String ga = "g-two-a-" + protocol;
        String gb = "g-two-b-" + protocol;
        int parts = 3;
        createTopic(topic, parts);
        Set<TopicPartition> all = partitions(topic, parts);
        List<Member> a = new ArrayList<>();
        List<Member> b = new ArrayList<>();
        try {
            a.add(Member.topics("two-a0-" + protocol, protocol, ga, List.of(topic)));
            a.add(Member.topics("two-a1-" + protocol, protocol, ga, List.of(topic)));
            b.add(Member.topics("two-b0-" + protocol, protocol, gb, List.of(topic)));
            waitStable(ga, 2, all, a, true);
            waitStable(gb, 1, all, b, true);

            int n = 300;
            List<String> sent = produce(topic, parts, "two-" + protocol, 0, n);
            waitUntil(() -> receivedCount(a) >= n && receivedCount(b) >= n, CONSUME_DEADLINE,
                    () -> "both groups consume " + n + ": " + a + " / " + b);
            waitCommitted(ga, offsetsEach(topic, parts, n / parts));
            waitCommitted(gb, offsetsEach(topic, parts, n / parts));
            sleepQuietly(1000);
            assertExactlyOnce(sent, allValues(a), "group " + ga);
            assertExactlyOnce(sent, allValues(b), "group " + gb);
            assertNoErrors(a);
            assertNoErrors(b);

            Set<String> listedIds = new HashSet<>();
            @SuppressWarnings("deprecation")
            Collection<ConsumerGroupListing> ls = get(admin.listConsumerGroups().all());
            ls.forEach(l -> listedIds.add(l.groupId()));
            assertTrue(listedIds.containsAll(List.of(ga, gb)), "listConsumerGroups: " + ls);
            Map<String, ConsumerGroupDescription> both = get(admin.describeConsumerGroups(List.of(ga, gb)).all());
            assertEquals(2, both.get(ga).members().size(), show(Optional.of(both.get(ga))));
            assertEquals(1, both.get(gb).members().size(), show(Optional.of(both.get(gb))));
        } finally {
            closeAll(a);
            closeAll(b);
        }
    }

    // ------------------------------------------------------------------ 4. CreatePartitions; pattern subscription

    @ParameterizedTest(name = "group.protocol={0}")
    @ValueSource(strings = {"classic", "consumer"})
    void addedPartitionsAreAssigned(String protocol) throws Exception {
        String topic = "grow-" + protocol;
        String group = "g-grow-" + protocol;
        createTopic(topic, 2);
        List<Member> members = new ArrayList<>();
        try {
            members.add(Member.topics("grow-" + protocol + "-0", protocol, group, List.of(topic)));
            members.add(Member.topics("grow-" + protocol + "-1", protocol, group, List.of(topic)));
            waitStable(group, 2, partitions(topic, 2), members, true);
            List<String> sent = new ArrayList<>(produce(topic, 2, "grow-before-" + protocol, 0, 100));
            waitUntil(() -> receivedCount(members) >= 100, CONSUME_DEADLINE, () -> "100 records before growing: " + members);

            get(admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(4))).all());
            ConsumerGroupDescription d = waitStable(group, 2, partitions(topic, 4), members, true);
            for (MemberDescription m : d.members()) {
                assertEquals(2, m.assignment().topicPartitions().size(), "2 of 4 partitions each: " + show(Optional.of(d)));
            }

            sent.addAll(produce(topic, 4, "grow-after-" + protocol, 100, 300));
            waitUntil(() -> receivedCount(members) >= 300, CONSUME_DEADLINE, () -> "300 records after growing: " + members);
            Map<TopicPartition, Long> want = offsetsEach(topic, 2, 100);
            want.putAll(Map.of(new TopicPartition(topic, 2), 50L, new TopicPartition(topic, 3), 50L));
            waitCommitted(group, want);
            sleepQuietly(1000);
            assertExactlyOnce(sent, allValues(members), "group " + group + " across CreatePartitions");
            assertNoErrors(members);
        } finally {
            closeAll(members);
        }
    }

    /**
     * A regex subscription picks up a matching topic created later, and ignores others.
     * "java": KafkaConsumer.subscribe(java.util.regex.Pattern), matched by the client against
     * metadata; "re2j": subscribe(SubscriptionPattern), matched by the broker (KIP-848 only).
     */
    @ParameterizedTest(name = "group.protocol={0}, {1} pattern")
    @CsvSource({"classic,java", "consumer,java", "consumer,re2j"})
    void patternSubscriptionPicksUpNewTopic(String protocol, String kind) throws Exception {
        String prefix = "pat-" + protocol + "-" + kind + "-";
        String group = "g-" + prefix + "group";
        String first = prefix + "first";
        String later = prefix + "later";
        String other = "nomatch-" + prefix + "x";
        createTopic(first, 2);
        createTopic(other, 1);
        String regex = Pattern.quote(prefix) + ".*";
        String re2 = prefix + ".*"; // RE2 syntax (no \Q..\E); the prefix has no metacharacters
        Member.Subscriber sub = kind.equals("java")
                ? (c, l) -> c.subscribe(Pattern.compile(regex), l)
                : (c, l) -> c.subscribe(new SubscriptionPattern(re2), l);
        List<Member> members = new ArrayList<>();
        try {
            members.add(new Member(prefix + "m0", groupConfig(protocol, group, prefix + "m0"), sub));
            waitStable(group, 1, partitions(first, 2), members, true);

            createTopic(later, 3);
            Set<TopicPartition> want = new HashSet<>(partitions(first, 2));
            want.addAll(partitions(later, 3));
            ConsumerGroupDescription d = waitStable(group, 1, want, members, true);
            assertEquals(want, Set.copyOf(d.members().iterator().next().assignment().topicPartitions()), show(Optional.of(d)));

            List<String> sent = new ArrayList<>(produce(first, 2, prefix + "a", 0, 40));
            sent.addAll(produce(later, 3, prefix + "b", 0, 60));
            produce(other, 1, prefix + "other", 0, 10);
            waitUntil(() -> receivedCount(members) >= 100, CONSUME_DEADLINE, () -> "100 records on matching topics: " + members);
            sleepQuietly(1500);
            assertExactlyOnce(sent, allValues(members), "pattern subscriber " + regex);
            Map<TopicPartition, Long> wantOffsets = offsetsEach(first, 2, 20);
            wantOffsets.putAll(offsetsEach(later, 3, 20));
            waitCommitted(group, wantOffsets);
            assertNoErrors(members);
        } finally {
            closeAll(members);
        }
    }

    // ------------------------------------------------------------------ 5. committed offsets survive a broker restart

    @ParameterizedTest(name = "group.protocol={0}")
    @ValueSource(strings = {"classic", "consumer"})
    void committedOffsetsSurviveBrokerRestart(String protocol) throws Exception {
        ShardlineBroker shared = broker;
        Admin sharedAdmin = admin;
        ShardlineBroker own = ShardlineBroker.start("ConsumerGroupsTest-restart-" + protocol, BROKER_SETTINGS);
        broker = own; // the helpers talk to `broker` and `admin`
        admin = Clients.admin(own);
        List<Member> members = new ArrayList<>();
        try {
            String topic = "restart-" + protocol;
            String group = "g-restart-" + protocol;
            int parts = 3;
            createTopic(topic, parts);
            List<String> before = produce(topic, parts, "restart-before-" + protocol, 0, 90);
            Member m0 = Member.topics("restart-" + protocol + "-0", protocol, group, List.of(topic));
            members.add(m0);
            waitUntil(() -> m0.received.size() >= 90, CONSUME_DEADLINE, () -> "90 records before the restart: " + m0);
            Map<TopicPartition, Long> at30 = offsetsEach(topic, parts, 30);
            waitCommitted(group, at30);
            m0.close();
            assertNoErrors(members);
            assertExactlyOnce(before, m0.values(), "before the restart");

            admin.close(Duration.ofSeconds(10));
            own.restart();
            admin = Clients.admin(own);

            assertEquals(at30, committed(group), "committed offsets after the broker restarted");
            List<String> after = produce(topic, parts, "restart-after-" + protocol, 90, 150);
            Map<String, Object> cfg = groupConfig(protocol, group, "restart-" + protocol + "-1");
            cfg.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "none"); // a lost commit is an error, not a silent rewind
            Member m1 = new Member("restart-" + protocol + "-1", cfg, (c, l) -> c.subscribe(List.of(topic), l));
            members.add(m1);
            waitUntil(() -> m1.received.size() >= 60 || !m1.errors.isEmpty(), CONSUME_DEADLINE,
                    () -> "60 new records after the restart: " + m1);
            assertNoErrors(members);
            waitCommitted(group, offsetsEach(topic, parts, 50));
            sleepQuietly(1000);
            assertNoErrors(members);
            assertExactlyOnce(after, m1.values(), "after the restart (resumed from the committed offsets)");
            for (ConsumerRecord<byte[], byte[]> r : m1.records()) {
                assertTrue(r.offset() >= 30, "record before the committed offset: " + r);
            }
        } finally {
            try {
                closeAll(members);
                admin.close(Duration.ofSeconds(10));
                own.close();
            } finally {
                broker = shared;
                admin = sharedAdmin;
            }
        }
    }

    // ------------------------------------------------------------------ 6. static membership

    @ParameterizedTest(name = "group.protocol={0}")
    @ValueSource(strings = {"classic", "consumer"})
    void staticMemberRestartsWithoutRebalance(String protocol) throws Exception {
        String topic = "static-" + protocol;
        String group = "g-static-" + protocol;
        int parts = 4;
        createTopic(topic, parts);
        Set<TopicPartition> all = partitions(topic, parts);
        List<Member> members = new ArrayList<>();
        Map<String, Object> cfgA = groupConfig(protocol, group, "static-" + protocol + "-a");
        Map<String, Object> cfgB = groupConfig(protocol, group, "static-" + protocol + "-b");
        cfgA.put(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "instance-a");
        cfgB.put(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "instance-b");
        if (protocol.equals("classic")) {
            cfgA.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 30_000);
            cfgB.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 30_000);
        }
        CloseOptions leave = CloseOptions.groupMembershipOperation(CloseOptions.GroupMembershipOperation.LEAVE_GROUP);
        try {
            Member a = new Member("static-" + protocol + "-a", cfgA, (c, l) -> c.subscribe(List.of(topic), l));
            members.add(a);
            waitStable(group, 1, all, List.of(a), true);
            Member b = new Member("static-" + protocol + "-b", cfgB, (c, l) -> c.subscribe(List.of(topic), l));
            members.add(b);
            ConsumerGroupDescription d0 = waitStable(group, 2, all, members, true);
            assertEquals(Set.of("instance-a", "instance-b"),
                    d0.members().stream().map(m -> m.groupInstanceId().orElse("-")).collect(Collectors.toSet()),
                    "instance ids: " + show(Optional.of(d0)));
            Set<TopicPartition> aParts = a.assignment;
            Set<TopicPartition> bParts = b.assignment;
            assertEquals(2, aParts.size(), "a: " + a + " b: " + b);
            int aGen = a.generation;
            int bGen = b.generation;
            String bMember = b.memberId;
            int aAssigned = a.assignedCalls.get();
            int aRevoked = a.revokedCalls.get();
            Optional<Integer> epoch0 = d0.groupEpoch();

            List<String> sent = new ArrayList<>(produce(topic, parts, "static1-" + protocol, 0, 100));
            waitUntil(() -> receivedCount(members) >= 100, CONSUME_DEADLINE, () -> "100 records: " + members);
            waitCommitted(group, offsetsEach(topic, parts, 25));

            // b stops without leaving (a static member's default) and comes back at once
            b.stop(CloseOptions.groupMembershipOperation(CloseOptions.GroupMembershipOperation.DEFAULT));
            Member b2 = new Member("static-" + protocol + "-b", cfgB, (c, l) -> c.subscribe(List.of(topic), l));
            members.add(b2);
            waitUntil(() -> b2.assignment.equals(bParts), STABLE_DEADLINE,
                    () -> "the restarted static member gets its old partitions " + bParts + ": " + b2 + "\n" + show(tryDescribe(group)));
            List<Member> live = List.of(a, b2);
            ConsumerGroupDescription d1 = waitStable(group, 2, all, live, true);

            sent.addAll(produce(topic, parts, "static2-" + protocol, 100, 200));
            waitUntil(() -> receivedCount(members) >= 200, CONSUME_DEADLINE, () -> "200 records: " + members);
            waitCommitted(group, offsetsEach(topic, parts, 50));
            sleepQuietly(1000);

            String ctx = "\nbefore: " + show(Optional.of(d0)) + "\nafter: " + show(Optional.of(d1)) + "\nmembers: " + members;
            assertEquals(aParts, a.assignment, "a's assignment did not change" + ctx);
            assertEquals(aGen, a.generation, "a's generation did not change" + ctx);
            assertEquals(bGen, b2.generation, "the restarted member has the old generation" + ctx);
            assertEquals(aAssigned, a.assignedCalls.get(), "no onPartitionsAssigned on a (no rebalance)" + ctx);
            assertEquals(aRevoked, a.revokedCalls.get(), "no onPartitionsRevoked on a (no rebalance)" + ctx);
            assertEquals(0, a.lostCalls.get(), "no onPartitionsLost on a" + ctx);
            assertEquals(epoch0, d1.groupEpoch(), "group epoch" + ctx);
            if (protocol.equals("classic")) {
                assertNotEquals(bMember, b2.memberId, "a static member that rejoins gets a new member id" + ctx);
            }
            MemberDescription bDesc = d1.members().stream().filter(m -> m.groupInstanceId().equals(Optional.of("instance-b")))
                    .findFirst().orElseThrow(() -> new AssertionError("instance-b missing" + ctx));
            assertEquals(b2.memberId, bDesc.consumerId(), ctx);
            assertEquals(bParts, Set.copyOf(bDesc.assignment().topicPartitions()), ctx);
            assertExactlyOnce(sent, allValues(members), "group " + group + " across the static restart");
            assertNoErrors(members);

            // static members leave explicitly; the group empties
            a.stop(leave);
            b2.stop(leave);
            Optional<ConsumerGroupDescription>[] last = new Optional[] {Optional.empty()};
            waitUntil(() -> {
                last[0] = tryDescribe(group);
                return last[0].isPresent() && last[0].get().members().isEmpty();
            }, Duration.ofSeconds(20), () -> "static members left " + group + "; last " + show(last[0]));
            assertNoErrors(members);
        } finally {
            closeAll(members);
        }
    }
}
