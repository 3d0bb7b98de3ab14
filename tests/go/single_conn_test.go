package e2e

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestSingleConnectionAllPartitions: partitions of one topic live on both
// shards; a single connection must reach all of them.
func TestSingleConnectionAllPartitions(t *testing.T) {
	t.Run("kgo", testSingleClientKgo)
	t.Run("raw", testSingleConnRaw)
}

// connCounter counts the connections a kgo client opens.
type connCounter struct{ n atomic.Int32 }

func (c *connCounter) OnBrokerConnect(_ kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err == nil {
		c.n.Add(1)
	}
}

// testSingleClientKgo: one kgo client (which keeps one produce connection
// and one fetch connection to the broker) produces to all four partitions in
// single Produce requests and consumes them back.
func testSingleClientKgo(t *testing.T) {
	b := startBroker(t)
	adm := newAdmin(t, b)
	const topic = "single-kgo"
	createTopic(t, adm, topic, numPartitions)

	assign := map[int32]kgo.Offset{}
	for p := int32(0); p < numPartitions; p++ {
		assign[p] = kgo.NewOffset().AtStart()
	}
	var conns connCounter
	cl := newClient(t, b,
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(20*time.Millisecond),
		kgo.MaxBufferedRecords(10000),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: assign}),
		kgo.WithHooks(&conns))

	want := produceAll(t, cl, topic)
	got := pollAll(t, cl, numPartitions*perPartition)
	checkConsumed(t, got, want, 0)
	// One metadata, one produce and one fetch connection at most (plus a
	// seed connection kgo may open before it learns the node ID).
	if n := conns.n.Load(); n > 4 {
		t.Errorf("client opened %d connections, want at most 4", n)
	}
	b.alive(t)
}

// rawConn speaks the Kafka protocol over one TCP connection.
type rawConn struct {
	t    *testing.T
	c    net.Conn
	corr int32
	max  map[int16]int16 // broker's max version per API key
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c, max: map[int16]int16{}}
}

// version picks the highest version both the broker and kmsg support.
func (rc *rawConn) version(req kmsg.Request) int16 {
	v := req.MaxVersion()
	if bv, ok := rc.max[req.Key()]; ok && bv < v {
		v = bv
	}
	return v
}

// send writes one request (with the version already set) and returns its
// correlation ID.
func (rc *rawConn) send(req kmsg.Request) int32 {
	rc.t.Helper()
	rc.corr++
	buf := make([]byte, 4, 256)
	buf = binary.BigEndian.AppendUint16(buf, uint16(req.Key()))
	buf = binary.BigEndian.AppendUint16(buf, uint16(req.GetVersion()))
	buf = binary.BigEndian.AppendUint32(buf, uint32(rc.corr))
	clientID := "shardline-e2e-raw"
	buf = binary.BigEndian.AppendUint16(buf, uint16(len(clientID)))
	buf = append(buf, clientID...)
	if req.IsFlexible() {
		buf = append(buf, 0) // empty tagged fields
	}
	buf = req.AppendTo(buf)
	binary.BigEndian.PutUint32(buf, uint32(len(buf)-4))
	rc.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := rc.c.Write(buf); err != nil {
		rc.t.Fatalf("write %s v%d: %v", kmsg.NameForKey(req.Key()), req.GetVersion(), err)
	}
	return rc.corr
}

