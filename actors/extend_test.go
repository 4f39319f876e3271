package actors_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
)

// history returns every message of conv as reader sees it, oldest first.
func history(t *testing.T, svc *actors.Service, reader, conv string) []*eventspb.HistoryMessage {
	t.Helper()
	h, err := svc.History(tctx(t), reader, conv, actors.HistoryQuery{FromStart: true, Limit: actors.MaxHistoryLimit})
	if err != nil {
		t.Fatalf("history of %s: %v", conv, err)
	}
	return h.Messages
}

// checkGapless fails unless conv's events are seqs 1..n with no gap, and
// returns n.
func checkGapless(t *testing.T, store events.Store, conv string) uint64 {
	t.Helper()
	evs, err := store.ReadStream(tctx(t), events.ConversationStream(conv), events.ReadStreamOptions{Limit: 10_000})
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range evs {
		if uint64(e.Revision) != uint64(i) {
			t.Fatalf("%s: event %d at revision %d", conv, i, e.Revision)
		}
	}
	return uint64(len(evs))
}

// fannedOut waits until conv's events up to seq are in every member's inbox.
func fannedOut(t *testing.T, svc *actors.Service, conv string, seq uint64) {
	t.Helper()
	if err := svc.EnsureFanout(tctx(t), conv, seq); err != nil {
		t.Fatal(err)
	}
}

// listLine is the line of conv in user's conversation list.
func listLine(t *testing.T, svc *actors.Service, user, conv string) *eventspb.ConversationSummary {
	t.Helper()
	list, err := svc.Conversations(tctx(t), user)
	if err != nil {
		t.Fatal(err)
	}
	return summaryOf(t, list, conv)
}

func TestCheckRejects(t *testing.T) {
	store := newStore(t)
	svc := start(t, actors.Config{Store: store, Extensions: actors.Extensions{Checks: []actors.Check{{
		Name: "words",
		Func: func(_ context.Context, d *actors.Draft) error {
			if bytes.Contains(d.Body, []byte("spam")) {
				return actors.Reject("profanity", "%q is not allowed", "spam")
			}
			return nil
		},
	}}}})
	ctx := tctx(t)
	conv, err := svc.OpenDirect(ctx, "ann", "bob")
	if err != nil {
		t.Fatal(err)
	}
	_, err = svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "m1", Body: []byte("buy spam")})
	var f *actors.Failure
	if !errors.As(err, &f) || !errors.Is(err, actors.ErrRejected) || f.Reason != "profanity" {
		t.Fatalf("send of a refused word: %v, want REJECTED with reason profanity", err)
	}
	// Edits are checked too: a refused word cannot come in through an edit.
	res, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "m2", Body: []byte("hello")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Edit(ctx, "ann", conv, res.Seq, []byte("spam now")); !errors.Is(err, actors.ErrRejected) {
		t.Fatalf("edit to a refused word: %v, want REJECTED", err)
	}
	msgs := history(t, svc, "bob", conv)
	if len(msgs) != 1 || string(msgs[0].Message.Body) != "hello" || msgs[0].Edited {
		t.Fatalf("bob's history: %v, want only the unedited hello", msgs)
	}
	// The refused client id stays free: the same id with an acceptable body goes through.
	if _, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "m1", Body: []byte("sorry")}); err != nil {
		t.Fatal(err)
	}
	if n := checkGapless(t, store, conv); n != 3 {
		t.Fatalf("%d events stored, want creation + 2 messages", n)
	}
}

