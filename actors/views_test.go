package actors

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
)

// frameSize is the transport's frame limit (wire.DefaultMaxFrameSize);
// every page must fit it with its envelope.
const frameSize = 1 << 20

func recorded(rev uint64, m proto.Message) events.RecordedEvent {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return events.RecordedEvent{Type: events.TypeOf(m), Data: b, Revision: events.Revision(rev)}
}

// convEvents: seq 1 is the creation, seqs 2..n+1 are messages with bodies
// of bodySize bytes.
func convEvents(n, bodySize int) []events.RecordedEvent {
	out := []events.RecordedEvent{recorded(0, &eventspb.ConversationCreated{ConversationId: "g"})}
	for i := range n {
		out = append(out, recorded(uint64(i+1), &eventspb.MessageSent{Sender: "ann", ClientMsgId: fmt.Sprint(i), Body: bytes.Repeat([]byte("x"), bodySize)}))
	}
	return out
}

func TestPageBudget(t *testing.T) {
	cases := []struct {
		name            string
		limit, maxBytes int
		sizes           []int
		want            int // items taken before the first refusal
	}{
		{"count limit", 2, 1 << 20, []int{10, 10, 10}, 2},
		{"byte limit", 10, 100, []int{40, 40, 40}, 2},
		{"first item always fits", 10, 100, []int{500, 1}, 1},
		{"all fit", 10, 1 << 20, []int{1, 2, 3}, 3},
	}
	for _, tc := range cases {
		b := pageBudget{limit: tc.limit, maxBytes: tc.maxBytes}
		got := 0
		for _, s := range tc.sizes {
			if !b.fits(s) {
				break
			}
			got++
		}
		if got != tc.want {
			t.Errorf("%s: %d items fit, want %d", tc.name, got, tc.want)
		}
	}
}

func TestHistoryRead(t *testing.T) {
	cases := []struct {
		name  string
		q     *GetHistory
		dir   events.Direction
		from  events.Revision
		empty bool
		fails bool
	}{
		{"latest", &GetHistory{Limit: 10}, events.Backwards, events.RevisionEnd, false, false},
		{"before 5", &GetHistory{BeforeSeq: 5, Limit: 10}, events.Backwards, 3, false, false},
		{"before 1 is empty", &GetHistory{BeforeSeq: 1, Limit: 10}, 0, 0, true, false},
		{"after 3", &GetHistory{AfterSeq: 3, Limit: 10}, events.Forwards, 3, false, false},
		{"after 0 from the start", &GetHistory{FromStart: true, Limit: 10}, events.Forwards, 0, false, false},
		{"before and after", &GetHistory{BeforeSeq: 5, AfterSeq: 2, Limit: 10}, 0, 0, false, true},
		{"before and from start", &GetHistory{BeforeSeq: 5, FromStart: true, Limit: 10}, 0, 0, false, true},
		{"limit 0", &GetHistory{}, 0, 0, false, true},
		{"limit over the maximum", &GetHistory{Limit: MaxHistoryLimit + 1}, 0, 0, false, true},
	}
	for _, tc := range cases {
		opts, empty, f := historyRead(tc.q)
		if (f != nil) != tc.fails {
			t.Errorf("%s: failure %v, want failure %v", tc.name, f, tc.fails)
			continue
		}
		if tc.fails {
			if f.Code != Code_INVALID {
				t.Errorf("%s: code %v, want INVALID", tc.name, f.Code)
			}
			continue
		}
		if empty != tc.empty {
			t.Errorf("%s: empty %v, want %v", tc.name, empty, tc.empty)
		}
		if !empty && (opts.Direction != tc.dir || opts.From != tc.from || opts.Limit != int(tc.q.Limit)) {
			t.Errorf("%s: read %+v, want direction %v from %d limit %d", tc.name, opts, tc.dir, tc.from, tc.q.Limit)
		}
	}
}

// history feeds evs in reading order (reversed for a newest-first page)
// to a view.
func history(evs []events.RecordedEvent, limit int, newestFirst bool, recalled map[uint64]bool, edited map[uint64][]byte) *eventspb.History {
	evs = slices.Clone(evs)
	if newestFirst {
		slices.Reverse(evs)
	}
	v := newHistoryView(limit, uint64(len(evs)), recalled, edited)
	for _, e := range evs {
		if v.done {
			break
		}
		if err := v.add(e); err != nil {
			panic(err)
		}
	}
	return v.out
}

