package dev.shardline.e2e;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.record.TimestampType;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;

class ProducerConsumerTest {
    private static final int PARTITIONS = 3;
    private static final int PER_PARTITION = 60;
    private static final Duration POLL_DEADLINE = Duration.ofSeconds(30);

    private static ShardlineBroker broker;
    private static Admin admin;

    @BeforeAll
    static void startBroker() throws Exception {
        broker = ShardlineBroker.start("ProducerConsumerTest");
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

    /** What was sent: the expected record at (partition, offset). */
    record Sent(int partition, long offset, byte[] key, byte[] value, List<Header> headers, long timestamp) {}

    private static String filler(int i) {
        StringBuilder sb = new StringBuilder();
        int n = (i * 37) % 40;
        for (int j = 0; j < n; j++) {
            sb.append("lorem-ipsum-").append(j % 7).append(' ');
        }
        return sb.toString();
    }

    static List<List<Sent>> buildRecords(String compression, long baseTs) {
        List<List<Sent>> byPartition = new ArrayList<>();
        for (int p = 0; p < PARTITIONS; p++) {
            byPartition.add(new ArrayList<>());
        }
        for (int i = 0; i < PARTITIONS * PER_PARTITION; i++) {
            int p = i % PARTITIONS;
            long offset = i / PARTITIONS;
            byte[] key = (i % 10 == 9) ? null : ("key-" + i).getBytes(StandardCharsets.UTF_8);
            byte[] value;
            if (i == 13) {
                value = null; // tombstone
            } else if (i == 14) {
                value = new byte[0];
            } else {
                value = ("value-" + i + "-" + compression + "-" + filler(i)).getBytes(StandardCharsets.UTF_8);
            }
            List<Header> headers = new ArrayList<>();
            headers.add(new RecordHeader("index", ByteBuffer.allocate(4).putInt(i).array()));
            headers.add(new RecordHeader("compression", compression.getBytes(StandardCharsets.UTF_8)));
            if (i % 7 == 0) {
                headers.add(new RecordHeader("nullable", null));
                headers.add(new RecordHeader("index", "dup".getBytes(StandardCharsets.UTF_8)));
            }
            if (i % 11 == 5) {
                headers.clear(); // some records carry no header at all
            }
            // strictly increasing within a partition, 1 s apart overall
            long ts = baseTs + i * 1000L;
            byPartition.get(p).add(new Sent(p, offset, key, value, headers, ts));
        }
        return byPartition;
    }

    private static String show(byte[] b) {
        return b == null ? "null" : "\"" + new String(b, StandardCharsets.UTF_8) + "\"";
    }

    private static void assertRecord(Sent s, ConsumerRecord<byte[], byte[]> r, String ctx) {
        String where = ctx + " " + r.topic() + "-" + r.partition() + "@" + r.offset();
        assertEquals(s.partition(), r.partition(), where + " partition");
        assertEquals(s.offset(), r.offset(), where + " offset");
        assertArrayEquals(s.key(), r.key(), where + " key: expected " + show(s.key()) + " got " + show(r.key()));
        assertArrayEquals(s.value(), r.value(), where + " value: expected " + show(s.value()) + " got " + show(r.value()));
        assertEquals(s.timestamp(), r.timestamp(), where + " timestamp");
        assertEquals(TimestampType.CREATE_TIME, r.timestampType(), where + " timestamp type");
        Header[] got = r.headers().toArray();
        assertEquals(s.headers().size(), got.length, where + " header count: " + Arrays.toString(got));
        for (int h = 0; h < got.length; h++) {
            assertEquals(s.headers().get(h).key(), got[h].key(), where + " header " + h + " key");
            assertArrayEquals(s.headers().get(h).value(), got[h].value(), where + " header " + h + " value");
        }
    }

    /** Polls until `expected` records arrived (or the deadline), then once more to catch duplicates. */
    private static List<ConsumerRecord<byte[], byte[]>> pollAll(KafkaConsumer<byte[], byte[]> c, int expected) {
        List<ConsumerRecord<byte[], byte[]>> out = new ArrayList<>();
        long deadline = System.nanoTime() + POLL_DEADLINE.toNanos();
        while (out.size() < expected && System.nanoTime() < deadline) {
            ConsumerRecords<byte[], byte[]> batch = c.poll(Duration.ofMillis(500));
            batch.forEach(out::add);
        }
        assertEquals(expected, out.size(), "records received within " + POLL_DEADLINE + broker.diagnostics());
        ConsumerRecords<byte[], byte[]> extra = c.poll(Duration.ofMillis(1000));
        assertEquals(0, extra.count(), "records past the end (duplicates?)");
        return out;
    }

    private static Map<Integer, List<ConsumerRecord<byte[], byte[]>>> byPartition(List<ConsumerRecord<byte[], byte[]>> rs) {
        Map<Integer, List<ConsumerRecord<byte[], byte[]>>> m = new HashMap<>();
        for (ConsumerRecord<byte[], byte[]> r : rs) {
            m.computeIfAbsent(r.partition(), k -> new ArrayList<>()).add(r);
        }
        return m;
    }

    @ParameterizedTest(name = "compression={0}")
    @ValueSource(strings = {"none", "gzip", "snappy", "lz4", "zstd"})
    void produceAndConsumeEveryRecordOnce(String compression) throws Exception {
        roundTrip(compression, null);
    }

    /** A topic whose compression.type differs from the producer's: the broker recompresses, the Java consumer reads it. */
    @ParameterizedTest(name = "producer={0} topic={1}")
    @CsvSource({"zstd,snappy", "none,lz4", "lz4,gzip", "snappy,zstd", "gzip,uncompressed"})
    void aTopicsCompressionTypeIsWhatTheConsumerReads(String compression, String topicCompression) throws Exception {
        roundTrip(compression, topicCompression);
    }

    private void roundTrip(String compression, String topicCompression) throws Exception {
        String topic = "records-" + compression + (topicCompression == null ? "" : "-into-" + topicCompression);
        NewTopic newTopic = new NewTopic(topic, PARTITIONS, (short) 1);
        if (topicCompression != null) {
            newTopic.configs(Map.of("compression.type", topicCompression));
        }
        admin.createTopics(List.of(newTopic)).all().get(30, TimeUnit.SECONDS);
        long baseTs = System.currentTimeMillis() - 3_600_000L;
        List<List<Sent>> expected = buildRecords(compression, baseTs);

        // ---- produce: acks=all, no idempotence, several batches per partition
        Map<String, Object> pcfg = Map.of(
                ProducerConfig.COMPRESSION_TYPE_CONFIG, compression,
                ProducerConfig.LINGER_MS_CONFIG, 20,
                ProducerConfig.BATCH_SIZE_CONFIG, 2048);
        List<Future<RecordMetadata>> futures = new ArrayList<>();
        List<Sent> order = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> producer = Clients.producer(broker, pcfg)) {
            for (int i = 0; i < PARTITIONS * PER_PARTITION; i++) {
                Sent s = expected.get(i % PARTITIONS).get(i / PARTITIONS);
                futures.add(producer.send(new ProducerRecord<>(topic, s.partition(), s.timestamp(), s.key(), s.value(), s.headers())));
                order.add(s);
                if (i == PARTITIONS * PER_PARTITION / 2) {
                    producer.flush(); // a batch boundary in the middle
                }
            }
            producer.flush();
            for (int i = 0; i < futures.size(); i++) {
                RecordMetadata md;
                try {
                    md = futures.get(i).get(30, TimeUnit.SECONDS);
                } catch (ExecutionException e) {
                    throw new AssertionError("send #" + i + " (" + compression + ") failed: " + e.getCause() + broker.diagnostics(), e);
                }
                Sent s = order.get(i);
                assertEquals(s.partition(), md.partition(), "send #" + i + " partition");
                assertEquals(s.offset(), md.offset(), "send #" + i + " offset");
                assertEquals(s.timestamp(), md.timestamp(), "send #" + i + " timestamp");
            }
        }

        List<TopicPartition> tps = new ArrayList<>();
        for (int p = 0; p < PARTITIONS; p++) {
            tps.add(new TopicPartition(topic, p));
        }

        try (KafkaConsumer<byte[], byte[]> consumer = Clients.consumer(broker, Map.of(
                ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 25))) {
            // ---- beginningOffsets / endOffsets
            Map<TopicPartition, Long> begin = consumer.beginningOffsets(tps, Duration.ofSeconds(30));
            Map<TopicPartition, Long> end = consumer.endOffsets(tps, Duration.ofSeconds(30));
            for (TopicPartition tp : tps) {
                assertEquals(0L, begin.get(tp), "beginningOffsets " + tp + broker.diagnostics());
                assertEquals((long) PER_PARTITION, end.get(tp), "endOffsets " + tp + broker.diagnostics());
            }

            // ---- everything from the beginning, exactly once, in order within each partition
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            List<ConsumerRecord<byte[], byte[]>> all = pollAll(consumer, PARTITIONS * PER_PARTITION);
            Map<Integer, List<ConsumerRecord<byte[], byte[]>>> got = byPartition(all);
            for (int p = 0; p < PARTITIONS; p++) {
                List<ConsumerRecord<byte[], byte[]>> rs = got.getOrDefault(p, List.of());
                assertEquals(PER_PARTITION, rs.size(), "records of partition " + p);
                for (int k = 0; k < PER_PARTITION; k++) {
                    assertRecord(expected.get(p).get(k), rs.get(k), compression + " from beginning");
                }
                assertEquals((long) PER_PARTITION, consumer.position(tps.get(p), Duration.ofSeconds(30)));
            }

            // ---- seek into the middle (inside a batch) of each partition
            long[] from = {PER_PARTITION / 2 - 5, PER_PARTITION / 2 + 1, PER_PARTITION - 1};
            for (int p = 0; p < PARTITIONS; p++) {
                consumer.seek(tps.get(p), from[p]);
            }
            int remaining = 0;
            for (int p = 0; p < PARTITIONS; p++) {
                remaining += PER_PARTITION - (int) from[p];
            }
            Map<Integer, List<ConsumerRecord<byte[], byte[]>>> mid = byPartition(pollAll(consumer, remaining));
            for (int p = 0; p < PARTITIONS; p++) {
                List<ConsumerRecord<byte[], byte[]>> rs = mid.getOrDefault(p, List.of());
                assertEquals(PER_PARTITION - from[p], rs.size(), "records of partition " + p + " after seek to " + from[p]);
                for (int k = 0; k < rs.size(); k++) {
                    assertRecord(expected.get(p).get((int) from[p] + k), rs.get(k), compression + " after seek to " + from[p]);
                }
            }

            // ---- seek to the end: nothing more
            consumer.seekToEnd(tps);
            for (TopicPartition tp : tps) {
                assertEquals((long) PER_PARTITION, consumer.position(tp, Duration.ofSeconds(30)), "position after seekToEnd " + tp);
            }
            assertEquals(0, consumer.poll(Duration.ofMillis(1000)).count(), "records after seekToEnd");

            // ---- offsetsForTimes
            for (int p = 0; p < PARTITIONS; p++) {
                TopicPartition tp = tps.get(p);
                List<Sent> ps = expected.get(p);
                int k = 17;
                Map<TopicPartition, Long> q = new HashMap<>();
                q.put(tp, ps.get(k).timestamp());
                OffsetAndTimestamp exact = consumer.offsetsForTimes(q, Duration.ofSeconds(30)).get(tp);
                assertNotNull(exact, "offsetsForTimes(exact ts of offset " + k + ") " + tp + broker.diagnostics());
                assertEquals(k, exact.offset(), "offsetsForTimes(exact ts of offset " + k + ") " + tp);
                assertEquals(ps.get(k).timestamp(), exact.timestamp(), "offsetsForTimes timestamp " + tp);

                q.put(tp, ps.get(k).timestamp() - 1); // between offsets k-1 and k
                OffsetAndTimestamp between = consumer.offsetsForTimes(q, Duration.ofSeconds(30)).get(tp);
                assertNotNull(between, "offsetsForTimes(ts just before offset " + k + ") " + tp);
                assertEquals(k, between.offset(), "offsetsForTimes(ts just before offset " + k + ") " + tp);
                assertEquals(ps.get(k).timestamp(), between.timestamp());

                q.put(tp, 0L); // before everything
                OffsetAndTimestamp first = consumer.offsetsForTimes(q, Duration.ofSeconds(30)).get(tp);
                assertNotNull(first, "offsetsForTimes(0) " + tp);
                assertEquals(0L, first.offset(), "offsetsForTimes(0) " + tp);
                assertEquals(ps.get(0).timestamp(), first.timestamp(), "offsetsForTimes(0) timestamp " + tp);

                q.put(tp, ps.get(PER_PARTITION - 1).timestamp() + 1); // after everything
                Map<TopicPartition, OffsetAndTimestamp> none = consumer.offsetsForTimes(q, Duration.ofSeconds(30));
                assertNull(none.get(tp), "offsetsForTimes(after the last record) " + tp + ": " + none.get(tp));
            }
        }
        assertTrue(broker.isAlive(), "broker died" + broker.diagnostics());
    }

