package e2e

import (
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestAdminTopics: kadm CreateTopics (4 partitions), ListTopics,
// CreateTopics of an existing topic (TOPIC_ALREADY_EXISTS), DeleteTopics.
func TestAdminTopics(t *testing.T) {
	b := startBroker(t)
	adm := newAdmin(t, b)
	ctx := ctxTimeout(t, 60*time.Second)

	const topicA, topicB = "admin-a", "admin-b"

	created, err := adm.CreateTopics(ctx, 4, 1, nil, topicA, topicB)
	if err != nil {
		t.Fatalf("CreateTopics: %v", err)
	}
	for _, name := range []string{topicA, topicB} {
		r, ok := created[name]
		if !ok {
			t.Fatalf("CreateTopics response lacks %s: %+v", name, created)
		}
		if r.Err != nil {
			t.Fatalf("CreateTopics %s: %v (%s)", name, r.Err, r.ErrMessage)
		}
		if r.NumPartitions != 4 {
			t.Errorf("CreateTopics %s: NumPartitions = %d, want 4", name, r.NumPartitions)
		}
		if r.ReplicationFactor != 1 {
			t.Errorf("CreateTopics %s: ReplicationFactor = %d, want 1", name, r.ReplicationFactor)
		}
	}

	// ListTopics (all topics) shows both, with 4 partitions each, led by
	// the single broker.
	brokers, err := adm.ListBrokers(ctx)
	if err != nil {
		t.Fatalf("ListBrokers: %v", err)
	}
	if len(brokers) != 1 {
		t.Fatalf("ListBrokers: %d brokers, want 1: %+v", len(brokers), brokers)
	}
	nodeID := brokers[0].NodeID
	listed, err := adm.ListTopics(ctx)
	if err != nil {
		t.Fatalf("ListTopics: %v", err)
	}
	for _, name := range []string{topicA, topicB} {
		td, ok := listed[name]
		if !ok {
			t.Fatalf("ListTopics lacks %s; got %v", name, listed.Names())
		}
		if td.Err != nil {
			t.Fatalf("ListTopics %s: %v", name, td.Err)
		}
		if len(td.Partitions) != 4 {
			t.Fatalf("ListTopics %s: %d partitions, want 4", name, len(td.Partitions))
		}
		for p := int32(0); p < 4; p++ {
			pd, ok := td.Partitions[p]
			if !ok {
				t.Fatalf("ListTopics %s: partition %d missing", name, p)
			}
			if pd.Err != nil {
				t.Errorf("ListTopics %s/%d: %v", name, p, pd.Err)
			}
			if pd.Leader != nodeID {
				t.Errorf("ListTopics %s/%d: leader %d, want %d", name, p, pd.Leader, nodeID)
			}
		}
		if td.ID == ([16]byte{}) {
			t.Errorf("ListTopics %s: zero topic ID", name)
		}
	}
	if listed[topicA].ID == listed[topicB].ID {
		t.Errorf("topics %s and %s share topic ID %v", topicA, topicB, listed[topicA].ID)
	}

	// Creating an existing topic reports TOPIC_ALREADY_EXISTS.
	again, err := adm.CreateTopics(ctx, 4, 1, nil, topicA)
	if err != nil {
		t.Fatalf("CreateTopics (again): %v", err)
	}
	if r := again[topicA]; !errors.Is(r.Err, kerr.TopicAlreadyExists) {
		t.Errorf("CreateTopics of existing %s: err = %v (%s), want TOPIC_ALREADY_EXISTS", topicA, r.Err, r.ErrMessage)
	}
	// ... also when validate-only, and with a different partition count.
	again, err = adm.ValidateCreateTopics(ctx, 8, 1, nil, topicA)
	if err != nil {
		t.Fatalf("ValidateCreateTopics: %v", err)
	}
	if r := again[topicA]; !errors.Is(r.Err, kerr.TopicAlreadyExists) {
		t.Errorf("validate-only CreateTopics of existing %s: err = %v (%s), want TOPIC_ALREADY_EXISTS", topicA, r.Err, r.ErrMessage)
	}

	// DeleteTopics removes topicA; topicB stays.
	deleted, err := adm.DeleteTopics(ctx, topicA)
	if err != nil {
		t.Fatalf("DeleteTopics: %v", err)
	}
	if r, ok := deleted[topicA]; !ok || r.Err != nil {
		t.Fatalf("DeleteTopics %s: %+v", topicA, deleted)
	}
	var after map[string]bool
	deadline := time.Now().Add(10 * time.Second)
	for {
		l, err := adm.ListTopics(ctx)
		if err != nil {
			t.Fatalf("ListTopics after delete: %v", err)
		}
		after = map[string]bool{}
		for _, n := range l.Names() {
			after[n] = true
		}
		if !after[topicA] || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if after[topicA] {
		t.Errorf("ListTopics still shows %s 10s after DeleteTopics", topicA)
	}
	if !after[topicB] {
		t.Errorf("ListTopics lost %s after deleting %s", topicB, topicA)
	}

	// Deleting a topic that does not exist reports UNKNOWN_TOPIC_OR_PARTITION.
	deleted, err = adm.DeleteTopics(ctx, topicA)
	if err != nil {
		t.Fatalf("DeleteTopics (again): %v", err)
	}
	if r := deleted[topicA]; !errors.Is(r.Err, kerr.UnknownTopicOrPartition) {
		t.Errorf("DeleteTopics of deleted %s: err = %v, want UNKNOWN_TOPIC_OR_PARTITION", topicA, r.Err)
	}

	// The name can be used again: re-create with 4 partitions.
	re, err := adm.CreateTopics(ctx, 4, 1, nil, topicA)
	if err != nil {
		t.Fatalf("CreateTopics (re-create): %v", err)
	}
	if r := re[topicA]; r.Err != nil {
		t.Errorf("re-create %s after delete: %v (%s)", topicA, r.Err, r.ErrMessage)
	}
	b.alive(t)
}

// TestMetadataAutoCreateFlag: Metadata v4+ with AllowAutoTopicCreation=false
// must not create an unknown topic; with true it creates it with the default
// partition count (1).
func TestMetadataAutoCreateFlag(t *testing.T) {
	b := startBroker(t)
	cl := newClient(t, b)
	ctx := ctxTimeout(t, 30*time.Second)

	meta := func(topic string, allow bool) kmsg.MetadataResponseTopic {
		t.Helper()
		req := kmsg.NewPtrMetadataRequest()
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(topic)
		req.Topics = append(req.Topics, rt)
		req.AllowAutoTopicCreation = allow
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatalf("Metadata v%d %s: %v", req.Version, topic, err)
		}
		if len(resp.Topics) != 1 {
			t.Fatalf("Metadata %s: %d topics in response", topic, len(resp.Topics))
		}
		return resp.Topics[0]
	}

	if mt := meta("no-auto", false); mt.ErrorCode != kerr.UnknownTopicOrPartition.Code {
		t.Errorf("Metadata AllowAutoTopicCreation=false for unknown topic: error %v, %d partitions; want UNKNOWN_TOPIC_OR_PARTITION",
			kerr.ErrorForCode(mt.ErrorCode), len(mt.Partitions))
	}
	var mt kmsg.MetadataResponseTopic
	deadline := time.Now().Add(10 * time.Second)
	for {
		mt = meta("auto", true)
		if mt.ErrorCode == 0 && len(mt.Partitions) > 0 || time.Now().After(deadline) {
			break
		}
		// LEADER_NOT_AVAILABLE while the topic is being created is fine.
		time.Sleep(100 * time.Millisecond)
	}
	if mt.ErrorCode != 0 || len(mt.Partitions) != 1 {
		t.Errorf("Metadata AllowAutoTopicCreation=true: error %v, %d partitions; want auto-created with 1 partition",
			kerr.ErrorForCode(mt.ErrorCode), len(mt.Partitions))
	}
	b.alive(t)
}
