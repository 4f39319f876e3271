package testserver_test

import (
	"strings"
	"testing"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"
)

func TestSubscribeToStream(t *testing.T) {
	_, c, ctx := setup(t)
	appendEvents(t, ctx, c, "s", esdb.NoStream{}, event("E", "a"), event("E", "b"))
	appendEvents(t, ctx, c, "other", esdb.NoStream{}, event("E", "x"))

	fromStart, err := c.SubscribeToStream(ctx, "s", esdb.SubscribeToStreamOptions{From: esdb.Start{}})
	if err != nil {
		t.Fatal(err)
	}
	defer fromStart.Close()
	expectSub(t, fromStart, `event "a"@0`, `event "b"@1`, "caught-up")

	after0, err := c.SubscribeToStream(ctx, "s", esdb.SubscribeToStreamOptions{From: esdb.Revision(0)})
	if err != nil {
		t.Fatal(err)
	}
	defer after0.Close()
	expectSub(t, after0, `event "b"@1`, "caught-up")

	fromEnd, err := c.SubscribeToStream(ctx, "s", esdb.SubscribeToStreamOptions{From: esdb.End{}})
	if err != nil {
		t.Fatal(err)
	}
	defer fromEnd.Close()
	expectSub(t, fromEnd, "caught-up")

	appendEvents(t, ctx, c, "other", esdb.Any{}, event("E", "y"))
	appendEvents(t, ctx, c, "s", esdb.Revision(1), event("E", "c"), event("E", "d"))
	for _, sub := range []*esdb.Subscription{fromStart, after0, fromEnd} {
		expectSub(t, sub, `event "c"@2`, `event "d"@3`)
	}

	// A stream that does not exist yet: caught up at once, then its events.
	later, err := c.SubscribeToStream(ctx, "later", esdb.SubscribeToStreamOptions{From: esdb.Start{}})
	if err != nil {
		t.Fatal(err)
	}
	defer later.Close()
	expectSub(t, later, "caught-up")
	appendEvents(t, ctx, c, "later", esdb.NoStream{}, event("E", "l"))
	expectSub(t, later, `event "l"@0`)
}

// A subscription whose stream is tombstoned is dropped with the
// stream-deleted error.
func TestSubscriptionToTombstonedStream(t *testing.T) {
	_, c, ctx := setup(t)
	appendEvents(t, ctx, c, "s", esdb.NoStream{}, event("E", "a"))
	sub, err := c.SubscribeToStream(ctx, "s", esdb.SubscribeToStreamOptions{From: esdb.Start{}})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	expectSub(t, sub, `event "a"@0`, "caught-up")
	if _, err := c.TombstoneStream(ctx, "s", esdb.TombstoneStreamOptions{}); err != nil {
		t.Fatal(err)
	}
	if e := next(sub); e.kind != "dropped" || !strings.Contains(e.err.Error(), "is deleted") {
		t.Errorf("after the tombstone: %v, want dropped because the stream is deleted", e)
	}
}

func TestSubscribeToAll(t *testing.T) {
	_, c, ctx := setup(t)
	w1 := appendEvents(t, ctx, c, "a", esdb.NoStream{}, event("E", "a0"))
	appendEvents(t, ctx, c, "b", esdb.NoStream{}, event("E", "b0"))

	all, err := c.SubscribeToAll(ctx, esdb.SubscribeToAllOptions{From: esdb.Start{}})
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close()
	got := expectSub(t, all, `event "a0"@0`, `event "b0"@0`, "caught-up")
	if !(got[0].pos.Commit < got[1].pos.Commit) || got[0].pos.Commit != w1.CommitPosition {
		t.Errorf("positions %v, %v; first append at %d", got[0].pos, got[1].pos, w1.CommitPosition)
	}

	// From a position: exclusive.
	after, err := c.SubscribeToAll(ctx, esdb.SubscribeToAllOptions{From: got[0].pos})
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	expectSub(t, after, `event "b0"@0`, "caught-up")

	fromEnd, err := c.SubscribeToAll(ctx, esdb.SubscribeToAllOptions{From: esdb.End{}})
	if err != nil {
		t.Fatal(err)
	}
	defer fromEnd.Close()
	expectSub(t, fromEnd, "caught-up")

	appendEvents(t, ctx, c, "a", esdb.Revision(0), event("E", "a1"))
	for _, sub := range []*esdb.Subscription{all, after, fromEnd} {
		expectSub(t, sub, `event "a1"@1`)
	}
}