    /** acks=0 and acks=1 also deliver everything. */
    @ParameterizedTest(name = "acks={0}")
    @ValueSource(strings = {"0", "1"})
    void otherAcksDeliverEverything(String acks) throws Exception {
        String topic = "acks-" + acks;
        admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get(30, TimeUnit.SECONDS);
        TopicPartition tp = new TopicPartition(topic, 0);
        int n = 100;
        try (KafkaProducer<byte[], byte[]> producer = Clients.producer(broker, Map.of(ProducerConfig.ACKS_CONFIG, acks))) {
            List<Future<RecordMetadata>> fs = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                fs.add(producer.send(new ProducerRecord<>(topic, 0, ("k" + i).getBytes(StandardCharsets.UTF_8),
                        ("v" + i).getBytes(StandardCharsets.UTF_8))));
            }
            producer.flush();
            for (int i = 0; i < n; i++) {
                RecordMetadata md = fs.get(i).get(30, TimeUnit.SECONDS);
                if (!acks.equals("0")) {
                    assertEquals(i, md.offset(), "offset of send #" + i);
                }
            }
        }
        try (KafkaConsumer<byte[], byte[]> consumer = Clients.consumer(broker, Map.of())) {
            // acks=0 gives no confirmation: wait (bounded) until the log end offset shows every record
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(15);
            long endOffset;
            do {
                endOffset = consumer.endOffsets(List.of(tp), Duration.ofSeconds(30)).get(tp);
                if (endOffset >= n) {
                    break;
                }
                Thread.sleep(200);
            } while (System.nanoTime() < deadline);
            assertEquals(n, endOffset, "end offset after " + n + " sends with acks=" + acks + broker.diagnostics());
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            List<ConsumerRecord<byte[], byte[]>> rs = pollAll(consumer, n);
            for (int i = 0; i < n; i++) {
                assertEquals(i, rs.get(i).offset());
                assertEquals("k" + i, new String(rs.get(i).key(), StandardCharsets.UTF_8));
                assertEquals("v" + i, new String(rs.get(i).value(), StandardCharsets.UTF_8));
            }
        } catch (AssertionError e) {
            throw e;
        } catch (Exception e) {
            fail("acks=" + acks + ": " + e + broker.diagnostics(), e);
        }
    }
}
