package dev.shardline.e2e;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.File;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.regex.Pattern;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * Kafka's own command-line tools (kafka-topics, kafka-console-producer, kafka-console-consumer),
 * each run as `java -cp <test classpath> <main class>` against the broker.
 */
class CliToolsTest {
    private static final String TOPIC_COMMAND = Tools.TOPIC_COMMAND;
    private static final String CONSOLE_PRODUCER = "org.apache.kafka.tools.ConsoleProducer";
    private static final String CONSOLE_CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer";

    private static ShardlineBroker broker;
    private static Admin admin;

    @BeforeAll
    static void startBroker() throws Exception {
        broker = ShardlineBroker.start("CliToolsTest");
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

    record ToolResult(String command, int exit, String stdout, String stderr) {
        String describe() {
            return "\n$ " + command + "\nexit " + exit + "\n--- stdout ---\n" + stdout + "\n--- stderr ---\n" + stderr
                    + broker.diagnostics();
        }

        List<String> stdoutLines() {
            return stdout.lines().map(String::strip).filter(l -> !l.isEmpty()).collect(Collectors.toList());
        }
    }

    /** Runs a Kafka tool in its own JVM with the test classpath (see {@link Tools#run}). */
    private static ToolResult runTool(String mainClass, String stdin, String... args) throws Exception {
        Tools.Result r = Tools.run(mainClass, stdin, args);
        return new ToolResult(r.command(), r.exit(), r.stdout(), r.stderr());
    }

    private static ToolResult topics(String... args) throws Exception {
        List<String> a = new ArrayList<>(List.of("--bootstrap-server", broker.bootstrap()));
        a.addAll(Arrays.asList(args));
        return runTool(TOPIC_COMMAND, null, a.toArray(String[]::new));
    }

    @Test
    void kafkaMetadataQuorumDescribesTheQuorum() throws Exception {
        String quorumCommand = Tools.METADATA_QUORUM_COMMAND;
        ToolResult status = runTool(quorumCommand, null, "--bootstrap-server", broker.bootstrap(), "describe", "--status");
        assertEquals(0, status.exit(), "kafka-metadata-quorum describe --status" + status.describe());
        String clusterId = admin.describeCluster().clusterId().get(30, TimeUnit.SECONDS);
        Map<String, String> fields = status.stdoutLines().stream()
                .filter(l -> l.contains(":"))
                .collect(Collectors.toMap(l -> l.substring(0, l.indexOf(':')).strip(),
                        l -> l.substring(l.indexOf(':') + 1).strip(), (a, b) -> a));
        assertEquals(clusterId, fields.get("ClusterId"), "cluster id" + status.describe());
        int leader = admin.describeMetadataQuorum().quorumInfo().get(30, TimeUnit.SECONDS).leaderId();
        assertEquals(String.valueOf(leader), fields.get("LeaderId"), "leader" + status.describe());
        assertTrue(Long.parseLong(fields.get("HighWatermark")) > 0, "a committed metadata log" + status.describe());
        assertEquals("0", fields.get("MaxFollowerLag"), "one voter, no lag" + status.describe());

        ToolResult replication = runTool(quorumCommand, null, "--bootstrap-server", broker.bootstrap(),
                "describe", "--replication");
        assertEquals(0, replication.exit(), "kafka-metadata-quorum describe --replication" + replication.describe());
        assertTrue(replication.stdoutLines().stream().anyMatch(l -> l.startsWith(leader + " ") && l.contains("Leader")),
                "the leader's row" + replication.describe());
    }

    @Test
    void kafkaTopicsCreateAndList() throws Exception {
        String topic = "cli-created";
        ToolResult create = topics("--create", "--topic", topic, "--partitions", "2", "--replication-factor", "1");
        assertEquals(0, create.exit(), "kafka-topics --create" + create.describe());
        assertTrue(create.stdoutLines().contains("Created topic " + topic + "."), "kafka-topics --create output" + create.describe());

        TopicDescription td = admin.describeTopics(List.of(topic)).allTopicNames().get(30, TimeUnit.SECONDS).get(topic);
        assertEquals(2, td.partitions().size(), "partitions of the topic kafka-topics created: " + td);

        ToolResult list = topics("--list");
        assertEquals(0, list.exit(), "kafka-topics --list" + list.describe());
        assertTrue(list.stdoutLines().contains(topic), "kafka-topics --list output" + list.describe());

        // creating it again fails with "already exists"
        ToolResult again = topics("--create", "--topic", topic, "--partitions", "2", "--replication-factor", "1");
        assertNotEquals(0, again.exit(), "second kafka-topics --create should fail" + again.describe());
        assertTrue((again.stdout() + again.stderr()).contains("already exists"), "second kafka-topics --create output" + again.describe());

        // --if-not-exists makes it a no-op
        ToolResult ifNotExists = topics("--create", "--if-not-exists", "--topic", topic, "--partitions", "2");
        assertEquals(0, ifNotExists.exit(), "kafka-topics --create --if-not-exists" + ifNotExists.describe());
    }

    @Test
    void kafkaLeaderElectionFindsTheLeadersAlreadyPreferred() throws Exception {
        String topic = "cli-elected";
        admin.createTopics(List.of(new NewTopic(topic, 2, (short) 1))).all().get(30, TimeUnit.SECONDS);
        for (String type : List.of("PREFERRED", "UNCLEAN")) {
            ToolResult r = runTool("org.apache.kafka.tools.LeaderElectionCommand", null,
                    "--bootstrap-server", broker.bootstrap(), "--election-type", type, "--topic", topic, "--partition", "1");
            assertEquals(0, r.exit(), "kafka-leader-election " + type + r.describe());
            assertTrue(r.stdout().contains("Valid replica already elected for partitions " + topic + "-1"),
                    "kafka-leader-election " + type + " output" + r.describe());
        }
        ToolResult unknown = runTool("org.apache.kafka.tools.LeaderElectionCommand", null,
                "--bootstrap-server", broker.bootstrap(), "--election-type", "PREFERRED", "--topic", topic, "--partition", "7");
        assertNotEquals(0, unknown.exit(), "an election for a partition that does not exist fails" + unknown.describe());
        assertTrue((unknown.stdout() + unknown.stderr()).contains(topic + "-7"), "names the partition" + unknown.describe());
    }

    @Test
    void kafkaTopicsDescribe() throws Exception {
        String topic = "cli-described";
        admin.createTopics(List.of(new NewTopic(topic, 5, (short) 1))).all().get(30, TimeUnit.SECONDS);
        // Two partitions an answer: the tool pages through DescribeTopicPartitions.
        ToolResult d = topics("--describe", "--topic", topic, "--partition-size-limit-per-response", "2");
        assertEquals(0, d.exit(), "kafka-topics --describe" + d.describe());
        String out = d.stdout();
        assertTrue(Pattern.compile("Topic: " + topic + "\\s+TopicId: \\S+\\s+PartitionCount: 5\\s+ReplicationFactor: 1").matcher(out).find(),
                "kafka-topics --describe summary line" + d.describe());
        assertEquals(5, d.stdoutLines().stream().filter(l -> l.contains("Partition: ")).count(),
                "one line a partition" + d.describe());
        for (int p = 0; p < 5; p++) {
            assertTrue(Pattern.compile("Topic: " + topic + "\\s+Partition: " + p + "\\s+Leader: 0\\s+Replicas: 0\\s+Isr: 0").matcher(out).find(),
                    "kafka-topics --describe line of partition " + p + d.describe());
        }
    }

    @Test
    void consoleProducerThenConsoleConsumer() throws Exception {
        String topic = "cli-console";
        admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get(30, TimeUnit.SECONDS);
        int n = 20;
        StringBuilder in = new StringBuilder();
        for (int i = 0; i < n; i++) {
            // parse.headers + parse.key: "h1:v1,h2:v2<TAB>key<TAB>value"
            in.append("src:console,seq:").append(i).append('\t').append("key-").append(i).append('\t')
                    .append("value ").append(i).append(" with spaces").append('\n');
        }
        ToolResult prod = runTool(CONSOLE_PRODUCER, in.toString(),
                "--bootstrap-server", broker.bootstrap(), "--topic", topic,
                "--producer-property", "enable.idempotence=false",
                "--producer-property", "acks=all",
                "--property", "parse.key=true",
                "--property", "parse.headers=true");
        assertEquals(0, prod.exit(), "kafka-console-producer" + prod.describe());

        // what the console producer wrote, read with the Java consumer
        TopicPartition tp = new TopicPartition(topic, 0);
        try (KafkaConsumer<byte[], byte[]> c = Clients.consumer(broker, Map.of())) {
            assertEquals((long) n, c.endOffsets(List.of(tp), Duration.ofSeconds(30)).get(tp),
                    "end offset after kafka-console-producer" + prod.describe());
            c.assign(List.of(tp));
            c.seekToBeginning(List.of(tp));
            List<ConsumerRecord<byte[], byte[]>> rs = new ArrayList<>();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (rs.size() < n && System.nanoTime() < deadline) {
                ConsumerRecords<byte[], byte[]> b = c.poll(Duration.ofMillis(500));
                b.forEach(rs::add);
            }
            assertEquals(n, rs.size(), "records read back" + broker.diagnostics());
            for (int i = 0; i < n; i++) {
                ConsumerRecord<byte[], byte[]> r = rs.get(i);
                assertEquals(i, r.offset());
                assertEquals("key-" + i, new String(r.key(), StandardCharsets.UTF_8));
                assertEquals("value " + i + " with spaces", new String(r.value(), StandardCharsets.UTF_8));
                Header[] hs = r.headers().toArray();
                assertEquals(2, hs.length, "headers of offset " + i);
                assertEquals("src", hs[0].key());
                assertArrayEquals("console".getBytes(StandardCharsets.UTF_8), hs[0].value());
                assertEquals("seq", hs[1].key());
                assertArrayEquals(String.valueOf(i).getBytes(StandardCharsets.UTF_8), hs[1].value());
            }
        }

        // kafka-console-consumer: partition 0 from the earliest offset, all n messages
        ToolResult cons = runTool(CONSOLE_CONSUMER, null,
                "--bootstrap-server", broker.bootstrap(), "--topic", topic,
                "--partition", "0", "--offset", "earliest", "--max-messages", String.valueOf(n),
                "--timeout-ms", "30000",
                "--property", "print.key=true",
                "--property", "print.offset=true",
                "--property", "print.headers=true",
                "--property", "key.separator=|");
        assertEquals(0, cons.exit(), "kafka-console-consumer" + cons.describe());
        List<String> lines = cons.stdoutLines();
        assertEquals(n, lines.size(), "kafka-console-consumer printed lines" + cons.describe());
        for (int i = 0; i < n; i++) {
            String expected = "Offset:" + i + "|src:console,seq:" + i + "|key-" + i + "|value " + i + " with spaces";
            assertEquals(expected, lines.get(i), "kafka-console-consumer line " + i + cons.describe());
        }
        assertTrue(cons.stderr().contains("Processed a total of " + n + " messages"), "kafka-console-consumer summary" + cons.describe());

        // --max-messages smaller than the partition, and a later --offset
        ToolResult part = runTool(CONSOLE_CONSUMER, null,
                "--bootstrap-server", broker.bootstrap(), "--topic", topic,
                "--partition", "0", "--offset", "5", "--max-messages", "3", "--timeout-ms", "30000");
        assertEquals(0, part.exit(), "kafka-console-consumer --offset 5 --max-messages 3" + part.describe());
        assertEquals(List.of("value 5 with spaces", "value 6 with spaces", "value 7 with spaces"), part.stdoutLines(),
                "kafka-console-consumer --offset 5 --max-messages 3" + part.describe());
        assertTrue(part.stderr().contains("Processed a total of 3 messages"), "summary" + part.describe());
    }

    @Test
    void consoleConsumerReadsWhatKafkaProducerWrote() throws Exception {
        String topic = "cli-from-java";
        admin.createTopics(List.of(new NewTopic(topic, 2, (short) 1))).all().get(30, TimeUnit.SECONDS);
        int n = 10;
        long baseTs = System.currentTimeMillis() - 60_000L;
        try (KafkaProducer<byte[], byte[]> p = Clients.producer(broker, Map.of("compression.type", "lz4"))) {
            for (int i = 0; i < n; i++) {
                p.send(new ProducerRecord<>(topic, 0, baseTs + i, ("k" + i).getBytes(StandardCharsets.UTF_8),
                        ("v" + i).getBytes(StandardCharsets.UTF_8), List.of(new RecordHeader("h", "x".getBytes(StandardCharsets.UTF_8)))))
                        .get(30, TimeUnit.SECONDS);
            }
        }
        ToolResult cons = runTool(CONSOLE_CONSUMER, null,
                "--bootstrap-server", broker.bootstrap(), "--topic", topic,
                "--partition", "0", "--offset", "earliest", "--max-messages", String.valueOf(n),
                "--timeout-ms", "30000",
                "--property", "print.timestamp=true",
                "--property", "print.key=true",
                "--property", "print.partition=true");
        assertEquals(0, cons.exit(), "kafka-console-consumer" + cons.describe());
        List<String> lines = cons.stdoutLines();
        assertEquals(n, lines.size(), "lines" + cons.describe());
        for (int i = 0; i < n; i++) {
            assertEquals("CreateTime:" + (baseTs + i) + "\tPartition:0\tk" + i + "\tv" + i,
                    lines.get(i), "line " + i + cons.describe());
        }
    }

    static {
        // fail early with a clear message if the classpath cannot be forwarded
        String cp = System.getProperty("surefire.test.class.path", System.getProperty("java.class.path", ""));
        if (!cp.contains("kafka-tools") && !cp.contains(File.separator + "kafka" + File.separator)) {
            System.err.println("WARNING: test classpath does not seem to contain kafka-tools: " + cp);
        }
    }
}
