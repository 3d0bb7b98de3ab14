// End-to-end tests for Shardline with the franz-go client.
//
// Every test starts its own broker process (a private copy of the binary,
// a fresh data directory, a free loopback port, --shards 2) and stops it with
// SIGTERM. The binary is $SHARDLINE_BIN, or ../../target/debug/shardline.
// Set SHARDLINE_E2E_DEBUG=1 for franz-go debug logging on stderr.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	brokerStartTimeout = 30 * time.Second
	brokerStopTimeout  = 20 * time.Second
	shards             = 2
)

// brokerBin is the private copy of the broker binary used by every test.
var brokerBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Getenv(childEnv) != "" {
		// A helper process started by a test (see TestHelperConsumer):
		// it needs no broker.
		return m.Run()
	}
	src := os.Getenv("SHARDLINE_BIN")
	if src == "" {
		src = filepath.Join("..", "..", "target", "debug", "shardline")
	}
	dir, err := os.MkdirTemp("", "shardline-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkdtemp:", err)
		return 2
	}
	defer os.RemoveAll(dir)
	brokerBin = filepath.Join(dir, "shardline")
	if err := copyFile(src, brokerBin); err != nil {
		fmt.Fprintf(os.Stderr, "cannot copy broker binary %s: %v (build it with cargo build, or set SHARDLINE_BIN)\n", src, err)
		return 2
	}
	return m.Run()
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// syncBuffer is a goroutine-safe bytes.Buffer.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var ansi = regexp.MustCompile("\x1b\\[[0-9;]*m")

type broker struct {
	Addr    string
	DataDir string
	cmd     *exec.Cmd
	stderr  *syncBuffer
	stdout  *syncBuffer
	exited  chan struct{}
	waitErr error

	mu       sync.Mutex
	stopping bool
}

// Stderr returns the broker's stderr so far, without colour codes.
func (b *broker) Stderr() string { return ansi.ReplaceAllString(b.stderr.String(), "") }

func freePort(t testing.TB) int {
	t.Helper()
	return freePortOn(t, "127.0.0.1")
}

