package dev.shardline.e2e;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.QuorumInfo;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * A 3-node cluster (127.0.0.1–3, each node broker and controller, one shard) with the Java
 * client and Kafka's tools: {@code kafka-topics --create --partitions 12} through one node
 * spreads the partitions over all three, {@code kafka-topics --describe} and
 * {@code kafka-metadata-quorum describe --status} show them and the quorum, a producer
 * bootstrapped at one node and a consumer at another reach every partition, and both follow a
 * broker's kill -9 (its partitions offline, the others served) and its return (its partitions
 * served again, with their data).
 */
class ClusterTest {
    private static final int PARTITIONS = 12;
    private static final String TOPIC = "java-spread";
    private static final List<ShardlineBroker> nodes = new ArrayList<>();

    @BeforeAll
    static void startCluster() throws Exception {
        List<String> voters = new ArrayList<>();
        for (int id = 1; id <= 3; id++) {
            voters.add(id + "@127.0.0." + id + ":" + ShardlineBroker.freePort("127.0.0." + id));
        }
        String quorum = String.join(",", voters);
        ExecutorService starts = Executors.newFixedThreadPool(3);
        try {
            List<Future<ShardlineBroker>> started = new ArrayList<>();
            for (int id = 1; id <= 3; id++) {
                int node = id;
                started.add(starts.submit(() -> ShardlineBroker.startNode("ClusterTest-node" + node,
                        "127.0.0." + node, "node_id=" + node, "controller_quorum_voters=" + quorum)));
            }
            for (Future<ShardlineBroker> f : started) {
                nodes.add(f.get(90, TimeUnit.SECONDS));
            }
        } finally {
            starts.shutdownNow();
        }
    }

    @AfterAll
    static void stopCluster() throws Exception {
        for (ShardlineBroker node : nodes) {
            node.close();
        }
    }

    private static ShardlineBroker node(int id) {
        return nodes.get(id - 1);
    }

    private static String diagnostics() {
        return nodes.stream().map(ShardlineBroker::diagnostics).collect(Collectors.joining());
    }

