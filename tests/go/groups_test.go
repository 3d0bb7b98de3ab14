// Consumer-group tests with franz-go's group consumer (kgo.ConsumerGroup),
// each run with the classic protocol (JoinGroup/SyncGroup/Heartbeat, the
// client-side cooperative-sticky balancer) and with the KIP-848 consumer
// protocol (ConsumerGroupHeartbeat, kgo.ServerSideBalancer, the broker's
// "uniform" assignor). The two protocol runs of a test go in parallel, each
// against its own broker.
package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	// childEnv, when set, makes this test binary a helper consumer process
	// (TestHelperConsumer) instead of a test run.
	childEnv = "SHARDLINE_E2E_GROUP_CHILD"

	classicSession   = 6 * time.Second // kgo.SessionTimeout of classic members (the broker's minimum)
	consumerSession  = 8 * time.Second // group_consumer_session_timeout_ms of the broker
	groupSettle      = 45 * time.Second
	groupConsumeWait = 30 * time.Second
)

// groupBrokerSets are the broker settings of every group test: no initial
// rebalance delay, and a short KIP-848 session timeout.
var groupBrokerSets = []string{
	"group_initial_rebalance_delay_ms=0",
	"group_consumer_session_timeout_ms=8000",
	"group_consumer_heartbeat_interval_ms=1000",
}

var groupProtocols = []string{"classic", "consumer"}

func sessionTimeout(proto string) time.Duration {
	if proto == "consumer" {
		return consumerSession
	}
	return classicSession
}

// eachProtocol runs f as parallel subtests "classic" and "consumer".
func eachProtocol(t *testing.T, f func(t *testing.T, proto string)) {
	for _, proto := range groupProtocols {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			f(t, proto)
		})
	}
}

func startGroupBroker(t *testing.T) *broker {
	t.Helper()
	return startBrokerWith(t, brokerOpts{sets: groupBrokerSets})
}

// groupOpts are the options of a group member: offsets from the start when
// none are committed, short timeouts, autocommit every 500ms, metadata
// refreshed every second (new partitions, regex matches), and for proto
// "consumer" the KIP-848 protocol.
func groupOpts(proto, group, clientID string) []kgo.Opt {
	opts := []kgo.Opt{
		kgo.ConsumerGroup(group),
		kgo.ClientID(clientID),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.SessionTimeout(classicSession),
		kgo.HeartbeatInterval(time.Second),
		kgo.RebalanceTimeout(20 * time.Second),
		kgo.AutoCommitInterval(500 * time.Millisecond),
		kgo.MetadataMaxAge(time.Second),
	}
	if proto == "consumer" {
		opts = append(opts, kgo.ServerSideBalancer())
	}
	return opts
}

// ---------------------------------------------------------------------------
// Records

type tp struct {
	topic string
	part  int32
}

func (x tp) String() string { return fmt.Sprintf("%s/%d", x.topic, x.part) }

type rec struct {
	tp
	off int64
}

func recValue(topic string, p int32, off int64) string {
	return fmt.Sprintf("%s|%d|%d", topic, p, off)
}

// produceRange produces records [from, to) to each of the partitions of
// topic, in one ProduceSync, and checks that record i got offset i.
func produceRange(t *testing.T, cl *kgo.Client, topic string, parts []int32, from, to int64) {
	t.Helper()
	var batch []*kgo.Record
	for i := from; i < to; i++ {
		for _, p := range parts {
			batch = append(batch, &kgo.Record{Topic: topic, Partition: p,
				Key: []byte(strconv.FormatInt(i, 10)), Value: []byte(recValue(topic, p, i))})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	results := cl.ProduceSync(ctx, batch...)
	if err := results.FirstErr(); err != nil {
		t.Fatalf("produce %s [%d,%d): %v", topic, from, to, err)
	}
	for _, r := range results {
		if want := string(r.Record.Value); want != recValue(topic, r.Record.Partition, r.Record.Offset) {
			t.Fatalf("produce %s/%d: record %s acknowledged at offset %d", topic, r.Record.Partition, want, r.Record.Offset)
		}
	}
}

func parts(n int32) []int32 {
	ps := make([]int32, n)
	for i := range ps {
		ps[i] = int32(i)
	}
	return ps
}

func newProducer(t *testing.T, b *broker) *kgo.Client {
	t.Helper()
	return newClient(t, b, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0))
}

// ---------------------------------------------------------------------------
// In-process group members

type member struct {
	name string
	cl   *kgo.Client

	mu     sync.Mutex
	owned  map[tp]bool // per the OnPartitions* callbacks
	events []string    // non-empty assigned/revoked/lost callbacks
	recs   []rec       // every record delivered, in order
	errs   []string    // fetch errors
	bad    []string    // records whose value does not match their position

	cancel   context.CancelFunc
	done     chan struct{}
	stopOnce sync.Once
}

// startMember starts a group member that polls in a goroutine until the test
// ends (or stop). extra adds options, such as what to consume.
func startMember(t *testing.T, b *broker, proto, group, name string, extra ...kgo.Opt) *member {
	t.Helper()
	m := &member{name: name, owned: map[tp]bool{}, done: make(chan struct{})}
	change := func(what string, add bool) func(context.Context, *kgo.Client, map[string][]int32) {
		return func(_ context.Context, _ *kgo.Client, ps map[string][]int32) {
			m.mu.Lock()
			defer m.mu.Unlock()
			n := 0
			for topic, list := range ps {
				for _, p := range list {
					n++
					if add {
						m.owned[tp{topic, p}] = true
					} else {
						delete(m.owned, tp{topic, p})
					}
				}
			}
			if n > 0 {
				m.events = append(m.events, fmt.Sprintf("%s %v", what, ps))
			}
		}
	}
	opts := append(groupOpts(proto, group, name),
		kgo.OnPartitionsAssigned(change("assigned", true)),
		kgo.OnPartitionsRevoked(change("revoked", false)),
		kgo.OnPartitionsLost(change("lost", false)))
	opts = append(opts, extra...)
	cl, err := kgo.NewClient(clientOpts(b, opts...)...)
	if err != nil {
		t.Fatalf("kgo.NewClient: %v", err)
	}
	m.cl = cl
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go m.poll(ctx)
	t.Cleanup(func() { m.stop(t) })
	return m
}

func (m *member) poll(ctx context.Context) {
	defer close(m.done)
	for ctx.Err() == nil {
		fs := m.cl.PollFetches(ctx)
		if fs.IsClientClosed() {
			return
		}
		m.mu.Lock()
		fs.EachError(func(topic string, p int32, err error) {
			if ctx.Err() == nil && !errors.Is(err, context.Canceled) {
				m.errs = append(m.errs, fmt.Sprintf("%s/%d: %v", topic, p, err))
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			m.recs = append(m.recs, rec{tp{r.Topic, r.Partition}, r.Offset})
			if string(r.Value) != recValue(r.Topic, r.Partition, r.Offset) {
				m.bad = append(m.bad, fmt.Sprintf("%s/%d@%d has value %q", r.Topic, r.Partition, r.Offset, r.Value))
			}
		})
		m.mu.Unlock()
	}
}

// stop stops polling and closes the client (which leaves the group unless
// the member is static).
func (m *member) stop(t *testing.T) {
	m.stopOnce.Do(func() {
		m.cancel()
		select {
		case <-m.done:
		case <-time.After(10 * time.Second):
			t.Errorf("member %s: poll loop did not stop within 10s", m.name)
		}
		closed := make(chan struct{})
		go func() { m.cl.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(20 * time.Second):
			t.Errorf("member %s: Close did not return within 20s", m.name)
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, e := range m.errs {
			t.Logf("member %s fetch error: %s", m.name, e)
		}
		for _, e := range m.bad {
			t.Errorf("member %s: %s", m.name, e)
		}
	})
}

func (m *member) records() []rec {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.recs)
}

// since returns a function giving the records delivered after the first n.
func (m *member) since(n int) func() []rec {
	return func() []rec { return m.records()[n:] }
}

func (m *member) ownedSet() map[tp]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[tp]bool{}
	for k := range m.owned {
		out[k] = true
	}
	return out
}

func (m *member) eventCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.events)
}

