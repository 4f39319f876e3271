package projections_test

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/projections"
)

// workload drives the product (the grains, through actors.Service) with a
// scripted chat: a direct conversation and a group, sends from everyone,
// read markers, a recall, an edit, a member leaving and coming back. It
// returns how many messages were stored, once every conversation has
// fanned out.
func workload(t *testing.T, svc *actors.Service) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	must := func(seq uint64, err error) uint64 {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return seq
	}
	dm, err := svc.OpenDirect(ctx, "ann", "bob")
	if err != nil {
		t.Fatal(err)
	}
	group, err := svc.CreateGroup(ctx, "trip", "ann", "trip", []string{"bob", "cat"})
	if err != nil {
		t.Fatal(err)
	}
	last := map[string]uint64{}
	messages := 0
	send := func(conv, from string, i int) uint64 {
		t.Helper()
		r, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: from, Device: "phone",
			ClientMsgID: fmt.Sprint(from, "-", conv, "-", i), Body: []byte(fmt.Sprint("message ", i, " from ", from))})
		if err != nil {
			t.Fatal(err)
		}
		messages++
		last[conv] = max(last[conv], r.Seq)
		return r.Seq
	}
	var bobsLast uint64
	for i := range 20 {
		send(dm, "ann", i)
		bobsLast = send(dm, "bob", i)
		send(group, "cat", i)
		send(group, "ann", i)
		if i == 10 {
			must(svc.MarkRead(ctx, "bob", "phone", dm, bobsLast-1))
			must(svc.MarkRead(ctx, "cat", "phone", group, last[group]))
		}
	}
	last[dm] = max(last[dm], must(svc.Recall(ctx, "ann", dm, bobsLast-1)))
	last[dm] = max(last[dm], must(svc.Edit(ctx, "bob", dm, bobsLast, []byte("edited"))))
	last[group] = max(last[group], must(svc.RemoveMember(ctx, "cat", group, "cat")))
	send(group, "bob", 100)
	last[group] = max(last[group], must(svc.AddMember(ctx, "ann", group, "cat")))
	send(group, "cat", 101)
	must(svc.MarkRead(ctx, "ann", "laptop", group, last[group]))
	for conv, seq := range last {
		if err := svc.EnsureFanout(ctx, conv, seq); err != nil {
			t.Fatal(err)
		}
	}
	return messages
}

// TestReplayEqualsLive: the stats projection, fed live by the runner while
// the grains serve a scripted workload, ends in the state that the same
// projection rebuilt from scratch afterwards reaches.
func TestReplayEqualsLive(t *testing.T) {
	store := newStore(t)
	svc, err := actors.Start(actors.Config{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()

	live := projections.NewStats()
	var mu sync.Mutex
	var applied events.Position
	r := &projections.Runner{Store: store, Checkpoints: &projections.MemoryCheckpoints{}, Projection: live,
		Applied: func(e projections.Event) { mu.Lock(); applied = e.Position; mu.Unlock() }}
	stop := start(r) // live from before the first event
	sent := workload(t, svc)

	filter := live.Filter()
	last, err := store.ReadAll(context.Background(), events.ReadAllOptions{Direction: events.Backwards, From: events.PositionEnd, Limit: 1, Filter: filter})
	if err != nil || len(last) == 0 {
		t.Fatalf("store: %v", err)
	}
	waitFor(t, "the live projection", func() bool { mu.Lock(); defer mu.Unlock(); return applied == last[0].Position })
	stop()

	rebuilt := projections.NewStats()
	rr := &projections.Runner{Store: store, Checkpoints: &projections.MemoryCheckpoints{}, Projection: rebuilt, Until: last[0].Position}
	if err := rr.Rebuild(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, want := live.Report(), rebuilt.Report()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("live\n %+v\nrebuilt\n %+v", got, want)
	}
	total := 0
	for _, d := range want.Days {
		total += d.Messages
	}
	if total != sent || want.Fanout.Count != sent {
		t.Fatalf("stats count %d messages (fanout of %d); the workload stored %d", total, want.Fanout.Count, sent)
	}
}

// conversationList runs the user grain's own fold (actors.ConversationList)
// as a projection over one user's sync timeline.
type conversationList struct {
	user string
	list *actors.ConversationList
}

func (c *conversationList) Name() string { return "conversations-" + c.user }

func (c *conversationList) Filter() events.Filter {
	return events.Filter{StreamPrefixes: []string{events.InboxStream(c.user)}}
}

func (c *conversationList) Handle(_ context.Context, e projections.Event) error {
	if e.Stream == events.InboxStream(c.user) && e.Message != nil { // the prefix also selects inbox-<user>x
		c.list.Apply(uint64(e.Revision)+1, e.Message)
	}
	return nil
}

// TestConversationListIsAProjection: the conversation list the runner
// replays from each user's inbox stream with the grain's fold is the list
// the Service answers from the live grain.
func TestConversationListIsAProjection(t *testing.T) {
	store := newStore(t)
	svc, err := actors.Start(actors.Config{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	workload(t, svc)
	ctx := context.Background()
	for user, convs := range map[string]int{"ann": 2, "bob": 2, "cat": 1} {
		want, err := svc.Conversations(ctx, user)
		if err != nil {
			t.Fatal(err)
		}
		p := &conversationList{user: user, list: actors.NewConversationList(user)}
		last, err := store.ReadStream(ctx, events.InboxStream(user), events.ReadStreamOptions{Direction: events.Backwards, From: events.RevisionEnd, Limit: 1})
		if err != nil || len(last) == 0 {
			t.Fatalf("inbox of %s: %v", user, err)
		}
		r := &projections.Runner{Store: store, Checkpoints: &projections.MemoryCheckpoints{}, Projection: p, Until: last[0].Position}
		if err := r.Run(ctx); err != nil {
			t.Fatal(err)
		}
		got := p.list.List()
		if len(got.Conversations) != convs || !proto.Equal(got, want) {
			t.Fatalf("%s: replayed list\n %v\nthe grain's\n %v", user, got, want)
		}
	}
}
