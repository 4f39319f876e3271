package actors_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
)

// failingStore fails the appends to streams with a given prefix while armed.
type failingStore struct {
	events.Store
	mu     sync.Mutex
	prefix string
	fails  int // appends still to fail
}

func (f *failingStore) arm(prefix string, n int) {
	f.mu.Lock()
	f.prefix, f.fails = prefix, n
	f.mu.Unlock()
}

func (f *failingStore) AppendToStream(ctx context.Context, stream string, expected events.ExpectedRevision, evs ...events.EventData) (events.WriteResult, error) {
	f.mu.Lock()
	fail := f.fails > 0 && strings.HasPrefix(stream, f.prefix)
	if fail {
		f.fails--
	}
	f.mu.Unlock()
	if fail {
		return events.WriteResult{}, errors.New("injected append failure")
	}
	return f.Store.AppendToStream(ctx, stream, expected, evs...)
}

// TestUnencodableSendLeavesNoTrace: a message whose event cannot be encoded
// (a device name that is not UTF-8) is refused, and the conversation goes
// on as if it had never been sent: the next send gets the next seq.
func TestUnencodableSendLeavesNoTrace(t *testing.T) {
	svc := start(t, actors.Config{Store: newStore(t)})
	ctx := tctx(t)
	conv, err := svc.CreateGroup(ctx, "enc", "ann", "g", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", Device: "\xff\xfe", ClientMsgID: "bad", Body: []byte("x")})
	if !errors.Is(err, actors.ErrInvalid) {
		t.Fatalf("send with a non-UTF-8 device: %v, want INVALID", err)
	}
	r, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "good", Body: []byte("y")})
	if err != nil || r.Seq != 2 {
		t.Fatalf("next send: %+v %v, want seq 2", r, err)
	}
	// The refused client id was not remembered either.
	r, err = svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "bad", Body: []byte("z")})
	if err != nil || r.Seq != 3 || r.Duplicate {
		t.Fatalf("send reusing the refused client id: %+v %v, want a new seq 3", r, err)
	}
	info, err := svc.Conversation(ctx, "bob", conv)
	if err != nil || info.LastSeq != 3 || info.Unread != 2 {
		t.Fatalf("conversation: %v %v, want last seq 3 and 2 unread", info, err)
	}
}

// TestUnencodableReadMarkerLeavesNoTrace: a read marker that cannot be
// encoded does not move the unread count.
func TestUnencodableReadMarkerLeavesNoTrace(t *testing.T) {
	svc := start(t, actors.Config{Store: newStore(t)})
	ctx := tctx(t)
	conv, err := svc.OpenDirect(ctx, "ann", "bob")
	if err != nil {
		t.Fatal(err)
	}
	r, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "1", Body: []byte("hi")})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.EnsureFanout(ctx, conv, r.Seq); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.MarkRead(ctx, "bob", "\xff", conv, r.Seq); !errors.Is(err, actors.ErrInvalid) {
		t.Fatalf("mark read from a non-UTF-8 device: %v, want INVALID", err)
	}
	list, err := svc.Conversations(ctx, "bob")
	if err != nil || len(list.Conversations) != 1 || list.Conversations[0].Unread != 1 || list.Conversations[0].LastReadSeq != 0 {
		t.Fatalf("bob's list after a refused read marker: %v %v, want 1 unread", list, err)
	}
	if list.UserSeq != 2 {
		t.Fatalf("bob's user seq %d, want 2", list.UserSeq)
	}
}

// TestFailedAppendsRebuild: when the store refuses an append, the caller
// gets UNAVAILABLE and the grain serves the next request from its stream.
func TestFailedAppendsRebuild(t *testing.T) {
	store := &failingStore{Store: newStore(t)}
	svc := start(t, actors.Config{Store: store})
	ctx := tctx(t)
	conv, err := svc.OpenDirect(ctx, "ann", "bob")
	if err != nil {
		t.Fatal(err)
	}

	store.arm(events.ConversationPrefix, 1)
	if _, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "lost", Body: []byte("x")}); !errors.Is(err, actors.ErrUnavailable) {
		t.Fatalf("send with a failing store: %v, want UNAVAILABLE", err)
	}
	r, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "kept", Body: []byte("y")})
	if err != nil || r.Seq != 2 {
		t.Fatalf("send after the failure: %+v %v, want seq 2", r, err)
	}
	if err := svc.EnsureFanout(ctx, conv, r.Seq); err != nil {
		t.Fatal(err)
	}

	store.arm(events.InboxPrefix+"bob", 1)
	if _, err := svc.MarkRead(ctx, "bob", "phone", conv, 2); !errors.Is(err, actors.ErrUnavailable) {
		t.Fatalf("mark read with a failing store: %v, want UNAVAILABLE", err)
	}
	list, err := svc.Conversations(ctx, "bob")
	if err != nil || len(list.Conversations) != 1 || list.Conversations[0].Unread != 1 {
		t.Fatalf("bob's list after a failed read marker: %v %v, want 1 unread", list, err)
	}
	if _, err := svc.MarkRead(ctx, "bob", "phone", conv, 2); err != nil {
		t.Fatal(err)
	}

	store.arm(events.DevicePrefix, 1)
	if _, err := svc.AckDevice(ctx, "bob", "phone", 1); !errors.Is(err, actors.ErrUnavailable) {
		t.Fatalf("ack with a failing store: %v, want UNAVAILABLE", err)
	}
	st, err := svc.Device(ctx, "bob", "phone")
	if err != nil || st.AckedUserSeq != 0 {
		t.Fatalf("device after a failed ack: %v %v, want acked 0", st, err)
	}
	st, err = svc.AckDevice(ctx, "bob", "phone", 2)
	if err != nil || st.AckedUserSeq != 2 {
		t.Fatalf("ack after the failure: %v %v, want acked 2", st, err)
	}
}