func (m *member) eventsSince(n int) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.events[n:])
}

// ---------------------------------------------------------------------------
// The broker's view of a group

type memberView struct {
	id, instance, clientID string
	epoch                  int32 // KIP-848 member epoch; 0 for classic
	assigned, target       []tp  // target: KIP-848 only
}

type groupView struct {
	proto string
	state string
	epoch int32 // KIP-848 group epoch; 0 for classic
	typ   string
	mems  []memberView
}

func (v groupView) String() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "state=%q type=%q epoch=%d, %d members:", v.state, v.typ, v.epoch, len(v.mems))
	for _, m := range v.mems {
		fmt.Fprintf(&sb, "\n    client %q id %q instance %q epoch %d assigned %v", m.clientID, m.id, m.instance, m.epoch, m.assigned)
		if v.proto == "consumer" {
			fmt.Fprintf(&sb, " target %v", m.target)
		}
	}
	return sb.String()
}

func (v groupView) byClient(clientID string) (memberView, bool) {
	for _, m := range v.mems {
		if m.clientID == clientID {
			return m, true
		}
	}
	return memberView{}, false
}

func (v groupView) byID(id string) (memberView, bool) {
	for _, m := range v.mems {
		if m.id == id {
			return m, true
		}
	}
	return memberView{}, false
}

func sortedTPs(s kadm.TopicsSet) []tp {
	var out []tp
	s.Each(func(topic string, p int32) { out = append(out, tp{topic, p}) })
	sort.Slice(out, func(i, j int) bool {
		if out[i].topic != out[j].topic {
			return out[i].topic < out[j].topic
		}
		return out[i].part < out[j].part
	})
	return out
}

// describeGroup describes group with DescribeGroups (classic) or
// ConsumerGroupDescribe (consumer), and its type with ListGroups.
func describeGroup(ctx context.Context, adm *kadm.Client, proto, group string) (groupView, error) {
	v := groupView{proto: proto}
	listed, err := adm.ListGroups(ctx)
	if err != nil {
		return v, fmt.Errorf("ListGroups: %w", err)
	}
	v.typ = listed[group].GroupType
	if proto == "consumer" {
		dgs, err := adm.DescribeConsumerGroups(ctx, group)
		if err != nil {
			return v, fmt.Errorf("ConsumerGroupDescribe: %w", err)
		}
		dg, ok := dgs[group]
		if !ok {
			return v, fmt.Errorf("ConsumerGroupDescribe: no answer for %s", group)
		}
		if dg.Err != nil {
			return v, fmt.Errorf("ConsumerGroupDescribe %s: %w", group, dg.Err)
		}
		v.state, v.epoch = dg.State, dg.Epoch
		for _, m := range dg.Members {
			mv := memberView{id: m.MemberID, clientID: m.ClientID, epoch: m.MemberEpoch,
				assigned: sortedTPs(m.Assignment), target: sortedTPs(m.TargetAssignment)}
			if m.InstanceID != nil {
				mv.instance = *m.InstanceID
			}
			v.mems = append(v.mems, mv)
		}
		return v, nil
	}
	dgs, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		return v, fmt.Errorf("DescribeGroups: %w", err)
	}
	dg, ok := dgs[group]
	if !ok {
		return v, fmt.Errorf("DescribeGroups: no answer for %s", group)
	}
	if dg.Err != nil {
		return v, fmt.Errorf("DescribeGroups %s: %w (%s)", group, dg.Err, dg.ErrMessage)
	}
	v.state = dg.State
	for _, m := range dg.Members {
		mv := memberView{id: m.MemberID, clientID: m.ClientID}
		if m.InstanceID != nil {
			mv.instance = *m.InstanceID
		}
		if c, ok := m.Assigned.AsConsumer(); ok {
			s := make(kadm.TopicsSet)
			for _, at := range c.Topics {
				s.Add(at.Topic, at.Partitions...)
			}
			mv.assigned = sortedTPs(s)
		} else if dg.State == "Stable" {
			return v, fmt.Errorf("DescribeGroups %s: member %s assignment does not decode as a consumer assignment (protocol type %q)", group, m.MemberID, dg.ProtocolType)
		}
		v.mems = append(v.mems, mv)
	}
	return v, nil
}

