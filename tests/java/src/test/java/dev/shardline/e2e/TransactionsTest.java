package dev.shardline.e2e;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import java.util.stream.IntStream;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.InvalidProducerEpochException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Idempotent and transactional producers with the Java client (issue 6):
 * <ul>
 * <li>a producer with default settings (idempotence on, acks=all) keeps producing while the
 * broker is killed with SIGKILL and restarted three times: every acknowledged record is read
 * back exactly once, at the offset it was acknowledged with, in order per partition;</li>
 * <li>a read-process-write loop (consumer group + transactional producer +
 * sendOffsetsToTransaction) that aborts every third transaction;</li>
 * <li>zombie fencing: an older producer with the same transactional.id is fenced.</li>
 * </ul>
 * The crash test has a broker of its own; the others share one. Every loop is bounded.
 */
class TransactionsTest {
    private static final String[] BROKER_SETTINGS = {
        "group_initial_rebalance_delay_ms=0",
        "group_consumer_session_timeout_ms=8000",
        "group_consumer_heartbeat_interval_ms=1000",
    };
    private static final Duration READ_DEADLINE = Duration.ofSeconds(45);

    private static ShardlineBroker broker;
    private static Admin admin;

    @BeforeAll
    static void startBroker() throws Exception {
        broker = ShardlineBroker.start("TransactionsTest", BROKER_SETTINGS);
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

    // ------------------------------------------------------------------ helpers

    private static void createTopic(Admin a, String topic, int partitions) throws Exception {
        a.createTopics(List.of(new NewTopic(topic, partitions, (short) 1))).all().get(30, TimeUnit.SECONDS);
    }

    private static List<TopicPartition> partitions(String topic, int n) {
        return IntStream.range(0, n).mapToObj(p -> new TopicPartition(topic, p)).collect(Collectors.toList());
    }

    private static byte[] bytes(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    private static String str(byte[] b) {
        return b == null ? null : new String(b, StandardCharsets.UTF_8);
    }

    /** A transactional producer: the client's defaults plus a transactional.id and bounded waits. */
    private static KafkaProducer<byte[], byte[]> txnProducer(ShardlineBroker b, String txnId, String clientId) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, b.bootstrap());
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, txnId);
        p.put(ProducerConfig.CLIENT_ID_CONFIG, clientId);
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, 15_000);
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 30_000);
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, 30_000);
        return new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer());
    }

    /**
     * Reads every partition of a topic from the beginning up to its end offset as this isolation
     * level sees it (the last stable offset for read_committed), then polls once more to catch
     * anything past it. Returns the records by partition, in offset order.
     */
    private static Map<Integer, List<ConsumerRecord<byte[], byte[]>>> readAll(ShardlineBroker b, String topic,
            int nPartitions, String isolation) {
        Map<String, Object> cfg = new HashMap<>();
        cfg.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation);
        cfg.put(ConsumerConfig.CLIENT_ID_CONFIG, "e2e-reader-" + isolation);
        Map<Integer, List<ConsumerRecord<byte[], byte[]>>> out = new TreeMap<>();
        List<TopicPartition> tps = partitions(topic, nPartitions);
        try (KafkaConsumer<byte[], byte[]> c = Clients.consumer(b, cfg)) {
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> end = c.endOffsets(tps, Duration.ofSeconds(30));
            for (TopicPartition tp : tps) {
                out.put(tp.partition(), new ArrayList<>());
            }
            long deadline = System.nanoTime() + READ_DEADLINE.toNanos();
            while (System.nanoTime() < deadline) {
                boolean done = true;
                for (TopicPartition tp : tps) {
                    if (c.position(tp, Duration.ofSeconds(30)) < end.get(tp)) {
                        done = false;
                    }
                }
                if (done) {
                    break;
                }
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(500))) {
                    out.get(r.partition()).add(r);
                }
            }
            for (TopicPartition tp : tps) {
                long pos = c.position(tp, Duration.ofSeconds(30));
                assertTrue(pos >= end.get(tp), isolation + " reader of " + tp + " stuck at " + pos
                        + " below end offset " + end.get(tp) + " after " + READ_DEADLINE + b.diagnostics());
            }
            for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(500))) {
                out.get(r.partition()).add(r);
            }
        }
        return out;
    }

    private static List<String> values(Map<Integer, List<ConsumerRecord<byte[], byte[]>>> byPartition) {
        return byPartition.values().stream().flatMap(List::stream).map(r -> str(r.value())).collect(Collectors.toList());
    }

    /** Counts of each value; a value read twice shows up with count 2. */
    private static Map<String, Integer> multiset(Collection<String> values) {
        Map<String, Integer> m = new TreeMap<>();
        for (String v : values) {
            m.merge(v, 1, Integer::sum);
        }
        return m;
    }

    private static Throwable fencedCause(Throwable t) {
        for (Throwable c = t; c != null; c = c.getCause()) {
            if (c instanceof ProducerFencedException || c instanceof InvalidProducerEpochException) {
                return c;
            }
        }
        return null;
    }

    // ------------------------------------------------------------------ (a) kill -9 while producing

    private static final int CRASH_PARTITIONS = 3;
    private static final int CRASHES = 3;
    /** Acknowledged records the producer must reach before each crash and after the last one. */
    private static final int PROGRESS_PER_PHASE = 300;

    /**
     * A producer with the Java client's defaults (enable.idempotence=true, acks=all, retries
     * unbounded within delivery.timeout.ms, 5 requests in flight) sends numbered records to
     * three partitions while the broker is killed with SIGKILL and restarted three times on the
     * same port and data directory. Requests in flight at the crash are retried by the client;
     * the broker must recognise the ones it had already appended (same producer id, epoch and
     * sequence) and answer them with their original offsets instead of appending them again.
     */
    @Test
    void idempotentProducerSurvivesKill9() throws Exception {
        String topic = "idem-crash";
        try (ShardlineBroker crashy = ShardlineBroker.start("TransactionsTest-crash");
             Admin a = Clients.admin(crashy)) {
            createTopic(a, topic, CRASH_PARTITIONS);

            Properties p = new Properties();
            p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, crashy.bootstrap());
            p.put(ProducerConfig.CLIENT_ID_CONFIG, "e2e-idempotent");
            // only the client's defaults for idempotence, acks, retries, in-flight requests and
            // linger; nothing set but the address and the id
            KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer());

            Map<Integer, RecordMetadata> acked = new ConcurrentHashMap<>();
            Map<Integer, String> failed = new ConcurrentHashMap<>();
            AtomicInteger sent = new AtomicInteger();
            AtomicBoolean stop = new AtomicBoolean();
            List<String> senderErrors = new ArrayList<>();
            Thread sender = new Thread(() -> {
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
                try {
                    for (int i = 0; i < 200_000 && !stop.get() && System.nanoTime() < deadline; i++) {
                        final int n = i;
                        producer.send(new ProducerRecord<>(topic, n % CRASH_PARTITIONS, bytes("k-" + n), bytes("idem-" + n)),
                                (md, e) -> {
                                    if (e == null) {
                                        acked.put(n, md);
                                    } else {
                                        failed.put(n, e.toString());
                                    }
                                });
                        sent.incrementAndGet();
                        if (n % 20 == 19) {
                            Thread.sleep(10);
                        }
                    }
                } catch (Exception e) {
                    synchronized (senderErrors) {
                        senderErrors.add(e.toString());
                    }
                }
            }, "idempotent-sender");
            sender.setDaemon(true);

            List<String> phases = new ArrayList<>();
            List<Set<Integer>> ackedBeforeCrash = new ArrayList<>();
            List<Map<Integer, Long>> recoveredEnds = new ArrayList<>();
            try {
                sender.start();
                for (int crash = 0; crash <= CRASHES; crash++) {
                    int target = acked.size() + PROGRESS_PER_PHASE;
                    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(40);
                    while (acked.size() < target && System.nanoTime() < deadline && sender.isAlive()) {
                        Thread.sleep(20);
                    }
                    phases.add("phase " + crash + ": sent " + sent.get() + ", acked " + acked.size()
                            + ", failed " + failed.size());
                    assertTrue(acked.size() >= target, "producer made no progress after crash " + crash
                            + " (" + phases + "; failures " + sample(failed) + "; sender " + senderErrors + ")"
                            + crashy.diagnostics());
                    if (crash == CRASHES) {
                        break;
                    }
                    int code = crashy.kill9();
                    assertEquals(137, code, "exit code after SIGKILL");
                    Thread.sleep(500); // the producer keeps sending into its buffer meanwhile
                    ackedBeforeCrash.add(Set.copyOf(acked.keySet())); // no ack can arrive now
                    crashy.restartAfterKill();
                    recoveredEnds.add(recoveredLogEnds(crashy.stderr(), topic));
                }
            } finally {
                stop.set(true);
                sender.join(30_000);
                producer.flush();
                producer.close(Duration.ofSeconds(30));
            }
            System.out.println("[idempotentProducerSurvivesKill9] " + phases + "; total sent " + sent.get()
                    + ", acked " + acked.size() + ", failed " + failed.size() + " " + sample(failed));
            assertTrue(senderErrors.isEmpty(), "send() threw: " + senderErrors);
            assertEquals(sent.get(), acked.size() + failed.size(),
                    "every send() must have completed, one way or the other");

            Map<Integer, List<ConsumerRecord<byte[], byte[]>>> read = readAll(crashy, topic, CRASH_PARTITIONS, "read_uncommitted");
            Map<Integer, Integer> seen = new HashMap<>();
            List<String> problems = new ArrayList<>();
            for (Map.Entry<Integer, List<ConsumerRecord<byte[], byte[]>>> e : read.entrySet()) {
                int last = -1;
                for (ConsumerRecord<byte[], byte[]> r : e.getValue()) {
                    String v = str(r.value());
                    if (v == null || !v.startsWith("idem-")) {
                        problems.add("unexpected value " + v + " at " + r.partition() + "@" + r.offset());
                        continue;
                    }
                    int n = Integer.parseInt(v.substring(5));
                    Integer prev = seen.put(n, (int) r.offset());
                    if (prev != null) {
                        problems.add("DUPLICATE " + v + " at " + r.partition() + "@" + prev + " and @" + r.offset()
                                + (acked.containsKey(n) ? " (acked)" : " (failed send: " + failed.get(n) + ")"));
                    }
                    if (n % CRASH_PARTITIONS != r.partition()) {
                        problems.add(v + " in partition " + r.partition());
                    }
                    if (n <= last) {
                        problems.add("out of order in partition " + r.partition() + ": " + v + " after idem-" + last);
                    }
                    last = Math.max(last, n);
                    if (!acked.containsKey(n) && !failed.containsKey(n)) {
                        problems.add(v + " was read but never sent");
                    }
                }
            }
            for (Map.Entry<Integer, RecordMetadata> e : acked.entrySet()) {
                int n = e.getKey();
                RecordMetadata md = e.getValue();
                Integer at = seen.get(n);
                if (at == null) {
                    problems.add("LOST acked idem-" + n + " (acked at " + md.partition() + "@" + md.offset() + ")");
                } else if (md.partition() != n % CRASH_PARTITIONS || md.offset() != at) {
                    problems.add("idem-" + n + " acked at " + md.partition() + "@" + md.offset()
                            + " but read at offset " + at);
                }
            }
            // Evidence (informational; it depends on timing): records that were in the log when the
            // broker was killed but not yet acknowledged. The client cannot tell them from lost
            // ones, so it sent them again; the broker must have answered with the original offset.
            List<String> inFlight = new ArrayList<>();
            for (int k = 0; k < recoveredEnds.size(); k++) {
                Set<Integer> before = ackedBeforeCrash.get(k);
                Map<Integer, Long> ends = recoveredEnds.get(k);
                int n = 0;
                for (Map.Entry<Integer, List<ConsumerRecord<byte[], byte[]>>> e : read.entrySet()) {
                    long end = ends.getOrDefault(e.getKey(), -1L);
                    for (ConsumerRecord<byte[], byte[]> r : e.getValue()) {
                        String v = str(r.value());
                        if (r.offset() < end && v != null && v.startsWith("idem-")
                                && !before.contains(Integer.parseInt(v.substring(5)))) {
                            n++;
                        }
                    }
                }
                inFlight.add("crash " + (k + 1) + ": log ends " + ends + ", " + n + " appended but unacknowledged");
            }
            System.out.println("[idempotentProducerSurvivesKill9] " + inFlight);
            if (!problems.isEmpty()) {
                fail(problems.size() + " problems (first 30): " + problems.subList(0, Math.min(30, problems.size()))
                        + "\n" + phases + crashy.diagnostics());
            }
            // the client's defaults retry within 120 s; three short outages must not fail a send
            assertTrue(failed.isEmpty(), failed.size() + " sends failed: " + sample(failed));
        }
    }

    /** Partition -> log end from the broker's "recovered partition log" lines (best effort). */
    private static Map<Integer, Long> recoveredLogEnds(String brokerLog, String topic) {
        Map<Integer, Long> ends = new TreeMap<>();
        Matcher m = Pattern.compile("dir=\\S*/" + Pattern.quote(topic) + "-(\\d+) .*?log_end=(\\d+)").matcher(brokerLog);
        while (m.find()) {
            ends.put(Integer.parseInt(m.group(1)), Long.parseLong(m.group(2)));
        }
        return ends;
    }

    private static String sample(Map<Integer, String> failed) {
        return failed.entrySet().stream().limit(5).map(e -> e.getKey() + "=" + e.getValue())
                .collect(Collectors.joining(", ", "[", failed.size() > 5 ? ", ...]" : "]"));
    }

    // ------------------------------------------------------------------ (b) read-process-write

    private static final int RPW_PARTITIONS = 3;
    private static final int RPW_RECORDS = 300;

    private static String transform(String in) {
        return "out(" + in + ")";
    }

    /**
     * Consume-transform-produce: a group member reads topic A (read_committed), a transactional
     * producer writes each record transformed to the same partition of B and commits the
     * consumer's offsets in the same transaction (sendOffsetsToTransaction with the consumer's
     * group metadata). Every third transaction is aborted; the consumer then seeks back to the
     * group's committed offsets and the batch is redone in the next transaction.
     */
    @ParameterizedTest(name = "group.protocol={0}")
    @ValueSource(strings = {"classic", "consumer"})
    void readProcessWriteWithAborts(String protocol) throws Exception {
        String in = "rpw-in-" + protocol;
        String out = "rpw-out-" + protocol;
        String group = "rpw-group-" + protocol;
        createTopic(admin, in, RPW_PARTITIONS);
        createTopic(admin, out, RPW_PARTITIONS);

        // the input: plain (idempotent, non-transactional) records, 100 per partition
        List<String> inputs = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> p = Clients.producer(broker, Map.of())) {
            List<Future<RecordMetadata>> fs = new ArrayList<>();
            for (int i = 0; i < RPW_RECORDS; i++) {
                String v = "in-" + i;
                inputs.add(v);
                fs.add(p.send(new ProducerRecord<>(in, i % RPW_PARTITIONS, bytes("k" + i), bytes(v))));
            }
            for (Future<RecordMetadata> f : fs) {
                f.get(30, TimeUnit.SECONDS);
            }
        }
        List<TopicPartition> inTps = partitions(in, RPW_PARTITIONS);

        Map<String, Object> cfg = new HashMap<>();
        cfg.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        cfg.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, protocol);
        cfg.put(ConsumerConfig.CLIENT_ID_CONFIG, "rpw-" + protocol);
        cfg.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        cfg.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        cfg.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 20);
        if (protocol.equals("classic")) {
            cfg.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 6_000);
            cfg.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, 1000);
        }

        List<String> abortedOutputs = new ArrayList<>();
        List<String> log = new ArrayList<>();
        int committedTxns = 0;
        int abortedTxns = 0;
        Map<TopicPartition, Long> endOfIn;
        try (KafkaConsumer<byte[], byte[]> consumer = Clients.consumer(broker, cfg);
             KafkaProducer<byte[], byte[]> producer = txnProducer(broker, "rpw-txn-" + protocol, "rpw-producer-" + protocol)) {
            producer.initTransactions();
            consumer.subscribe(List.of(in));
            endOfIn = consumer.endOffsets(inTps, Duration.ofSeconds(30));
            Map<TopicPartition, Long> committed = new HashMap<>();
            int txn = 0;
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(90);
            for (int iter = 0; iter < 1000 && System.nanoTime() < deadline; iter++) {
                boolean finished = inTps.stream().allMatch(tp -> endOfIn.get(tp).equals(committed.get(tp)));
                if (finished) {
                    break;
                }
                ConsumerRecords<byte[], byte[]> recs = consumer.poll(Duration.ofMillis(500));
                if (recs.isEmpty()) {
                    continue;
                }
                txn++;
                boolean abort = txn % 3 == 0;
                producer.beginTransaction();
                Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
                List<String> batch = new ArrayList<>();
                for (ConsumerRecord<byte[], byte[]> r : recs) {
                    String v = transform(str(r.value()));
                    batch.add(v);
                    producer.send(new ProducerRecord<>(out, r.partition(), r.key(), bytes(v)));
                    offsets.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
                }
                producer.sendOffsetsToTransaction(offsets, consumer.groupMetadata());
                if (abort) {
                    // abortTransaction drops batches the client has not sent yet; flush first so
                    // every aborted record is really in B's log (read_uncommitted must see it)
                    producer.flush();
                    producer.abortTransaction();
                    abortedTxns++;
                    abortedOutputs.addAll(batch);
                    log.add("txn " + txn + " ABORT " + batch.size() + " " + offsets);
                    // redo the batch: back to what the group has committed
                    Set<TopicPartition> assigned = consumer.assignment();
                    Map<TopicPartition, OffsetAndMetadata> c = consumer.committed(assigned, Duration.ofSeconds(30));
                    for (TopicPartition tp : assigned) {
                        OffsetAndMetadata om = c.get(tp);
                        Long mine = committed.get(tp);
                        assertEquals(mine, om == null ? null : om.offset(),
                                "group's committed offset of " + tp + " after aborting txn " + txn + " (" + log + ")"
                                        + broker.diagnostics());
                        if (om == null) {
                            consumer.seekToBeginning(List.of(tp));
                        } else {
                            consumer.seek(tp, om.offset());
                        }
                    }
                } else {
                    producer.commitTransaction();
                    committedTxns++;
                    for (Map.Entry<TopicPartition, OffsetAndMetadata> e : offsets.entrySet()) {
                        committed.put(e.getKey(), e.getValue().offset());
                    }
                    log.add("txn " + txn + " COMMIT " + batch.size() + " " + offsets);
                }
            }
            boolean finished = inTps.stream().allMatch(tp -> endOfIn.get(tp).equals(committed.get(tp)));
            assertTrue(finished, "loop did not consume all of " + in + ": committed " + committed + ", end " + endOfIn
                    + "\n" + log + broker.diagnostics());
        }
        System.out.println("[readProcessWriteWithAborts " + protocol + "] " + committedTxns + " committed, "
                + abortedTxns + " aborted transactions; " + abortedOutputs.size() + " aborted records");
        assertTrue(abortedTxns >= 1, "no transaction was aborted: " + log);

        List<String> expected = inputs.stream().map(TransactionsTest::transform).collect(Collectors.toList());

        // read_committed: exactly the transformed input, once each, in input order per partition
        Map<Integer, List<ConsumerRecord<byte[], byte[]>>> rc = readAll(broker, out, RPW_PARTITIONS, "read_committed");
        assertEquals(multiset(expected), multiset(values(rc)),
                "read_committed view of " + out + " (value -> count)" + broker.diagnostics());
        for (Map.Entry<Integer, List<ConsumerRecord<byte[], byte[]>>> e : rc.entrySet()) {
            List<String> got = e.getValue().stream().map(r -> str(r.value())).collect(Collectors.toList());
            int p = e.getKey();
            List<String> want = IntStream.range(0, RPW_RECORDS).filter(i -> i % RPW_PARTITIONS == p)
                    .mapToObj(i -> transform("in-" + i)).collect(Collectors.toList());
            assertEquals(want, got, "read_committed order in " + out + "-" + p);
        }

        // read_uncommitted: the committed ones plus every aborted one
        Map<Integer, List<ConsumerRecord<byte[], byte[]>>> ru = readAll(broker, out, RPW_PARTITIONS, "read_uncommitted");
        List<String> expectedUncommitted = new ArrayList<>(expected);
        expectedUncommitted.addAll(abortedOutputs);
        assertEquals(multiset(expectedUncommitted), multiset(values(ru)),
                "read_uncommitted view of " + out + " (value -> count)" + broker.diagnostics());
        assertTrue(values(ru).size() > values(rc).size(), "read_uncommitted must see the aborted records too");

        // the group's committed offsets on A are A's end offsets
        Map<TopicPartition, OffsetAndMetadata> groupOffsets =
                admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get(30, TimeUnit.SECONDS);
        for (TopicPartition tp : inTps) {
            OffsetAndMetadata om = groupOffsets.get(tp);
            assertNotNull(om, "no committed offset for " + tp + " in " + groupOffsets);
            assertEquals(endOfIn.get(tp).longValue(), om.offset(), "committed offset of " + group + " on " + tp);
        }
    }

    // ------------------------------------------------------------------ (c) zombie fencing

    /**
     * Two producers with the same transactional.id. The first has an open transaction (or is
     * about to start one) when the second calls initTransactions, which bumps the epoch and
     * aborts the first's open transaction. The first's next transactional call fails with
     * ProducerFencedException or InvalidProducerEpochException; a read_committed reader sees only
     * the second producer's committed records, and nothing the zombie sent after the fence is
     * in the log at all.
     *
     * @param when what the zombie does after the fence: "commit" its open transaction, "send"
     *             one more record into it and then commit, or "begin" a new transaction
     */
    @ParameterizedTest(name = "zombie {0}")
    @ValueSource(strings = {"commit", "send", "begin"})
    void zombieProducerIsFenced(String when) throws Exception {
        String topic = "zombie-" + when;
        String txnId = "zombie-txn-" + when;
        int nParts = 2;
        createTopic(admin, topic, nParts);

        List<String> zombieBefore = new ArrayList<>();
        Throwable fenced = null;
        String fencedAt = null;
        try (KafkaProducer<byte[], byte[]> zombie = txnProducer(broker, txnId, "zombie-1-" + when)) {
            zombie.initTransactions();
            if (!when.equals("begin")) {
                zombie.beginTransaction();
                for (int i = 0; i < 6; i++) {
                    String v = "zombie-open-" + i;
                    zombieBefore.add(v);
                    zombie.send(new ProducerRecord<>(topic, i % nParts, null, bytes(v)));
                }
                zombie.flush(); // the records are in the log, in an open transaction
            }

            try (KafkaProducer<byte[], byte[]> second = txnProducer(broker, txnId, "zombie-2-" + when)) {
                second.initTransactions(); // fences the zombie, aborts its open transaction

                try {
                    if (when.equals("begin")) {
                        zombie.beginTransaction();
                    }
                    if (!when.equals("commit")) {
                        Future<RecordMetadata> f = zombie.send(new ProducerRecord<>(topic, 0, null, bytes("zombie-after-fence")));
                        try {
                            f.get(30, TimeUnit.SECONDS);
                            fencedAt = "send() succeeded";
                        } catch (ExecutionException e) {
                            fenced = e.getCause();
                            fencedAt = "send";
                        }
                    }
                    zombie.commitTransaction();
                    fail("the zombie's commitTransaction succeeded after the second producer's initTransactions"
                            + (fencedAt == null ? "" : " (its send: " + fencedAt + ", " + fenced + ")")
                            + broker.diagnostics());
                } catch (org.apache.kafka.common.KafkaException e) {
                    if (fenced == null) {
                        fenced = e;
                        fencedAt = "commitTransaction";
                    }
                }
                assertNotNull(fencedCause(fenced), "the zombie's " + fencedAt + " failed with " + fenced
                        + ", expected ProducerFencedException or InvalidProducerEpochException" + broker.diagnostics());
                System.out.println("[zombieProducerIsFenced " + when + "] zombie's " + fencedAt + " failed with "
                        + fenced + " (fenced: " + fencedCause(fenced) + ")");

                // the zombie is done for: a further transaction fails as well
                try {
                    zombie.beginTransaction();
                    zombie.send(new ProducerRecord<>(topic, 1, null, bytes("zombie-again")));
                    zombie.commitTransaction();
                    fail("a fenced producer committed a transaction" + broker.diagnostics());
                } catch (org.apache.kafka.common.KafkaException e) {
                    // expected: fatal state
                }

                second.beginTransaction();
                for (int i = 0; i < 6; i++) {
                    second.send(new ProducerRecord<>(topic, i % nParts, null, bytes("second-" + i)));
                }
                second.commitTransaction();
            }
        }

        List<String> expected = IntStream.range(0, 6).mapToObj(i -> "second-" + i).collect(Collectors.toList());
        Map<Integer, List<ConsumerRecord<byte[], byte[]>>> rc = readAll(broker, topic, nParts, "read_committed");
        assertEquals(multiset(expected), multiset(values(rc)), "read_committed view of " + topic + broker.diagnostics());

        // read_uncommitted also sees the zombie's aborted records, but nothing sent after the fence
        List<String> all = new ArrayList<>(expected);
        all.addAll(zombieBefore);
        Map<Integer, List<ConsumerRecord<byte[], byte[]>>> ru = readAll(broker, topic, nParts, "read_uncommitted");
        assertEquals(multiset(all), multiset(values(ru)), "read_uncommitted view of " + topic + broker.diagnostics());
    }
}
