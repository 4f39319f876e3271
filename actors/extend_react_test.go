package actors_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
)

// recorder is a reactor that records what it is given, run by run, and
// fails the first attempt at every fifth event (which must then come again
// before anything behind it).
type recorder struct {
	mu     sync.Mutex
	runs   [][]delivered // per Service run, in delivery order
	failed map[delivered]bool
}

type delivered struct {
	conv string
	seq  uint64
}

func (r *recorder) reactor() actors.Reactor {
	return actors.Reactor{Name: "recorder", React: func(_ context.Context, _ *actors.Service, e actors.Committed) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		d := delivered{e.Conversation, e.Seq}
		if e.Seq%5 == 0 && !r.failed[d] {
			r.failed[d] = true
			return errors.New("first attempt fails")
		}
		r.runs[len(r.runs)-1] = append(r.runs[len(r.runs)-1], d)
		return nil
	}}
}

func (r *recorder) newRun() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.runs = append(r.runs, nil)
}

// seen is every event delivered in any run.
func (r *recorder) seen() map[delivered]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[delivered]bool{}
	for _, run := range r.runs {
		for _, d := range run {
			out[d] = true
		}
	}
	return out
}

// checkOrder fails unless, within each run, every conversation's events
// came in seq order without a gap, and each run starts a conversation no
// later than right after the highest seq delivered before (a run may repeat
// what came after the last checkpoint, never skip).
func (r *recorder) checkOrder(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	highest := map[string]uint64{}
	for i, run := range r.runs {
		last := map[string]uint64{}
		for _, d := range run {
			prev, ok := last[d.conv]
			if ok && d.seq != prev+1 {
				t.Fatalf("run %d: %s/%d after %d", i, d.conv, d.seq, prev)
			}
			if !ok && d.seq > highest[d.conv]+1 {
				t.Fatalf("run %d starts %s at %d, after %d: events skipped", i, d.conv, d.seq, highest[d.conv])
			}
			last[d.conv] = d.seq
			highest[d.conv] = max(highest[d.conv], d.seq)
		}
	}
}

