//go:build cluster

package actors_test

import (
	"context"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/cluster/clusterproviders/test"

	"github.com/imsync/imsync/actors"
)

// While members disagree on who owns a grain, two activations of it can
// exist: the one that keeps writing and one that loaded the stream earlier
// and only answers. The journal fences the second one's writes; this test
// checks that its answers are not decided on its stale state either. Two
// single-member clusters over one store stand for the two activations: b
// writes behind the back of a's loaded grains.
func TestClusterStaleActivationAnswersFromTheStream(t *testing.T) {
	store := newStore(t)
	// (Neither has a fanout watcher: a's would see b's writes and drive a's
	// grains into failed appends, which rebuild them; the checks below
	// must hold without that.)
	a := start(t, actors.Config{Store: store, ClusterName: "a", Provider: test.NewTestProvider(test.NewInMemAgent()), NoFanoutWatch: true})
	b := start(t, actors.Config{Store: store, ClusterName: "b", NoFanoutWatch: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

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
	// a's grains of crew and bob are loaded now.
	bobBefore, err := a.Sync(ctx, "bob", 0, 100)
	if err != nil {
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
	if _, err := b.SettleFanout(ctx); err != nil {
		t.Fatal(err)
	}
	bobAfter, err := b.Sync(ctx, "bob", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if bobAfter.LastUserSeq <= bobBefore.LastUserSeq {
		t.Fatalf("bob's inbox did not grow through b: %d then %d", bobBefore.LastUserSeq, bobAfter.LastUserSeq)
	}

	// a's loaded grains end early now; each answer below would be decided
	// on that stale state without the check against the stream.
	page, err := a.Sync(ctx, "bob", bobAfter.LastUserSeq, 100)
	if err != nil {
		t.Fatal(err)
	}
	if page.LastUserSeq != bobAfter.LastUserSeq {
		t.Fatalf("a answers bob's sync after %d with last user seq %d", bobAfter.LastUserSeq, page.LastUserSeq)
	}
	if got, err := a.MarkRead(ctx, "bob", "phone", conv, last); err != nil || got != last {
		t.Fatalf("read marker at %d, which b wrote, through a: %d, %v", last, got, err)
	}
	// Before each check, b adds a member a's grain of crew has not seen.
	if _, err := b.AddMember(ctx, "ann", conv, "cat"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.History(ctx, "cat", conv, actors.HistoryQuery{Limit: 10}); err != nil {
		t.Fatalf("history for cat, whom b added, through a: %v", err)
	}
	if _, err := b.AddMember(ctx, "ann", conv, "dan"); err != nil {
		t.Fatal(err)
	}
	r, err := a.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "dan", ClientMsgID: "d1", Body: []byte("hi")})
	if err != nil {
		t.Fatalf("send by dan, whom b added, through a: %v", err)
	}
	if got := checkGaplessQuiet(store, conv); got != r.Seq {
		t.Fatalf("the stream holds %d events, dan's send was acknowledged at %d", got, r.Seq)
	}
}
