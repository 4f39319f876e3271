package projections_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/projections"
)

func TestStatsScripted(t *testing.T) {
	day1 := time.Date(2026, 3, 1, 23, 59, 0, 0, time.UTC)
	day2 := day1.Add(2 * time.Minute) // 2026-03-02
	ms := func(t time.Time) int64 { return t.UnixMilli() }
	sent := func(conv string, rev uint64, sender string, at time.Time) projections.Event {
		return projections.Event{Stream: "conv-" + conv, Revision: events.Revision(rev), Time: at,
			Message: &eventspb.MessageSent{Sender: sender, AtUnixMs: ms(at)}}
	}
	ptr := func(user, conv string, seq uint64, at time.Time) projections.Event {
		return projections.Event{Stream: "inbox-" + user, Time: at,
			Message: &eventspb.MessagePointer{ConversationId: conv, Seq: seq}}
	}
	script := []projections.Event{
		// a/1 on day 1, to ann and bob: lags 10ms, 30ms
		sent("a", 0, "ann", day1),
		ptr("ann", "a", 1, day1.Add(10*time.Millisecond)),
		ptr("bob", "a", 1, day1.Add(30*time.Millisecond)),
		// a/2 by bob on day 2, to ann, bob, cat: lags 5, 5, 200ms
		sent("a", 1, "bob", day2),
		ptr("ann", "a", 2, day2.Add(5*time.Millisecond)),
		ptr("bob", "a", 2, day2.Add(5*time.Millisecond)),
		ptr("cat", "a", 2, day2.Add(200*time.Millisecond)),
		// b/1 by ann on day 2, no inbox entry yet: fanout 0
		sent("b", 0, "ann", day2),
		// b/2 by ann on day 2 to dan: lag 1000ms
		sent("b", 1, "ann", day2),
		ptr("dan", "b", 2, day2.Add(time.Second)),
		// a pointer to a message before the replay: fanout 1, no lag
		ptr("dan", "z", 7, day2),
		// other events are ignored
		{Stream: "conv-a", Revision: 2, Time: day2, Message: &eventspb.MessageRecalled{Seq: 1}},
		{Stream: "notes", Time: day2, Type: "Text"},
	}
	s := projections.NewStats()
	for _, e := range script {
		if err := s.Handle(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	got := s.Report()
	want := projections.StatsReport{
		Days: []projections.DayStats{
			{Day: "2026-03-01", Messages: 1, ActiveUsers: 1},
			{Day: "2026-03-02", Messages: 3, ActiveUsers: 2},
		},
		Conversations: []projections.ConversationDay{
			{Conversation: "a", Day: "2026-03-01", Messages: 1},
			{Conversation: "a", Day: "2026-03-02", Messages: 1},
			{Conversation: "b", Day: "2026-03-02", Messages: 2},
		},
		// fanouts a/1 2, a/2 3, b/1 0, b/2 1, z/7 1
		Fanout: projections.Distribution{Count: 5, Min: 0, P50: 1, P90: 3, P99: 3, Max: 3},
		// lags 5 5 10 30 200 1000
		LagMS: projections.Distribution{Count: 6, Min: 5, P50: 10, P90: 1000, P99: 1000, Max: 1000},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("report\n got %+v\nwant %+v", got, want)
	}

	// The snapshot restores the same report.
	b, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	r := projections.NewStats()
	if err := r.Restore(b); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(r.Report(), want) {
		t.Fatalf("restored report %+v", r.Report())
	}
}

func TestDistribute(t *testing.T) {
	for _, tc := range []struct {
		in   []int64
		want projections.Distribution
	}{
		{nil, projections.Distribution{}},
		{[]int64{7}, projections.Distribution{Count: 1, Min: 7, P50: 7, P90: 7, P99: 7, Max: 7}},
		{[]int64{4, 1, 3, 2}, projections.Distribution{Count: 4, Min: 1, P50: 2, P90: 4, P99: 4, Max: 4}},
	} {
		if got := projections.Distribute(tc.in); got != tc.want {
			t.Errorf("Distribute(%v) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
	v := make([]int64, 100)
	for i := range v {
		v[i] = int64(100 - i)
	}
	if d := projections.Distribute(v); d.P50 != 50 || d.P90 != 90 || d.P99 != 99 || d.Max != 100 {
		t.Fatalf("1..100: %+v", d)
	}
}

// A replay stopped half-way and resumed from its checkpoint reports what
// one uninterrupted replay does.
func TestStatsResumeAfterStop(t *testing.T) {
	s := newStore(t)
	appendMessages(t, s, []string{"a", "b", "c"}, 40)
	ctx := context.Background()
	all, err := s.ReadAll(ctx, events.ReadAllOptions{Limit: events.MaxReadLimit, Filter: projections.NewStats().Filter()})
	if err != nil {
		t.Fatal(err)
	}
	end, mid := all[len(all)-1].Position, all[len(all)/2].Position

	whole := projections.NewStats()
	r := &projections.Runner{Store: s, Checkpoints: &projections.MemoryCheckpoints{}, Projection: whole, Until: end}
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
	want := whole.Report()
	if len(want.Conversations) != 3 || want.Days[0].Messages != 120 || want.Fanout.Count != 120 || want.LagMS.Count != 8 {
		t.Fatalf("uninterrupted report %+v", want)
	}

	cps := &projections.MemoryCheckpoints{}
	var applied int
	first := &projections.Runner{Store: s, Checkpoints: cps, Projection: projections.NewStats(), Until: mid, SaveEvery: 7,
		Applied: func(projections.Event) { applied++ }}
	if err := first.Run(ctx); err != nil {
		t.Fatal(err)
	}
	resumed := projections.NewStats() // a new process: state only from the checkpoint
	second := &projections.Runner{Store: s, Checkpoints: cps, Projection: resumed, Until: end,
		Applied: func(projections.Event) { applied++ }}
	if err := second.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if applied != len(all) {
		t.Fatalf("applied %d events over two runs, want %d", applied, len(all))
	}
	if got := resumed.Report(); !reflect.DeepEqual(got, want) {
		t.Fatalf("resumed report\n got %+v\nwant %+v", got, want)
	}
	// Already at the end: a third run applies nothing and restores the state.
	again := projections.NewStats()
	if err := (&projections.Runner{Store: s, Checkpoints: cps, Projection: again, Until: end}).Run(ctx); err != nil {
		t.Fatal(err)
	}
	if got := again.Report(); !reflect.DeepEqual(got, want) {
		t.Fatalf("report at the end\n got %+v\nwant %+v", got, want)
	}
}
