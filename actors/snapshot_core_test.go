package actors

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
)

// roundTrip encodes a snapshot as the store would hold it and decodes it.
func roundTrip[T proto.Message](t *testing.T, m T, into T) T {
	t.Helper()
	data, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(data, into); err != nil {
		t.Fatal(err)
	}
	return into
}

// sameConv compares two conversation states field by field (messages by
// proto.Equal).
func sameConv(t *testing.T, a, b *convState) {
	t.Helper()
	if !proto.Equal(a.latest, b.latest) {
		t.Fatalf("latest: %v != %v", a.latest, b.latest)
	}
	ac, bc := *a, *b
	ac.latest, bc.latest = nil, nil
	if len(ac.order) == 0 {
		ac.order = nil
	}
	if len(bc.order) == 0 {
		bc.order = nil
	}
	if !reflect.DeepEqual(ac, bc) {
		t.Fatalf("states differ:\n%+v\n%+v", ac, bc)
	}
}

// TestConvSnapshotRoundTrip: a conversation rebuilt from its snapshot is
// the one it was taken of, and decides the next commands alike.
func TestConvSnapshotRoundTrip(t *testing.T) {
	s := group(t)
	apply(t, s, &ChangeMember{Actor: "ann", User: "dan", Add: true}, t0)
	for i := range 6 {
		apply(t, s, send([]string{"ann", "bob", "dan"}[i%3], fmt.Sprint("c", i), fmt.Sprint("m", i)), t0.Add(time.Duration(i)*time.Minute))
	}
	apply(t, s, &RecallMessage{Actor: "ann", Seq: 7}, t0.Add(5*time.Minute))
	apply(t, s, &EditMessage{Actor: "dan", Seq: 8, Body: []byte("edited")}, t0.Add(6*time.Minute))
	apply(t, s, &ChangeMember{Actor: "cat", User: "cat"}, t0.Add(7*time.Minute))

	got, err := convStateFromSnapshot(s.id, s.lastSeq, roundTrip(t, s.snapshot(), &ConvSnapshot{}))
	if err != nil {
		t.Fatal(err)
	}
	sameConv(t, s, got)

	now := t0.Add(8 * time.Minute)
	for _, cmd := range []proto.Message{
		send("bob", "c1", "retry"), // a duplicate in both
		send("bob", "new", "x"),
		&RecallMessage{Actor: "bob", Seq: 9},                   // bob's, inside the window
		&EditMessage{Actor: "ann", Seq: 7, Body: []byte("no")}, // recalled
	} {
		evsA, wA, fA := decideConv(s, cmd, now, testLimits())
		evsB, wB, fB := decideConv(got, cmd, now, testLimits())
		if len(evsA) != len(evsB) || !proto.Equal(wA, wB) || !proto.Equal(fA, fB) {
			t.Fatalf("%v: %v %v %v != %v %v %v", cmd, evsA, wA, fA, evsB, wB, fB)
		}
		for _, e := range evsA {
			evolveConv(s, s.lastSeq+1, e, testLimits())
			evolveConv(got, got.lastSeq+1, e, testLimits())
		}
	}
	for _, u := range []string{"ann", "bob", "dan"} {
		if a, b := s.unreadAfter(u, 0), got.unreadAfter(u, 0); a != b {
			t.Fatalf("%s: unread %d != %d", u, a, b)
		}
	}

	bad := s.snapshot()
	bad.Joined = bad.Joined[1:]
	if _, err := convStateFromSnapshot(s.id, s.lastSeq, bad); err == nil {
		t.Fatal("a snapshot with mismatched lists was accepted")
	}
}

// TestUserSnapshotRoundTrip: the user core rebuilt from its snapshot is the
// one it was taken of.
func TestUserSnapshotRoundTrip(t *testing.T) {
	s := newUserState("bob")
	entries := []proto.Message{
		&eventspb.MembershipChanged{ConversationId: "g", Seq: 1, User: "bob", Added: true, Kind: eventspb.ConversationKind_GROUP, Name: "team"},
		&eventspb.MessagePointer{ConversationId: "g", Seq: 2, Sender: "ann", Message: &eventspb.MessageSent{Sender: "ann", Body: []byte("hi"), AtUnixMs: 5}},
		&eventspb.MessagePointer{ConversationId: "g", Seq: 3, Sender: "ann"},
		&eventspb.MembershipChanged{ConversationId: "big", Seq: 1, User: "bob", Added: true, Kind: eventspb.ConversationKind_GROUP, ReadFanout: true},
		&eventspb.ReadMarkerMoved{ConversationId: "g", ReadSeq: 2},
	}
	for i, e := range entries {
		evolveUser(s, uint64(i+1), e)
	}
	got := userStateFromSnapshot("bob", s.userSeq, roundTrip(t, s.snapshot(), &UserSnapshot{}))
	if got.userSeq != s.userSeq || len(got.convs) != len(s.convs) {
		t.Fatalf("rebuilt %+v, want %+v", got, s)
	}
	for id, c := range s.convs {
		g := got.convs[id]
		if !proto.Equal(c.latest, g.latest) {
			t.Fatalf("%s latest: %v != %v", id, g.latest, c.latest)
		}
		cc, gc := *c, *g
		cc.latest, gc.latest = nil, nil
		if len(cc.unread) == 0 {
			cc.unread = nil
		}
		if len(gc.unread) == 0 {
			gc.unread = nil
		}
		if !reflect.DeepEqual(cc, gc) {
			t.Fatalf("%s: %+v != %+v", id, gc, cc)
		}
	}
}

