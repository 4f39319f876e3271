package transport

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/transport/wire"
)

// BenchmarkMetricsAnswered is what measuring one answered send costs.
func BenchmarkMetricsAnswered(b *testing.B) {
	m, err := NewMetrics()
	if err != nil {
		b.Fatal(err)
	}
	req := &wire.Request{Id: 1, Op: &wire.Request_Send{Send: &wire.Send{Conversation: "c", ClientMsgId: "m"}}}
	res := &wire.Response{Id: 1, Result: &wire.Response_Sent{Sent: &wire.Sent{Conversation: "c", Seq: 1}}}
	b.ReportAllocs()
	for b.Loop() {
		m.answered(req, res, time.Millisecond, 40)
	}
}

// BenchmarkMetricsPushQueued is what measuring send→push costs per push
// of a new message (the entry is decoded for its timestamp).
func BenchmarkMetricsPushQueued(b *testing.B) {
	m, err := NewMetrics()
	if err != nil {
		b.Fatal(err)
	}
	data, _ := proto.Marshal(&eventspb.MessagePointer{ConversationId: "dm-ann~bob", Seq: 7, Sender: "ann",
		Message: &eventspb.MessageSent{Sender: "ann", ClientMsgId: "m7", Kind: "text", Body: make([]byte, 200), AtUnixMs: time.Now().UnixMilli()}})
	e := &eventspb.SyncEntry{UserSeq: 9, Type: events.TypeOf(&eventspb.MessagePointer{}), Data: data}
	b.ReportAllocs()
	for b.Loop() {
		m.pushQueued(e)
	}
}

func TestMessageTime(t *testing.T) {
	at := time.Now().UnixMilli()
	full, _ := proto.Marshal(&eventspb.MessagePointer{ConversationId: "c", Seq: 7, Sender: "ann",
		Message: &eventspb.MessageSent{Sender: "ann", Body: []byte("hi"), Mentions: []string{"bob"}, AtUnixMs: at}})
	if got, ok := messageTime(full); !ok || got != at {
		t.Fatalf("messageTime = %d %v, want %d", got, ok, at)
	}
	noBody, _ := proto.Marshal(&eventspb.MessagePointer{ConversationId: "c", Seq: 7}) // too large to inline
	if _, ok := messageTime(noBody); ok {
		t.Fatal("a pointer without its message has a time")
	}
	if _, ok := messageTime([]byte{0xff, 0xff}); ok {
		t.Fatal("garbage has a time")
	}
}