// A filtered $all subscription delivers only matching events and sends
// checkpoints as it looks at others; resuming after a checkpoint misses
// nothing and repeats nothing.
func TestFilteredSubscriptionToAll(t *testing.T) {
	_, c, ctx := setup(t)
	appendEvents(t, ctx, c, "conv-1", esdb.NoStream{}, event("E", "c1"))
	for i := 0; i < 3; i++ {
		appendEvents(t, ctx, c, "inbox-1", esdb.Any{}, event("E", "i"))
	}
	appendEvents(t, ctx, c, "conv-2", esdb.NoStream{}, event("E", "c2"))

	opts := esdb.SubscribeToAllOptions{
		From:               esdb.Start{},
		Filter:             &esdb.SubscriptionFilter{Type: esdb.StreamFilterType, Prefixes: []string{"conv-"}},
		MaxSearchWindow:    2,
		CheckpointInterval: 1,
	}
	sub, err := c.SubscribeToAll(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	// Five events looked at: a checkpoint after the 2nd and the 4th, one
	// more on catching up.
	got := expectSub(t, sub, `event "c1"@0`, "checkpoint 2", "checkpoint 4", `event "c2"@0`, "checkpoint 5", "caught-up")
	if got[3].pos.Commit != 5 {
		t.Fatalf("c2 at %v, want position 5", got[3].pos)
	}
	appendEvents(t, ctx, c, "inbox-1", esdb.Any{}, event("E", "i"))
	appendEvents(t, ctx, c, "conv-1", esdb.Revision(0), event("E", "c1b"))
	expectSub(t, sub, `event "c1b"@1`, "checkpoint 7")

	opts.From = got[2].pos // resume after checkpoint 4
	resumed, err := c.SubscribeToAll(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer resumed.Close()
	expectSub(t, resumed, `event "c2"@0`, "checkpoint 6", `event "c1b"@1`, "checkpoint 7", "caught-up")

	byType, err := c.SubscribeToAll(ctx, esdb.SubscribeToAllOptions{
		From:   esdb.Start{},
		Filter: &esdb.SubscriptionFilter{Type: esdb.EventFilterType, Regex: "^Never$"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer byType.Close()
	expectSub(t, byType, "checkpoint 7", "caught-up")
}

// Subscriptions opened while a writer appends switch from history to live
// events without losing or repeating one.
func TestSubscriptionSwitchUnderLoad(t *testing.T) {
	_, c, ctx := setup(t)
	const n = 600
	written := make(chan error, 1)
	go func() { written <- writeSequence(ctx, c, "load", n, nil) }()

	// Open the subscriptions once the writer is under way.
	eventually(t, "first events written", func() error {
		_, err := drain(c.ReadStream(ctx, "load", esdb.ReadStreamOptions{From: esdb.Revision(50)}, 1))
		return err
	})
	stream, err := c.SubscribeToStream(ctx, "load", esdb.SubscribeToStreamOptions{From: esdb.Start{}})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	all, err := c.SubscribeToAll(ctx, esdb.SubscribeToAllOptions{From: esdb.Start{}})
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close()
	for name, sub := range map[string]*esdb.Subscription{"stream": stream, "$all": all} {
		var got []subEvent
		caughtUp := false
		for len(got) < n || !caughtUp {
			switch e := next(sub); e.kind {
			case "event":
				got = append(got, e)
			case "caught-up":
				caughtUp = true
			default:
				t.Fatalf("%s subscription: %v after %d events", name, e, len(got))
			}
		}
		checkSequence(t, got, n)
	}
	if err := <-written; err != nil {
		t.Fatal(err)
	}
}
