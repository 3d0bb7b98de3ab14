package e2e

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	numPartitions    = 4
	perPartition     = 60 // records per partition
	produceRounds    = 3  // ProduceSync calls; each carries perPartition/produceRounds records per partition
	consumeTimeout   = 30 * time.Second
	noMoreRecordsFor = 1500 * time.Millisecond
)

type codec struct {
	name  string
	c     kgo.CompressionCodec
	attrs int8 // the compression bits expected in the batch attributes
}

var codecs = []codec{
	{"none", kgo.NoCompression(), 0},
	{"gzip", kgo.GzipCompression(), 1},
	{"snappy", kgo.SnappyCompression(), 2},
	{"lz4", kgo.Lz4Compression(), 3},
	{"zstd", kgo.ZstdCompression(), 4},
}

var ackModes = []struct {
	name string
	acks kgo.Acks
}{
	{"acks=all", kgo.AllISRAcks()},
	{"acks=leader", kgo.LeaderAck()},
}

// baseTime is a fixed millisecond time an hour in the past; record
// timestamps are derived from it.
var baseTime = time.Now().Add(-time.Hour).Truncate(time.Millisecond)

// recTime is the timestamp of record i of partition p: increasing within a
// partition, distinct across partitions.
func recTime(p int32, i int) time.Time {
	return baseTime.Add(time.Duration(i*10+int(p)) * time.Millisecond)
}

// makeRecord builds record i of partition p: keys (some null), values of
// various sizes (one null, one empty, some large and compressible), 0-3
// headers (duplicate keys, empty and null values) and an explicit timestamp.
func makeRecord(topic string, p int32, i int) *kgo.Record {
	r := &kgo.Record{Topic: topic, Partition: p, Timestamp: recTime(p, i)}
	if i%15 != 7 {
		r.Key = []byte(fmt.Sprintf("key-%d-%d", p, i))
	}
	switch {
	case i%20 == 3:
		r.Value = []byte{}
	case i%20 == 13:
		r.Value = nil
	case i%10 == 5:
		r.Value = []byte(strings.Repeat(fmt.Sprintf("large value %d/%d; ", p, i), 300))
	default:
		r.Value = []byte(fmt.Sprintf("value-%d-%d-%x", p, i, []byte{byte(p), byte(i), 0, 0xff}))
	}
	for h := 0; h < i%4; h++ {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: fmt.Sprintf("h%d", h), Value: []byte(fmt.Sprintf("hv-%d-%d-%d", p, i, h))})
	}
	if i%4 == 3 {
		r.Headers = append(r.Headers,
			kgo.RecordHeader{Key: "h0", Value: []byte("duplicate key")},
			kgo.RecordHeader{Key: "empty", Value: []byte{}},
			kgo.RecordHeader{Key: "", Value: nil})
	}
	return r
}

// sameBytes compares byte slices, telling null from empty.
func sameBytes(a, b []byte) bool {
	if (a == nil) != (b == nil) {
		return false
	}
	return bytes.Equal(a, b)
}

