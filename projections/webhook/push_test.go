package webhook_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/projections"
	"github.com/imsync/imsync/projections/webhook"
)

func pointer(conv string, seq uint64, sender, text string) *eventspb.MessagePointer {
	return &eventspb.MessagePointer{ConversationId: conv, Seq: seq, Sender: sender, Message: &eventspb.MessageSent{Sender: sender, Kind: "text", Body: []byte(text)}}
}

// pending returns the device.pending events received so far.
func pending(r *receiver) []webhook.Event {
	var out []webhook.Event
	for _, e := range r.events() {
		if e.Kind == webhook.KindDevicePending {
			out = append(out, e)
		}
	}
	return out
}

// onlineDevices is a DeviceStatus: the listed devices are online; acked
// seqs come from the store alone.
type onlineDevices struct {
	mu     sync.Mutex
	online map[string]bool
	calls  int
}

func (o *onlineDevices) status(_ context.Context, user, device string) (bool, uint64, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls++
	return o.online[user+"/"+device], 0, nil
}

func TestDevicePendingFiresForOfflineDevicesBehind(t *testing.T) {
	store := openStore(t)
	rec := newReceiver(t)
	bob := events.InboxStream("bob")
	// bob has three devices that acknowledged something; his tablet never did.
	appendMsg(t, store, events.DeviceStream("bob", "phone"), &eventspb.DeviceAcked{UserSeq: 1})
	appendMsg(t, store, events.DeviceStream("bob", "laptop"), &eventspb.DeviceAcked{UserSeq: 1})
	appendMsg(t, store, events.DeviceStream("bob", "watch"), &eventspb.DeviceAcked{UserSeq: 1})
	appendMsg(t, store, bob, pointer("dm-ann~bob", 2, "ann", "first"))                           // user seq 1, acked by all
	fired := appendMsg(t, store, bob, pointer("dm-ann~bob", 3, "ann", "hello bob, this is ann")) // user seq 2
	appendMsg(t, store, bob, pointer("dm-ann~bob", 4, "bob", "my own message"))                  // user seq 3
	devs := &onlineDevices{online: map[string]bool{"bob/laptop": true}}
	cfg := webhook.Config{Store: store, Checkpoints: projections.FileCheckpoints{Dir: t.TempDir()}, URL: rec.srv.URL, Devices: devs.status, PushInterval: time.Hour}
	_, stop := run(t, cfg)
	waitFor(t, "device.pending for phone and watch", func() bool { return len(pending(rec)) >= 2 })

	got := pending(rec)
	if len(got) != 2 || got[0].Device != "phone" || got[1].Device != "watch" {
		t.Fatalf("fired for %+v; want phone and watch (laptop is online, the tablet unknown)", got)
	}
	p := got[0]
	if p.User != "bob" || p.Count != 1 || p.UserSeq != 2 || p.Latest == nil || p.Latest.Text != "hello bob, this is ann" || p.Latest.Sender != "ann" || p.Latest.Seq != 3 || p.Stream != bob {
		t.Fatalf("device.pending %+v latest %+v", p, p.Latest)
	}
	if p.IdempotencyKey == fired.String() || p.IdempotencyKey == got[1].IdempotencyKey {
		t.Fatal("device.pending keys must differ per device and from the entry's event id")
	}

	// Debounced: the phone was told and has not acked since; no new push
	// within the interval. After an ack, the next message fires again,
	// also across a restart (the state is in the checkpoint).
	appendMsg(t, store, bob, pointer("g", 1, "cat", "second")) // user seq 4
	waitFor(t, "the checkpoint past user seq 4", func() bool {
		cp, ok, _ := cfg.Checkpoints.Load(context.Background(), "webhook")
		return ok && cp.Position.Commit > 0 && len(rec.events()) >= 2 && checkpointAt(t, store, cp.Position, bob, 3)
	})
	stop()
	if n := len(pending(rec)); n != 2 {
		t.Fatalf("%d device.pending after a debounced message; want 2", n)
	}
	appendMsg(t, store, events.DeviceStream("bob", "phone"), &eventspb.DeviceAcked{UserSeq: 3})
	appendMsg(t, store, bob, pointer("g", 2, "cat", "third")) // user seq 5
	run(t, cfg)
	waitFor(t, "the phone told again after its ack", func() bool { return len(pending(rec)) >= 3 })
	got = pending(rec)
	if len(got) != 3 || got[2].Device != "phone" || got[2].Count != 2 || got[2].UserSeq != 5 || got[2].Latest.Text != "third" {
		t.Fatalf("after the ack: %+v", got[2:])
	}
}

// checkpointAt reports whether the checkpoint at pos covers the event at
// revision rev of stream.
func checkpointAt(t *testing.T, store events.Store, pos events.Position, stream string, rev events.Revision) bool {
	t.Helper()
	evs, err := store.ReadStream(context.Background(), stream, events.ReadStreamOptions{From: rev, Limit: 1})
	if err != nil || len(evs) == 0 {
		return false
	}
	return !pos.Less(evs[0].Position)
}

func TestNoPushPostsOnlyConversationEvents(t *testing.T) {
	store := openStore(t)
	rec := newReceiver(t)
	appendMsg(t, store, events.DeviceStream("bob", "phone"), &eventspb.DeviceAcked{UserSeq: 1})
	appendMsg(t, store, events.InboxStream("bob"), pointer("g", 2, "ann", "x"))
	appendMsg(t, store, events.InboxStream("bob"), pointer("g", 3, "ann", "y"))
	appendMsg(t, store, events.ConversationStream("g"), sent("ann", "z"))
	run(t, webhook.Config{Store: store, Checkpoints: &projections.MemoryCheckpoints{}, URL: rec.srv.URL, NoPush: true})
	waitFor(t, "the conversation event", func() bool { return len(rec.events()) >= 1 })
	if got := rec.events(); len(got) != 1 || got[0].Kind != webhook.KindEvent {
		t.Fatalf("got %+v", got)
	}
}