// settled reports why v is not a settled group of n members that together
// own exactly the partitions in want (topic -> partition count), each once;
// "" if it is. perMember, if not -1, is the partition count each member must
// own.
func (v groupView) settled(n int, want map[string]int32, perMember int) string {
	wantType := v.proto
	if v.typ != wantType {
		return fmt.Sprintf("ListGroups type %q, want %q", v.typ, wantType)
	}
	if v.state != "Stable" {
		return fmt.Sprintf("state %q", v.state)
	}
	if len(v.mems) != n {
		return fmt.Sprintf("%d members, want %d", len(v.mems), n)
	}
	seen := map[tp]int{}
	for _, m := range v.mems {
		if v.proto == "consumer" && !slices.Equal(m.assigned, m.target) {
			return fmt.Sprintf("member %s assignment %v is not its target %v", m.clientID, m.assigned, m.target)
		}
		if perMember >= 0 && len(m.assigned) != perMember {
			return fmt.Sprintf("member %s owns %d partitions, want %d", m.clientID, len(m.assigned), perMember)
		}
		for _, x := range m.assigned {
			seen[x]++
		}
	}
	for topic, np := range want {
		for p := int32(0); p < np; p++ {
			if c := seen[tp{topic, p}]; c != 1 {
				return fmt.Sprintf("%s/%d assigned %d times", topic, p, c)
			}
			delete(seen, tp{topic, p})
		}
	}
	if len(seen) > 0 {
		return fmt.Sprintf("unexpected partitions assigned: %v", seen)
	}
	return ""
}

// agrees reports why the in-process members' own view of their assignment
// (from the callbacks) differs from the broker's; "" if it does not.
func (v groupView) agrees(ms []*member) string {
	for _, m := range ms {
		id, _ := m.cl.GroupMetadata()
		mv, ok := v.byID(id)
		if !ok {
			return fmt.Sprintf("member %s (id %q) is not in the group", m.name, id)
		}
		owned := m.ownedSet()
		if len(owned) != len(mv.assigned) {
			return fmt.Sprintf("member %s owns %v, broker says %v", m.name, owned, mv.assigned)
		}
		for _, x := range mv.assigned {
			if !owned[x] {
				return fmt.Sprintf("member %s owns %v, broker says %v", m.name, owned, mv.assigned)
			}
		}
	}
	return ""
}

