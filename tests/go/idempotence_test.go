// Idempotent and transactional producing with franz-go.
//
// TestIdempotentProducerKill9: a producer with franz-go's default settings
// (idempotent writes, unlimited retries) produces numbered records while the
// broker is killed with SIGKILL and restarted on the same data directory and
// port three times; every acknowledged record is read back exactly once, at
// its acknowledged offset, in produce order per partition.
//
// TestTransactions: a transactional producer (kgo.TransactionalID) commits
// and aborts transactions over 3 partitions; a read_committed consumer sees
// exactly the committed records, a read_uncommitted one all of them; a
// second producer with the same transactional id fences the first; and a
// GroupTransactSession read-process-write loop (aborting every third round)
// leaves each transformed record exactly once in the output topic.
package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// kill9 kills the broker with SIGKILL (a crash: no shutdown, no final
// snapshot) and waits for it to exit. The test's cleanup no longer stops it.
func (b *broker) kill9(t testing.TB) {
	t.Helper()
	b.mu.Lock()
	b.stopping = true
	b.mu.Unlock()
	select {
	case <-b.exited:
		t.Fatalf("broker exited before it was killed (%v); stderr:\n%s", b.waitErr, tail(b.Stderr(), 60))
	default:
	}
	if err := b.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL broker: %v", err)
	}
	select {
	case <-b.exited:
	case <-time.After(brokerStopTimeout):
		t.Fatalf("broker did not exit within %v of SIGKILL", brokerStopTimeout)
	}
	for _, line := range strings.Split(b.Stderr(), "\n") {
		if strings.Contains(line, "panicked") || strings.Contains(line, " ERROR ") {
			t.Errorf("broker stderr (before the kill): %s", line)
		}
	}
}

// defaultOpts are the options of a client with franz-go's defaults: only the
// seed broker (and debug logging if asked for).
func defaultOpts(addr string, extra ...kgo.Opt) []kgo.Opt {
	opts := []kgo.Opt{kgo.SeedBrokers(addr)}
	if os.Getenv("SHARDLINE_E2E_DEBUG") != "" {
		opts = append(opts, kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelDebug, nil)))
	}
	return append(opts, extra...)
}

// readAll reads topic's partitions [0, nparts) from the start up to their end
// offsets at the given isolation level (for read_committed: the last stable
// offsets), then polls a little longer for anything more. It returns the
// records per partition in delivery order.
func readAll(t *testing.T, b *broker, topic string, nparts int32, iso kgo.IsolationLevel) map[int32][]*kgo.Record {
	t.Helper()
	adm := newAdmin(t, b)
	ctx := ctxTimeout(t, 20*time.Second)
	list := adm.ListEndOffsets
	if iso == kgo.ReadCommitted() {
		list = adm.ListCommittedOffsets
	}
	lo, err := list(ctx, topic)
	if err == nil {
		err = lo.Error()
	}
	if err != nil {
		t.Fatalf("ListOffsets %s: %v", topic, err)
	}
	ends := map[int32]int64{}
	lo.Each(func(o kadm.ListedOffset) { ends[o.Partition] = o.Offset })
	if len(ends) != int(nparts) {
		t.Fatalf("ListOffsets %s: %d partitions, want %d", topic, len(ends), nparts)
	}
	assign := map[int32]kgo.Offset{}
	for p := int32(0); p < nparts; p++ {
		assign[p] = kgo.NewOffset().AtStart()
	}
	cl := newClient(t, b,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: assign}),
		kgo.FetchIsolationLevel(iso))
	got := map[int32][]*kgo.Record{}
	// next[p]: the offset after the last record (or control batch) seen.
	next := map[int32]int64{}
	done := func() bool {
		for p, end := range ends {
			if next[p] < end {
				return false
			}
		}
		return true
	}
	poll := func(until time.Time) {
		pctx, cancel := context.WithDeadline(context.Background(), until)
		defer cancel()
		fs := cl.PollFetches(pctx)
		for _, fe := range fs.Errors() {
			if pctx.Err() != nil && (errors.Is(fe.Err, context.DeadlineExceeded) || errors.Is(fe.Err, context.Canceled)) {
				continue
			}
			t.Errorf("fetch error %s/%d: %v", fe.Topic, fe.Partition, fe.Err)
		}
		fs.EachPartition(func(fp kgo.FetchTopicPartition) {
			for _, r := range fp.Records {
				got[fp.Partition] = append(got[fp.Partition], r)
				next[fp.Partition] = r.Offset + 1
			}
			// Control batches and aborted records are skipped; the
			// high watermark / last stable offset says how far the
			// fetch got.
			if iso == kgo.ReadCommitted() {
				if fp.LastStableOffset > next[fp.Partition] && fp.LastStableOffset <= ends[fp.Partition] {
					next[fp.Partition] = fp.LastStableOffset
				}
			} else if fp.HighWatermark > next[fp.Partition] && fp.HighWatermark <= ends[fp.Partition] {
				next[fp.Partition] = fp.HighWatermark
			}
		})
	}
	deadline := time.Now().Add(consumeTimeout)
	for !done() && time.Now().Before(deadline) {
		poll(deadline)
	}
	if !done() {
		t.Fatalf("%s: read up to %v within %v, want %v", topic, next, consumeTimeout, ends)
	}
	poll(time.Now().Add(noMoreRecordsFor))
	return got
}

