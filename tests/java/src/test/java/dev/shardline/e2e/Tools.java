package dev.shardline.e2e;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;

/** Kafka's command-line tools, each run as `java -cp <test classpath> <main class>`, bounded in time. */
final class Tools {
    static final String TOPIC_COMMAND = "org.apache.kafka.tools.TopicCommand";
    static final String METADATA_QUORUM_COMMAND = "org.apache.kafka.tools.MetadataQuorumCommand";
    private static final long TOOL_TIMEOUT_S = 60;

    private Tools() {}

    /** What a tool printed and how it exited. */
    record Result(String command, int exit, String stdout, String stderr) {
        String describe() {
            return "\n$ " + command + "\nexit " + exit + "\n--- stdout ---\n" + stdout + "\n--- stderr ---\n" + stderr;
        }

        List<String> stdoutLines() {
            return stdout.lines().map(String::strip).filter(l -> !l.isEmpty()).collect(Collectors.toList());
        }
    }

    private static String testClasspath() {
        String cp = System.getProperty("surefire.test.class.path");
        if (cp == null || cp.isBlank()) {
            cp = System.getProperty("java.class.path");
        }
        return cp;
    }

    private static Thread drain(InputStream in, ByteArrayOutputStream to) {
        Thread t = new Thread(() -> {
            try {
                in.transferTo(to);
            } catch (IOException e) {
                // process ended
            }
        });
        t.setDaemon(true);
        t.start();
        return t;
    }

    /** Runs a Kafka tool in its own JVM with the test classpath; bounded by TOOL_TIMEOUT_S. */
    static Result run(String mainClass, String stdin, String... args) throws Exception {
        List<String> cmd = new ArrayList<>();
        cmd.add(Paths.get(System.getProperty("java.home"), "bin", "java").toString());
        cmd.add("-Xmx256m");
        cmd.add("-cp");
        cmd.add(testClasspath());
        cmd.add(mainClass);
        cmd.addAll(Arrays.asList(args));
        String shown = "java -cp <test classpath> " + mainClass + " " + String.join(" ", args);
        ProcessBuilder pb = new ProcessBuilder(cmd);
        Process p = pb.start();
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        Thread to = drain(p.getInputStream(), out);
        Thread te = drain(p.getErrorStream(), err);
        try (OutputStream in = p.getOutputStream()) {
            if (stdin != null) {
                in.write(stdin.getBytes(StandardCharsets.UTF_8));
            }
        }
        if (!p.waitFor(TOOL_TIMEOUT_S, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            p.waitFor(10, TimeUnit.SECONDS);
            to.join(2000);
            te.join(2000);
            throw new AssertionError("tool did not finish within " + TOOL_TIMEOUT_S + " s"
                    + new Result(shown, -1, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8)).describe());
        }
        to.join(5000);
        te.join(5000);
        return new Result(shown, p.exitValue(), out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
    }
}
