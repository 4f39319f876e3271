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
	// eve's grain on a has not seen her join. (a's grain of crew, caught
	// up, may fan her join out to it at the same time: that append fails,
	// fenced, and fails the read marker queued behind it with UNAVAILABLE.)
	retry("eve, whom b added, moves her read marker through a", func() error {
		got, err := a.MarkRead(ctx, "eve", "phone", conv, last)
		if err == nil && got != last {
			t.Fatalf("eve's read marker at %d through a: %d", last, got)
		}
		return err
	})

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

	// A device that was pushed a user seq a's grain of bob has not
	// reached: its sync and its list come from the stream.
	inboxEnd := func() uint64 {
		t.Helper()
		e, err := store.ReadStream(ctx, events.InboxStream("bob"), events.ReadStreamOptions{Direction: events.Backwards, From: events.RevisionEnd, Limit: 1})
		if err != nil || len(e) != 1 {
			t.Fatalf("bob's inbox: %v, %v", e, err)
		}
		return uint64(e[0].Revision) + 1
	}
	bSends := func(id string) uint64 {
		t.Helper()
		retry("b sends "+id, func() error {
			_, err := b.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: id, Body: []byte(id)})
			return err
		})
		if _, err := b.SettleFanout(ctx); err != nil {
			t.Fatal(err)
		}
		return inboxEnd()
	}
	// (a's grain of bob, whose fanned-out entries may have failed on b's,
	// is brought up to date first, so that it is behind b4 only.)
	if _, err := a.Sync(ctx, "bob", inboxEnd(), 1); err != nil {
		t.Fatal(err)
	}
	heard := bSends("b4")
	if p, err := a.SyncPage(ctx, "bob", actors.SyncQuery{After: 0, Limit: 1000, Heard: heard}); err != nil || p.LastUserSeq != heard {
		t.Fatalf("sync through a by a device pushed user seq %d: %v, %v", heard, p.GetLastUserSeq(), err)
	}
	heard = bSends("b5")
	if l, err := a.ConversationPage(ctx, "bob", actors.ListQuery{Limit: 10, Heard: heard}); err != nil || l.UserSeq != heard {
		t.Fatalf("list through a by a device pushed user seq %d: %v, %v", heard, l.GetUserSeq(), err)
	}

	evs, err := store.ReadStream(ctx, events.ConversationStream(conv), events.ReadStreamOptions{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	m, err := events.Decode(evs[r.Seq-1].Type, evs[r.Seq-1].Data)
	if sent, ok := m.(*eventspb.MessageSent); err != nil || !ok || sent.ClientMsgId != "g1" {
		t.Fatalf("gus's send, acknowledged at %d, is not stored there: %v, %v", r.Seq, m, err)
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