// TestLargeCreationSplitsMembers: a creation at the member cap spreads the
// members over events that each fit in one store event, the first holding
// more than the read-fanout threshold; one more member is refused.
func TestLargeCreationSplitsMembers(t *testing.T) {
	lim := DefaultLimits()
	members := make([]string, lim.MaxGroupSize-1)
	for i := range members {
		members[i] = fmt.Sprintf("user-with-a-fairly-long-identifier-%06d", i) // 41 bytes: 4 MB in all
	}
	s := newConvState("huge")
	evs, w, f := decideConv(s, &CreateConversation{Kind: eventspb.ConversationKind_GROUP, Creator: "ann", Members: members}, t0, lim)
	if f != nil {
		t.Fatal(f)
	}
	if len(evs) < 2 || w.Seq != uint64(len(evs)) {
		t.Fatalf("%d events, written seq %d", len(evs), w.Seq)
	}
	total := 0
	for i, e := range evs {
		switch e := e.(type) {
		case *eventspb.ConversationCreated:
			total += len(e.Members)
		case *eventspb.MembersJoined:
			total += len(e.Users)
		}
		if size := proto.Size(e); size > 1<<20 {
			t.Fatalf("event %d is %d bytes", i, size)
		}
		evolveConv(s, uint64(i+1), e, lim)
		if i == 0 {
			if n := len(e.(*eventspb.ConversationCreated).Members); n <= lim.ReadFanoutThreshold {
				t.Fatalf("the first event holds %d members", n)
			}
		}
	}
	if total != lim.MaxGroupSize || len(s.members) != lim.MaxGroupSize || !s.large || !s.members["ann"] {
		t.Fatalf("%d members, large %v, creator admin %v", len(s.members), s.large, s.members["ann"])
	}
	if to := recipients(s, 2, evs[1], lim); len(to) != len(evs[1].(*eventspb.MembersJoined).Users) {
		t.Fatalf("MembersJoined goes to %d users, want its %d", len(to), len(evs[1].(*eventspb.MembersJoined).Users))
	}
	_, _, f = decideConv(newConvState("huger"), &CreateConversation{Kind: eventspb.ConversationKind_GROUP, Creator: "ann", Members: append(members, "one-more")}, t0, lim)
	if f == nil || f.Code != Code_TOO_LARGE {
		t.Fatalf("a creation beyond the cap: %v, want TOO_LARGE", f)
	}
	if got := chunkMembers([]string{"a", "b", "c"}, 1, 4); len(got) != 3 {
		t.Fatalf("chunks of 3 one-byte ids at 4 bytes each: %v", got)
	}
}

// A snapshot whose writing was cut short between its appends is passed
// over for the complete one before it, not for a full replay (which an
// inbox past its retention could not do).
func TestCutShortSnapshotFallsBackToTheComplete(t *testing.T) {
	store, err := events.OpenInMemory(events.Options{ScavengeInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx := context.Background()
	good := &UserSnapshot{Convs: []*ConvLine{{Id: "g", Member: true, LastRead: 7}}}
	if err := writeSnapshot(ctx, store, "inbox-ann", 40, good); err != nil {
		t.Fatal(err)
	}
	// The first part of a 3-part snapshot, then the append of the others failed.
	part, _ := proto.Marshal(&SnapshotPart{Covers: 90, Part: 0, Parts: 3, Data: []byte("partial")})
	if _, err := store.AppendToStream(ctx, events.SnapshotStream("inbox-ann"), events.Any, events.EventData{ID: uuid.New(), Type: snapshotPartType, Data: part}); err != nil {
		t.Fatal(err)
	}
	var got UserSnapshot
	covers, err := readSnapshot(ctx, store, "inbox-ann", &got)
	if err != nil || covers != 40 || !proto.Equal(&got, good) {
		t.Fatalf("readSnapshot after a cut-short one: covers %d, %v, %v; want the complete snapshot of 40", covers, &got, err)
	}
}