func fmtBytes(b []byte) string {
	if b == nil {
		return "<null>"
	}
	if len(b) > 40 {
		return fmt.Sprintf("%q...(%d bytes)", b[:40], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// compareRecord reports differences between a consumed and an expected record.
func compareRecord(got, want *kgo.Record) []string {
	var d []string
	if got.Topic != want.Topic || got.Partition != want.Partition || got.Offset != want.Offset {
		d = append(d, fmt.Sprintf("position %s/%d@%d, want %s/%d@%d", got.Topic, got.Partition, got.Offset, want.Topic, want.Partition, want.Offset))
	}
	if !sameBytes(got.Key, want.Key) {
		d = append(d, fmt.Sprintf("key %s, want %s", fmtBytes(got.Key), fmtBytes(want.Key)))
	}
	if !sameBytes(got.Value, want.Value) {
		d = append(d, fmt.Sprintf("value %s, want %s", fmtBytes(got.Value), fmtBytes(want.Value)))
	}
	if !got.Timestamp.Equal(want.Timestamp) {
		d = append(d, fmt.Sprintf("timestamp %d, want %d", got.Timestamp.UnixMilli(), want.Timestamp.UnixMilli()))
	}
	if len(got.Headers) != len(want.Headers) {
		d = append(d, fmt.Sprintf("%d headers %v, want %d %v", len(got.Headers), got.Headers, len(want.Headers), want.Headers))
	} else {
		for h := range got.Headers {
			if got.Headers[h].Key != want.Headers[h].Key || !sameBytes(got.Headers[h].Value, want.Headers[h].Value) {
				d = append(d, fmt.Sprintf("header %d = %q:%s, want %q:%s", h,
					got.Headers[h].Key, fmtBytes(got.Headers[h].Value), want.Headers[h].Key, fmtBytes(want.Headers[h].Value)))
			}
		}
	}
	if tt := got.Attrs.TimestampType(); tt != 0 {
		d = append(d, fmt.Sprintf("timestamp type %d, want 0 (CreateTime)", tt))
	}
	return d
}

// produceAll produces perPartition records to each partition of topic in
// produceRounds ProduceSync calls, checks the acknowledged offsets, and
// returns the records (with their offsets) per partition.
func produceAll(t *testing.T, cl *kgo.Client, topic string) map[int32][]*kgo.Record {
	t.Helper()
	want := make(map[int32][]*kgo.Record)
	per := perPartition / produceRounds
	for round := 0; round < produceRounds; round++ {
		var batch []*kgo.Record
		for i := round * per; i < (round+1)*per; i++ {
			for p := int32(0); p < numPartitions; p++ {
				batch = append(batch, makeRecord(topic, p, i))
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		results := cl.ProduceSync(ctx, batch...)
		cancel()
		if err := results.FirstErr(); err != nil {
			t.Fatalf("ProduceSync round %d: %v", round, err)
		}
		for _, r := range results {
			want[r.Record.Partition] = append(want[r.Record.Partition], r.Record)
		}
	}
	for p := int32(0); p < numPartitions; p++ {
		if len(want[p]) != perPartition {
			t.Fatalf("partition %d: %d records acknowledged, want %d", p, len(want[p]), perPartition)
		}
		for i, r := range want[p] {
			// Each record was produced in order; the ack gives it its offset.
			wantKey := makeRecord(topic, p, i).Key
			if r.Offset != int64(i) || !sameBytes(r.Key, wantKey) {
				t.Fatalf("partition %d: acknowledged record %d (key %s) at offset %d, want offset %d", p, i, fmtBytes(r.Key), r.Offset, i)
			}
		}
	}
	return want
}

// consumeAll consumes topic's partitions from the start with direct
// assignment until it has total records (or times out), then keeps polling
// briefly to catch duplicates. It returns the records per partition in
// delivery order.
func consumeAll(t *testing.T, b *broker, topic string, partitions int32, total int) map[int32][]*kgo.Record {
	t.Helper()
	assign := map[int32]kgo.Offset{}
	for p := int32(0); p < partitions; p++ {
		assign[p] = kgo.NewOffset().AtStart()
	}
	cl := newClient(t, b, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: assign}))
	return pollAll(t, cl, total)
}

func pollAll(t *testing.T, cl *kgo.Client, total int) map[int32][]*kgo.Record {
	t.Helper()
	got := make(map[int32][]*kgo.Record)
	n := 0
	deadline := time.Now().Add(consumeTimeout)
	poll := func(until time.Time) {
		ctx, cancel := context.WithDeadline(context.Background(), until)
		defer cancel()
		fs := cl.PollFetches(ctx)
		for _, fe := range fs.Errors() {
			if ctx.Err() != nil && (fe.Err == context.DeadlineExceeded || fe.Err == context.Canceled) {
				continue
			}
			t.Errorf("fetch error %s/%d: %v", fe.Topic, fe.Partition, fe.Err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			got[r.Partition] = append(got[r.Partition], r)
			n++
		})
	}
	for n < total && time.Now().Before(deadline) && !t.Failed() {
		poll(deadline)
	}
	if n < total {
		counts := map[int32]int{}
		for p, rs := range got {
			counts[p] = len(rs)
		}
		t.Fatalf("consumed %d of %d records within %v (per partition: %v)", n, total, consumeTimeout, counts)
	}
	poll(time.Now().Add(noMoreRecordsFor))
	if n != total {
		t.Errorf("consumed %d records, want exactly %d (duplicates or extras)", n, total)
	}
	return got
}

func checkConsumed(t *testing.T, got, want map[int32][]*kgo.Record, compression int8) {
	t.Helper()
	for p, ws := range want {
		gs := got[p]
		if len(gs) != len(ws) {
			t.Errorf("partition %d: consumed %d records, want %d", p, len(gs), len(ws))
		}
		bad := 0
		for i := 0; i < len(gs) && i < len(ws); i++ {
			diffs := compareRecord(gs[i], ws[i])
			if c := gs[i].Attrs.CompressionType(); compression >= 0 && int8(c) != compression {
				diffs = append(diffs, fmt.Sprintf("batch compression %d, want %d (produced batches must be stored as sent)", c, compression))
			}
			if len(diffs) > 0 {
				bad++
				if bad <= 5 {
					t.Errorf("partition %d record %d: %s", p, i, strings.Join(diffs, "; "))
				}
			}
		}
		if bad > 5 {
			t.Errorf("partition %d: %d records differ in all", p, bad)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("consumed records from unexpected partition %d", p)
		}
	}
}

// TestProduceConsume: for each acks mode and codec, sync-produce records
// to a 4-partition topic, consume them from the start with direct assignment
// and check every record once, in order, intact; then ListOffsets.
func TestProduceConsume(t *testing.T) {
	for _, am := range ackModes {
		for _, cd := range codecs {
			t.Run(am.name+"/"+cd.name, func(t *testing.T) {
				b := startBroker(t)
				adm := newAdmin(t, b)
				topic := fmt.Sprintf("pc-%s-%s", strings.TrimPrefix(am.name, "acks="), cd.name)
				createTopic(t, adm, topic, numPartitions)

				prod := newClient(t, b,
					kgo.RequiredAcks(am.acks),
					kgo.ProducerBatchCompression(cd.c),
					kgo.RecordPartitioner(kgo.ManualPartitioner()),
					kgo.ProducerLinger(5*time.Millisecond))
				ok := t.Run("produce-consume", func(t *testing.T) {
					want := produceAll(t, prod, topic)
					b.alive(t)
					got := consumeAll(t, b, topic, numPartitions, numPartitions*perPartition)
					checkConsumed(t, got, want, cd.attrs)
					b.alive(t)
				})
				if !ok {
					return
				}
				t.Run("list-offsets", func(t *testing.T) {
					checkListOffsets(t, adm, prod, topic)
					b.alive(t)
				})
			})
		}
	}
}

func checkListOffsets(t *testing.T, adm *kadm.Client, cl *kgo.Client, topic string) {
	t.Helper()
	ctx := ctxTimeout(t, 30*time.Second)

	check := func(what string, lo kadm.ListedOffsets, err error, wantOff func(p int32) int64, wantTs func(p int32) int64) {
		t.Helper()
		if err != nil {
			t.Errorf("%s: %v", what, err)
			return
		}
		for p := int32(0); p < numPartitions; p++ {
			o, ok := lo.Lookup(topic, p)
			if !ok {
				t.Errorf("%s: no result for partition %d: %+v", what, p, lo)
				continue
			}
			if o.Err != nil {
				t.Errorf("%s partition %d: %v", what, p, o.Err)
				continue
			}
			if o.Offset != wantOff(p) {
				t.Errorf("%s partition %d: offset %d, want %d", what, p, o.Offset, wantOff(p))
			}
			if wantTs != nil && o.Timestamp != wantTs(p) {
				t.Errorf("%s partition %d: timestamp %d, want %d", what, p, o.Timestamp, wantTs(p))
			}
		}
	}
	n := int64(perPartition)
	lo, err := adm.ListStartOffsets(ctx, topic)
	check("ListStartOffsets", lo, err, func(int32) int64 { return 0 }, nil)
	lo, err = adm.ListEndOffsets(ctx, topic)
	check("ListEndOffsets", lo, err, func(int32) int64 { return n }, nil)

	ms := func(p int32, i int) int64 { return recTime(p, i).UnixMilli() }
	// Exactly record 25's timestamp in partition 0; for p>0 record 25 is
	// the first at or after it.
	target := ms(0, 25)
	lo, err = adm.ListOffsetsAfterMilli(ctx, target, topic)
	check(fmt.Sprintf("ListOffsetsAfterMilli(%d)", target), lo, err,
		func(int32) int64 { return 25 }, func(p int32) int64 { return ms(p, 25) })
	// One ms later: partition 0 moves to record 26, partition 1 hits record
	// 25 exactly, the others stay at 25.
	target++
	lo, err = adm.ListOffsetsAfterMilli(ctx, target, topic)
	check(fmt.Sprintf("ListOffsetsAfterMilli(%d)", target), lo, err,
		func(p int32) int64 {
			if p == 0 {
				return 26
			}
			return 25
		},
		func(p int32) int64 {
			if p == 0 {
				return ms(0, 26)
			}
			return ms(p, 25)
		})
	// A timestamp in a later produce round (another batch).
	target = ms(3, perPartition-5)
	lo, err = adm.ListOffsetsAfterMilli(ctx, target, topic)
	check(fmt.Sprintf("ListOffsetsAfterMilli(%d)", target), lo, err,
		func(p int32) int64 {
			if p == 3 {
				return perPartition - 5
			}
			return perPartition - 4
		}, nil)
	// Before every record: offset 0, with record 0's timestamp.
	target = ms(0, 0) - 60_000
	lo, err = adm.ListOffsetsAfterMilli(ctx, target, topic)
	check(fmt.Sprintf("ListOffsetsAfterMilli(%d)", target), lo, err,
		func(int32) int64 { return 0 }, func(p int32) int64 { return ms(p, 0) })

	// After every record the broker answers offset -1 (kadm then falls
	// back to the end offset): check the raw answer.
	req := kmsg.NewPtrListOffsetsRequest()
	req.ReplicaID = -1
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	for p := int32(0); p < numPartitions; p++ {
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition = p
		rp.CurrentLeaderEpoch = -1
		rp.Timestamp = ms(3, perPartition) + 60_000
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Errorf("ListOffsets (future timestamp): %v", err)
	} else {
		for _, tr := range resp.Topics {
			for _, pr := range tr.Partitions {
				if pr.ErrorCode != 0 || pr.Offset != -1 || pr.Timestamp != -1 {
					t.Errorf("ListOffsets v%d %s/%d timestamp after all records: error %v offset %d timestamp %d, want no error, offset -1, timestamp -1",
						negotiatedVersion(t, ctx, cl, req), tr.Topic, pr.Partition, kerr.ErrorForCode(pr.ErrorCode), pr.Offset, pr.Timestamp)
				}
			}
		}
	}
	lo, err = adm.ListOffsetsAfterMilli(ctx, ms(3, perPartition)+60_000, topic)
	check("ListOffsetsAfterMilli(after all)", lo, err, func(int32) int64 { return n }, nil)

	// Max timestamp (-3, ListOffsets v7): the last record, which has the
	// largest timestamp.
	if v := negotiatedVersion(t, ctx, cl, req); v >= 7 {
		for i := range req.Topics[0].Partitions {
			req.Topics[0].Partitions[i].Timestamp = -3
		}
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Errorf("ListOffsets max-timestamp: %v", err)
		} else {
			for _, tr := range resp.Topics {
				for _, pr := range tr.Partitions {
					if pr.ErrorCode != 0 || pr.Offset != n-1 || pr.Timestamp != ms(pr.Partition, perPartition-1) {
						t.Errorf("ListOffsets v%d %s/%d max timestamp (-3): error %v offset %d timestamp %d, want offset %d timestamp %d",
							v, tr.Topic, pr.Partition, kerr.ErrorForCode(pr.ErrorCode), pr.Offset, pr.Timestamp,
							n-1, ms(pr.Partition, perPartition-1))
					}
				}
			}
		}
	} else {
		t.Errorf("ListOffsets negotiated v%d, broker advertises up to 7", v)
	}
}

// negotiatedVersion is the version kgo sends req at: the highest that both
// kmsg and the broker (per ApiVersions) support.
func negotiatedVersion(t *testing.T, ctx context.Context, cl *kgo.Client, req kmsg.Request) int16 {
	t.Helper()
	resp, err := kmsg.NewPtrApiVersionsRequest().RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("ApiVersions: %v", err)
	}
	for _, k := range resp.ApiKeys {
		if k.ApiKey == req.Key() {
			return min(k.MaxVersion, req.MaxVersion())
		}
	}
	t.Fatalf("broker does not advertise %s", kmsg.NameForKey(req.Key()))
	return -1
}
