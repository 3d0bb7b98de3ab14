package dev.shardline.e2e;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.stream.Collectors;
import java.util.stream.Stream;

/**
 * One Shardline broker process: a private copy of the binary, a free loopback port, a fresh
 * data directory. Started with {@code shardline serve ... --shards 2}, stopped with SIGTERM.
 * The broker's stderr (its log) is kept under target/broker-logs/.
 */
public final class ShardlineBroker implements AutoCloseable {
    private static final long START_TIMEOUT_MS = 30_000;
    private static final long STOP_TIMEOUT_MS = 30_000;
    private static Path binaryCopy;

    private final String name;
    private final String host;
    private final int shards;
    private final Path dataDir;
    private Path stderrLog;
    private Path stdoutLog;
    private final List<String> extraArgs;
    private int restarts;
    private int crashes;
    private Process process;
    private int port;
    private Integer exitCode;

    private ShardlineBroker(String name, String host, int shards, Path dataDir, Path stderrLog, Path stdoutLog,
            List<String> extraArgs) {
        this.name = name;
        this.host = host;
        this.shards = shards;
        this.dataDir = dataDir;
        this.stderrLog = stderrLog;
        this.stdoutLog = stdoutLog;
        this.extraArgs = extraArgs;
    }

    /** The binary under test, copied once per JVM so a concurrent rebuild cannot change it mid-run. */
    static synchronized Path binary() throws IOException {
        if (binaryCopy == null) {
            Path src = Paths.get(System.getProperty("shardline.bin",
                    "../../target/debug/shardline")).toAbsolutePath().normalize();
            if (!Files.isRegularFile(src)) {
                throw new IllegalStateException("shardline binary not found at " + src
                        + " (build it, or pass -Dshardline.bin=/path/to/shardline)");
            }
            Path dir = Files.createTempDirectory("shardline-bin-");
            Path dst = dir.resolve("shardline");
            Files.copy(src, dst, StandardCopyOption.REPLACE_EXISTING);
            Files.setPosixFilePermissions(dst, PosixFilePermissions.fromString("rwxr-xr-x"));
            // deleteOnExit runs in reverse order of registration: the file first, then its folder
            dir.toFile().deleteOnExit();
            dst.toFile().deleteOnExit();
            binaryCopy = dst;
        }
        return binaryCopy;
    }

    public static ShardlineBroker start(String name) throws Exception {
        return start(name, new String[0]);
    }

    /** Starts a broker with extra settings, each "key=value", passed as {@code --set key=value}. */
    public static ShardlineBroker start(String name, String... settings) throws Exception {
        List<String> extra = setArgs(settings);
        Path logDir = logDir();
        Exception last = null;
        for (int attempt = 1; attempt <= 3; attempt++) {
            Path dataDir = Files.createTempDirectory("shardline-data-");
            ShardlineBroker b = new ShardlineBroker(name, "127.0.0.1", 2, dataDir,
                    logDir.resolve(name + "-" + attempt + ".stderr.log"),
                    logDir.resolve(name + "-" + attempt + ".stdout.log"), List.copyOf(extra));
            try {
                b.launch(freePort("127.0.0.1"));
                return b;
            } catch (Exception e) {
                last = e;
                b.kill();
                b.deleteDataDir();
            }
        }
        throw last;
    }

    /**
     * Starts one node of a cluster (one shard) on {@code host} and a free port there, with
     * settings as {@code --set key=value}; returns once it listens, which a node does when its
     * quorum has formed, so start the nodes of a cluster concurrently. No retry on another port:
     * the other nodes know this one's controller port.
     */
    public static ShardlineBroker startNode(String name, String host, String... settings) throws Exception {
        List<String> extra = setArgs(settings);
        Path logDir = logDir();
        Path dataDir = Files.createTempDirectory("shardline-data-");
        ShardlineBroker b = new ShardlineBroker(name, host, 1, dataDir, logDir.resolve(name + ".stderr.log"),
                logDir.resolve(name + ".stdout.log"), List.copyOf(extra));
        try {
            b.launch(freePort(host));
            return b;
        } catch (Exception e) {
            b.kill();
            b.deleteDataDir();
            throw e;
        }
    }

