package webhook

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/projections"
)

// The debounce rule by event time: told once, then not again within the
// interval while the device stays behind, then again once it has passed;
// an ack re-arms it at once.
func TestPushDebounceByEventTime(t *testing.T) {
	var p pushState
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	ack := func(seq uint64) {
		p.pushEvents(context.Background(), projections.Event{Stream: events.DeviceStream("bob", "phone"), Message: &eventspb.DeviceAcked{UserSeq: seq}}, nil, time.Minute)
	}
	entry := func(userSeq uint64, at time.Duration) []Event {
		return p.pushEvents(context.Background(), projections.Event{
			Stream: events.InboxStream("bob"), Revision: events.Revision(userSeq - 1), ID: uuid.New(), Time: t0.Add(at),
			Type: "MessagePointer", Message: &eventspb.MessagePointer{ConversationId: "g", Seq: userSeq, Sender: "ann"},
		}, nil, time.Minute)
	}
	ack(1)
	for _, c := range []struct {
		userSeq uint64
		at      time.Duration
		fires   bool
		count   uint64
	}{
		{2, 0, true, 1},
		{3, 30 * time.Second, false, 0},
		{4, 59 * time.Second, false, 0},
		{5, 60 * time.Second, true, 4}, // the interval has passed
		{6, 61 * time.Second, false, 0},
	} {
		got := entry(c.userSeq, c.at)
		if (len(got) == 1) != c.fires || (c.fires && got[0].Count != c.count) {
			t.Fatalf("user seq %d at +%s: %+v", c.userSeq, c.at, got)
		}
	}
	ack(6)
	if got := entry(7, 62*time.Second); len(got) != 1 || got[0].Count != 1 {
		t.Fatalf("after an ack: %+v", got)
	}
	// The state survives its snapshot.
	b, err := p.snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var q pushState
	if err := q.restore(b); err != nil || q.Users["bob"]["phone"].NotifiedSeq != 7 || q.Users["bob"]["phone"].Acked != 6 {
		t.Fatalf("restored %+v: %v", q.Users["bob"]["phone"], err)
	}
}