// ---------------------------------------------------------------------------

type ack struct {
	n    int // record number
	part int32
	off  int64
}

// TestIdempotentProducerKill9: see the file comment.
func TestIdempotentProducerKill9(t *testing.T) {
	const (
		topic      = "idem-kill9"
		nparts     = 3
		kills      = 3
		maxRecords = 60000 // bound on records produced
		burst      = 25    // records produced between pauses
		pause      = 5 * time.Millisecond
		ackedFirst = 300 // acks to wait for before each kill and at the end
		ackWait    = 60 * time.Second
	)
	dataDir := t.TempDir()
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	opts := brokerOpts{dataDir: dataDir, listen: listen}
	b := startBrokerWith(t, opts)
	createTopic(t, newAdmin(t, b), topic, nparts)

	// The producer: franz-go's defaults (idempotent, acks=all, unlimited
	// record retries, no delivery timeout).
	prod, err := kgo.NewClient(defaultOpts(listen, kgo.DefaultProduceTopic(topic))...)
	if err != nil {
		t.Fatalf("kgo.NewClient: %v", err)
	}
	defer prod.Close()

	var (
		mu       sync.Mutex
		acks     []ack
		failures []string
		produced int
	)
	ackCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acks)
	}
	stop := make(chan struct{})
	prodDone := make(chan struct{})
	prodCtx, prodCancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer prodCancel()
	go func() {
		defer close(prodDone)
		for i := 0; i < maxRecords; i++ {
			if i%burst == 0 {
				select {
				case <-stop:
					return
				case <-time.After(pause):
				}
			}
			n := i
			// Keys spread the records over the partitions (the
			// default sticky key partitioner hashes them).
			r := &kgo.Record{Key: []byte(fmt.Sprintf("key-%d", n%17)), Value: []byte(strconv.Itoa(n))}
			mu.Lock()
			produced++
			mu.Unlock()
			prod.Produce(prodCtx, r, func(r *kgo.Record, err error) {
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					failures = append(failures, fmt.Sprintf("record %d: %v", n, err))
					return
				}
				acks = append(acks, ack{n, r.Partition, r.Offset})
			})
		}
	}()

	waitAcks := func(what string, want int) {
		t.Helper()
		deadline := time.Now().Add(ackWait)
		for ackCount() < want {
			if time.Now().After(deadline) {
				mu.Lock()
				f := failures[:min(len(failures), 5)]
				mu.Unlock()
				t.Fatalf("%s: %d records acknowledged within %v, want %d (failures: %v)", what, ackCount(), ackWait, want, f)
			}
			b.alive(t)
			time.Sleep(20 * time.Millisecond)
		}
	}

	for k := 1; k <= kills; k++ {
		waitAcks(fmt.Sprintf("before kill %d", k), ackCount()+ackedFirst)
		before := ackCount()
		b.kill9(t)
		t.Logf("kill %d: broker killed with %d records acknowledged", k, before)
		b = startBrokerWith(t, opts)
		if b.Addr != listen {
			t.Fatalf("restarted broker listens on %s, want %s", b.Addr, listen)
		}
	}
	waitAcks("after the last restart", ackCount()+ackedFirst)
	close(stop)
	<-prodDone
	fctx, fcancel := context.WithTimeout(context.Background(), ackWait)
	defer fcancel()
	if err := prod.Flush(fctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}

	mu.Lock()
	ackedList := append([]ack(nil), acks...)
	fails := append([]string(nil), failures...)
	total := produced
	mu.Unlock()
	t.Logf("%d records produced, %d acknowledged, %d failed", total, len(ackedList), len(fails))
	if len(fails) > 0 {
		// Default settings retry forever: no record may fail.
		t.Errorf("%d records failed, first: %v", len(fails), fails[:min(len(fails), 5)])
	}
	if len(ackedList)+len(fails) != total {
		t.Errorf("%d records produced, but %d acknowledged and %d failed", total, len(ackedList), len(fails))
	}
	// Two acks for one offset: a duplicate the broker did not recognise.
	at := map[int32]map[int64]int{}
	byNum := map[int]ack{}
	for _, a := range ackedList {
		if at[a.part] == nil {
			at[a.part] = map[int64]int{}
		}
		if prev, dup := at[a.part][a.off]; dup {
			t.Errorf("records %d and %d both acknowledged at %d/%d", prev, a.n, a.part, a.off)
		}
		at[a.part][a.off] = a.n
		byNum[a.n] = a
	}

	got := readAll(t, b, topic, nparts, kgo.ReadUncommitted())
	seen := map[int]string{}
	read := 0
	for p := int32(0); p < nparts; p++ {
		last := -1
		var lastOff int64 = -1
		bad := 0
		report := func(format string, args ...any) {
			bad++
			if bad <= 5 {
				t.Errorf("partition %d: "+format, append([]any{p}, args...)...)
			}
		}
		for _, r := range got[p] {
			read++
			n, err := strconv.Atoi(string(r.Value))
			if err != nil {
				report("offset %d: value %q", r.Offset, r.Value)
				continue
			}
			if r.Offset != lastOff+1 {
				report("offset %d follows offset %d", r.Offset, lastOff)
			}
			lastOff = r.Offset
			where := fmt.Sprintf("%d/%d", p, r.Offset)
			if prev, dup := seen[n]; dup {
				report("record %d read twice: at %s and %s", n, prev, where)
			}
			seen[n] = where
			if n <= last {
				report("record %d at offset %d after record %d (out of produce order)", n, r.Offset, last)
			}
			last = n
			if a, ok := byNum[n]; ok && (a.part != p || a.off != r.Offset) {
				report("record %d read at %s, acknowledged at %d/%d", n, where, a.part, a.off)
			}
		}
		if bad > 5 {
			t.Errorf("partition %d: %d problems in all", p, bad)
		}
	}
	var missing []int
	for _, a := range ackedList {
		if _, ok := seen[a.n]; !ok {
			missing = append(missing, a.n)
		}
	}
	sort.Ints(missing)
	if len(missing) > 0 {
		t.Errorf("%d acknowledged records never read back, first: %v", len(missing), missing[:min(len(missing), 10)])
	}
	t.Logf("%d records read back (%d acknowledged)", read, len(ackedList))
	b.alive(t)
}