// waitFor polls cond (every 200ms) until it returns "" and fails the test
// with cond's last reason after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		why := cond()
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %v: %s", what, timeout, why)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitSettled waits until the group is settled (see settled) and the
// in-process members agree with the broker, and returns the broker's view.
func waitSettled(t *testing.T, b *broker, adm *kadm.Client, proto, group string, ms []*member, n int, want map[string]int32, perMember int, timeout time.Duration) groupView {
	t.Helper()
	var v groupView
	waitFor(t, timeout, fmt.Sprintf("group %s settled with %d members over %v", group, n, want), func() string {
		b.alive(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var err error
		v, err = describeGroup(ctx, adm, proto, group)
		if err != nil {
			return err.Error()
		}
		if why := v.settled(n, want, perMember); why != "" {
			return why + "; group: " + v.String()
		}
		if why := v.agrees(ms); why != "" {
			return why + "; group: " + v.String()
		}
		return ""
	})
	t.Logf("group %s settled: %s", group, v)
	return v
}

// deliveries counts how often each record was delivered.
func deliveries(lists ...[]rec) map[rec]int {
	c := map[rec]int{}
	for _, l := range lists {
		for _, r := range l {
			c[r]++
		}
	}
	return c
}

// missing reports, per partition, how many records of [from[x], to[x]) were
// never delivered (at most 5 listed); "" if none are missing.
func missing(c map[rec]int, from, to map[tp]int64) string {
	var out []string
	for x, end := range to {
		var miss []int64
		for off := from[x]; off < end; off++ {
			if c[rec{x, off}] == 0 {
				miss = append(miss, off)
			}
		}
		if len(miss) > 0 {
			if len(miss) > 5 {
				out = append(out, fmt.Sprintf("%s: %d missing (first %v)", x, len(miss), miss[:5]))
			} else {
				out = append(out, fmt.Sprintf("%s: missing %v", x, miss))
			}
		}
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

// checkExactlyOnce fails the test unless every record of [from[x], to[x])
// was delivered exactly once and nothing else was delivered.
func checkExactlyOnce(t *testing.T, what string, c map[rec]int, from, to map[tp]int64) {
	t.Helper()
	if m := missing(c, from, to); m != "" {
		t.Errorf("%s: records never delivered: %s", what, m)
	}
	var dups, extra []string
	for r, n := range c {
		end, ok := to[r.tp]
		switch {
		case !ok || r.off < from[r.tp] || r.off >= end:
			extra = append(extra, fmt.Sprintf("%s@%d", r.tp, r.off))
		case n > 1:
			dups = append(dups, fmt.Sprintf("%s@%d x%d", r.tp, r.off, n))
		}
	}
	sort.Strings(dups)
	sort.Strings(extra)
	if len(dups) > 0 {
		t.Errorf("%s: %d records delivered more than once: %v", what, len(dups), dups[:min(len(dups), 10)])
	}
	if len(extra) > 0 {
		t.Errorf("%s: %d unexpected records delivered: %v", what, len(extra), extra[:min(len(extra), 10)])
	}
}

// fullRange returns from/to maps covering [0, end) of each partition.
func fullRange(topic string, nparts int32, end int64) (from, to map[tp]int64) {
	from, to = map[tp]int64{}, map[tp]int64{}
	for p := int32(0); p < nparts; p++ {
		from[tp{topic, p}] = 0
		to[tp{topic, p}] = end
	}
	return from, to
}

// waitDelivered waits until every record of [from, to) was delivered to one
// of ms (or extra sources), then polls a little longer for stray duplicates.
func waitDelivered(t *testing.T, b *broker, what string, from, to map[tp]int64, ms []*member, extra func() []rec) map[rec]int {
	t.Helper()
	collect := func() map[rec]int {
		var lists [][]rec
		for _, m := range ms {
			lists = append(lists, m.records())
		}
		if extra != nil {
			lists = append(lists, extra())
		}
		return deliveries(lists...)
	}
	waitFor(t, groupConsumeWait, what, func() string {
		b.alive(t)
		return missing(collect(), from, to)
	})
	time.Sleep(noMoreRecordsFor)
	return collect()
}

func fetchCommitted(t *testing.T, adm *kadm.Client, group string) kadm.OffsetResponses {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	offs, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		t.Fatalf("OffsetFetch %s: %v", group, err)
	}
	if err := offs.Error(); err != nil {
		t.Fatalf("OffsetFetch %s: %v", group, err)
	}
	return offs
}

// waitCommitted waits until the group's committed offsets are want.
func waitCommitted(t *testing.T, adm *kadm.Client, group string, want map[tp]int64) {
	t.Helper()
	waitFor(t, 20*time.Second, "group "+group+" commits", func() string {
		offs := fetchCommitted(t, adm, group)
		var diffs []string
		for x, w := range want {
			o, ok := offs.Lookup(x.topic, x.part)
			if !ok || o.At != w {
				diffs = append(diffs, fmt.Sprintf("%s committed %d (found %v), want %d", x, o.At, ok, w))
			}
		}
		sort.Strings(diffs)
		return strings.Join(diffs, "; ")
	})
}

// ---------------------------------------------------------------------------
// Scenario 1

// TestGroupOnePartitionThreeMembers: 1 partition, 3 members of one group.
// Exactly one member gets the partition and receives every message exactly
// once; the other two stay in the group, idle, past a session timeout.
func TestGroupOnePartitionThreeMembers(t *testing.T) {
	eachProtocol(t, func(t *testing.T, proto string) {
		b := startGroupBroker(t)
		adm := newAdmin(t, b)
		topic, group := "one-part-"+proto, "one-part-group-"+proto
		createTopic(t, adm, topic, 1)

		var ms []*member
		for i := 0; i < 3; i++ {
			ms = append(ms, startMember(t, b, proto, group, fmt.Sprintf("m%d", i), kgo.ConsumeTopics(topic)))
		}
		v := waitSettled(t, b, adm, proto, group, ms, 3, map[string]int32{topic: 1}, -1, groupSettle)
		settledAt := time.Now()

		var owner *member
		for _, m := range ms {
			if len(m.ownedSet()) > 0 {
				owner = m
			}
		}

		const n = 200
		produceRange(t, newProducer(t, b), topic, parts(1), 0, n)
		from, to := fullRange(topic, 1, n)
		c := waitDelivered(t, b, "every record consumed", from, to, ms, nil)
		checkExactlyOnce(t, "group "+group, c, from, to)
		for _, m := range ms {
			if got := len(m.records()); m != owner && got > 0 {
				t.Errorf("member %s owns no partition but received %d records", m.name, got)
			}
		}

		// The idle members keep heartbeating: after a session timeout
		// the group still has the same three members and assignment.
		if d := sessionTimeout(proto) + 2*time.Second - time.Since(settledAt); d > 0 {
			time.Sleep(d)
		}
		ctx := ctxTimeout(t, 15*time.Second)
		v2, err := describeGroup(ctx, adm, proto, group)
		if err != nil {
			t.Fatalf("describe: %v", err)
		}
		if why := v2.settled(3, map[string]int32{topic: 1}, -1); why != "" {
			t.Errorf("after a session timeout the group is no longer settled: %s; group: %s", why, v2)
		}
		for _, m := range v.mems {
			m2, ok := v2.byID(m.id)
			if !ok {
				t.Errorf("member %s (%s) left the group; now: %s", m.clientID, m.id, v2)
			} else if !slices.Equal(m.assigned, m2.assigned) {
				t.Errorf("member %s assignment changed from %v to %v", m.clientID, m.assigned, m2.assigned)
			}
		}
		if proto == "consumer" && v2.epoch != v.epoch {
			t.Errorf("group epoch moved from %d to %d while nothing changed", v.epoch, v2.epoch)
		}
		b.alive(t)
	})
}

// ---------------------------------------------------------------------------
// Scenario 2: kill -9 of a member process

// TestHelperConsumer is not a test: run as a child process of
// TestGroupKillMember or TestGroupStaticMembership (with childEnv set) it is
// a group member (client id CHILD_CLIENT_ID, static if CHILD_INSTANCE is
// set) that prints
// every record it gets ("REC partition offset"), commits what it has
// consumed when a line "commit" arrives on stdin ("COMMITTED ok|error"), and
// exits when stdin closes. It never commits otherwise.
func TestHelperConsumer(t *testing.T) {
	if os.Getenv(childEnv) == "" {
		t.Skip("helper process of TestGroupKillMember and TestGroupStaticMembership; runs only as their child")
	}
	os.Exit(childConsumerMain())
}

func childConsumerMain() int {
	addr, proto := os.Getenv("CHILD_ADDR"), os.Getenv("CHILD_PROTO")
	group, topic := os.Getenv("CHILD_GROUP"), os.Getenv("CHILD_TOPIC")
	clientID, instance := os.Getenv("CHILD_CLIENT_ID"), os.Getenv("CHILD_INSTANCE")
	var outMu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	say := func(format string, args ...any) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Fprintf(out, format+"\n", args...)
		out.Flush()
	}
	// Never outlive the test.
	time.AfterFunc(150*time.Second, func() { say("TIMEOUT"); os.Exit(3) })

	opts := append(groupOpts(proto, group, clientID),
		kgo.ConsumeTopics(topic),
		kgo.DisableAutoCommit(),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, ps map[string][]int32) {
			say("ASSIGNED %v", ps)
		}))
	if instance != "" {
		opts = append(opts, kgo.InstanceID(instance))
	}
	cl, err := kgo.NewClient(clientOpts(&broker{Addr: addr}, opts...)...)
	if err != nil {
		say("ERR %v", err)
		return 2
	}
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			if sc.Text() == "commit" {
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				err := cl.CommitUncommittedOffsets(ctx)
				cancel()
				if err != nil {
					say("COMMITTED %v", err)
				} else {
					say("COMMITTED ok")
				}
			}
		}
		os.Exit(0) // the test is gone
	}()
	say("STARTED")
	for {
		fs := cl.PollFetches(context.Background())
		fs.EachError(func(topic string, p int32, err error) { say("ERR %s/%d: %v", topic, p, err) })
		var lines []string
		fs.EachRecord(func(r *kgo.Record) {
			if string(r.Value) != recValue(r.Topic, r.Partition, r.Offset) {
				lines = append(lines, fmt.Sprintf("BAD %d %d %q", r.Partition, r.Offset, r.Value))
			}
			lines = append(lines, fmt.Sprintf("REC %d %d", r.Partition, r.Offset))
		})
		if len(lines) > 0 {
			say("%s", strings.Join(lines, "\n"))
		}
	}
}