// recv reads the response to req, which must carry correlation ID corr.
func (rc *rawConn) recv(req kmsg.Request, corr int32) kmsg.Response {
	rc.t.Helper()
	name := fmt.Sprintf("%s v%d (correlation %d)", kmsg.NameForKey(req.Key()), req.GetVersion(), corr)
	rc.c.SetReadDeadline(time.Now().Add(15 * time.Second))
	var hdr [8]byte
	if _, err := io.ReadFull(rc.c, hdr[:4]); err != nil {
		rc.t.Fatalf("read response to %s: %v", name, err)
	}
	size := binary.BigEndian.Uint32(hdr[:4])
	if size < 4 || size > 64<<20 {
		rc.t.Fatalf("response to %s: bad size %d", name, size)
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(rc.c, body); err != nil {
		rc.t.Fatalf("read response to %s: %v", name, err)
	}
	if got := int32(binary.BigEndian.Uint32(body)); got != corr {
		rc.t.Fatalf("response to %s carries correlation %d", name, got)
	}
	body = body[4:]
	if req.IsFlexible() && req.Key() != 18 { // ApiVersions always answers with header v0
		r := kbin.Reader{Src: body}
		for n := r.Uvarint(); n > 0; n-- {
			r.Uvarint()
			r.Span(int(r.Uvarint()))
		}
		if !r.Ok() {
			rc.t.Fatalf("response to %s: bad header tags", name)
		}
		body = r.Src
	}
	resp := req.ResponseKind()
	resp.SetVersion(req.GetVersion())
	if err := resp.ReadFrom(body); err != nil {
		rc.t.Fatalf("decode response to %s: %v", name, err)
	}
	return resp
}

func (rc *rawConn) do(req kmsg.Request) kmsg.Response {
	rc.t.Helper()
	req.SetVersion(rc.version(req))
	return rc.recv(req, rc.send(req))
}

// rawBatch encodes an uncompressed v2 record batch of the given records.
func rawBatch(recs []*kgo.Record) []byte {
	first := recs[0].Timestamp.UnixMilli()
	maxTs := first
	var body []byte
	for i, r := range recs {
		ts := r.Timestamp.UnixMilli()
		if ts > maxTs {
			maxTs = ts
		}
		kr := kmsg.Record{TimestampDelta64: ts - first, OffsetDelta: int32(i), Key: r.Key, Value: r.Value}
		for _, h := range r.Headers {
			kr.Headers = append(kr.Headers, kmsg.Header{Key: h.Key, Value: h.Value})
		}
		enc := kr.AppendTo(nil)[1:] // without the 1-byte zero length
		kr.Length = int32(len(enc))
		body = kr.AppendTo(body)
	}
	rb := kmsg.RecordBatch{
		PartitionLeaderEpoch: -1,
		Magic:                2,
		LastOffsetDelta:      int32(len(recs) - 1),
		FirstTimestamp:       first,
		MaxTimestamp:         maxTs,
		ProducerID:           -1,
		ProducerEpoch:        -1,
		FirstSequence:        -1,
		NumRecords:           int32(len(recs)),
		Records:              body,
	}
	out := rb.AppendTo(nil)
	binary.BigEndian.PutUint32(out[8:], uint32(len(out)-12))
	crc := crc32.Checksum(out[21:], crc32.MakeTable(crc32.Castagnoli))
	binary.BigEndian.PutUint32(out[17:], crc)
	return out
}

// parseBatches decodes the complete v2 batches in a fetch response's
// records, returning records with absolute offsets and timestamps.
func parseBatches(t *testing.T, topic string, p int32, data []byte) []*kgo.Record {
	t.Helper()
	var out []*kgo.Record
	for len(data) >= 12 {
		size := 12 + int(int32(binary.BigEndian.Uint32(data[8:])))
		if size > len(data) {
			break // truncated last batch
		}
		var rb kmsg.RecordBatch
		if err := rb.ReadFrom(data[:size]); err != nil {
			t.Fatalf("%s/%d: decode batch: %v", topic, p, err)
		}
		if rb.Magic != 2 {
			t.Fatalf("%s/%d: batch magic %d", topic, p, rb.Magic)
		}
		if crc := crc32.Checksum(data[21:size], crc32.MakeTable(crc32.Castagnoli)); uint32(rb.CRC) != crc {
			t.Errorf("%s/%d: batch at offset %d: CRC %08x, computed %08x", topic, p, rb.FirstOffset, uint32(rb.CRC), crc)
		}
		if rb.Attributes&0x7 != 0 {
			t.Fatalf("%s/%d: batch compressed (%d), produced uncompressed", topic, p, rb.Attributes&0x7)
		}
		recs := rb.Records
		for i := int32(0); i < rb.NumRecords; i++ {
			l, n := binary.Varint(recs)
			if n <= 0 || int(l)+n > len(recs) {
				t.Fatalf("%s/%d: batch at %d: bad record %d length", topic, p, rb.FirstOffset, i)
			}
			var kr kmsg.Record
			if err := kr.ReadFrom(recs[:n+int(l)]); err != nil {
				t.Fatalf("%s/%d: batch at %d: record %d: %v", topic, p, rb.FirstOffset, i, err)
			}
			recs = recs[n+int(l):]
			r := &kgo.Record{
				Topic:     topic,
				Partition: p,
				Offset:    rb.FirstOffset + int64(kr.OffsetDelta),
				Timestamp: time.UnixMilli(rb.FirstTimestamp + kr.TimestampDelta64),
				Key:       kr.Key,
				Value:     kr.Value,
			}
			for _, h := range kr.Headers {
				r.Headers = append(r.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
			}
			out = append(out, r)
		}
		if len(recs) != 0 {
			t.Errorf("%s/%d: batch at %d: %d trailing bytes after %d records", topic, p, rb.FirstOffset, len(recs), rb.NumRecords)
		}
		data = data[size:]
	}
	return out
}

// testSingleConnRaw: on ONE TCP connection: ApiVersions, CreateTopics,
// Metadata, Produce requests that each carry all four partitions (several
// pipelined, unanswered, at once), Fetch of all four partitions, ListOffsets.
func testSingleConnRaw(t *testing.T) {
	b := startBroker(t)
	rc := dialRaw(t, b.Addr)
	const topic = "single-raw"

	// ApiVersions v3.
	av := kmsg.NewPtrApiVersionsRequest()
	av.ClientSoftwareName = "shardline-e2e"
	av.ClientSoftwareVersion = "1.0"
	av.SetVersion(3)
	avr := rc.recv(av, rc.send(av)).(*kmsg.ApiVersionsResponse)
	if avr.ErrorCode != 0 {
		t.Fatalf("ApiVersions v3: %v", kerr.ErrorForCode(avr.ErrorCode))
	}
	for _, k := range avr.ApiKeys {
		rc.max[k.ApiKey] = k.MaxVersion
	}
	for _, k := range []int16{0, 1, 2, 3, 18, 19, 20} {
		if _, ok := rc.max[k]; !ok {
			t.Fatalf("ApiVersions lacks %s", kmsg.NameForKey(k))
		}
	}

	// CreateTopics: 4 partitions.
	ct := kmsg.NewPtrCreateTopicsRequest()
	ctt := kmsg.NewCreateTopicsRequestTopic()
	ctt.Topic = topic
	ctt.NumPartitions = numPartitions
	ctt.ReplicationFactor = 1
	ct.Topics = append(ct.Topics, ctt)
	ct.TimeoutMillis = 10000
	ctr := rc.do(ct).(*kmsg.CreateTopicsResponse)
	if len(ctr.Topics) != 1 || ctr.Topics[0].ErrorCode != 0 {
		t.Fatalf("CreateTopics v%d: %+v", ct.Version, ctr.Topics)
	}

	// Metadata: all partitions led by this broker.
	md := kmsg.NewPtrMetadataRequest()
	mdt := kmsg.NewMetadataRequestTopic()
	mdt.Topic = kmsg.StringPtr(topic)
	md.Topics = append(md.Topics, mdt)
	var mdr *kmsg.MetadataResponse
	deadline := time.Now().Add(10 * time.Second)
	for {
		mdr = rc.do(md).(*kmsg.MetadataResponse)
		if len(mdr.Topics) == 1 && mdr.Topics[0].ErrorCode == 0 && len(mdr.Topics[0].Partitions) == numPartitions || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(mdr.Brokers) != 1 || len(mdr.Topics) != 1 || mdr.Topics[0].ErrorCode != 0 || len(mdr.Topics[0].Partitions) != numPartitions {
		t.Fatalf("Metadata v%d: brokers %+v topics %+v", md.Version, mdr.Brokers, mdr.Topics)
	}
	for _, p := range mdr.Topics[0].Partitions {
		if p.ErrorCode != 0 || p.Leader != mdr.Brokers[0].NodeID {
			t.Fatalf("Metadata v%d partition %d: error %v leader %d", md.Version, p.Partition, kerr.ErrorForCode(p.ErrorCode), p.Leader)
		}
	}
	topicID := mdr.Topics[0].TopicID

	// Produce: requests of 10 records per partition, each request carrying
	// all four partitions. The first two are sent one at a time, the other
	// four are pipelined; responses must come in request order and the
	// base offsets must follow it.
	const perReq, reqs = 10, 6
	want := map[int32][]*kgo.Record{}
	newProduce := func(k int) *kmsg.ProduceRequest {
		pr := kmsg.NewPtrProduceRequest()
		pr.Acks = -1
		pr.TimeoutMillis = 10000
		prt := kmsg.NewProduceRequestTopic()
		prt.Topic = topic
		prt.TopicID = topicID
		for p := int32(0); p < numPartitions; p++ {
			var recs []*kgo.Record
			for i := k * perReq; i < (k+1)*perReq; i++ {
				r := makeRecord(topic, p, i)
				r.Offset = int64(i)
				recs = append(recs, r)
			}
			want[p] = append(want[p], recs...)
			pp := kmsg.NewProduceRequestTopicPartition()
			pp.Partition = p
			pp.Records = rawBatch(recs)
			prt.Partitions = append(prt.Partitions, pp)
		}
		pr.Topics = append(pr.Topics, prt)
		pr.SetVersion(rc.version(pr))
		return pr
	}
	checkProduce := func(k int, req *kmsg.ProduceRequest, resp *kmsg.ProduceResponse) {
		t.Helper()
		seen := map[int32]bool{}
		for _, tr := range resp.Topics {
			for _, pr := range tr.Partitions {
				seen[pr.Partition] = true
				if pr.ErrorCode != 0 || pr.BaseOffset != int64(k*perReq) {
					t.Errorf("Produce v%d request %d partition %d: error %v (%v) base offset %d, want base offset %d",
						req.Version, k, pr.Partition, kerr.ErrorForCode(pr.ErrorCode), pr.ErrorMessage, pr.BaseOffset, k*perReq)
				}
			}
		}
		if len(seen) != numPartitions {
			t.Errorf("Produce v%d request %d: answered partitions %v, want all %d", req.Version, k, seen, numPartitions)
		}
	}
	for k := 0; k < 2; k++ {
		req := newProduce(k)
		checkProduce(k, req, rc.recv(req, rc.send(req)).(*kmsg.ProduceResponse))
	}
	var pending []*kmsg.ProduceRequest
	var corrs []int32
	for k := 2; k < reqs; k++ {
		req := newProduce(k)
		pending = append(pending, req)
		corrs = append(corrs, rc.send(req))
	}
	for i, req := range pending {
		checkProduce(i+2, req, rc.recv(req, corrs[i]).(*kmsg.ProduceResponse))
	}
	if t.Failed() {
		t.FailNow()
	}
	b.alive(t)

	// Fetch all four partitions in one request per round until all
	// records are back.
	total := perReq * reqs
	got := map[int32][]*kgo.Record{}
	next := map[int32]int64{}
	deadline = time.Now().Add(consumeTimeout)
	for {
		done := true
		for p := int32(0); p < numPartitions; p++ {
			if next[p] < int64(total) {
				done = false
			}
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fetched %v of %d records per partition within %v", next, total, consumeTimeout)
		}
		fr := kmsg.NewPtrFetchRequest()
		fr.ReplicaID = -1
		fr.MaxWaitMillis = 500
		fr.MinBytes = 1
		fr.MaxBytes = 50 << 20
		fr.SessionEpoch = -1
		ft := kmsg.NewFetchRequestTopic()
		ft.Topic = topic
		ft.TopicID = topicID
		for p := int32(0); p < numPartitions; p++ {
			fp := kmsg.NewFetchRequestTopicPartition()
			fp.Partition = p
			fp.FetchOffset = next[p]
			fp.CurrentLeaderEpoch = -1
			fp.PartitionMaxBytes = 64 << 10 // forces several rounds
			ft.Partitions = append(ft.Partitions, fp)
		}
		fr.Topics = append(fr.Topics, ft)
		resp := rc.do(fr).(*kmsg.FetchResponse)
		if resp.ErrorCode != 0 {
			t.Fatalf("Fetch v%d: %v", fr.Version, kerr.ErrorForCode(resp.ErrorCode))
		}
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != numPartitions {
			t.Fatalf("Fetch v%d: response has %d topics (%+v)", fr.Version, len(resp.Topics), resp.Topics)
		}
		for _, fp := range resp.Topics[0].Partitions {
			if fp.ErrorCode != 0 {
				t.Fatalf("Fetch v%d partition %d at %d: %v", fr.Version, fp.Partition, next[fp.Partition], kerr.ErrorForCode(fp.ErrorCode))
			}
			if fp.HighWatermark != int64(total) {
				t.Errorf("Fetch v%d partition %d: high watermark %d, want %d", fr.Version, fp.Partition, fp.HighWatermark, total)
			}
			for _, r := range parseBatches(t, topic, fp.Partition, fp.RecordBatches) {
				if r.Offset < next[fp.Partition] {
					continue // batch starts before the fetch offset
				}
				got[fp.Partition] = append(got[fp.Partition], r)
				next[fp.Partition] = r.Offset + 1
			}
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	checkConsumed(t, got, want, -1)

	// ListOffsets: earliest and latest for all four partitions in one request.
	for _, c := range []struct {
		ts   int64
		want int64
	}{{-2, 0}, {-1, int64(total)}} {
		lr := kmsg.NewPtrListOffsetsRequest()
		lr.ReplicaID = -1
		lt := kmsg.NewListOffsetsRequestTopic()
		lt.Topic = topic
		for p := int32(0); p < numPartitions; p++ {
			lp := kmsg.NewListOffsetsRequestTopicPartition()
			lp.Partition = p
			lp.CurrentLeaderEpoch = -1
			lp.Timestamp = c.ts
			lt.Partitions = append(lt.Partitions, lp)
		}
		lr.Topics = append(lr.Topics, lt)
		resp := rc.do(lr).(*kmsg.ListOffsetsResponse)
		n := 0
		for _, tr := range resp.Topics {
			for _, pr := range tr.Partitions {
				n++
				if pr.ErrorCode != 0 || pr.Offset != c.want {
					t.Errorf("ListOffsets v%d timestamp %d partition %d: error %v offset %d, want %d",
						lr.Version, c.ts, pr.Partition, kerr.ErrorForCode(pr.ErrorCode), pr.Offset, c.want)
				}
			}
		}
		if n != numPartitions {
			t.Errorf("ListOffsets v%d timestamp %d: %d partitions answered, want %d", lr.Version, c.ts, n, numPartitions)
		}
	}
	b.alive(t)
}