// freePortOn is a port free on host (a loopback address) when asked.
func freePortOn(t testing.TB, host string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// brokerOpts are the settings of a broker a test starts; the zero value is
// a fresh data directory on a free port.
type brokerOpts struct {
	dataDir string   // "" for a new temp dir
	listen  string   // "" for a free loopback port
	sets    []string // --set key=value
	shards  int      // 0 for the default of these tests
}

// startBroker starts a broker and registers its shutdown (and checks of its
// exit) with t.Cleanup.
func startBroker(t testing.TB) *broker {
	t.Helper()
	return startBrokerWith(t, brokerOpts{})
}

// startBrokerWith starts a broker with the given settings and registers its
// shutdown with t.Cleanup. A fixed listen address that is still in use (a
// restart on the same port) is retried for a few seconds.
func startBrokerWith(t testing.TB, o brokerOpts) *broker {
	t.Helper()
	attempts := 3
	if o.listen != "" {
		attempts = 20
	}
	var lastErr error
	for attempt := 0; attempt < attempts; attempt++ {
		b, err := tryStartBroker(t, o)
		if err == nil {
			t.Cleanup(func() { b.stop(t) })
			return b
		}
		lastErr = err
		if !strings.Contains(err.Error(), "in use") {
			break
		}
		if o.listen != "" {
			time.Sleep(500 * time.Millisecond)
		}
	}
	t.Fatalf("start broker: %v", lastErr)
	return nil
}

func tryStartBroker(t testing.TB, o brokerOpts) (*broker, error) {
	dataDir := o.dataDir
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	listen := o.listen
	if listen == "" {
		listen = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	}
	shardCount := shards
	if o.shards > 0 {
		shardCount = o.shards
	}
	args := []string{"serve",
		"--listen", listen,
		"--data-dir", dataDir,
		"--shards", fmt.Sprint(shardCount)}
	for _, kv := range o.sets {
		args = append(args, "--set", kv)
	}
	cmd := exec.Command(brokerBin, args...)
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	b := &broker{DataDir: dataDir, cmd: cmd, stderr: &syncBuffer{}, stdout: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = b.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			b.stdout.Write([]byte(line + "\n"))
			if rest, ok := strings.CutPrefix(line, "shardline listening on "); ok {
				select {
				case ready <- strings.TrimSpace(rest):
				default:
				}
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	go func() {
		b.waitErr = cmd.Wait()
		close(b.exited)
	}()
	select {
	case addr := <-ready:
		b.Addr = addr
		t.Logf("broker pid %d listening on %s, data dir %s", cmd.Process.Pid, addr, dataDir)
		return b, nil
	case <-b.exited:
		return nil, fmt.Errorf("broker exited before it was ready (%v); stderr:\n%s", b.waitErr, b.Stderr())
	case <-time.After(brokerStartTimeout):
		cmd.Process.Kill()
		<-b.exited
		return nil, fmt.Errorf("broker not ready within %v; stdout:\n%s\nstderr:\n%s", brokerStartTimeout, b.stdout.String(), b.Stderr())
	}
}

// alive fails the test if the broker process has died.
func (b *broker) alive(t testing.TB) {
	t.Helper()
	select {
	case <-b.exited:
		t.Fatalf("broker exited unexpectedly (%v); stderr:\n%s", b.waitErr, tail(b.Stderr(), 60))
	default:
	}
}

func (b *broker) stop(t testing.TB) {
	t.Helper()
	b.mu.Lock()
	already := b.stopping
	b.stopping = true
	b.mu.Unlock()
	if already {
		return
	}
	select {
	case <-b.exited:
		t.Errorf("broker exited before the test stopped it (%v)", b.waitErr)
	default:
		_ = b.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-b.exited:
			if b.waitErr != nil {
				t.Errorf("broker exit after SIGTERM: %v", b.waitErr)
			}
		case <-time.After(brokerStopTimeout):
			t.Errorf("broker did not exit within %v of SIGTERM; killing it", brokerStopTimeout)
			_ = b.cmd.Process.Kill()
			<-b.exited
		}
	}
	// A panic or an ERROR line from the broker is a failure by itself.
	for _, line := range strings.Split(b.Stderr(), "\n") {
		switch {
		case strings.Contains(line, "panicked") || strings.Contains(line, " ERROR "):
			t.Errorf("broker stderr: %s", line)
		case strings.Contains(line, " WARN "):
			t.Logf("broker stderr: %s", line)
		}
	}
	if t.Failed() {
		t.Logf("broker stderr (last lines):\n%s", tail(b.Stderr(), 80))
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// clientOpts are the options every client uses: no idempotence (the broker
// has no InitProducerId), bounded retries and timeouts so that a broker that
// misbehaves fails the test instead of hanging it.
func clientOpts(b *broker, extra ...kgo.Opt) []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(b.Addr),
		kgo.DisableIdempotentWrite(),
		kgo.RequestRetries(3),
		kgo.RecordRetries(3),
		kgo.RequestTimeoutOverhead(10 * time.Second),
		kgo.RetryTimeout(20 * time.Second),
		kgo.FetchMaxWait(500 * time.Millisecond),
		kgo.MetadataMinAge(100 * time.Millisecond),
	}
	if os.Getenv("SHARDLINE_E2E_DEBUG") != "" {
		opts = append(opts, kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelDebug, nil)))
	}
	return append(opts, extra...)
}

func newClient(t testing.TB, b *broker, extra ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(clientOpts(b, extra...)...)
	if err != nil {
		t.Fatalf("kgo.NewClient: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func newAdmin(t testing.TB, b *broker) *kadm.Client {
	t.Helper()
	adm := kadm.NewClient(newClient(t, b))
	adm.SetTimeoutMillis(15000)
	return adm
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// createTopic creates a topic with the given partitions and fails the test
// on any error.
func createTopic(t testing.TB, adm *kadm.Client, topic string, partitions int32) {
	t.Helper()
	ctx := ctxTimeout(t, 20*time.Second)
	resp, err := adm.CreateTopic(ctx, partitions, 1, nil, topic)
	if err != nil {
		t.Fatalf("CreateTopic %s: %v", topic, err)
	}
	if resp.Err != nil {
		t.Fatalf("CreateTopic %s: %v (%s)", topic, resp.Err, resp.ErrMessage)
	}
	// Wait until metadata shows every partition with a leader.
	deadline := time.Now().Add(10 * time.Second)
	for {
		td, err := adm.ListTopics(ctx, topic)
		if err == nil {
			d, ok := td[topic]
			if ok && d.Err == nil && len(d.Partitions) == int(partitions) {
				allLed := true
				for _, p := range d.Partitions {
					if p.Err != nil || p.Leader < 0 {
						allLed = false
					}
				}
				if allLed {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("topic %s not ready in metadata within 10s: %+v, %v", topic, td, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// isTimeout reports whether err is a context deadline.
func isTimeout(err error) bool {
	return errors.Is(err, context.DeadlineExceeded)
}
