package actors_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
)

// gatedStore holds the appends to streams with prefix until open is
// closed, and records the largest append it saw.
type gatedStore struct {
	events.Store
	prefix  string
	open    chan struct{}
	largest atomic.Int64
}

func (g *gatedStore) AppendToStream(ctx context.Context, stream string, expected events.ExpectedRevision, evs ...events.EventData) (events.WriteResult, error) {
	if strings.HasPrefix(stream, g.prefix) {
		<-g.open
		size := 0
		for _, e := range evs {
			size += len(e.Data) + len(e.Metadata)
		}
		for old := g.largest.Load(); int64(size) > old && !g.largest.CompareAndSwap(old, int64(size)); old = g.largest.Load() {
		}
	}
	return g.Store.AppendToStream(ctx, stream, expected, evs...)
}

// A burst of large sends to one conversation, queued while an append is in
// flight, goes to the store in appends within its limits: every send is
// stored, none fails with the store's "append exceeds" refusal.
func TestBurstOfLargeSendsFitsAppends(t *testing.T) {
	store := &gatedStore{Store: newStore(t), prefix: events.ConversationStream("burst"), open: make(chan struct{})}
	close(store.open) // creation passes
	svc := start(t, actors.Config{Store: store})
	ctx := tctx(t)
	conv, err := svc.CreateGroup(ctx, "burst", "ann", "burst", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	store.open = make(chan struct{})
	body := []byte(strings.Repeat("x", actors.DefaultLimits().MaxBodySize))
	const sends = 400 // 400 × 16 KiB: more than one append may carry
	var wg sync.WaitGroup
	errs := make(chan error, sends)
	for i := range sends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: fmt.Sprint("m", i), Body: body})
			errs <- err
		}()
	}
	// The first append waits at the gate while the others queue behind it
	// in the grain (its state counts them as soon as they are decided);
	// then the gate opens.
	deadline := time.Now().Add(15 * time.Second)
	for {
		info, err := svc.Conversation(ctx, "ann", conv)
		if err == nil && info.LastSeq == sends+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sends did not queue: %v %v", info, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(store.open)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a send of the burst failed: %v", err)
		}
	}
	info, err := svc.Conversation(ctx, "ann", conv)
	if err != nil || info.LastSeq != sends+1 {
		t.Fatalf("conversation after the burst: last seq %d, %v; want %d", info.GetLastSeq(), err, sends+1)
	}
	if got := store.largest.Load(); got > events.MaxAppendSize {
		t.Fatalf("an append of %d bytes reached the store", got)
	}
}

// readSizeStore records the most bytes one ReadStream call returned.
type readSizeStore struct {
	events.Store
	largest atomic.Int64
}

func (r *readSizeStore) ReadStream(ctx context.Context, stream string, opts events.ReadStreamOptions) ([]events.RecordedEvent, error) {
	page, err := r.Store.ReadStream(ctx, stream, opts)
	size := 0
	for _, e := range page {
		size += len(e.Data)
	}
	for old := r.largest.Load(); int64(size) > old && !r.largest.CompareAndSwap(old, int64(size)); old = r.largest.Load() {
	}
	return page, err
}

// A history or sync page of 1,000 large items is built from bounded store
// reads: one request cannot make the server hold 16 MB to answer 768 KiB.
func TestPagesReadTheStoreInChunks(t *testing.T) {
	store := &readSizeStore{Store: newStore(t)}
	svc := start(t, actors.Config{Store: store})
	ctx := tctx(t)
	conv, err := svc.CreateGroup(ctx, "chunks", "ann", "chunks", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(strings.Repeat("y", actors.DefaultLimits().MaxBodySize))
	for i := range 200 {
		r, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: fmt.Sprint("c", i), Body: body})
		if err != nil {
			t.Fatal(err)
		}
		// an edit notice carries the whole body into every inbox
		if _, err := svc.Edit(ctx, "ann", conv, r.Seq, body); err != nil {
			t.Fatal(err)
		}
	}
	const bound = 1 << 20 // 32 events of at most 16 KiB and their envelope
	store.largest.Store(0)
	h, err := svc.History(ctx, "bob", conv, actors.HistoryQuery{Limit: actors.MaxHistoryLimit})
	if err != nil || len(h.Messages) == 0 || !h.More {
		t.Fatalf("history: %d messages, more %v, %v", len(h.GetMessages()), h.GetMore(), err)
	}
	if got := store.largest.Load(); got > bound {
		t.Fatalf("a history page read %d bytes from the store at once", got)
	}
	store.largest.Store(0)
	p, err := svc.Sync(ctx, "bob", 0, actors.MaxSyncLimit)
	if err != nil || len(p.Entries) == 0 || !p.More {
		t.Fatalf("sync: %d entries, more %v, %v", len(p.GetEntries()), p.GetMore(), err)
	}
	if got := store.largest.Load(); got > bound {
		t.Fatalf("a sync page read %d bytes from the store at once", got)
	}
}