func seqs(h *eventspb.History) []uint64 {
	var out []uint64
	for _, m := range h.Messages {
		out = append(out, m.Seq)
	}
	return out
}

func TestHistoryView(t *testing.T) {
	small := convEvents(5, 10) // messages at seqs 2..6
	cases := []struct {
		name        string
		evs         []events.RecordedEvent
		limit       int
		newestFirst bool
		want        []uint64
		more        bool
	}{
		{"newest 3 of 5", small, 3, true, []uint64{6, 5, 4}, true},
		{"all 5, newest first", small, 5, true, []uint64{6, 5, 4, 3, 2}, false},
		{"all 5 with room to spare", small, 50, true, []uint64{6, 5, 4, 3, 2}, false},
		{"oldest 2", small, 2, false, []uint64{2, 3}, true},
		{"only the creation", convEvents(0, 0), 10, false, nil, false},
	}
	for _, tc := range cases {
		h := history(tc.evs, tc.limit, tc.newestFirst, nil, nil)
		if !slices.Equal(seqs(h), tc.want) || h.More != tc.more {
			t.Errorf("%s: seqs %v more %v, want %v more %v", tc.name, seqs(h), h.More, tc.want, tc.more)
		}
	}
}

func TestHistoryViewRecalledAndEdited(t *testing.T) {
	h := history(convEvents(3, 10), 10, false, map[uint64]bool{2: true}, map[uint64][]byte{3: []byte("new")})
	if m := h.Messages[0]; !m.Recalled || m.Message.Body != nil {
		t.Errorf("recalled message: %v", m)
	}
	if m := h.Messages[1]; !m.Edited || string(m.Message.Body) != "new" {
		t.Errorf("edited message: %v", m)
	}
	if m := h.Messages[2]; m.Recalled || m.Edited || len(m.Message.Body) != 10 {
		t.Errorf("plain message: %v", m)
	}
}

// history --limit 500 of 16 KiB messages: the page is what fits, says
// there is more, and fits a frame.
func TestHistoryViewFitsAFrame(t *testing.T) {
	for _, newestFirst := range []bool{true, false} {
		h := history(convEvents(500, 16<<10), 500, newestFirst, nil, nil)
		if size := proto.Size(h); size > MaxPageBytes+1024 || size > frameSize {
			t.Fatalf("page of %d bytes", size)
		}
		if !h.More || len(h.Messages) < 40 || len(h.Messages) >= 500 {
			t.Fatalf("%d messages, more %v: want a full page and more", len(h.Messages), h.More)
		}
	}
}

func inbox(n, dataSize int) []events.RecordedEvent {
	var out []events.RecordedEvent
	for i := range n {
		out = append(out, events.RecordedEvent{Type: "MessagePointer", Data: make([]byte, dataSize), Revision: events.Revision(i)})
	}
	return out
}

func TestSyncView(t *testing.T) {
	cases := []struct {
		name          string
		read          []events.RecordedEvent
		after, newest uint64
		limit         int
		first, last   uint64 // user seqs of the page's first and last entries (0: none)
		more          bool
	}{
		{"all", inbox(5, 10), 0, 5, 100, 1, 5, false},
		{"count limit", inbox(5, 10)[:3], 0, 5, 3, 1, 3, true},
		{"not yet durable", inbox(5, 10), 0, 3, 100, 1, 3, false},
		{"after retention", inbox(10, 10)[6:], 2, 10, 100, 7, 10, false},
		{"nothing", nil, 5, 5, 100, 0, 0, false},
		{"1,000 entries of 1.2 KiB", inbox(1000, 1200), 0, 1000, 1000, 1, 0, true},
	}
	for _, tc := range cases {
		p := syncView(tc.read, tc.after, tc.newest, tc.limit)
		var first, last uint64
		if n := len(p.Entries); n > 0 {
			first, last = p.Entries[0].UserSeq, p.Entries[n-1].UserSeq
			if p.FirstUserSeq != first {
				t.Errorf("%s: first_user_seq %d, first entry %d", tc.name, p.FirstUserSeq, first)
			}
		}
		if tc.last == 0 && tc.first != 0 { // a byte cut: somewhere inside
			if last == 0 || last >= tc.newest {
				t.Errorf("%s: last entry %d: want a cut before %d", tc.name, last, tc.newest)
			}
			tc.last = last
		}
		if first != tc.first || last != tc.last || p.More != tc.more || p.LastUserSeq != tc.newest {
			t.Errorf("%s: entries %d..%d more %v newest %d, want %d..%d more %v newest %d",
				tc.name, first, last, p.More, p.LastUserSeq, tc.first, tc.last, tc.more, tc.newest)
		}
		if size := proto.Size(p); size > frameSize {
			t.Errorf("%s: page of %d bytes", tc.name, size)
		}
	}
}

