// Not with -race: the cluster member's start replaces gRPC's global logger,
// which the in-process EventStoreDB protocol server reads (see .ci/run).

//go:build !race

package actors_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events/teststore"
)

// TestSendsSurviveStoreConnectionDrops runs on the EventStoreDB backend
// and cuts the grains' connections to the store again and again while
// three senders send. A send that fails is repeated with the same client
// message id until it is acknowledged: every message must then be in the
// conversation once, at the seq its acknowledgement gave, and reach the
// receiver's sync timeline once.
func TestSendsSurviveStoreConnectionDrops(t *testing.T) {
	store, srv := teststore.OpenESDB(t)
	svc := start(t, actors.Config{Store: store})
	ctx := tctx(t)
	conv, err := svc.OpenDirect(ctx, "ann", "bob")
	if err != nil {
		t.Fatal(err)
	}
	const senders, per = 3, 100
	drops := 0
	var mu sync.Mutex
	acked := map[string]uint64{} // client message id → seq
	failures := 0
	var wg sync.WaitGroup
	for w := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				id := fmt.Sprintf("m-%d-%d", w, i)
				for {
					r, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", Device: "phone", ClientMsgID: id, Body: []byte(id)})
					if err == nil {
						mu.Lock()
						acked[id] = r.Seq
						if w == 0 && i%5 == 4 {
							srv.DropConnections() // also under the other senders' sends
							drops++
						}
						mu.Unlock()
						break
					}
					if ctx.Err() != nil {
						t.Errorf("send %s: %v", id, err)
						return
					}
					mu.Lock()
					failures++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d connection drops, %d failed sends repeated", drops, failures)
	if t.Failed() {
		return
	}

	h, err := svc.History(ctx, "bob", conv, actors.HistoryQuery{FromStart: true, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]uint64{}
	for _, m := range h.Messages {
		id := m.Message.GetClientMsgId()
		if prev, dup := seen[id]; dup {
			t.Fatalf("%s stored twice: seqs %d and %d", id, prev, m.Seq)
		}
		seen[id] = m.Seq
	}
	if len(seen) != senders*per {
		t.Fatalf("conversation holds %d messages, %d were acknowledged", len(seen), senders*per)
	}
	for id, seq := range acked {
		if seen[id] != seq {
			t.Fatalf("%s acknowledged at seq %d, stored at %d", id, seq, seen[id])
		}
	}
	last := uint64(0)
	for _, seq := range acked {
		last = max(last, seq)
	}
	if err := svc.EnsureFanout(ctx, conv, last); err != nil {
		t.Fatal(err)
	}
	inbox := readInbox(t, svc, "bob")
	checkNoDuplicates(t, "bob", inbox)
	if got := len(pointers(inbox, conv)); got != senders*per {
		t.Fatalf("bob's sync timeline points at %d messages, want %d", got, senders*per)
	}
}