    /** Waits (bounded) until {@code check} holds. */
    private static void waitUntil(String what, Duration limit, BooleanSupplier check) throws InterruptedException {
        long deadline = System.nanoTime() + limit.toNanos();
        while (!check.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError(what + ": not within " + limit + diagnostics());
            }
            Thread.sleep(100);
        }
    }

    /** Each partition's leader id (-1: none) as {@code admin} describes the topic, or null if it cannot. */
    private static List<Integer> leaders(Admin admin) {
        try {
            TopicDescription td = admin.describeTopics(List.of(TOPIC)).allTopicNames().get(15, TimeUnit.SECONDS).get(TOPIC);
            List<Integer> leaders = new ArrayList<>();
            for (TopicPartitionInfo p : td.partitions()) {
                Node leader = p.leader();
                leaders.add(leader == null || leader.isEmpty() ? -1 : leader.id());
            }
            return leaders;
        } catch (Exception e) {
            return null;
        }
    }

    private static RecordMetadata send(KafkaProducer<byte[], byte[]> producer, int partition, String value) throws Exception {
        return producer.send(new ProducerRecord<>(TOPIC, partition, null, value.getBytes())).get(90, TimeUnit.SECONDS);
    }

    /** Polls until {@code got} holds {@code want} records (bounded); (partition, offset) → value. */
    private static void readUntil(KafkaConsumer<byte[], byte[]> consumer, Map<String, String> got, int want) {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(90);
        while (got.size() < want) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("read " + got.size() + " of " + want + ": " + got + diagnostics());
            }
            for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(200))) {
                got.put(r.partition() + "@" + r.offset(), new String(r.value()));
            }
        }
    }

    @Test
    void javaClientsAndToolsFollowTheCluster() throws Exception {
        Tools.Result create = Tools.run(Tools.TOPIC_COMMAND, null, "--bootstrap-server", node(2).bootstrap(),
                "--create", "--topic", TOPIC, "--partitions", String.valueOf(PARTITIONS), "--replication-factor", "1");
        assertEquals(0, create.exit(), "kafka-topics --create" + create.describe() + diagnostics());

        try (Admin admin = Clients.admin(node(3))) {
            waitUntil("every partition has a leader", Duration.ofSeconds(20), () -> {
                List<Integer> l = leaders(admin);
                return l != null && l.size() == PARTITIONS && !l.contains(-1);
            });
            List<Integer> placed = leaders(admin);
            for (int broker = 1; broker <= 3; broker++) {
                int b = broker;
                assertEquals(PARTITIONS / 3, placed.stream().filter(l -> l == b).count(), "balanced: " + placed);
            }

            // kafka-topics --describe through another node shows the same leaders.
            Tools.Result described = Tools.run(Tools.TOPIC_COMMAND, null, "--bootstrap-server", node(1).bootstrap(),
                    "--describe", "--topic", TOPIC);
            assertEquals(0, described.exit(), "kafka-topics --describe" + described.describe());
            Map<Integer, Integer> shown = new TreeMap<>();
            Matcher m = Pattern.compile("Partition: (\\d+)\\s+Leader: (-?\\d+)").matcher(described.stdout());
            while (m.find()) {
                shown.put(Integer.parseInt(m.group(1)), Integer.parseInt(m.group(2)));
            }
            assertEquals(placed, new ArrayList<>(shown.values()), "leaders kafka-topics shows" + described.describe());

            // kafka-metadata-quorum describe --status: the leader and three voters.
            QuorumInfo quorum = admin.describeMetadataQuorum().quorumInfo().get(30, TimeUnit.SECONDS);
            assertEquals(Set.of(1, 2, 3), quorum.voters().stream().map(QuorumInfo.ReplicaState::replicaId)
                    .collect(Collectors.toSet()), "voters");
            Tools.Result status = Tools.run(Tools.METADATA_QUORUM_COMMAND, null, "--bootstrap-server",
                    node(2).bootstrap(), "describe", "--status");
            assertEquals(0, status.exit(), "kafka-metadata-quorum describe --status" + status.describe());
            assertTrue(status.stdoutLines().contains("LeaderId:              " + quorum.leaderId())
                    || status.stdout().matches("(?s).*LeaderId:\\s+" + quorum.leaderId() + "\\s.*"),
                    "the leader" + status.describe());

            Map<String, String> want = new TreeMap<>();
            Map<String, String> got = new TreeMap<>();
            try (KafkaProducer<byte[], byte[]> producer = Clients.producer(node(3), Map.of(
                    ProducerConfig.RETRIES_CONFIG, Integer.MAX_VALUE,
                    ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 90_000));
                 KafkaConsumer<byte[], byte[]> consumer = Clients.consumer(node(1), Map.of())) {
                // Through node 3 to every partition; read back through node 1.
                for (int p = 0; p < PARTITIONS; p++) {
                    RecordMetadata md = send(producer, p, "first-" + p);
                    assertEquals(0, md.offset(), "partition " + p);
                    want.put(p + "@0", "first-" + p);
                }
                List<TopicPartition> all = new ArrayList<>();
                for (int p = 0; p < PARTITIONS; p++) {
                    all.add(new TopicPartition(TOPIC, p));
                }
                consumer.assign(all);
                consumer.seekToBeginning(all);
                readUntil(consumer, got, PARTITIONS);
                assertEquals(want, got, "every partition read back through node 1");

                // kill -9 of broker 2: its partitions go offline, the others are served.
                int victim = 2;
                node(victim).kill9();
                waitUntil("the killed broker's partitions show offline", Duration.ofSeconds(30), () -> {
                    List<Integer> l = leaders(admin);
                    if (l == null || l.size() != PARTITIONS) {
                        return false;
                    }
                    for (int p = 0; p < PARTITIONS; p++) {
                        int expected = placed.get(p) == victim ? -1 : placed.get(p);
                        if (l.get(p) != expected) {
                            return false;
                        }
                    }
                    return true;
                });
                for (int p = 0; p < PARTITIONS; p++) {
                    if (placed.get(p) != victim) {
                        assertEquals(1, send(producer, p, "second-" + p).offset(), "partition " + p + diagnostics());
                        want.put(p + "@1", "second-" + p);
                    }
                }
                readUntil(consumer, got, want.size());
                assertEquals(want, got, "the live brokers' partitions while broker 2 is down");

                // It returns: its partitions are served again, with their data.
                node(victim).restartAfterKill();
                waitUntil("the restarted broker leads its partitions again", Duration.ofSeconds(30),
                        () -> placed.equals(leaders(admin)));
                for (int p = 0; p < PARTITIONS; p++) {
                    if (placed.get(p) == victim) {
                        assertEquals(1, send(producer, p, "second-" + p).offset(), "partition " + p + diagnostics());
                        want.put(p + "@1", "second-" + p);
                    }
                }
                readUntil(consumer, got, want.size());
                assertEquals(want, got, "every partition, the returned broker's with its first record");
            }
        }
    }
}