// TestReactorAtLeastOnceInOrder: a reactor gets every committed event, in
// order per conversation, across restarts of the Service on the same store
// — including what was committed while it was not running.
func TestReactorAtLeastOnceInOrder(t *testing.T) {
	store := newStore(t)
	rec := &recorder{failed: map[delivered]bool{}}
	convs := []string{"c1", "c2", "c3"}
	sent := 0
	send := func(svc *actors.Service, n int) {
		t.Helper()
		for range n {
			for _, c := range convs {
				sent++
				if _, err := svc.Send(tctx(t), actors.SendRequest{Conversation: c, Sender: "ann", ClientMsgID: fmt.Sprint(sent), Body: []byte("x")}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	waitAll := func() {
		t.Helper()
		eventually(t, "the reactor to see every event", func() bool {
			seen := rec.seen()
			for _, c := range convs {
				n := checkGaplessQuiet(store, c)
				for seq := uint64(1); seq <= n; seq++ {
					if !seen[delivered{c, seq}] {
						return false
					}
				}
			}
			return true
		})
	}

	rec.newRun()
	svc := startReacting(t, store, rec.reactor())
	for _, c := range convs {
		if _, err := svc.CreateGroup(tctx(t), c, "ann", "", []string{"bob"}); err != nil {
			t.Fatal(err)
		}
	}
	send(svc, 12)
	waitAll()
	svc.Close()

	// Events committed while no reactor runs.
	svc = start(t, actors.Config{Store: store})
	send(svc, 7)
	svc.Close()

	rec.newRun()
	svc = startReacting(t, store, rec.reactor())
	send(svc, 6)
	waitAll()
	svc.Close()
	rec.checkOrder(t)
	// Closing saved the checkpoint: the second run resumed right after the
	// first one's last event, not from the start.
	first := map[string]uint64{}
	for _, d := range rec.runs[1] {
		if _, ok := first[d.conv]; !ok {
			first[d.conv] = d.seq
		}
	}
	for _, c := range convs {
		if first[c] != 1+12+1 {
			t.Fatalf("the second run started %s at %d, want %d", c, first[c], 1+12+1)
		}
	}
	for _, c := range convs {
		if n := checkGapless(t, store, c); n != 1+12+7+6 {
			t.Fatalf("%s holds %d events", c, n)
		}
	}
}

func startReacting(t *testing.T, store events.Store, r actors.Reactor) *actors.Service {
	t.Helper()
	return start(t, actors.Config{Store: store, Extensions: actors.Extensions{Reactors: []actors.Reactor{r}}})
}

func checkGaplessQuiet(store events.Store, conv string) uint64 {
	evs, err := store.ReadStream(context.Background(), events.ConversationStream(conv), events.ReadStreamOptions{Limit: 10_000})
	if err != nil {
		return 0
	}
	return uint64(len(evs))
}

// TestEchoBot: the bot answers as its own user through the Service, only
// where it is a member; a replay of every event after its checkpoint was
// lost answers nothing twice.
func TestEchoBot(t *testing.T) {
	store := newStore(t)
	var mu sync.Mutex
	calls := 0
	bot := EchoBot
	bot.FromStart = true
	inner := bot.React
	bot.React = func(ctx context.Context, svc *actors.Service, e actors.Committed) error {
		mu.Lock()
		calls++
		mu.Unlock()
		return inner(ctx, svc, e)
	}
	svc := startReacting(t, store, bot)
	ctx := tctx(t)
	group, err := svc.CreateGroup(ctx, "nobot", "ann", "", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Send(ctx, actors.SendRequest{Conversation: group, Sender: "ann", ClientMsgID: "g", Body: []byte("no echo here")}); err != nil {
		t.Fatal(err)
	}
	conv, _ := svc.OpenDirect(ctx, "ann", "echo")
	seqs := map[string]uint64{}
	for i, body := range []string{"ping", "pong"} {
		res, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: fmt.Sprint(i), Body: []byte(body)})
		if err != nil {
			t.Fatal(err)
		}
		seqs[body] = res.Seq
	}
	var msgs []*eventspb.HistoryMessage
	eventually(t, "the echoes", func() bool {
		msgs = history(t, svc, "ann", conv)
		return len(msgs) >= 4
	})
	want := []string{"ann:ping", "ann:pong", "echo:echo: ping", "echo:echo: pong"}
	got := map[string]uint64{}
	for _, m := range msgs {
		got[m.Message.Sender+":"+string(m.Message.Body)] = m.Message.ReplyTo
	}
	for _, w := range want {
		if _, ok := got[w]; !ok {
			t.Fatalf("history %v lacks %q", got, w)
		}
	}
	if got["echo:echo: ping"] != seqs["ping"] || got["echo:echo: pong"] != seqs["pong"] {
		t.Fatalf("echoes reply to %v", got)
	}
	if n := len(history(t, svc, "ann", group)); n != 1 {
		t.Fatalf("the group where echo is no member holds %d messages", n)
	}
	svc.Close()

	// Lose the checkpoint: everything is delivered again, nothing answered twice.
	if _, err := store.DeleteStream(ctx, actors.ReactorPrefix+"echo-bot", events.Any); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	before := calls
	mu.Unlock()
	svc = startReacting(t, store, bot)
	total := checkGaplessQuiet(store, group) + checkGaplessQuiet(store, conv)
	eventually(t, "the replay", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return uint64(calls-before) >= total
	})
	if msgs := history(t, svc, "ann", conv); len(msgs) != 4 {
		t.Fatalf("after the replay the conversation holds %d messages, want 4", len(msgs))
	}
}

// counts is a reactor's state: messages per conversation.
type counts struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counts) Snapshot() ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return json.Marshal(c.n)
}

func (c *counts) Restore(b []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n = map[string]int{}
	if b == nil {
		return nil
	}
	return json.Unmarshal(b, &c.n)
}

func (c *counts) get(conv string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[conv]
}

func counter(state *counts) actors.Reactor {
	return actors.Reactor{Name: "counter", State: state, React: func(_ context.Context, _ *actors.Service, e actors.Committed) error {
		if _, ok := e.Event.(*eventspb.MessageSent); ok {
			state.mu.Lock()
			state.n[e.Conversation]++
			state.mu.Unlock()
		}
		return nil
	}}
}

// TestReactorState: a reactor's state is saved with its checkpoint and
// restored by the next run, which counts on from there.
func TestReactorState(t *testing.T) {
	store := newStore(t)
	first := &counts{}
	svc := startReacting(t, store, counter(first))
	conv, _ := svc.OpenDirect(tctx(t), "ann", "bob")
	for i := range 30 {
		if _, err := svc.Send(tctx(t), actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: fmt.Sprint(i), Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "30 counted", func() bool { return first.get(conv) == 30 })
	svc.Close()

	second := &counts{} // empty in memory: what it knows comes from the checkpoint
	svc = startReacting(t, store, counter(second))
	for i := range 10 {
		if _, err := svc.Send(tctx(t), actors.SendRequest{Conversation: conv, Sender: "bob", ClientMsgID: fmt.Sprint(i), Body: []byte("y")}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "40 counted", func() bool { return second.get(conv) == 40 })
	svc.Close()
	if n := second.get(conv); n != 40 {
		t.Fatalf("counted %d, want 40", n)
	}
}