func TestCheckRewrites(t *testing.T) {
	store := newStore(t)
	svc := start(t, actors.Config{Store: store, Limits: actors.Limits{MaxBodySize: 64}, Extensions: actors.Extensions{Checks: []actors.Check{
		{Name: "mask", Func: func(_ context.Context, d *actors.Draft) error {
			d.Body = bytes.ReplaceAll(d.Body, []byte("darn"), []byte("d**n"))
			return nil
		}},
		{Name: "tag", Func: func(_ context.Context, d *actors.Draft) error {
			if d.Edits() != 0 {
				return nil
			}
			if d.Metadata == nil {
				d.Metadata = map[string]string{}
			}
			d.Metadata["checked-by"] = "tag"
			if bytes.HasPrefix(d.Body, []byte("shout ")) { // a rewrite beyond the limit
				d.Body = bytes.Repeat(d.Body, 20)
			}
			return nil
		}},
	}}})
	ctx := tctx(t)
	conv, err := svc.CreateGroup(ctx, "g1", "ann", "team", []string{"bob", "cat"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "m1", Body: []byte("darn it"), Metadata: map[string]string{"lang": "en"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, reader := range []string{"bob", "cat"} {
		msgs := history(t, svc, reader, conv)
		if len(msgs) != 1 || string(msgs[0].Message.Body) != "d**n it" {
			t.Fatalf("%s sees %v, want the masked text", reader, msgs)
		}
		if md := msgs[0].Message.Metadata; md["lang"] != "en" || md["checked-by"] != "tag" {
			t.Fatalf("%s sees metadata %v, want the sender's and the check's", reader, md)
		}
	}
	// The sync timeline carries the rewritten text too.
	fannedOut(t, svc, conv, res.Seq)
	if ps := pointers(readInbox(t, svc, "bob"), conv); len(ps) != 1 || ps[0] != res.Seq {
		t.Fatalf("bob's pointers %v", ps)
	}
	if l := listLine(t, svc, "bob", conv); string(l.LatestMessage.GetBody()) != "d**n it" {
		t.Fatalf("bob's list line shows %q", l.LatestMessage.GetBody())
	}
	// An edit is rewritten as well.
	if _, err := svc.Edit(ctx, "ann", conv, res.Seq, []byte("darn darn")); err != nil {
		t.Fatal(err)
	}
	if msgs := history(t, svc, "cat", conv); string(msgs[0].Message.Body) != "d**n d**n" || !msgs[0].Edited {
		t.Fatalf("cat sees %v after the edit", msgs[0])
	}
	// What a check leaves is decided by the same rules: too large is refused, nothing stored.
	if _, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "m2", Body: []byte("shout hey")}); !errors.Is(err, actors.ErrTooLarge) {
		t.Fatalf("a rewrite beyond MaxBodySize: %v, want TOO_LARGE", err)
	}
	if n := checkGapless(t, store, conv); n != 3 {
		t.Fatalf("%d events stored, want creation, message, edit", n)
	}
}

// A check sees only what the rules would accept, and a retried send keeps
// the verdict of its first, stored, check.
func TestCheckIdempotentRetries(t *testing.T) {
	var calls atomic.Int64
	svc := start(t, actors.Config{Store: newStore(t), Extensions: actors.Extensions{Checks: []actors.Check{{
		Name: "stamp",
		Func: func(_ context.Context, d *actors.Draft) error {
			n := calls.Add(1)
			d.Body = fmt.Appendf(d.Body, " #%d", n) // a different result at each call
			return nil
		},
	}}}})
	ctx := tctx(t)
	conv, _ := svc.OpenDirect(ctx, "ann", "bob")
	first, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "m1", Body: []byte("hi")})
	if err != nil {
		t.Fatal(err)
	}
	again, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "m1", Body: []byte("hi")})
	if err != nil || !again.Duplicate || again.Seq != first.Seq {
		t.Fatalf("retry: %+v, %v; want a duplicate of seq %d", again, err, first.Seq)
	}
	// Refused by the rules before any check: a stranger, an empty body.
	if _, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "eve", ClientMsgID: "x", Body: []byte("hi")}); !errors.Is(err, actors.ErrNotFound) {
		t.Fatalf("stranger: %v", err)
	}
	if _, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "y"}); !errors.Is(err, actors.ErrInvalid) {
		t.Fatalf("empty body: %v", err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("the check ran %d times, want once", n)
	}
	if msgs := history(t, svc, "bob", conv); len(msgs) != 1 || string(msgs[0].Message.Body) != "hi #1" {
		t.Fatalf("bob sees %v, want the first verdict only", msgs)
	}

	// Retries racing the first send's check: still stored once.
	var wg sync.WaitGroup
	seqs := make([]uint64, 8)
	for i := range seqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "race", Body: []byte("hey")})
			if err != nil {
				t.Error(err)
			}
			seqs[i] = r.Seq
		}()
	}
	wg.Wait()
	for _, s := range seqs {
		if s != seqs[0] {
			t.Fatalf("racing retries landed at %v", seqs)
		}
	}
	if msgs := history(t, svc, "bob", conv); len(msgs) != 2 {
		t.Fatalf("bob sees %d messages, want 2", len(msgs))
	}
}