// ---------------------------------------------------------------------------

func txnValue(txn, p, i int) string { return fmt.Sprintf("txn%d-p%d-%d", txn, p, i) }

// TestTransactions: see the file comment.
func TestTransactions(t *testing.T) {
	b := startBrokerWith(t, brokerOpts{sets: []string{"group_initial_rebalance_delay_ms=0"}})
	adm := newAdmin(t, b)

	t.Run("commit-abort", func(t *testing.T) {
		const (
			topic  = "txn-commit-abort"
			nparts = 3
			txns   = 6
			per    = 10 // records per partition per transaction
		)
		createTopic(t, adm, topic, nparts)
		cl, err := kgo.NewClient(defaultOpts(b.Addr,
			kgo.TransactionalID("go-txn-commit-abort"),
			kgo.TransactionTimeout(30*time.Second),
			kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
		if err != nil {
			t.Fatalf("kgo.NewClient: %v", err)
		}
		defer cl.Close()
		committed := map[int32][]string{}
		all := map[int32][]string{}
		for txn := 0; txn < txns; txn++ {
			abort := txn%3 == 1
			if err := cl.BeginTransaction(); err != nil {
				t.Fatalf("txn %d: BeginTransaction: %v", txn, err)
			}
			var recs []*kgo.Record
			for i := 0; i < per; i++ {
				for p := 0; p < nparts; p++ {
					recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(p), Value: []byte(txnValue(txn, p, i))})
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				cancel()
				t.Fatalf("txn %d: produce: %v", txn, err)
			}
			end := kgo.TryCommit
			if abort {
				end = kgo.TryAbort
			}
			err := cl.EndTransaction(ctx, end)
			cancel()
			if err != nil {
				t.Fatalf("txn %d: EndTransaction(commit=%v): %v", txn, !abort, err)
			}
			for _, r := range recs {
				all[r.Partition] = append(all[r.Partition], string(r.Value))
				if !abort {
					committed[r.Partition] = append(committed[r.Partition], string(r.Value))
				}
			}
		}
		check := func(what string, got map[int32][]*kgo.Record, want map[int32][]string) {
			t.Helper()
			for p := int32(0); p < nparts; p++ {
				var vs []string
				for _, r := range got[p] {
					vs = append(vs, string(r.Value))
				}
				if strings.Join(vs, ",") != strings.Join(want[p], ",") {
					t.Errorf("%s partition %d: read %d records %v, want %d records %v", what, p, len(vs), vs, len(want[p]), want[p])
				}
			}
		}
		check("read_committed", readAll(t, b, topic, nparts, kgo.ReadCommitted()), committed)
		check("read_uncommitted", readAll(t, b, topic, nparts, kgo.ReadUncommitted()), all)
	})

	t.Run("fencing", func(t *testing.T) {
		const topic = "txn-fencing"
		createTopic(t, adm, topic, 1)
		newTxn := func() *kgo.Client {
			cl, err := kgo.NewClient(defaultOpts(b.Addr,
				kgo.TransactionalID("go-txn-fencing"),
				kgo.DefaultProduceTopic(topic),
				kgo.RecordRetries(3))...)
			if err != nil {
				t.Fatalf("kgo.NewClient: %v", err)
			}
			t.Cleanup(cl.Close)
			return cl
		}
		ctx := ctxTimeout(t, 60*time.Second)
		old := newTxn()
		if err := old.BeginTransaction(); err != nil {
			t.Fatalf("old: BeginTransaction: %v", err)
		}
		if err := old.ProduceSync(ctx, kgo.StringRecord("old-1")).FirstErr(); err != nil {
			t.Fatalf("old: produce: %v", err)
		}
		// A new incarnation: InitProducerId bumps the epoch and aborts
		// the old one's open transaction.
		cur := newTxn()
		if err := cur.BeginTransaction(); err != nil {
			t.Fatalf("new: BeginTransaction: %v", err)
		}
		if err := cur.ProduceSync(ctx, kgo.StringRecord("new-1")).FirstErr(); err != nil {
			t.Fatalf("new: produce: %v", err)
		}
		// The zombie cannot commit.
		perr := old.ProduceSync(ctx, kgo.StringRecord("old-2")).FirstErr()
		eerr := old.EndTransaction(ctx, kgo.TryCommit)
		fenced := func(err error) bool {
			return errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) ||
				errors.Is(err, kerr.InvalidProducerIDMapping) || errors.Is(err, kerr.OperationNotAttempted)
		}
		t.Logf("zombie: produce error %v; commit error %v", perr, eerr)
		if eerr == nil {
			t.Errorf("zombie producer committed; want it fenced (produce error %v)", perr)
		} else if !fenced(eerr) && !fenced(perr) {
			t.Errorf("zombie producer: produce error %v, commit error %v; want PRODUCER_FENCED or INVALID_PRODUCER_EPOCH", perr, eerr)
		}
		if err := cur.EndTransaction(ctx, kgo.TryCommit); err != nil {
			t.Fatalf("new: EndTransaction(commit): %v", err)
		}
		got := readAll(t, b, topic, 1, kgo.ReadCommitted())
		var vs []string
		for _, r := range got[0] {
			vs = append(vs, string(r.Value))
		}
		if strings.Join(vs, ",") != "new-1" {
			t.Errorf("read_committed after fencing: %v, want [new-1]", vs)
		}
	})

	t.Run("group-transact-session", func(t *testing.T) {
		const (
			in      = "txn-eos-in"
			out     = "txn-eos-out"
			group   = "txn-eos-group"
			nparts  = 3
			per     = 20 // input records per partition
			rounds  = 60 // bound on polls
			maxPoll = 7  // records per poll, so that there are several transactions
		)
		createTopic(t, adm, in, nparts)
		createTopic(t, adm, out, nparts)
		produceRange(t, newProducer(t, b), in, parts(nparts), 0, per)

		s, err := kgo.NewGroupTransactSession(defaultOpts(b.Addr,
			kgo.TransactionalID("go-txn-eos"),
			kgo.TransactionTimeout(30*time.Second),
			kgo.ConsumerGroup(group),
			kgo.ConsumeTopics(in),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			kgo.RequireStableFetchOffsets(),
			kgo.SessionTimeout(classicSession),
			kgo.HeartbeatInterval(time.Second),
			kgo.RecordPartitioner(kgo.ManualPartitioner()),
			kgo.FetchMaxWait(500*time.Millisecond))...)
		if err != nil {
			t.Fatalf("NewGroupTransactSession: %v", err)
		}
		defer s.Close()
		// want: every input record, transformed, once.
		want := map[string]bool{}
		for p := 0; p < nparts; p++ {
			for i := 0; i < per; i++ {
				want["out:"+recValue(in, int32(p), int64(i))] = true
			}
		}
		committedOut := map[string]int{}
		abortedOut := 0
		ctx := ctxTimeout(t, 90*time.Second)
		txn := 0 // transactions begun
		for round := 0; round < rounds && len(committedOut) < len(want); round++ {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			fs := s.PollRecords(pctx, maxPoll)
			cancel()
			for _, fe := range fs.Errors() {
				if !errors.Is(fe.Err, context.DeadlineExceeded) {
					t.Fatalf("round %d: fetch error %s/%d: %v", round, fe.Topic, fe.Partition, fe.Err)
				}
			}
			if fs.NumRecords() == 0 {
				continue
			}
			if err := s.Begin(); err != nil {
				t.Fatalf("round %d: Begin: %v", round, err)
			}
			var outs []*kgo.Record
			fs.EachRecord(func(r *kgo.Record) {
				outs = append(outs, &kgo.Record{Topic: out, Partition: r.Partition, Value: []byte("out:" + string(r.Value))})
			})
			if err := s.ProduceSync(ctx, outs...).FirstErr(); err != nil {
				t.Fatalf("round %d: produce: %v", round, err)
			}
			abort := txn%3 == 2
			txn++
			end := kgo.TryCommit
			if abort {
				end = kgo.TryAbort
			}
			ok, err := s.End(ctx, end)
			if err != nil {
				t.Fatalf("round %d: End(commit=%v): %v", round, !abort, err)
			}
			if ok == abort {
				t.Fatalf("round %d: End(commit=%v) returned committed=%v", round, !abort, ok)
			}
			for _, r := range outs {
				if ok {
					committedOut[string(r.Value)]++
				} else {
					abortedOut++
				}
			}
		}
		if len(committedOut) < len(want) {
			t.Fatalf("after %d rounds, %d of %d records were processed in committed transactions", rounds, len(committedOut), len(want))
		}
		for v, n := range committedOut {
			if n != 1 {
				t.Errorf("%s produced in %d committed transactions", v, n)
			}
		}
		if abortedOut == 0 {
			t.Errorf("no transaction was aborted")
		}
		got := readAll(t, b, out, nparts, kgo.ReadCommitted())
		seen := map[string]int{}
		for p := int32(0); p < nparts; p++ {
			last := int64(-1)
			for _, r := range got[p] {
				v := string(r.Value)
				seen[v]++
				if !want[v] {
					t.Errorf("read_committed %s/%d@%d: unexpected %q", out, p, r.Offset, v)
				}
				// Per partition the input offsets stay in order.
				i, _ := strconv.ParseInt(v[strings.LastIndexByte(v, '|')+1:], 10, 64)
				if i <= last {
					t.Errorf("read_committed %s/%d@%d: %q after input offset %d", out, p, r.Offset, v, last)
				}
				last = i
			}
		}
		for v := range want {
			if seen[v] != 1 {
				t.Errorf("read_committed %s: %q read %d times, want once", out, v, seen[v])
			}
		}
		all := readAll(t, b, out, nparts, kgo.ReadUncommitted())
		n := 0
		for _, rs := range all {
			n += len(rs)
		}
		if n != len(want)+abortedOut {
			t.Errorf("read_uncommitted %s: %d records, want %d committed + %d aborted", out, n, len(want), abortedOut)
		}
		// The group's committed offsets are the ends of the input.
		commit := map[tp]int64{}
		for p := int32(0); p < nparts; p++ {
			commit[tp{in, p}] = per
		}
		waitCommitted(t, adm, group, commit)
		t.Logf("%d committed records, %d aborted", len(committedOut), abortedOut)
	})
	b.alive(t)
}