type childConsumer struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *syncBuffer
	exited chan struct{}
	topic  string

	mu        sync.Mutex
	recs      []rec
	other     []string // lines other than REC
	committed chan string
}

func startChild(t *testing.T, b *broker, proto, group, topic, clientID, instance string) *childConsumer {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperConsumer$", "-test.count=1", "-test.timeout=170s")
	cmd.Env = append(os.Environ(), childEnv+"=1",
		"CHILD_ADDR="+b.Addr, "CHILD_PROTO="+proto, "CHILD_GROUP="+group, "CHILD_TOPIC="+topic,
		"CHILD_CLIENT_ID="+clientID, "CHILD_INSTANCE="+instance,
		"SHARDLINE_E2E_DEBUG=")
	c := &childConsumer{cmd: cmd, stderr: &syncBuffer{}, exited: make(chan struct{}), topic: topic, committed: make(chan string, 4)}
	cmd.Stderr = c.stderr
	var err error
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child consumer: %v", err)
	}
	t.Logf("child consumer pid %d", cmd.Process.Pid)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			var p int32
			var off int64
			if n, _ := fmt.Sscanf(line, "REC %d %d", &p, &off); n == 2 && strings.HasPrefix(line, "REC ") {
				c.mu.Lock()
				c.recs = append(c.recs, rec{tp{topic, p}, off})
				c.mu.Unlock()
				continue
			}
			c.mu.Lock()
			c.other = append(c.other, line)
			c.mu.Unlock()
			if rest, ok := strings.CutPrefix(line, "COMMITTED "); ok {
				c.committed <- rest
			}
		}
	}()
	go func() {
		<-readDone
		cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		c.stdin.Close()
		select {
		case <-c.exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-c.exited
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, l := range c.other {
			if strings.HasPrefix(l, "BAD") {
				t.Errorf("child consumer: %s", l)
			}
		}
		if t.Failed() {
			t.Logf("child consumer output other than records:\n%s\nstderr:\n%s", strings.Join(c.other, "\n"), tail(c.stderr.String(), 30))
		}
	})
	return c
}

func (c *childConsumer) records() []rec {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.recs)
}

// kill kills the child with SIGKILL and waits for it to be gone.
func (c *childConsumer) kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill child consumer: %v", err)
	}
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("child consumer did not die within 10s of SIGKILL")
	}
}

func (c *childConsumer) commit(t *testing.T) {
	t.Helper()
	if _, err := io.WriteString(c.stdin, "commit\n"); err != nil {
		t.Fatalf("child consumer: %v", err)
	}
	select {
	case res := <-c.committed:
		if res != "ok" {
			t.Fatalf("child consumer commit: %s", res)
		}
	case <-c.exited:
		t.Fatalf("child consumer exited; stderr:\n%s", tail(c.stderr.String(), 30))
	case <-time.After(20 * time.Second):
		t.Fatalf("child consumer did not commit within 20s")
	}
}

// TestGroupKillMember: 6 partitions, 3 members (one a child process): each
// owns 2. The child consumes and commits offset 50 of its partitions, then
// consumes up to 100 without committing and is killed with SIGKILL (no
// LeaveGroup). After the session timeout its partitions move to the two
// others, which resume them at the committed offset 50; nothing is lost, and
// new records are consumed too.
func TestGroupKillMember(t *testing.T) {
	eachProtocol(t, func(t *testing.T, proto string) {
		b := startGroupBroker(t)
		adm := newAdmin(t, b)
		topic, group := "kill-"+proto, "kill-group-"+proto
		const np = 6
		createTopic(t, adm, topic, np)

		s1 := startMember(t, b, proto, group, "s1", kgo.ConsumeTopics(topic))
		s2 := startMember(t, b, proto, group, "s2", kgo.ConsumeTopics(topic))
		child := startChild(t, b, proto, group, topic, "child", "")
		survivors := []*member{s1, s2}
		v := waitSettled(t, b, adm, proto, group, survivors, 3, map[string]int32{topic: np}, 2, groupSettle)
		cv, ok := v.byClient("child")
		if !ok {
			t.Fatalf("the child consumer is not in the group: %s", v)
		}
		childParts := cv.assigned

		prod := newProducer(t, b)
		produceRange(t, prod, topic, parts(np), 0, 50)
		from, to := fullRange(topic, np, 50)
		waitDelivered(t, b, "records 0-49 consumed", from, to, survivors, child.records)
		child.commit(t)
		// The survivors autocommit; the child committed 50 on its own.
		want := map[tp]int64{}
		for p := int32(0); p < np; p++ {
			want[tp{topic, p}] = 50
		}
		waitCommitted(t, adm, group, want)

		produceRange(t, prod, topic, parts(np), 50, 100)
		childFrom, childTo := map[tp]int64{}, map[tp]int64{}
		for _, x := range childParts {
			childFrom[x], childTo[x] = 50, 100
		}
		waitFor(t, groupConsumeWait, "the child consumes records 50-99 of its partitions", func() string {
			return missing(deliveries(child.records()), childFrom, childTo)
		})

		// kill -9: the child neither commits nor leaves.
		child.kill(t)
		killedAt := time.Now()
		before := map[*member]int{s1: len(s1.records()), s2: len(s2.records())}
		offs := fetchCommitted(t, adm, group)
		for _, x := range childParts {
			if o, ok := offs.Lookup(x.topic, x.part); !ok || o.At != 50 {
				t.Errorf("%s: committed offset after the kill is %d (found %v), want 50 (the child's last commit)", x, o.At, ok)
			}
		}

		waitSettled(t, b, adm, proto, group, survivors, 2, map[string]int32{topic: np}, 3, sessionTimeout(proto)+groupSettle)
		t.Logf("partitions %v moved to the survivors %v after the kill", childParts, time.Since(killedAt).Round(100*time.Millisecond))

		// The survivors resume the child's partitions at the committed
		// offset: records 50-99 again (the child never committed them).
		waitDelivered(t, b, "survivors consume the child's partitions from the committed offset", childFrom, childTo, survivors, nil)
		for _, x := range childParts {
			first := int64(-1)
			for _, m := range survivors {
				for _, r := range m.records()[before[m]:] {
					if r.tp == x && (first < 0 || r.off < first) {
						first = r.off
					}
				}
			}
			if first != 50 {
				t.Errorf("%s: the survivors' first record after the kill is offset %d, want 50 (the committed offset)", x, first)
			}
		}

		// Consumption goes on: new records on every partition.
		produceRange(t, prod, topic, parts(np), 100, 150)
		from, to = fullRange(topic, np, 150)
		c := waitDelivered(t, b, "records 0-149 consumed", from, to, survivors, child.records)
		if m := missing(c, from, to); m != "" {
			t.Errorf("records lost: %s", m)
		}
		// The survivors' own partitions never moved: each of their
		// records exactly once.
		own := map[tp]bool{}
		for _, x := range v.mems {
			if x.clientID != "child" {
				for _, y := range x.assigned {
					own[y] = true
				}
			}
		}
		ownFrom, ownTo := map[tp]int64{}, map[tp]int64{}
		for x := range own {
			ownFrom[x], ownTo[x] = 0, 150
		}
		survivorRecs := deliveries(s1.records(), s2.records())
		for r := range survivorRecs {
			if !own[r.tp] {
				delete(survivorRecs, r)
			}
		}
		checkExactlyOnce(t, "survivors' own partitions", survivorRecs, ownFrom, ownTo)
		b.alive(t)
	})
}

