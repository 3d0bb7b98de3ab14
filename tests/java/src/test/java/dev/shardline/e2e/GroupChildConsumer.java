package dev.shardline.e2e;

import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * A group member in its own JVM, so that a test can kill it with SIGKILL (no LeaveGroup, no
 * last commit). Started by {@link ConsumerGroupsTest} with
 * {@code java -cp <test classpath> dev.shardline.e2e.GroupChildConsumer BOOTSTRAP GROUP TOPIC PROTOCOL CLIENT_ID}.
 * Prints to stdout, one line each:
 * {@code ASSIGNMENT p,p,...} when its assignment changes (partition numbers of TOPIC),
 * {@code REC partition offset value} for every record, before committing it,
 * {@code COMMITTED} after each successful synchronous commit, {@code ERROR text} on failures.
 * Exits when its stdin closes (the parent died) or after 170 s, whichever comes first.
 */
public final class GroupChildConsumer {
    private GroupChildConsumer() {}

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String group = args[1];
        String topic = args[2];
        String protocol = args[3];
        String clientId = args[4];
        PrintStream out = new PrintStream(new FileOutputStream(FileDescriptor.out), true, StandardCharsets.UTF_8);

        Thread watchdog = new Thread(() -> {
            try {
                while (System.in.read() >= 0) {
                    // drain
                }
            } catch (Exception e) {
                // parent gone
            }
            Runtime.getRuntime().halt(3);
        }, "stdin-watchdog");
        watchdog.setDaemon(true);
        watchdog.start();

        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.putAll(ConsumerGroupsTest.groupConfig(protocol, group, clientId));
        long deadline = System.nanoTime() + Duration.ofSeconds(170).toNanos();
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            c.subscribe(List.of(topic));
            Set<Integer> last = null;
            while (System.nanoTime() < deadline) {
                ConsumerRecords<byte[], byte[]> recs;
                try {
                    recs = c.poll(Duration.ofMillis(200));
                } catch (Exception e) {
                    out.println("ERROR poll: " + e);
                    Thread.sleep(200);
                    continue;
                }
                Set<Integer> now = new TreeSet<>();
                for (TopicPartition tp : c.assignment()) {
                    now.add(tp.partition());
                }
                if (!now.equals(last)) {
                    StringBuilder sb = new StringBuilder("ASSIGNMENT ");
                    boolean first = true;
                    for (int n : now) {
                        sb.append(first ? "" : ",").append(n);
                        first = false;
                    }
                    out.println(sb);
                    last = now;
                }
                if (recs.isEmpty()) {
                    continue;
                }
                StringBuilder sb = new StringBuilder();
                Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
                for (ConsumerRecord<byte[], byte[]> r : recs) {
                    sb.append("REC ").append(r.partition()).append(' ').append(r.offset()).append(' ')
                            .append(new String(r.value(), StandardCharsets.UTF_8)).append('\n');
                    offsets.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
                }
                out.print(sb);
                out.flush();
                try {
                    c.commitSync(offsets, Duration.ofSeconds(15));
                    out.println("COMMITTED");
                } catch (Exception e) {
                    out.println("ERROR commit: " + e);
                }
            }
        }
    }
}