func line(id string, activity int64, readFanout bool) *eventspb.ConversationSummary {
	return &eventspb.ConversationSummary{ConversationId: id, LastActivityUnixMs: activity, ReadFanout: readFanout}
}

func ids(l *eventspb.ConversationList) []string {
	var out []string
	for _, s := range l.Conversations {
		out = append(out, s.ConversationId)
	}
	return out
}

func TestListViewOrderAndMerge(t *testing.T) {
	lines := []*eventspb.ConversationSummary{line("a", 10, false), line("big", 0, true), line("b", 30, false), line("c", 30, false)}
	infos := map[string]*eventspb.ConversationInfo{"big": {ConversationId: "big", LastActivityUnixMs: 20, Unread: 4, LastSeq: 9}}
	l, f := listView(lines, infos, &ListConversations{Limit: 10}, 7)
	if f != nil {
		t.Fatal(f)
	}
	// the read-fanout group sorts by its activity once merged, not last
	if want := []string{"b", "c", "big", "a"}; !slices.Equal(ids(l), want) {
		t.Fatalf("order %v, want %v", ids(l), want)
	}
	if big := l.Conversations[2]; big.Unread != 4 || big.LastSeq != 9 {
		t.Fatalf("read-fanout line not merged: %v", big)
	}
	if l.More || l.NextCursor != "" || l.UserSeq != 7 {
		t.Fatalf("more %v cursor %q user seq %d", l.More, l.NextCursor, l.UserSeq)
	}
}

// Paging walks every line exactly once, in order, whatever the page size;
// big lines are cut by bytes.
func TestListViewPaging(t *testing.T) {
	var lines []*eventspb.ConversationSummary
	for i := range 70 {
		s := line(fmt.Sprintf("g%02d", i), int64(i%7), false)
		s.LatestMessage = &eventspb.MessageSent{Body: make([]byte, 16<<10)}
		lines = append(lines, s)
	}
	for _, limit := range []int{1, 7, 50, MaxListLimit} {
		var got []string
		q := &ListConversations{Limit: uint32(limit)}
		for pages := 0; ; pages++ {
			if pages > 100 {
				t.Fatalf("limit %d: paging does not end", limit)
			}
			l, f := listView(slices.Clone(lines), nil, q, 1)
			if f != nil {
				t.Fatal(f)
			}
			if proto.Size(l) > frameSize {
				t.Fatalf("limit %d: page of %d bytes", limit, proto.Size(l))
			}
			got = append(got, ids(l)...)
			if !l.More {
				break
			}
			q.Cursor = l.NextCursor
		}
		slices.SortFunc(lines, func(a, b *eventspb.ConversationSummary) int { return posOf(a).cmp(posOf(b)) })
		want := ids(&eventspb.ConversationList{Conversations: lines})
		if !slices.Equal(got, want) {
			t.Fatalf("limit %d: paged %v, want %v", limit, got, want)
		}
	}
}

func TestListViewRefusesBadQueries(t *testing.T) {
	for _, q := range []*ListConversations{
		{Limit: 0},
		{Limit: MaxListLimit + 1},
		{Limit: 10, Cursor: "nonsense"},
		{Limit: 10, Cursor: "12:"},
		{Limit: 10, Cursor: "x:g1"},
	} {
		if _, f := listView(nil, nil, q, 0); f == nil || f.Code != Code_INVALID {
			t.Errorf("%v: got %v, want INVALID", q, f)
		}
	}
}

