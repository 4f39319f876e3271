//go:build cluster

package actors_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/cluster/clusterproviders/test"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
)

// While members disagree on who owns a grain, two activations of it can
// exist: the one that keeps writing and one that loaded the stream earlier
// and only answers. The journal fences the second one's writes; this test
// checks that its answers are not decided on its stale state either. Two
// single-member clusters over one store stand for the two activations: b
// writes behind the back of a's loaded grains, and before each check
// below, so that a's grains are behind again.
func TestClusterStaleActivationAnswersFromTheStream(t *testing.T) {
	store := newStore(t)
	// Only "spam" is refused by a's check.
	noSpam := actors.Check{Name: "words", Func: func(_ context.Context, d *actors.Draft) error {
		if bytes.Contains(d.Body, []byte("spam")) {
			return actors.Reject("words", "no spam")
		}
		return nil
	}}
	// (Neither has a fanout watcher: a's would see b's writes and drive a's
	// grains into failed appends, which rebuild them; the checks below
	// must hold without that.)
	a := start(t, actors.Config{Store: store, ClusterName: "a", Provider: test.NewTestProvider(test.NewInMemAgent()), NoFanoutWatch: true,
		Extensions: actors.Extensions{Checks: []actors.Check{noSpam}}})
	b := start(t, actors.Config{Store: store, ClusterName: "b", NoFanoutWatch: true})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// A write through b after one through a finds b's grain behind: its
	// append fails (fenced), it rebuilds, and the retry passes.
	retry := func(what string, f func() error) {
		t.Helper()
		for i := 0; ; i++ {
			err := f()
			if err == nil {
				return
			}
			if i == 3 || !errors.Is(err, &actors.Failure{Code: actors.Code_UNAVAILABLE}) {
				t.Fatalf("%s: %v", what, err)
			}
		}
	}
	bAdds := func(user string) {
		t.Helper()
		retry("b adds "+user, func() error { _, err := b.AddMember(ctx, "ann", "crew", user); return err })
		if _, err := b.SettleFanout(ctx); err != nil {
			t.Fatal(err)
		}
	}

	conv, err := a.CreateGroup(ctx, "crew", "ann", "crew", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "a1", Body: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.SettleFanout(ctx); err != nil {
		t.Fatal(err)
	}
	// a's grains of crew, bob, eve and bob's phone are loaded now.
	bobBefore, err := a.Sync(ctx, "bob", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Sync(ctx, "eve", 0, 100); err != nil {
		t.Fatal(err)
	}
	if _, err := a.AckDevice(ctx, "bob", "phone", bobBefore.LastUserSeq); err != nil {
		t.Fatal(err)
	}

	// b's activations load the same streams and write on.
	var last uint64
	for _, id := range []string{"b1", "b2", "b3"} {
		r, err := b.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: id, Body: []byte(id)})
		if err != nil {
			t.Fatal(err)
		}
		last = r.Seq
	}
	bAdds("eve")
	bobAfter, err := b.Sync(ctx, "bob", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if bobAfter.LastUserSeq <= bobBefore.LastUserSeq {
		t.Fatalf("bob's inbox did not grow through b: %d then %d", bobBefore.LastUserSeq, bobAfter.LastUserSeq)
	}

	// a's loaded grains end early now; each answer below would be decided
	// on that stale state without the check against the stream.
	if st, err := a.AckDevice(ctx, "bob", "phone", bobAfter.LastUserSeq); err != nil || st.AckedUserSeq != bobAfter.LastUserSeq {
		t.Fatalf("bob's phone acknowledges user seq %d, which b wrote, through a: %v, %v", bobAfter.LastUserSeq, st, err)
	}
	page, err := a.Sync(ctx, "bob", bobAfter.LastUserSeq, 100)
	if err != nil {
		t.Fatal(err)
	}
	if page.LastUserSeq != bobAfter.LastUserSeq {
		t.Fatalf("a answers bob's sync after %d with last user seq %d", bobAfter.LastUserSeq, page.LastUserSeq)
	}
	if got, err := a.MarkRead(ctx, "bob", "phone", conv, last); err != nil || got != last {
		t.Fatalf("bob's read marker at %d, which b wrote, through a: %d, %v", last, got, err)
	}
	// eve's grain on a has not seen her join.
	if got, err := a.MarkRead(ctx, "eve", "phone", conv, last); err != nil || got != last {
		t.Fatalf("eve, whom b added, moves her read marker through a: %d, %v", got, err)
	}

	bAdds("cat")
	if _, err := a.History(ctx, "cat", conv, actors.HistoryQuery{Limit: 10}); err != nil {
		t.Fatalf("history for cat, whom b added, through a: %v", err)
	}
	retry("b recalls", func() error { _, err := b.Recall(ctx, "ann", conv, last); return err })
	h, err := a.History(ctx, "ann", conv, actors.HistoryQuery{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range h.Messages {
		if m.Seq == last && (!m.Recalled || m.Message.Body != nil) {
			t.Fatalf("a's history shows the message b recalled: recalled %v, body %q", m.Recalled, m.Message.Body)
		}
	}

	bAdds("dan")
	// dan's spam: the early decision on a's stale state (dan no member)
	// skips the check; the write must not be accepted unchecked after
	// a's grain catches up.
	_, err = a.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "dan", ClientMsgID: "d0", Body: []byte("spam")})
	if errors.Is(err, &actors.Failure{Code: actors.Code_UNAVAILABLE}) {
		_, err = a.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "dan", ClientMsgID: "d0", Body: []byte("spam")})
	}
	if !errors.Is(err, &actors.Failure{Code: actors.Code_REJECTED}) {
		t.Fatalf("dan's spam through a, whose check refuses it: %v", err)
	}
	bAdds("fay")
	if _, err := a.RemoveMember(ctx, "ann", conv, "fay"); err != nil {
		t.Fatalf("removing fay, whom b added, through a: %v", err)
	}

	bAdds("gus")
	r, err := a.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "gus", ClientMsgID: "g1", Body: []byte("hi")})
	if err != nil {
		t.Fatalf("send by gus, whom b added, through a: %v", err)
	}
	evs, err := store.ReadStream(ctx, events.ConversationStream(conv), events.ReadStreamOptions{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(evs)) != r.Seq {
		t.Fatalf("the stream holds %d events, gus's send was acknowledged at %d", len(evs), r.Seq)
	}
	fayRemoved := false
	for _, e := range evs {
		m, err := events.Decode(e.Type, e.Data)
		if err != nil {
			t.Fatal(err)
		}
		switch m := m.(type) {
		case *eventspb.MessageSent:
			if bytes.Equal(m.Body, []byte("spam")) {
				t.Fatalf("dan's spam stored at %d", e.Revision+1)
			}
		case *eventspb.MemberRemoved:
			fayRemoved = fayRemoved || m.User == "fay"
		}
	}
	if !fayRemoved {
		t.Fatal("fay's removal through a was answered but not stored")
	}
}