// ---------------------------------------------------------------------------
// Scenario 3

// TestGroupTwoGroupsSameTopic: two groups (2 members and 1 member) on one
// 3-partition topic each receive every message exactly once and commit
// their own offsets.
func TestGroupTwoGroupsSameTopic(t *testing.T) {
	eachProtocol(t, func(t *testing.T, proto string) {
		b := startGroupBroker(t)
		adm := newAdmin(t, b)
		topic := "two-groups-" + proto
		ga, gb := "group-a-"+proto, "group-b-"+proto
		const np = 3
		createTopic(t, adm, topic, np)

		a := []*member{
			startMember(t, b, proto, ga, "a0", kgo.ConsumeTopics(topic)),
			startMember(t, b, proto, ga, "a1", kgo.ConsumeTopics(topic)),
		}
		bm := []*member{startMember(t, b, proto, gb, "b0", kgo.ConsumeTopics(topic))}
		waitSettled(t, b, adm, proto, ga, a, 2, map[string]int32{topic: np}, -1, groupSettle)
		waitSettled(t, b, adm, proto, gb, bm, 1, map[string]int32{topic: np}, np, groupSettle)

		const n = 50
		produceRange(t, newProducer(t, b), topic, parts(np), 0, n)
		from, to := fullRange(topic, np, n)
		ca := waitDelivered(t, b, "group a consumes every record", from, to, a, nil)
		cb := waitDelivered(t, b, "group b consumes every record", from, to, bm, nil)
		checkExactlyOnce(t, "group "+ga, ca, from, to)
		checkExactlyOnce(t, "group "+gb, cb, from, to)
		for _, m := range a {
			if len(m.records()) == 0 {
				t.Errorf("member %s of %s received nothing", m.name, ga)
			}
		}
		waitCommitted(t, adm, ga, to)
		waitCommitted(t, adm, gb, to)
		b.alive(t)
	})
}

// ---------------------------------------------------------------------------
// Scenario 4

// TestGroupCreatePartitions: a 2-member group on a 2-partition topic; the
// topic grows to 4 partitions (CreatePartitions) and the group rebalances to
// cover them, 2 each, and consumes the records in the new partitions.
func TestGroupCreatePartitions(t *testing.T) {
	eachProtocol(t, func(t *testing.T, proto string) {
		b := startGroupBroker(t)
		adm := newAdmin(t, b)
		topic, group := "grow-"+proto, "grow-group-"+proto
		createTopic(t, adm, topic, 2)
		ms := []*member{
			startMember(t, b, proto, group, "m0", kgo.ConsumeTopics(topic)),
			startMember(t, b, proto, group, "m1", kgo.ConsumeTopics(topic)),
		}
		waitSettled(t, b, adm, proto, group, ms, 2, map[string]int32{topic: 2}, 1, groupSettle)
		produceRange(t, newProducer(t, b), topic, parts(2), 0, 20)
		from, to := fullRange(topic, 2, 20)
		waitDelivered(t, b, "records of the first 2 partitions consumed", from, to, ms, nil)

		ctx := ctxTimeout(t, 20*time.Second)
		resp, err := adm.UpdatePartitions(ctx, 4, topic)
		if err != nil {
			t.Fatalf("CreatePartitions: %v", err)
		}
		if r := resp[topic]; r.Err != nil {
			t.Fatalf("CreatePartitions %s: %v (%s)", topic, r.Err, r.ErrMessage)
		}
		waitFor(t, 10*time.Second, "metadata shows 4 partitions", func() string {
			td, err := adm.ListTopics(ctx, topic)
			if err != nil {
				return err.Error()
			}
			if d := td[topic]; len(d.Partitions) != 4 {
				return fmt.Sprintf("%d partitions", len(d.Partitions))
			}
			return ""
		})
		// A fresh producer, so it knows the new partitions: records
		// 20-39 to the old partitions, 0-19 to the new ones.
		prod := newProducer(t, b)
		produceRange(t, prod, topic, parts(2), 20, 40)
		produceRange(t, prod, topic, []int32{2, 3}, 0, 20)
		waitSettled(t, b, adm, proto, group, ms, 2, map[string]int32{topic: 4}, 2, groupSettle)
		from, to = fullRange(topic, 4, 40)
		for p := int32(2); p < 4; p++ {
			to[tp{topic, p}] = 20
		}
		c := waitDelivered(t, b, "records of all 4 partitions consumed", from, to, ms, nil)
		checkExactlyOnce(t, "group "+group, c, from, to)
		b.alive(t)
	})
}

