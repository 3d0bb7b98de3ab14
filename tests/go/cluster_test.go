package e2e

import (
	"context"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// startCluster starts three nodes on 127.0.0.1–3 (each broker and
// controller, one shard) at once, as each waits for its quorum; returns
// them with the options that restart each.
func startCluster(t *testing.T) ([]*broker, []brokerOpts) {
	t.Helper()
	var voters []string
	for id := 1; id <= 3; id++ {
		host := fmt.Sprintf("127.0.0.%d", id)
		voters = append(voters, fmt.Sprintf("%d@%s:%d", id, host, freePortOn(t, host)))
	}
	opts := make([]brokerOpts, 3)
	for i := range opts {
		host := fmt.Sprintf("127.0.0.%d", i+1)
		opts[i] = brokerOpts{
			dataDir: t.TempDir(),
			listen:  fmt.Sprintf("%s:%d", host, freePortOn(t, host)),
			sets:    []string{fmt.Sprintf("node_id=%d", i+1), "controller_quorum_voters=" + strings.Join(voters, ",")},
			shards:  1,
		}
	}
	type started struct {
		b   *broker
		err error
	}
	results := make([]chan started, 3)
	for i := range opts {
		results[i] = make(chan started, 1)
		go func(i int) {
			b, err := tryStartBroker(t, opts[i])
			results[i] <- started{b, err}
		}(i)
	}
	nodes := make([]*broker, 3)
	for i := range opts {
		r := <-results[i]
		if r.err != nil {
			t.Fatalf("node %d: %v", i+1, r.err)
		}
		nodes[i] = r.b
		t.Cleanup(func() { r.b.stop(t) })
	}
	return nodes, opts
}

// leadersOf is each partition's leader (-1: none) of topic as adm lists
// it, or nil when it cannot.
func leadersOf(ctx context.Context, adm *kadm.Client, topic string, partitions int) []int32 {
	listed, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return nil
	}
	td, ok := listed[topic]
	if !ok || td.Err != nil || len(td.Partitions) != partitions {
		return nil
	}
	leaders := make([]int32, partitions)
	for p, pd := range td.Partitions {
		if int(p) >= partitions {
			return nil
		}
		leaders[p] = pd.Leader
	}
	return leaders
}

// TestClusterFollowsFailures: a 3-node cluster; kadm creates 12 partitions
// through node 2, spread 4/4/4; a producer seeded at node 3 and a consumer
// seeded at node 1 reach every partition; after kill -9 of broker 2 its
// partitions show offline and the others are served; after it returns its
// partitions are served again, with their data.
func TestClusterFollowsFailures(t *testing.T) {
	const topic, partitions, victim = "go-spread", 12, 2
	nodes, opts := startCluster(t)
	ctx := ctxTimeout(t, 240*time.Second)

	created, err := newAdmin(t, nodes[1]).CreateTopics(ctx, partitions, 1, nil, topic)
	if err != nil || created[topic].Err != nil {
		t.Fatalf("CreateTopics through node 2: %v %+v", err, created)
	}
	adm := newAdmin(t, nodes[2])
	var placed []int32
	waitFor(t, 20*time.Second, "every partition has a leader", func() string {
		placed = leadersOf(ctx, adm, topic, partitions)
		if placed == nil {
			return "not listed"
		}
		for _, l := range placed {
			if l < 1 {
				return fmt.Sprintf("leaders %v", placed)
			}
		}
		return ""
	})
	for broker := int32(1); broker <= 3; broker++ {
		n := 0
		for _, l := range placed {
			if l == broker {
				n++
			}
		}
		if n != partitions/3 {
			t.Fatalf("broker %d leads %d partitions, want %d: %v", broker, n, partitions/3, placed)
		}
	}

	producer := newClient(t, nodes[2],
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(0),
		kgo.RecordRetries(math.MaxInt32),
		kgo.RecordDeliveryTimeout(90*time.Second))
	consumePartitions := map[int32]kgo.Offset{}
	for p := int32(0); p < partitions; p++ {
		consumePartitions[p] = kgo.NewOffset().AtStart()
	}
	consumer := newClient(t, nodes[0], kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: consumePartitions}))

	want := map[string]string{}
	got := map[string]string{}
	produce := func(p int32, value string, offset int64) {
		t.Helper()
		r := &kgo.Record{Topic: topic, Partition: p, Value: []byte(value)}
		if err := producer.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatalf("produce %s to partition %d: %v", value, p, err)
		}
		if r.Offset != offset {
			t.Fatalf("produce %s to partition %d: offset %d, want %d", value, p, r.Offset, offset)
		}
		want[fmt.Sprintf("%d@%d", p, offset)] = value
	}
	readAll := func(what string) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for len(got) < len(want) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: read %d of %d records: %v", what, len(got), len(want), got)
			}
			pollCtx, cancel := context.WithTimeout(ctx, time.Second)
			fetches := consumer.PollFetches(pollCtx)
			cancel()
			fetches.EachRecord(func(r *kgo.Record) {
				got[fmt.Sprintf("%d@%d", r.Partition, r.Offset)] = string(r.Value)
			})
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: read %v, want %v", what, got, want)
		}
	}

	for p := int32(0); p < partitions; p++ {
		produce(p, fmt.Sprintf("first-%d", p), 0)
	}
	readAll("every partition through node 1")

	// kill -9 of broker 2: its partitions offline, the others served.
	nodes[victim-1].kill9(t)
	waitFor(t, 30*time.Second, "the killed broker's partitions show offline", func() string {
		now := leadersOf(ctx, adm, topic, partitions)
		if now == nil {
			return "not listed"
		}
		for p, l := range placed {
			expected := l
			if l == victim {
				expected = -1
			}
			if now[p] != expected {
				return fmt.Sprintf("leaders %v, placed %v", now, placed)
			}
		}
		return ""
	})
	var victims []int32
	for p, l := range placed {
		if l == victim {
			victims = append(victims, int32(p))
		} else {
			produce(int32(p), fmt.Sprintf("second-%d", p), 1)
		}
	}
	readAll("the live brokers' partitions while broker 2 is down")

	// It returns: its partitions are served again, with their data.
	nodes[victim-1] = startBrokerWith(t, opts[victim-1])
	waitFor(t, 30*time.Second, "the restarted broker leads its partitions again", func() string {
		if now := leadersOf(ctx, adm, topic, partitions); !reflect.DeepEqual(now, placed) {
			return fmt.Sprintf("leaders %v, placed %v", now, placed)
		}
		return ""
	})
	sort.Slice(victims, func(i, j int) bool { return victims[i] < victims[j] })
	for _, p := range victims {
		produce(p, fmt.Sprintf("second-%d", p), 1)
	}
	readAll("every partition, the returned broker's with its first record")
}