func TestCheckPanicsAndTimeouts(t *testing.T) {
	var mode atomic.Value // "ok", "panic", "hang"
	mode.Store("ok")
	release := make(chan struct{})
	defer close(release)
	misbehave := func(_ context.Context, d *actors.Draft) error {
		switch mode.Load() {
		case "panic":
			panic("boom")
		case "hang":
			<-release // ignores its context
		}
		return nil
	}
	store := newStore(t)
	svc := start(t, actors.Config{Store: store, Extensions: actors.Extensions{Checks: []actors.Check{
		{Name: "strict", Func: misbehave, Timeout: 50 * time.Millisecond},
		{Name: "lenient", Func: func(ctx context.Context, d *actors.Draft) error {
			if bytes.HasPrefix(d.Body, []byte("lenient")) {
				d.Body = []byte("half-done") // discarded: the check fails after it
				panic("boom")
			}
			return nil
		}, FailOpen: true},
	}}})
	ctx := tctx(t)
	conv, _ := svc.OpenDirect(ctx, "ann", "bob")
	send := func(id, body string) (actors.SendResult, error) {
		return svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: id, Body: []byte(body)})
	}
	for _, m := range []string{"panic", "hang"} {
		mode.Store(m)
		_, err := send(m, m)
		var f *actors.Failure
		if !errors.As(err, &f) || !errors.Is(err, actors.ErrCheckFailed) || f.Reason != "strict" {
			t.Fatalf("%s: %v, want CHECK_FAILED from strict (fail-closed)", m, err)
		}
	}
	// Several at once while the check hangs: each one times out, none is stored.
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := send(fmt.Sprint("h", i), "x"); !errors.Is(err, actors.ErrCheckFailed) {
				t.Errorf("hanging check: %v", err)
			}
		}()
	}
	wg.Wait()
	mode.Store("ok")
	// Fail-open: the failing check is skipped, its changes too.
	if _, err := send("l", "lenient please"); err != nil {
		t.Fatal(err)
	}
	// The conversation goes on: the refused ids are free, seqs gapless.
	for _, id := range []string{"panic", "hang", "h0"} {
		if _, err := send(id, "after "+id); err != nil {
			t.Fatal(err)
		}
	}
	msgs := history(t, svc, "bob", conv)
	var bodies []string
	for i, m := range msgs {
		if m.Seq != uint64(i)+2 {
			t.Fatalf("message %d at seq %d", i, m.Seq)
		}
		bodies = append(bodies, string(m.Message.Body))
	}
	if got := strings.Join(bodies, "|"); got != "lenient please|after panic|after hang|after h0" {
		t.Fatalf("bob sees %s", got)
	}
	if n := checkGapless(t, store, conv); n != 5 {
		t.Fatalf("%d events, want 5", n)
	}
}

// Slow checks run concurrently; every send lands once, seqs stay gapless,
// and writes without checks (membership) queue behind them in order.
func TestChecksConcurrent(t *testing.T) {
	store := newStore(t)
	svc := start(t, actors.Config{Store: store, Extensions: actors.Extensions{Checks: []actors.Check{{
		Name: "slow",
		Func: func(ctx context.Context, d *actors.Draft) error {
			time.Sleep(time.Duration(len(d.Body)%7) * time.Millisecond)
			return nil
		},
	}}}})
	ctx := tctx(t)
	conv, err := svc.CreateGroup(ctx, "g", "ann", "", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for s := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				body := strings.Repeat("x", 1+s+i)
				if _, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: fmt.Sprint(s, "-", i), Body: []byte(body)}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	if _, err := svc.AddMember(ctx, "ann", conv, "cat"); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if n := checkGapless(t, store, conv); n != 42 {
		t.Fatalf("%d events, want creation, member added, 40 messages", n)
	}
	fannedOut(t, svc, conv, 42)
	if ps := pointers(readInbox(t, svc, "bob"), conv); len(ps) != 40 {
		t.Fatalf("bob has %d pointers", len(ps))
	}
}