// TestGroupRegexNewTopic: a 2-member group subscribed by regex picks up a
// topic created after it joined, and never one that does not match.
func TestGroupRegexNewTopic(t *testing.T) {
	eachProtocol(t, func(t *testing.T, proto string) {
		b := startGroupBroker(t)
		adm := newAdmin(t, b)
		group := "regex-group-" + proto
		prefix := "rx-" + proto + "-"
		t1, t2, near := prefix+"one", prefix+"two", "rx-"+proto+"two" // near misses the "-"
		createTopic(t, adm, t1, 2)
		ms := []*member{
			startMember(t, b, proto, group, "m0", kgo.ConsumeRegex(), kgo.ConsumeTopics(prefix+".*")),
			startMember(t, b, proto, group, "m1", kgo.ConsumeRegex(), kgo.ConsumeTopics(prefix+".*")),
		}
		waitSettled(t, b, adm, proto, group, ms, 2, map[string]int32{t1: 2}, 1, groupSettle)
		prod := newProducer(t, b)
		produceRange(t, prod, t1, parts(2), 0, 10)

		createTopic(t, adm, t2, 2)
		createTopic(t, adm, near, 1)
		prod2 := newProducer(t, b)
		produceRange(t, prod2, t2, parts(2), 0, 10)
		produceRange(t, prod2, near, parts(1), 0, 10)
		waitSettled(t, b, adm, proto, group, ms, 2, map[string]int32{t1: 2, t2: 2}, 2, groupSettle)

		from, to := fullRange(t1, 2, 10)
		f2, t2r := fullRange(t2, 2, 10)
		for k, v := range f2 {
			from[k], to[k] = v, t2r[k]
		}
		c := waitDelivered(t, b, "records of both matching topics consumed", from, to, ms, nil)
		checkExactlyOnce(t, "group "+group, c, from, to)
		b.alive(t)
	})
}

// ---------------------------------------------------------------------------
// Scenario 5

// TestGroupOffsetsSurviveRestart: a member commits offsets 10/20/30 of a
// 3-partition topic; the broker is stopped (SIGTERM) and started again on
// the same data dir and port; the committed offsets are still there and a
// new member resumes exactly at them.
func TestGroupOffsetsSurviveRestart(t *testing.T) {
	eachProtocol(t, func(t *testing.T, proto string) {
		dataDir := t.TempDir()
		listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		opts := brokerOpts{dataDir: dataDir, listen: listen, sets: groupBrokerSets}
		b := startBrokerWith(t, opts)
		adm := newAdmin(t, b)
		topic, group := "restart-"+proto, "restart-group-"+proto
		const np = 3
		createTopic(t, adm, topic, np)
		produceRange(t, newProducer(t, b), topic, parts(np), 0, 30)

		m := startMember(t, b, proto, group, "before", kgo.ConsumeTopics(topic), kgo.DisableAutoCommit())
		waitSettled(t, b, adm, proto, group, []*member{m}, 1, map[string]int32{topic: np}, np, groupSettle)
		from, to := fullRange(topic, np, 30)
		waitDelivered(t, b, "records consumed before the restart", from, to, []*member{m}, nil)
		commit := map[tp]int64{{topic, 0}: 10, {topic, 1}: 20, {topic, 2}: 30}
		epochOffs := map[string]map[int32]kgo.EpochOffset{topic: {}}
		for x, off := range commit {
			epochOffs[topic][x.part] = kgo.EpochOffset{Epoch: -1, Offset: off}
		}
		ctx := ctxTimeout(t, 20*time.Second)
		var commitErr error
		m.cl.CommitOffsetsSync(ctx, epochOffs, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
			commitErr = err
			if err == nil {
				for _, rt := range resp.Topics {
					for _, rp := range rt.Partitions {
						if rp.ErrorCode != 0 && commitErr == nil {
							commitErr = fmt.Errorf("%s/%d: error code %d", rt.Topic, rp.Partition, rp.ErrorCode)
						}
					}
				}
			}
		})
		if commitErr != nil {
			t.Fatalf("OffsetCommit: %v", commitErr)
		}
		waitCommitted(t, adm, group, commit)
		m.stop(t)

		b.stop(t)
		if t.Failed() {
			return
		}
		b = startBrokerWith(t, opts)
		if b.Addr != listen {
			t.Fatalf("restarted broker listens on %s, want %s", b.Addr, listen)
		}
		adm = newAdmin(t, b)
		// The commits were read back from __consumer_offsets.
		waitCommitted(t, adm, group, commit)
		produceRange(t, newProducer(t, b), topic, parts(np), 30, 40)

		m2 := startMember(t, b, proto, group, "after", kgo.ConsumeTopics(topic))
		waitSettled(t, b, adm, proto, group, []*member{m2}, 1, map[string]int32{topic: np}, np, groupSettle)
		from, to = map[tp]int64{}, map[tp]int64{}
		for x, off := range commit {
			from[x], to[x] = off, 40
		}
		c := waitDelivered(t, b, "records from the committed offsets consumed after the restart", from, to, []*member{m2}, nil)
		checkExactlyOnce(t, "group "+group+" after the restart", c, from, to)
		b.alive(t)
	})
}

// ---------------------------------------------------------------------------
// Scenario 6

