package actors_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/teststore"
)

// newStore opens an empty store: the embedded one, or the EventStoreDB
// backend with IMSYNC_TEST_STORE=esdb (see events/teststore).
func newStore(t testing.TB) events.Store {
	t.Helper()
	return teststore.Open(t)
}

func start(t testing.TB, cfg actors.Config) *actors.Service {
	t.Helper()
	svc, err := actors.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	return svc
}

func tctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestSmoke(t *testing.T) {
	svc := start(t, actors.Config{Store: newStore(t)})
	ctx := tctx(t)
	conv, err := svc.OpenDirect(ctx, "ann", "bob")
	if err != nil {
		t.Fatal(err)
	}
	again, err := svc.OpenDirect(ctx, "bob", "ann")
	if err != nil || again != conv {
		t.Fatalf("bob opened %q (%v), ann %q", again, err, conv)
	}
	r, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", Device: "phone", ClientMsgID: "m1", Body: []byte("hi bob")})
	if err != nil || r.Seq != 2 {
		t.Fatalf("send: %+v %v", r, err)
	}
	dup, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", Device: "phone", ClientMsgID: "m1", Body: []byte("hi bob")})
	if err != nil || dup.Seq != 2 || !dup.Duplicate {
		t.Fatalf("retry: %+v %v", dup, err)
	}
	if err := svc.EnsureFanout(ctx, conv, 2); err != nil {
		t.Fatal(err)
	}
	page, err := svc.Sync(ctx, "bob", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Entries) != 2 || page.LastUserSeq != 2 {
		t.Fatalf("bob's sync: %v", page)
	}
	list, err := svc.Conversations(ctx, "bob")
	if err != nil || len(list.Conversations) != 1 || list.Conversations[0].Unread != 1 {
		t.Fatalf("bob's list: %v %v", list, err)
	}
	if _, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "eve", Body: []byte("x")}); !errors.Is(err, actors.ErrNotFound) {
		t.Fatalf("stranger sends: %v", err)
	}
	h, err := svc.History(ctx, "bob", conv, actors.HistoryQuery{Limit: 10})
	if err != nil || len(h.Messages) != 1 || string(h.Messages[0].Message.Body) != "hi bob" {
		t.Fatalf("history: %v %v", h, err)
	}
}
