package dev.shardline.e2e;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

class AdminClientTest {
    private static ShardlineBroker broker;
    private static Admin admin;

    @BeforeAll
    static void startBroker() throws Exception {
        broker = ShardlineBroker.start("AdminClientTest");
        admin = Clients.admin(broker);
    }

    @AfterAll
    static void stopBroker() throws Exception {
        try {
            if (admin != null) {
                admin.close(java.time.Duration.ofSeconds(10));
            }
        } finally {
            if (broker != null) {
                broker.close();
            }
        }
    }

    private static <T> T get(org.apache.kafka.common.KafkaFuture<T> f) throws Exception {
        try {
            return f.get(30, TimeUnit.SECONDS);
        } catch (ExecutionException | java.util.concurrent.TimeoutException e) {
            throw new AssertionError("admin call failed: " + e + broker.diagnostics(), e);
        }
    }

    @Test
    void createListDescribeRecreateDelete() throws Exception {
        String topic = "admin-topic";

        // createTopics with 3 partitions, replication factor 1
        get(admin.createTopics(List.of(new NewTopic(topic, 3, (short) 1))).all());

        // listTopics
        Set<String> names = get(admin.listTopics().names());
        assertTrue(names.contains(topic), "listTopics " + names + " lacks " + topic + broker.diagnostics());

        // describeTopics: 3 partitions, each with this broker as leader
        Map<String, TopicDescription> described = get(admin.describeTopics(List.of(topic)).allTopicNames());
        TopicDescription td = described.get(topic);
        assertNotNull(td, "describeTopics returned " + described);
        assertEquals(topic, td.name());
        assertFalse(td.isInternal());
        assertEquals(3, td.partitions().size(), "partitions: " + td.partitions());
        List<TopicPartitionInfo> parts = td.partitions().stream()
                .sorted(Comparator.comparingInt(TopicPartitionInfo::partition)).toList();
        for (int i = 0; i < 3; i++) {
            TopicPartitionInfo p = parts.get(i);
            assertEquals(i, p.partition());
            Node leader = p.leader();
            assertNotNull(leader, "partition " + i + " has no leader: " + p);
            assertEquals(0, leader.id(), "leader of partition " + i);
            assertEquals("127.0.0.1", leader.host(), "leader host of partition " + i);
            assertEquals(broker.port(), leader.port(), "leader port of partition " + i);
            assertEquals(1, p.replicas().size(), "replicas of partition " + i + ": " + p.replicas());
            assertEquals(0, p.replicas().get(0).id());
            assertEquals(1, p.isr().size(), "isr of partition " + i + ": " + p.isr());
        }

        // createTopics again: TopicExistsException
        ExecutionException again = assertThrows(ExecutionException.class,
                () -> admin.createTopics(List.of(new NewTopic(topic, 3, (short) 1))).all().get(30, TimeUnit.SECONDS));
        assertInstanceOf(TopicExistsException.class, again.getCause(),
                "second createTopics: " + again.getCause() + broker.diagnostics());

        // deleteTopics, then the topic is gone
        get(admin.deleteTopics(List.of(topic)).all());
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(15);
        Set<String> after;
        do {
            after = get(admin.listTopics().names());
            if (!after.contains(topic)) {
                break;
            }
            Thread.sleep(200);
        } while (System.nanoTime() < deadline);
        assertFalse(after.contains(topic), "topic still listed after deleteTopics: " + after + broker.diagnostics());

        ExecutionException gone = assertThrows(ExecutionException.class,
                () -> admin.describeTopics(List.of(topic)).allTopicNames().get(30, TimeUnit.SECONDS));
        assertInstanceOf(UnknownTopicOrPartitionException.class, gone.getCause(),
                "describeTopics of a deleted topic: " + gone.getCause() + broker.diagnostics());

        // and the name can be used again
        get(admin.createTopics(List.of(new NewTopic(topic, 2, (short) 1))).all());
        TopicDescription recreated = get(admin.describeTopics(List.of(topic)).allTopicNames()).get(topic);
        assertEquals(2, recreated.partitions().size(), "recreated topic: " + recreated);
        assertTrue(broker.isAlive(), "broker died" + broker.diagnostics());
        Optional.ofNullable(td.topicId()).ifPresent(id ->
                assertFalse(id.equals(recreated.topicId()), "recreated topic kept the old topic id " + id));
    }

    @Test
    void createTopicsWithInvalidArgumentsFails() throws Exception {
        ExecutionException badPartitions = assertThrows(ExecutionException.class,
                () -> admin.createTopics(List.of(new NewTopic("admin-bad", 0, (short) 1))).all().get(30, TimeUnit.SECONDS));
        assertInstanceOf(org.apache.kafka.common.errors.InvalidPartitionsException.class, badPartitions.getCause(),
                "createTopics with 0 partitions: " + badPartitions.getCause() + broker.diagnostics());
        ExecutionException deleteMissing = assertThrows(ExecutionException.class,
                () -> admin.deleteTopics(List.of("admin-no-such-topic")).all().get(30, TimeUnit.SECONDS));
        assertInstanceOf(UnknownTopicOrPartitionException.class, deleteMissing.getCause(),
                "deleteTopics of a missing topic: " + deleteMissing.getCause() + broker.diagnostics());
    }
}