// TestGroupStaticMembership: 3 static members (kgo.InstanceID) on 6
// partitions; s2 is a child process. s2 commits, is killed with SIGKILL and
// restarts (in this process) with the same instance id within the session
// timeout: it gets its old partitions back and resumes from its committed
// offsets, and the group does not rebalance: the others see no assignment
// change and keep their generation (classic) or member epoch (consumer), and
// the group epoch does not move (consumer).
//
// A classic static member sends no LeaveGroup when it stops, so a kill is a
// restart as the broker sees it. A KIP-848 static member leaves with member
// epoch -2 and its instance id (Kafka answers UNRELEASED_INSTANCE_ID to a new
// incarnation until then); franz-go v1.22.3 sends that heartbeat without the
// instance id (Kafka: INVALID_REQUEST), so the test sends it for the killed
// member, as the Java client does on close.
func TestGroupStaticMembership(t *testing.T) {
	eachProtocol(t, func(t *testing.T, proto string) {
		b := startGroupBroker(t)
		adm := newAdmin(t, b)
		topic, group := "static-"+proto, "static-group-"+proto
		const np = 6
		createTopic(t, adm, topic, np)
		all := map[string]int32{topic: np}

		static := func(name string) *member {
			return startMember(t, b, proto, group, name, kgo.ConsumeTopics(topic), kgo.InstanceID("instance-"+name))
		}
		// s0 first, so that (classic) it leads; s2 is the one restarted.
		s0 := static("s0")
		waitSettled(t, b, adm, proto, group, []*member{s0}, 1, all, np, groupSettle)
		s1 := static("s1")
		child := startChild(t, b, proto, group, topic, "s2", "instance-s2")
		v := waitSettled(t, b, adm, proto, group, []*member{s0, s1}, 3, all, 2, groupSettle)
		for _, mv := range v.mems {
			if mv.instance != "instance-"+mv.clientID {
				t.Errorf("member %s has instance id %q, want %q", mv.clientID, mv.instance, "instance-"+mv.clientID)
			}
		}

		prod := newProducer(t, b)
		produceRange(t, prod, topic, parts(np), 0, 20)
		from, to := fullRange(topic, np, 20)
		waitDelivered(t, b, "records 0-19 consumed", from, to, []*member{s0, s1}, child.records)
		child.commit(t)
		waitCommitted(t, adm, group, to)

		_, gen0 := s0.cl.GroupMetadata()
		_, gen1 := s1.cl.GroupMetadata()
		ev0, ev1 := s0.eventCount(), s1.eventCount()
		n0, n1 := len(s0.records()), len(s1.records())
		old, _ := v.byClient("s2")

		child.kill(t)
		if proto == "consumer" {
			req := kmsg.NewPtrConsumerGroupHeartbeatRequest()
			req.Group = group
			req.MemberID = old.id
			req.MemberEpoch = -2
			req.InstanceID = kmsg.StringPtr("instance-s2")
			ctx := ctxTimeout(t, 15*time.Second)
			resp, err := req.RequestWith(ctx, newClient(t, b))
			if err != nil {
				t.Fatalf("ConsumerGroupHeartbeat (static leave, epoch -2): %v", err)
			}
			if resp.ErrorCode != 0 {
				t.Fatalf("ConsumerGroupHeartbeat (static leave, epoch -2): error code %d: %v", resp.ErrorCode, resp.ErrorMessage)
			}
		}
		s2 := static("s2")
		v2 := waitSettled(t, b, adm, proto, group, []*member{s0, s1, s2}, 3, all, 2, groupSettle)
		restartedAt := time.Now()
		if nv, _ := v2.byClient("s2"); !slices.Equal(nv.assigned, old.assigned) || nv.id == old.id {
			t.Errorf("restarted static member: id %s, partitions %v; before: id %s, partitions %v", nv.id, nv.assigned, old.id, old.assigned)
		}
		if proto == "classic" {
			_, g0 := s0.cl.GroupMetadata()
			if _, g := s2.cl.GroupMetadata(); g != gen0 || g0 != gen0 {
				t.Errorf("the static rejoin changed the generation: was %d, now s0 has %d, the restarted member %d", gen0, g0, g)
			}
		}

		produceRange(t, prod, topic, parts(np), 20, 40)
		from, to = fullRange(topic, np, 40)
		for x := range from {
			from[x] = 20
		}
		after := func() []rec {
			return slices.Concat(s0.since(n0)(), s1.since(n1)(), s2.records())
		}
		c := waitDelivered(t, b, "records 20-39 consumed", from, to, nil, after)
		checkExactlyOnce(t, "group "+group+" after the restart", c, from, to)

		// A session timeout later nothing has changed.
		if d := sessionTimeout(proto) + 2*time.Second - time.Since(restartedAt); d > 0 {
			time.Sleep(d)
		}
		ctx := ctxTimeout(t, 15*time.Second)
		v3, err := describeGroup(ctx, adm, proto, group)
		if err != nil {
			t.Fatalf("describe: %v", err)
		}
		if why := v3.settled(3, all, 2); why != "" {
			t.Errorf("group not settled a session timeout after the restart: %s; group: %s", why, v3)
		}
		for _, om := range v.mems {
			nv, ok := v3.byClient(om.clientID)
			switch {
			case !ok:
				t.Errorf("member %s is gone: %s", om.clientID, v3)
			case !slices.Equal(nv.assigned, om.assigned):
				t.Errorf("member %s assignment changed from %v to %v", om.clientID, om.assigned, nv.assigned)
			case om.clientID != "s2" && nv.id != om.id:
				t.Errorf("member %s id changed from %s to %s", om.clientID, om.id, nv.id)
			case proto == "consumer" && om.clientID != "s2" && nv.epoch != om.epoch:
				t.Errorf("member %s epoch moved from %d to %d", om.clientID, om.epoch, nv.epoch)
			}
		}
		if proto == "consumer" && v3.epoch != v.epoch {
			t.Errorf("group epoch moved from %d to %d across a static restart", v.epoch, v3.epoch)
		}
		if _, g := s0.cl.GroupMetadata(); g != gen0 {
			t.Errorf("s0 generation/epoch moved from %d to %d", gen0, g)
		}
		if _, g := s1.cl.GroupMetadata(); g != gen1 {
			t.Errorf("s1 generation/epoch moved from %d to %d", gen1, g)
		}
		if ev := s0.eventsSince(ev0); len(ev) > 0 {
			t.Errorf("s0 saw assignment changes: %v", ev)
		}
		if ev := s1.eventsSince(ev1); len(ev) > 0 {
			t.Errorf("s1 saw assignment changes: %v", ev)
		}
		b.alive(t)
	})
}