func TestListLinesChangedSince(t *testing.T) {
	s := newUserState("bob")
	for seq, ev := range []proto.Message{
		&eventspb.MembershipChanged{ConversationId: "old", User: "bob", Added: true, Seq: 1},
		&eventspb.MembershipChanged{ConversationId: "big", User: "bob", Added: true, Seq: 1, ReadFanout: true},
		&eventspb.MembershipChanged{ConversationId: "new", User: "bob", Added: true, Seq: 1},
		&eventspb.MessagePointer{ConversationId: "new", Seq: 2, Sender: "ann"},
		&eventspb.MembershipChanged{ConversationId: "left", User: "bob", Added: true, Seq: 1},
		&eventspb.MembershipChanged{ConversationId: "left", User: "bob", Added: false, Seq: 2},
		&eventspb.ReadMarkerMoved{ConversationId: "old", ReadSeq: 1},
	} {
		evolveUser(s, uint64(seq+1), ev)
	}
	names := func(q *ListConversations) []string {
		var out []string
		for _, l := range listLines(s, q) {
			out = append(out, l.ConversationId)
		}
		slices.Sort(out)
		return out
	}
	cases := []struct {
		q    *ListConversations
		want []string
	}{
		{&ListConversations{}, []string{"big", "new", "old"}},
		{&ListConversations{ChangedAfter: 3}, []string{"big", "new", "old"}},
		{&ListConversations{ChangedAfter: 4}, []string{"big", "old"}},
		{&ListConversations{ChangedAfter: 7}, []string{"big"}},
		{&ListConversations{Conversation: "new"}, []string{"new"}},
		{&ListConversations{Conversation: "left"}, nil},
	}
	for _, tc := range cases {
		if got := names(tc.q); !slices.Equal(got, tc.want) {
			t.Errorf("%v: %v, want %v", tc.q, got, tc.want)
		}
	}
	// a line whose change seq is unknown (state from before it was kept)
	// counts as changed rather than being left out
	s.convs["old"].changedAt = 0
	if got := names(&ListConversations{ChangedAfter: 7}); !slices.Equal(got, []string{"big", "old"}) {
		t.Errorf("unknown change seq: %v", got)
	}
}

func TestMemberPage(t *testing.T) {
	members := map[string]bool{"ann": true, "bob": false, "cat": false, "dan": true, "eve": false}
	for _, tc := range []struct {
		after      string
		limit      int
		page       []string
		more       bool
		wantAdmins []string
	}{
		{"", 0, []string{"ann", "bob", "cat", "dan", "eve"}, false, []string{"ann", "dan"}},
		{"", 2, []string{"ann", "bob"}, true, []string{"ann", "dan"}},
		{"bob", 2, []string{"cat", "dan"}, true, []string{"ann", "dan"}},
		{"dan", 2, []string{"eve"}, false, []string{"ann", "dan"}},
		{"eve", 2, nil, false, []string{"ann", "dan"}},
		{"b", 1, []string{"bob"}, true, []string{"ann", "dan"}}, // after need not be a member
		{"", MaxMembersLimit + 1, []string{"ann", "bob", "cat", "dan", "eve"}, false, []string{"ann", "dan"}},
	} {
		page, admins, more := memberPage(members, tc.after, tc.limit)
		if !slices.Equal(page, tc.page) || more != tc.more || !slices.Equal(admins, tc.wantAdmins) {
			t.Errorf("memberPage(after %q, limit %d) = %v %v more %v, want %v %v more %v", tc.after, tc.limit, page, admins, more, tc.page, tc.wantAdmins, tc.more)
		}
	}
	big := map[string]bool{}
	for i := range MaxMembersLimit + 5 {
		big[fmt.Sprintf("u%05d", i)] = false
	}
	if page, _, more := memberPage(big, "", 0); len(page) != MaxMembersLimit || !more {
		t.Errorf("a group above the page limit: %d members, more %v", len(page), more)
	}
}