func TestReactionKind(t *testing.T) {
	svc := start(t, actors.Config{Store: newStore(t), Limits: actors.Limits{ReadFanoutThreshold: 3},
		Extensions: actors.Extensions{Kinds: []actors.MessageKind{Reaction}}})
	ctx := tctx(t)
	conv, _ := svc.OpenDirect(ctx, "ann", "bob")
	att, pushes := device(t, svc, "bob", "phone")
	defer att.Detach(ctx)
	hi, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "1", Body: []byte("hi")})
	if err != nil {
		t.Fatal(err)
	}
	fannedOut(t, svc, conv, hi.Seq)
	before := listLine(t, svc, "bob", conv)
	if before.Unread != 1 || before.LatestMessageSeq != hi.Seq {
		t.Fatalf("before the reaction: %v", before)
	}
	if _, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "r0", Kind: "reaction", Body: []byte("+1")}); !errors.Is(err, actors.ErrInvalid) {
		t.Fatalf("a reaction to nothing: %v, want INVALID", err)
	}
	// bob reacts to ann's message; ann reacts to her own.
	r1, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "bob", ClientMsgID: "r1", Kind: "reaction", Body: []byte("❤"), ReplyTo: hi.Seq})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "r2", Kind: "reaction", Body: []byte("+1"), ReplyTo: hi.Seq})
	if err != nil {
		t.Fatal(err)
	}
	fannedOut(t, svc, conv, r2.Seq)
	after := listLine(t, svc, "bob", conv)
	if after.Unread != 1 || after.LatestMessageSeq != hi.Seq || after.LastActivityUnixMs != before.LastActivityUnixMs {
		t.Fatalf("after reactions: unread %d latest %d activity %d; want 1, %d, %d (no unread, no bump)",
			after.Unread, after.LatestMessageSeq, after.LastActivityUnixMs, hi.Seq, before.LastActivityUnixMs)
	}
	if l := listLine(t, svc, "ann", conv); l.Unread != 0 {
		t.Fatalf("ann's unread %d: bob's reaction must not count", l.Unread)
	}
	msgs := history(t, svc, "ann", conv)
	if len(msgs) != 3 || msgs[1].Seq != r1.Seq || msgs[1].Message.Kind != "reaction" || msgs[1].Message.ReplyTo != hi.Seq || !msgs[1].Message.NotUnread {
		t.Fatalf("history: %v", msgs)
	}
	// No push for a reaction: the next push bob's phone gets is the next text.
	text, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "2", Body: []byte("there?")})
	if err != nil {
		t.Fatal(err)
	}
	fannedOut(t, svc, conv, text.Seq)
	inbox := readInbox(t, svc, "bob")
	last := inbox[len(inbox)-1]
	if last.seq != text.Seq {
		t.Fatalf("bob's last entry is %d, want %d", last.seq, text.Seq)
	}
	for p := waitPush(t, pushes, 0); p.UserSeq != last.userSeq; p = waitPush(t, pushes, 0) {
		if p.UserSeq == last.userSeq-1 || p.UserSeq == last.userSeq-2 {
			t.Fatalf("pushed user seq %d, a reaction's", p.UserSeq)
		}
	}
	if l := listLine(t, svc, "bob", conv); l.Unread != 2 || l.LatestMessageSeq != text.Seq {
		t.Fatalf("after the text: %v", l)
	}

	// The same rules in a read-fanout group (counted by the conversation).
	g, err := svc.CreateGroup(ctx, "big", "ann", "", []string{"bob", "cat", "dan"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := svc.Send(ctx, actors.SendRequest{Conversation: g, Sender: "ann", ClientMsgID: "g1", Body: []byte("all")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Send(ctx, actors.SendRequest{Conversation: g, Sender: "cat", ClientMsgID: "g2", Kind: "reaction", Body: []byte("+1"), ReplyTo: m.Seq}); err != nil {
		t.Fatal(err)
	}
	info, err := svc.Conversation(ctx, "bob", g)
	if err != nil {
		t.Fatal(err)
	}
	if !info.ReadFanout || info.Unread != 1 || info.LatestMessageSeq != m.Seq {
		t.Fatalf("read-fanout group: fanout %v unread %d latest %d; want true, 1, %d", info.ReadFanout, info.Unread, info.LatestMessageSeq, m.Seq)
	}
}

func TestExtensionsConfigRefused(t *testing.T) {
	ok := func(context.Context, *actors.Draft) error { return nil }
	react := func(context.Context, *actors.Service, actors.Committed) error { return nil }
	for name, ext := range map[string]actors.Extensions{
		"check without name":  {Checks: []actors.Check{{Func: ok}}},
		"check without func":  {Checks: []actors.Check{{Name: "x"}}},
		"checks named twice":  {Checks: []actors.Check{{Name: "x", Func: ok}, {Name: "x", Func: ok}}},
		"checks too slow":     {Checks: []actors.Check{{Name: "x", Func: ok, Timeout: time.Second}, {Name: "y", Func: ok, Timeout: 1500 * time.Millisecond}}},
		"kind without name":   {Kinds: []actors.MessageKind{{}}},
		"kind text":           {Kinds: []actors.MessageKind{{Name: "text"}}},
		"kind twice":          {Kinds: []actors.MessageKind{{Name: "r"}, {Name: "r"}}},
		"reactor bad name":    {Reactors: []actors.Reactor{{Name: "a/b", React: react}}},
		"reactor no func":     {Reactors: []actors.Reactor{{Name: "a"}}},
		"reactors named same": {Reactors: []actors.Reactor{{Name: "a", React: react}, {Name: "a", React: react}}},
	} {
		if svc, err := actors.Start(actors.Config{Store: newStore(t), Extensions: ext}); err == nil {
			svc.Close()
			t.Errorf("%s: started", name)
		}
	}
}

func TestRegisteredExtensions(t *testing.T) {
	ok := func(context.Context, *actors.Draft) error { return nil }
	before := actors.Registered()
	actors.Register(actors.Extensions{Checks: []actors.Check{{Name: "plugin-a", Func: ok}}})
	actors.Register(actors.Extensions{Checks: []actors.Check{{Name: "plugin-b", Func: ok}}, Kinds: []actors.MessageKind{{Name: "plugin-kind"}}})
	reg := actors.Registered()
	got := before.With(actors.Extensions{Checks: []actors.Check{{Name: "own", Func: ok}}}).With(reg)
	var names []string
	for _, c := range got.Checks {
		names = append(names, c.Name)
	}
	if n := len(names); n < 3 || strings.Join(names[n-3:], ",") != "own,plugin-a,plugin-b" || got.Kinds[len(got.Kinds)-1].Name != "plugin-kind" {
		t.Fatalf("checks %v, kinds %v", names, got.Kinds)
	}
	// Registered hands out copies.
	reg.Checks[len(reg.Checks)-1].Name = "changed"
	if again := actors.Registered(); again.Checks[len(again.Checks)-1].Name != "plugin-b" {
		t.Fatal("Registered shares its slices")
	}
}

// A write that arrives while an earlier one is being checked is decided
// after it, even when its own check finishes first.
func TestChecksKeepArrivalOrder(t *testing.T) {
	entered := make(chan string, 2)
	release := make(chan struct{})
	svc := start(t, actors.Config{Store: newStore(t), Extensions: actors.Extensions{Checks: []actors.Check{{
		Name:    "gate",
		Timeout: actors.MaxChecksTimeout,
		Func: func(_ context.Context, d *actors.Draft) error {
			entered <- string(d.Body)
			if string(d.Body) == "first" {
				<-release
			}
			return nil
		},
	}}}})
	ctx := tctx(t)
	conv, _ := svc.OpenDirect(ctx, "ann", "bob")
	results := make(chan actors.SendResult, 2)
	sendAsync := func(sender, body string) {
		go func() {
			r, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: sender, ClientMsgID: body, Body: []byte(body)})
			if err != nil {
				t.Error(err)
			}
			results <- r
		}()
	}
	sendAsync("ann", "first")
	if got := <-entered; got != "first" {
		t.Fatalf("checked %q first", got)
	}
	sendAsync("bob", "second")
	if got := <-entered; got != "second" {
		t.Fatalf("checked %q second", got)
	}
	close(release) // the second's check is done already; the first's now
	<-results
	<-results
	msgs := history(t, svc, "ann", conv)
	if len(msgs) != 2 || string(msgs[0].Message.Body) != "first" || string(msgs[1].Message.Body) != "second" {
		t.Fatalf("history %v, want first then second", msgs)
	}
}