    /** Each "key=value" as {@code --set key=value}. */
    private static List<String> setArgs(String... settings) {
        List<String> args = new ArrayList<>();
        for (String kv : settings) {
            args.add("--set");
            args.add(kv);
        }
        return args;
    }

    /** Where brokers' logs go (created if missing). */
    private static Path logDir() throws IOException {
        Path dir = Paths.get(System.getProperty("shardline.logdir", "target/broker-logs"));
        Files.createDirectories(dir);
        return dir;
    }

    /** A port free on {@code host} (a loopback address) at the time of asking. */
    static int freePort(String host) throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getByName(host))) {
            s.setReuseAddress(true);
            return s.getLocalPort();
        }
    }

    private void launch(int port) throws Exception {
        this.port = port;
        List<String> cmd = new ArrayList<>(List.of(binary().toString(), "serve",
                "--listen", host + ":" + port,
                "--data-dir", dataDir.toString(),
                "--shards", String.valueOf(shards)));
        cmd.addAll(extraArgs);
        ProcessBuilder pb = new ProcessBuilder(cmd);
        pb.environment().put("NO_COLOR", "1");
        if (System.getenv("RUST_LOG") == null) {
            pb.environment().put("RUST_LOG", "info");
        }
        pb.redirectError(ProcessBuilder.Redirect.to(stderrLog.toFile()));
        pb.redirectInput(ProcessBuilder.Redirect.PIPE);
        process = pb.start();
        Runtime.getRuntime().addShutdownHook(new Thread(this::kill));

        String expected = "shardline listening on " + host + ":" + port;
        CompletableFuture<Boolean> ready = new CompletableFuture<>();
        Thread pump = new Thread(() -> {
            try (BufferedReader r = new BufferedReader(new InputStreamReader(process.getInputStream(), StandardCharsets.UTF_8));
                 PrintStream out = new PrintStream(Files.newOutputStream(stdoutLog), true, StandardCharsets.UTF_8)) {
                String line;
                while ((line = r.readLine()) != null) {
                    out.println(line);
                    if (line.trim().equals(expected)) {
                        ready.complete(true);
                    }
                }
            } catch (IOException e) {
                // process went away
            } finally {
                ready.complete(false);
            }
        }, "shardline-stdout-" + name);
        pump.setDaemon(true);
        pump.start();

        boolean ok;
        try {
            ok = ready.get(START_TIMEOUT_MS, TimeUnit.MILLISECONDS);
        } catch (TimeoutException e) {
            throw new IllegalStateException("broker did not print '" + expected + "' within "
                    + START_TIMEOUT_MS + " ms; stderr:\n" + stderr());
        }
        if (!ok) {
            throw new IllegalStateException("broker exited before it was ready (exit "
                    + (process.isAlive() ? "?" : process.exitValue()) + "); stderr:\n" + stderr());
        }
    }

    public String bootstrap() {
        return host + ":" + port;
    }

    public Path dataDir() {
        return dataDir;
    }

    public int port() {
        return port;
    }

    public boolean isAlive() {
        return process != null && process.isAlive();
    }

    /** The broker's log so far. */
    public String stderr() {
        try {
            return Files.exists(stderrLog) ? Files.readString(stderrLog, StandardCharsets.UTF_8) : "";
        } catch (IOException e) {
            return "<cannot read " + stderrLog + ": " + e + ">";
        }
    }

    /** WARN and ERROR lines of the broker's log, e.g. why it closed a connection. */
    public List<String> problems() {
        return stderr().lines().filter(l -> l.contains(" WARN ") || l.contains(" ERROR ")
                || l.contains("panicked")).collect(Collectors.toList());
    }

    /** A string to append to assertion messages. */
    public String diagnostics() {
        List<String> p = problems();
        return "\n--- broker WARN/ERROR lines (" + p.size() + ", full log " + stderrLog.toAbsolutePath() + ") ---\n"
                + String.join("\n", p.subList(Math.max(0, p.size() - 40), p.size()))
                + (isAlive() ? "" : "\n--- broker process is NOT alive ---");
    }

    /** SIGTERM, then wait for a clean exit; returns the exit code. */
    public int stop() throws InterruptedException {
        if (process == null) {
            return exitCode == null ? -1 : exitCode;
        }
        if (exitCode != null) {
            return exitCode;
        }
        process.destroy(); // SIGTERM on Unix
        if (!process.waitFor(STOP_TIMEOUT_MS, TimeUnit.MILLISECONDS)) {
            process.destroyForcibly();
            process.waitFor(10, TimeUnit.SECONDS);
            throw new AssertionError("broker did not exit within " + STOP_TIMEOUT_MS
                    + " ms of SIGTERM (killed with SIGKILL)" + diagnostics());
        }
        exitCode = process.exitValue();
        return exitCode;
    }

    /**
     * Stops the broker with SIGTERM (asserting a clean exit) and starts it again on the same
     * port and data directory; its log continues in a new file.
     */
    public void restart() throws Exception {
        int code = stop();
        if (code != 0) {
            throw new AssertionError("broker exited with code " + code + " after SIGTERM" + diagnostics());
        }
        restarts++;
        Path logDir = stderrLog.getParent();
        stderrLog = logDir.resolve(name + "-restart" + restarts + ".stderr.log");
        stdoutLog = logDir.resolve(name + "-restart" + restarts + ".stdout.log");
        process = null;
        exitCode = null;
        Exception last = null;
        // the old listening socket may take a moment to be released
        for (int attempt = 1; attempt <= 5; attempt++) {
            try {
                launch(port);
                return;
            } catch (Exception e) {
                last = e;
                kill();
                Thread.sleep(500);
            }
        }
        throw last;
    }

    /**
     * Crashes the broker: SIGKILL (kill -9), no clean shutdown. Waits until the process is gone
     * and returns its exit code (137 on Linux). Follow with {@link #restartAfterKill()}.
     */
    public int kill9() throws InterruptedException {
        if (process == null || exitCode != null) {
            throw new IllegalStateException("broker " + name + " is not running");
        }
        process.destroyForcibly(); // SIGKILL on Unix
        if (!process.waitFor(STOP_TIMEOUT_MS, TimeUnit.MILLISECONDS)) {
            throw new AssertionError("broker did not exit within " + STOP_TIMEOUT_MS + " ms of SIGKILL");
        }
        exitCode = process.exitValue();
        return exitCode;
    }

    /**
     * Starts the broker again after {@link #kill9()}, on the same port and data directory; its
     * log continues in a new file ({@code NAME-crashN.stderr.log}).
     */
    public void restartAfterKill() throws Exception {
        if (process != null && process.isAlive()) {
            throw new IllegalStateException("broker " + name + " is still running; kill9() it first");
        }
        crashes++;
        Path logDir = stderrLog.getParent();
        stderrLog = logDir.resolve(name + "-crash" + crashes + ".stderr.log");
        stdoutLog = logDir.resolve(name + "-crash" + crashes + ".stdout.log");
        process = null;
        exitCode = null;
        Exception last = null;
        // the old listening socket may take a moment to be released
        for (int attempt = 1; attempt <= 5; attempt++) {
            try {
                launch(port);
                return;
            } catch (Exception e) {
                last = e;
                kill();
                Thread.sleep(500);
            }
        }
        throw last;
    }

    private void kill() {
        if (process != null && process.isAlive()) {
            process.destroyForcibly();
        }
    }

    private void deleteDataDir() {
        try (Stream<Path> s = Files.walk(dataDir)) {
            s.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        } catch (IOException e) {
            // best effort
        }
    }

    /** Stops the broker (SIGTERM), asserts a clean exit, removes the data directory. */
    @Override
    public void close() throws Exception {
        try {
            int code = stop();
            List<String> p = problems();
            if (!p.isEmpty()) {
                System.out.println("[" + name + "] broker WARN/ERROR lines:\n" + String.join("\n", p));
            }
            if (code != 0) {
                throw new AssertionError("broker exited with code " + code + " after SIGTERM" + diagnostics());
            }
        } finally {
            deleteDataDir();
        }
    }

    public List<String> tail(int n) {
        List<String> lines = new ArrayList<>(stderr().lines().collect(Collectors.toList()));
        return lines.subList(Math.max(0, lines.size() - n), lines.size());
    }
}
