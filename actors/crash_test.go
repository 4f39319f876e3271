package actors_test

import (
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/imsync/imsync/actors"
)

// TestCrashBetweenAckAndFanout: sends are acknowledged while fanout to
// some members fails; the service then "dies" (its grains vanish) and a new
// one starts on the same store. Every member's inbox must end up with each
// message exactly once — those delivered before the crash are not repeated.
func TestCrashBetweenAckAndFanout(t *testing.T) {
	store := newStore(t)
	var blockBob atomic.Bool
	svc1 := start(t, actors.Config{
		Store:         store,
		NoFanoutWatch: true,
		BeforeDeliver: func(conv, user string) error {
			if user == "cat" || (user == "bob" && blockBob.Load()) {
				return errors.New("injected: process about to die")
			}
			return nil
		},
	})
	ctx := tctx(t)
	conv, err := svc1.CreateGroup(ctx, "crashy", "ann", "crash", []string{"bob", "cat"})
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for i := range 20 {
		if i == 10 {
			blockBob.Store(true) // bob got the first half, cat nothing
		}
		r, err := svc1.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: fmt.Sprint(i), Body: []byte(fmt.Sprint("m", i))})
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, r.Seq)
		if i == 9 {
			eventually(t, "bob's first half", func() bool { return len(pointers(readInbox(t, svc1, "bob"), conv)) == 10 })
		}
	}
	if n := len(readInbox(t, svc1, "cat")); n != 0 {
		t.Fatalf("cat's inbox has %d entries although every delivery to cat failed", n)
	}
	svc1.Close() // the crash: in-memory fanout state is gone

	svc2 := start(t, actors.Config{Store: store})
	for _, user := range []string{"ann", "bob", "cat"} {
		eventually(t, user+"'s inbox complete", func() bool {
			return slices.Equal(pointers(readInbox(t, svc2, user), conv), seqs)
		})
		entries := readInbox(t, svc2, user)
		checkNoDuplicates(t, user, entries)
		if len(entries) != 21 { // joined + 20 messages
			t.Fatalf("%s has %d entries, want 21", user, len(entries))
		}
	}
	// A retried send after the restart is still recognised.
	r, err := svc2.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "19", Body: []byte("m19")})
	if err != nil || !r.Duplicate || r.Seq != seqs[19] {
		t.Fatalf("retry after restart: %+v %v", r, err)
	}
}
