// Package storetest is the conformance suite of events.Store. Every backend
// runs it from its own tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, storetest.Backend{
//			Features: storetest.Features{Reopen: true, Clock: true},
//			New: func(t *testing.T, clock func() time.Time) (events.Store, storetest.Reopener) { ... },
//		})
//	}
//
// Each test opens its own store and names its streams under a prefix of its
// own (random per test), and every check of $all is scoped to that prefix
// with a filter: so tests run in parallel, and the suite also runs against
// a shared server that holds other data. No test waits on the wall clock for
// "nothing else arrives": after the expected events, a test appends a marker
// and the next event delivered must be that marker. Backends differ only in
// Features, which skip tests or checks; no test is forked per backend.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/imsync/imsync/events"
)

// Features says what a backend can do beyond the common contract.
type Features struct {
	// Reopen: the backend keeps its data across close and open.
	Reopen bool
	// Clock: the store stamps events with the clock given to New, so
	// $maxAge can be tested by moving it.
	Clock bool
	// LogKeepsHidden: $all still shows events that retention or deletion
	// hide from their stream, until the server scavenges them
	// (EventStoreDB). The suite then skips those checks of $all.
	LogKeepsHidden bool
}

// Reopener closes the store it belongs to and opens the same data again.
type Reopener func(t *testing.T) events.Store

// Backend is what a backend gives the suite.
type Backend struct {
	Features Features
	// New opens an empty store whose events are stamped by clock. The
	// Reopener may be nil when !Features.Reopen. The suite closes stores.
	New func(t *testing.T, clock func() time.Time) (events.Store, Reopener)
}

// space names a test's streams under a prefix no other test (nor other data
// on a shared server) uses.
type space string

func newSpace() space {
	return space("st" + strings.ReplaceAll(uuid.NewString(), "-", "")[:12] + "-")
}

// s names a stream of the test.
func (sp space) s(name string) string { return string(sp) + name }

// all is the filter of the test's whole part of $all.
func (sp space) all() events.Filter { return events.Filter{StreamPrefixes: []string{string(sp)}} }

// filter is the filter of the test's streams whose names start with prefix.
func (sp space) filter(prefix string) events.Filter {
	return events.Filter{StreamPrefixes: []string{string(sp) + prefix}}
}

// Run runs every conformance test against b.
func Run(t *testing.T, b Backend) {
	tests := []struct {
		name string
		fn   func(*testing.T, Backend)
	}{
		{"AppendAndRead", testAppendAndRead},
		{"ReadPaging", testReadPaging},
		{"ExpectedRevision", testExpectedRevision},
		{"ConcurrentWritersOneWinsPerRevision", testConcurrentWriters},
		{"IdempotentRetry", testIdempotentRetry},
		{"ReadAll", testReadAll},
		{"SubscribeToStream", testSubscribeToStream},
		{"SubscribeSwitchUnderLoad", testSubscribeSwitchUnderLoad},
		{"SubscribeToAllFiltered", testSubscribeToAllFiltered},
		{"SlowSubscriberDoesNotBlockWriters", testSlowSubscriber},
		{"RetentionMaxCountAndTruncate", testRetentionCount},
		{"RetentionMaxAge", testRetentionAge},
		{"SoftDelete", testSoftDelete},
		{"Tombstone", testTombstone},
		{"BadInputChangesNothing", testBadInput},
		{"Closed", testClosed},
		{"ReadsAfterReopen", testReopen},
		{"CancelledContext", testCancelledContext},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, b)
		})
	}
}

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// open returns a fresh store that is closed when the test ends.
func open(t *testing.T, b Backend) (events.Store, Reopener, *clock) {
	t.Helper()
	c := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	s, reopen := b.New(t, c.Now)
	holder := &storeHolder{s: s}
	t.Cleanup(func() { holder.s.Close() })
	if reopen == nil {
		return s, nil, c
	}
	return s, func(t *testing.T) events.Store {
		holder.s = reopen(t)
		return holder.s
	}, c
}

type storeHolder struct{ s events.Store }

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// evs makes n events whose data names them: "<tag>-<i>".
func evs(tag string, n int) []events.EventData {
	out := make([]events.EventData, n)
	for i := range out {
		out[i] = events.EventData{
			ID:       uuid.New(),
			Type:     "Test",
			Data:     fmt.Appendf(nil, "%s-%d", tag, i),
			Metadata: []byte(`{"m":1}`),
		}
	}
	return out
}

func mustAppend(t *testing.T, s events.Store, stream string, exp events.ExpectedRevision, e ...events.EventData) events.WriteResult {
	t.Helper()
	res, err := s.AppendToStream(ctx(t), stream, exp, e...)
	if err != nil {
		t.Fatalf("append to %s (%s): %v", stream, exp, err)
	}
	return res
}

func readAll(t *testing.T, s events.Store, stream string) []events.RecordedEvent {
	t.Helper()
	got, err := s.ReadStream(ctx(t), stream, events.ReadStreamOptions{Limit: events.MaxReadLimit})
	if err != nil {
		t.Fatalf("read %s: %v", stream, err)
	}
	return got
}

func readLog(t *testing.T, s events.Store, filter events.Filter) []events.RecordedEvent {
	t.Helper()
	got, err := s.ReadAll(ctx(t), events.ReadAllOptions{Limit: events.MaxReadLimit, Filter: filter})
	if err != nil {
		t.Fatalf("read $all: %v", err)
	}
	return got
}

func datas(es []events.RecordedEvent) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = string(e.Data)
	}
	return out
}

func wantDatas(t *testing.T, what string, got []events.RecordedEvent, want ...string) {
	t.Helper()
	g := datas(got)
	if fmt.Sprint(g) != fmt.Sprint(want) {
		t.Fatalf("%s: got %q, want %q", what, g, want)
	}
}

func names(tag string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s-%d", tag, i))
	}
	return out
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}

func checkIncreasing(t *testing.T, es []events.RecordedEvent) {
	t.Helper()
	for i := 1; i < len(es); i++ {
		if !es[i-1].Position.Less(es[i].Position) {
			t.Fatalf("positions not increasing: %s then %s", es[i-1].Position, es[i].Position)
		}
	}
}

func testAppendAndRead(t *testing.T, b Backend) {
	s, _, c := open(t, b)
	sp := newSpace()
	conv1 := sp.s("conv-1")
	in := evs("a", 3)
	res := mustAppend(t, s, conv1, events.NoStream, in...)
	if res.NextExpected != 2 {
		t.Fatalf("NextExpected = %d, want 2", res.NextExpected)
	}
	got := readAll(t, s, conv1)
	if len(got) != 3 {
		t.Fatalf("read %d events, want 3", len(got))
	}
	for i, e := range got {
		if e.ID != in[i].ID || e.Type != "Test" || !bytes.Equal(e.Data, in[i].Data) || !bytes.Equal(e.Metadata, in[i].Metadata) {
			t.Fatalf("event %d = %+v, want %+v", i, e, in[i])
		}
		if e.Stream != conv1 || e.Revision != events.Revision(i) {
			t.Fatalf("event %d at %s/%d", i, e.Stream, e.Revision)
		}
		if b.Features.Clock && !e.Created.Equal(c.Now()) {
			t.Fatalf("created %s, want %s", e.Created, c.Now())
		}
		if e.Created.IsZero() {
			t.Fatal("created not set")
		}
	}
	checkIncreasing(t, got)
	if got[2].Position != res.Position {
		t.Fatalf("last event at %s, append said %s", got[2].Position, res.Position)
	}
	// The caller owns what it passed: changing it changes nothing stored.
	in[0].Data[0] = 'X'
	wantDatas(t, "after caller mutation", readAll(t, s, conv1), "a-0", "a-1", "a-2")

	_, err := s.ReadStream(ctx(t), sp.s("conv-none"), events.ReadStreamOptions{Limit: 10})
	wantErr(t, "read missing stream", err, events.ErrStreamNotFound)

	// A zero id gets a fresh one.
	mustAppend(t, s, conv1, events.Exactly(2), events.EventData{Type: "NoID"})
	got = readAll(t, s, conv1)
	if got[3].ID == uuid.Nil {
		t.Fatal("zero event id was stored as is")
	}
}

func testReadPaging(t *testing.T, b Backend) {
	s, _, _ := open(t, b)
	stream := newSpace().s("s")
	mustAppend(t, s, stream, events.NoStream, evs("p", 10)...)
	read := func(o events.ReadStreamOptions) []events.RecordedEvent {
		got, err := s.ReadStream(ctx(t), stream, o)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	wantDatas(t, "forwards from 3 limit 4", read(events.ReadStreamOptions{From: 3, Limit: 4}), names("p", 3, 7)...)
	wantDatas(t, "forwards past end", read(events.ReadStreamOptions{From: 10, Limit: 4}))
	wantDatas(t, "backwards from end", read(events.ReadStreamOptions{Direction: events.Backwards, From: events.RevisionEnd, Limit: 3}), "p-9", "p-8", "p-7")
	wantDatas(t, "backwards from 2", read(events.ReadStreamOptions{Direction: events.Backwards, From: 2, Limit: 10}), "p-2", "p-1", "p-0")
	// Paging forwards by the last revision read covers everything once.
	var all []events.RecordedEvent
	for from := events.Revision(0); ; {
		page := read(events.ReadStreamOptions{From: from, Limit: 3})
		if len(page) == 0 {
			break
		}
		all = append(all, page...)
		from = page[len(page)-1].Revision + 1
	}
	wantDatas(t, "paged", all, names("p", 0, 10)...)
}

func testExpectedRevision(t *testing.T, b Backend) {
	s, _, _ := open(t, b)
	sp := newSpace()
	cases := []struct {
		stream string
		exp    events.ExpectedRevision
		ok     bool
	}{
		{"none", events.Any, true},
		{"none", events.NoStream, true},
		{"none", events.StreamExists, false},
		{"none", events.Exactly(0), false},
		{"at2", events.Any, true},
		{"at2", events.NoStream, false},
		{"at2", events.StreamExists, true},
		{"at2", events.Exactly(2), true},
		{"at2", events.Exactly(1), false},
		{"at2", events.Exactly(5), false},
	}
	for i, tc := range cases {
		stream := sp.s(fmt.Sprintf("%s-%d", tc.stream, i))
		if tc.stream == "at2" {
			mustAppend(t, s, stream, events.NoStream, evs("x", 3)...)
		}
		_, err := s.AppendToStream(ctx(t), stream, tc.exp, evs("new", 1)...)
		if tc.ok {
			if err != nil {
				t.Fatalf("%s with %s: %v", tc.stream, tc.exp, err)
			}
			continue
		}
		var wrong *events.WrongExpectedRevisionError
		if !errors.As(err, &wrong) || !errors.Is(err, events.ErrWrongExpectedRevision) {
			t.Fatalf("%s with %s: got %v, want WrongExpectedRevisionError", tc.stream, tc.exp, err)
		}
		if tc.stream == "at2" && (!wrong.Exists || wrong.Actual != 2) {
			t.Fatalf("error says stream at %d (exists %v), it is at 2", wrong.Actual, wrong.Exists)
		}
		if tc.stream == "none" && wrong.Exists {
			t.Fatalf("error says a missing stream exists")
		}
		// A refused append changes nothing.
		if tc.stream == "at2" {
			wantDatas(t, "after refused append", readAll(t, s, stream), "x-0", "x-1", "x-2")
		} else if _, err := s.ReadStream(ctx(t), stream, events.ReadStreamOptions{Limit: 1}); !errors.Is(err, events.ErrStreamNotFound) {
			t.Fatalf("refused append created the stream: %v", err)
		}
	}
}

func testConcurrentWriters(t *testing.T, b Backend) {
	s, _, _ := open(t, b)
	race := newSpace().s("race")
	const writers, revisions = 8, 40
	var mu sync.Mutex
	winners := make(map[events.Revision]string)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				// Read where the stream is, then race the others to extend it.
				exp := events.NoStream
				last, err := s.ReadStream(ctx(t), race, events.ReadStreamOptions{Direction: events.Backwards, From: events.RevisionEnd, Limit: 1})
				if err == nil && len(last) == 1 {
					if last[0].Revision+1 >= revisions {
						return
					}
					exp = events.Exactly(last[0].Revision)
				} else if !errors.Is(err, events.ErrStreamNotFound) {
					t.Error(err)
					return
				}
				tag := fmt.Sprintf("w%d", w)
				e := events.EventData{ID: uuid.New(), Type: "Test", Data: []byte(tag)}
				res, err := s.AppendToStream(ctx(t), race, exp, e)
				if errors.Is(err, events.ErrWrongExpectedRevision) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if prev, dup := winners[res.NextExpected]; dup {
					t.Errorf("revision %d won by %s and %s", res.NextExpected, prev, tag)
				}
				winners[res.NextExpected] = tag
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	got := readAll(t, s, race)
	if len(got) != revisions || len(winners) != revisions {
		t.Fatalf("stream has %d events, %d winners; want %d each", len(got), len(winners), revisions)
	}
	for _, e := range got {
		if winners[e.Revision] != string(e.Data) {
			t.Fatalf("revision %d holds %s, its append was acked to %s", e.Revision, e.Data, winners[e.Revision])
		}
	}
}

func testIdempotentRetry(t *testing.T, b Backend) {
	s, reopen, _ := open(t, b)
	sp := newSpace()
	idem := sp.s("idem")
	ab := evs("ab", 2)
	first := mustAppend(t, s, idem, events.NoStream, ab...)
	again := mustAppend(t, s, idem, events.NoStream, ab...)
	if again != first {
		t.Fatalf("retry with NoStream gave %+v, first append %+v", again, first)
	}
	c := evs("c", 1)
	first = mustAppend(t, s, idem, events.Exactly(1), c...)
	if again := mustAppend(t, s, idem, events.Exactly(1), c...); again != first {
		t.Fatalf("retry with exact revision gave %+v, first append %+v", again, first)
	}
	d := evs("d", 1)
	first = mustAppend(t, s, idem, events.Any, d...)
	if again := mustAppend(t, s, idem, events.Any, d...); again != first {
		t.Fatalf("retry with Any gave %+v, first append %+v", again, first)
	}
	wantDatas(t, "after retries", readAll(t, s, idem), "ab-0", "ab-1", "c-0", "d-0")

	// Half the same events is not a retry: refused, nothing written.
	mixed := []events.EventData{ab[0], evs("new", 1)[0]}
	_, err := s.AppendToStream(ctx(t), idem, events.NoStream, mixed...)
	wantErr(t, "partial retry", err, events.ErrWrongExpectedRevision)
	if n := len(readLog(t, s, sp.all())); n != 4 {
		t.Fatalf("$all holds %d events after a refused retry, want 4", n)
	}

	if reopen == nil || !b.Features.Reopen {
		return
	}
	s = reopen(t)
	if again := mustAppend(t, s, idem, events.Exactly(1), c...); again.NextExpected != 2 {
		t.Fatalf("retry after reopen gave %+v, want revision 2", again)
	}
	if again := mustAppend(t, s, idem, events.Any, d...); again.NextExpected != 3 {
		t.Fatalf("Any retry after reopen gave %+v, want revision 3", again)
	}
	wantDatas(t, "after reopen and retries", readAll(t, s, idem), "ab-0", "ab-1", "c-0", "d-0")
}

func testReadAll(t *testing.T, b Backend) {
	s, _, _ := open(t, b)
	sp := newSpace()
	mustAppend(t, s, sp.s("conv-1"), events.NoStream, evs("c1", 2)...)
	mustAppend(t, s, sp.s("inbox-u"), events.NoStream, evs("iu", 2)...)
	mustAppend(t, s, sp.s("conv-2"), events.NoStream, evs("c2", 1)...)
	mustAppend(t, s, sp.s("conv-1"), events.Exactly(1), evs("c1b", 1)...)

	all := readLog(t, s, sp.all())
	wantDatas(t, "$all", all, "c1-0", "c1-1", "iu-0", "iu-1", "c2-0", "c1b-0")
	checkIncreasing(t, all)
	if all[3].Stream != sp.s("inbox-u") || all[3].Revision != 1 {
		t.Fatalf("$all event 3 is %s/%d", all[3].Stream, all[3].Revision)
	}
	wantDatas(t, "conv- filter", readLog(t, s, sp.filter("conv-")), "c1-0", "c1-1", "c2-0", "c1b-0")
	two := events.Filter{StreamPrefixes: []string{sp.s("inbox-"), sp.s("conv-2")}}
	wantDatas(t, "two prefixes", readLog(t, s, two), "iu-0", "iu-1", "c2-0")

	readPage := func(o events.ReadAllOptions) []events.RecordedEvent {
		t.Helper()
		page, err := s.ReadAll(ctx(t), o)
		if err != nil {
			t.Fatal(err)
		}
		return page
	}
	wantDatas(t, "$all from a position (inclusive)", readPage(events.ReadAllOptions{From: all[2].Position, Limit: 2, Filter: sp.all()}), "iu-0", "iu-1")
	wantDatas(t, "$all backwards", readPage(events.ReadAllOptions{Direction: events.Backwards, From: events.PositionEnd, Limit: 3, Filter: sp.all()}), "c1b-0", "c2-0", "iu-1")
	wantDatas(t, "$all backwards from a position", readPage(events.ReadAllOptions{Direction: events.Backwards, From: all[1].Position, Limit: 10, Filter: sp.all()}), "c1-1", "c1-0")
	wantDatas(t, "filtered backwards", readPage(events.ReadAllOptions{Direction: events.Backwards, From: events.PositionEnd, Limit: 2, Filter: sp.filter("conv-")}), "c1b-0", "c2-0")
	// Unfiltered reads start exactly at an event's position, whatever else
	// the log holds.
	wantDatas(t, "unfiltered from a position", readPage(events.ReadAllOptions{From: all[2].Position, Limit: 1}), "iu-0")
	wantDatas(t, "unfiltered backwards from a position", readPage(events.ReadAllOptions{Direction: events.Backwards, From: all[1].Position, Limit: 1}), "c1-1")
	if end := readPage(events.ReadAllOptions{From: events.PositionEnd, Limit: 10}); len(end) != 0 {
		t.Fatalf("forwards from the end: %d events", len(end))
	}
	if end := readPage(events.ReadAllOptions{From: events.PositionEnd, Limit: 10, Filter: sp.all()}); len(end) != 0 {
		t.Fatalf("filtered forwards from the end: %d events", len(end))
	}
}

func testRetentionCount(t *testing.T, b Backend) {
	s, _, _ := open(t, b)
	sp := newSpace()
	capped, trunc, future := sp.s("capped"), sp.s("trunc"), sp.s("future")
	mustAppend(t, s, capped, events.NoStream, evs("c", 5)...)
	if err := s.SetStreamMetadata(ctx(t), capped, events.StreamMetadata{MaxCount: 2}); err != nil {
		t.Fatal(err)
	}
	meta, err := s.GetStreamMetadata(ctx(t), capped)
	if err != nil || meta.MaxCount != 2 {
		t.Fatalf("metadata %+v, %v", meta, err)
	}
	if meta, err := s.GetStreamMetadata(ctx(t), sp.s("plain")); err != nil || meta != (events.StreamMetadata{}) {
		t.Fatalf("metadata of a stream without any: %+v, %v", meta, err)
	}
	wantDatas(t, "$maxCount 2", readAll(t, s, capped), "c-3", "c-4")
	back, err := s.ReadStream(ctx(t), capped, events.ReadStreamOptions{Direction: events.Backwards, From: events.RevisionEnd, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	wantDatas(t, "$maxCount 2 backwards", back, "c-4", "c-3")
	if !b.Features.LogKeepsHidden {
		wantDatas(t, "$maxCount in $all", readLog(t, s, sp.all()), "c-3", "c-4")
	}
	mustAppend(t, s, capped, events.Exactly(4), evs("d", 1)...)
	wantDatas(t, "$maxCount after append", readAll(t, s, capped), "c-4", "d-0")

	sub, err := s.SubscribeToStream(ctx(t), capped, events.SubscribeFromStart())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	wantDatas(t, "$maxCount in a subscription", recv(t, sub, 2), "c-4", "d-0")

	mustAppend(t, s, trunc, events.NoStream, evs("t", 4)...)
	if err := s.SetStreamMetadata(ctx(t), trunc, events.StreamMetadata{TruncateBefore: 3}); err != nil {
		t.Fatal(err)
	}
	wantDatas(t, "$tb 3", readAll(t, s, trunc), "t-3")
	if meta, err := s.GetStreamMetadata(ctx(t), trunc); err != nil || meta.TruncateBefore != 3 || meta.MaxCount != 0 {
		t.Fatalf("metadata %+v, %v", meta, err)
	}
	// Metadata on a stream that does not exist yet applies once it does.
	if err := s.SetStreamMetadata(ctx(t), future, events.StreamMetadata{MaxCount: 1}); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, future, events.NoStream, evs("f", 3)...)
	wantDatas(t, "metadata set before the stream", readAll(t, s, future), "f-2")
	// Setting metadata replaces it: no limit any more.
	if err := s.SetStreamMetadata(ctx(t), future, events.StreamMetadata{}); err != nil {
		t.Fatal(err)
	}
	wantDatas(t, "metadata cleared", readAll(t, s, future), "f-0", "f-1", "f-2")
}

func testRetentionAge(t *testing.T, b Backend) {
	if !b.Features.Clock {
		t.Skip("backend does not take a clock")
	}
	s, _, c := open(t, b)
	sp := newSpace()
	aged := sp.s("aged")
	if err := s.SetStreamMetadata(ctx(t), aged, events.StreamMetadata{MaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if meta, err := s.GetStreamMetadata(ctx(t), aged); err != nil || meta.MaxAge != time.Hour {
		t.Fatalf("metadata %+v, %v", meta, err)
	}
	mustAppend(t, s, aged, events.NoStream, evs("old", 2)...)
	c.Advance(30 * time.Minute)
	mustAppend(t, s, aged, events.Exactly(1), evs("new", 1)...)
	wantDatas(t, "all young", readAll(t, s, aged), "old-0", "old-1", "new-0")
	c.Advance(31 * time.Minute)
	wantDatas(t, "old expired", readAll(t, s, aged), "new-0")
	if !b.Features.LogKeepsHidden {
		wantDatas(t, "old expired in $all", readLog(t, s, sp.all()), "new-0")
	}
	back, err := s.ReadStream(ctx(t), aged, events.ReadStreamOptions{Direction: events.Backwards, From: events.RevisionEnd, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	wantDatas(t, "old expired backwards", back, "new-0")
	c.Advance(time.Hour)
	got, err := s.ReadStream(ctx(t), aged, events.ReadStreamOptions{Limit: 10})
	if err != nil || len(got) != 0 {
		t.Fatalf("everything expired: got %d events, %v (the stream still exists)", len(got), err)
	}
	// Revisions go on after expiry.
	if res := mustAppend(t, s, aged, events.Exactly(2), evs("later", 1)...); res.NextExpected != 3 {
		t.Fatalf("append after expiry at %d, want 3", res.NextExpected)
	}
	if err := s.SetStreamMetadata(ctx(t), aged, events.StreamMetadata{MaxAge: -time.Second}); !errors.Is(err, events.ErrInvalidArgument) {
		t.Fatalf("negative $maxAge: %v", err)
	}
}

func testSoftDelete(t *testing.T, b Backend) {
	s, _, _ := open(t, b)
	sp := newSpace()
	soft := sp.s("soft")
	mustAppend(t, s, soft, events.NoStream, evs("a", 3)...)
	_, err := s.DeleteStream(ctx(t), soft, events.Exactly(1))
	wantErr(t, "delete at the wrong revision", err, events.ErrWrongExpectedRevision)
	var wrong *events.WrongExpectedRevisionError
	if !errors.As(err, &wrong) || !wrong.Exists || wrong.Actual != 2 {
		t.Fatalf("delete at the wrong revision: %v, want the stream at revision 2", err)
	}
	if _, err := s.DeleteStream(ctx(t), soft, events.Exactly(2)); err != nil {
		t.Fatal(err)
	}
	_, err = s.ReadStream(ctx(t), soft, events.ReadStreamOptions{Limit: 10})
	wantErr(t, "read soft-deleted", err, events.ErrStreamNotFound)
	if !b.Features.LogKeepsHidden {
		if got := readLog(t, s, sp.all()); len(got) != 0 {
			t.Fatalf("$all still shows %d deleted events", len(got))
		}
	}
	_, err = s.DeleteStream(ctx(t), sp.s("never"), events.Any)
	wantErr(t, "delete a missing stream", err, events.ErrStreamNotFound)

	// Recreated by an append; revisions go on, old events stay hidden.
	res := mustAppend(t, s, soft, events.NoStream, evs("b", 1)...)
	if res.NextExpected != 3 {
		t.Fatalf("recreated at revision %d, want 3", res.NextExpected)
	}
	wantDatas(t, "recreated", readAll(t, s, soft), "b-0")
	if !b.Features.LogKeepsHidden {
		wantDatas(t, "recreated in $all", readLog(t, s, sp.all()), "b-0")
	}
}

func testTombstone(t *testing.T, b Backend) {
	s, _, _ := open(t, b)
	sp := newSpace()
	gone := sp.s("gone")
	mustAppend(t, s, gone, events.NoStream, evs("a", 2)...)
	sub, err := s.SubscribeToStream(ctx(t), gone, events.SubscribeFromEnd())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	_, err = s.TombstoneStream(ctx(t), gone, events.Exactly(0))
	wantErr(t, "tombstone at the wrong revision", err, events.ErrWrongExpectedRevision)
	if _, err := s.TombstoneStream(ctx(t), gone, events.Any); err != nil {
		t.Fatal(err)
	}
	_, err = s.ReadStream(ctx(t), gone, events.ReadStreamOptions{Limit: 10})
	wantErr(t, "read tombstoned", err, events.ErrStreamDeleted)
	_, err = s.AppendToStream(ctx(t), gone, events.Any, evs("b", 1)...)
	wantErr(t, "append to tombstoned", err, events.ErrStreamDeleted)
	_, err = s.DeleteStream(ctx(t), gone, events.Any)
	wantErr(t, "delete tombstoned", err, events.ErrStreamDeleted)
	err = s.SetStreamMetadata(ctx(t), gone, events.StreamMetadata{MaxCount: 1})
	wantErr(t, "metadata of tombstoned", err, events.ErrStreamDeleted)
	_, err = sub.Recv(ctx(t))
	wantErr(t, "subscription to tombstoned", err, events.ErrStreamDeleted)
	if !b.Features.LogKeepsHidden {
		if got := readLog(t, s, sp.all()); len(got) != 0 {
			t.Fatalf("$all still shows %d tombstoned events", len(got))
		}
	}
}

func testBadInput(t *testing.T, b Backend) {
	s, _, _ := open(t, b)
	sp := newSpace()
	ok := sp.s("ok")
	mustAppend(t, s, ok, events.NoStream, evs("a", 1)...)
	big := make([]byte, events.MaxEventSize+1)
	long := sp.s(string(bytes.Repeat([]byte("x"), events.MaxStreamNameLen)))
	appends := []struct {
		name   string
		stream string
		exp    events.ExpectedRevision
		evs    []events.EventData
	}{
		{"empty stream", "", events.Any, evs("x", 1)},
		{"system stream", "$" + sp.s("sys"), events.Any, evs("x", 1)},
		{"long stream", long, events.Any, evs("x", 1)},
		{"control char", sp.s("a\nb"), events.Any, evs("x", 1)},
		{"invalid utf-8", sp.s("a\xffb"), events.Any, evs("x", 1)},
		{"zero expectation", ok, events.ExpectedRevision{}, evs("x", 1)},
		{"no events", ok, events.Any, nil},
		{"no type", ok, events.Any, []events.EventData{{Data: []byte("x")}}},
		{"oversize event", ok, events.Any, []events.EventData{{Type: "T", Data: big}}},
		{"oversize append", ok, events.Any, func() []events.EventData {
			var out []events.EventData
			for range 5 {
				out = append(out, events.EventData{Type: "T", Data: make([]byte, events.MaxEventSize-1)})
			}
			return out
		}()},
		{"duplicate ids", ok, events.Any, func() []events.EventData {
			e := evs("x", 1)[0]
			return []events.EventData{e, e}
		}()},
	}
	for _, a := range appends {
		_, err := s.AppendToStream(ctx(t), a.stream, a.exp, a.evs...)
		wantErr(t, a.name, err, events.ErrInvalidArgument)
	}
	reads := []struct {
		name string
		opts events.ReadStreamOptions
	}{
		{"zero limit", events.ReadStreamOptions{}},
		{"huge limit", events.ReadStreamOptions{Limit: events.MaxReadLimit + 1}},
		{"bad direction", events.ReadStreamOptions{Limit: 1, Direction: 7}},
	}
	for _, r := range reads {
		_, err := s.ReadStream(ctx(t), ok, r.opts)
		wantErr(t, r.name, err, events.ErrInvalidArgument)
		_, err = s.ReadAll(ctx(t), events.ReadAllOptions{Limit: r.opts.Limit, Direction: r.opts.Direction})
		wantErr(t, r.name+" ($all)", err, events.ErrInvalidArgument)
	}
	_, err := s.ReadStream(ctx(t), "", events.ReadStreamOptions{Limit: 1})
	wantErr(t, "read empty stream name", err, events.ErrInvalidArgument)
	_, err = s.DeleteStream(ctx(t), ok, events.ExpectedRevision{})
	wantErr(t, "delete with zero expectation", err, events.ErrInvalidArgument)
	_, err = s.SubscribeToAll(ctx(t), events.SubscribeAllOptions{From: events.SubscribeAfterRevision(1)})
	wantErr(t, "$all subscription after a revision", err, events.ErrInvalidArgument)
	wantDatas(t, "nothing changed", readLog(t, s, sp.all()), "a-0")
}

func testClosed(t *testing.T, b Backend) {
	s, _, _ := open(t, b)
	c := newSpace().s("c")
	mustAppend(t, s, c, events.NoStream, evs("a", 1)...)
	sub, err := s.SubscribeToStream(ctx(t), c, events.SubscribeFromStart())
	if err != nil {
		t.Fatal(err)
	}
	recv(t, sub, 1)
	blocked := make(chan error, 1)
	go func() {
		_, err := sub.Recv(ctx(t))
		blocked <- err
	}()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "blocked Recv at Close", <-blocked, events.ErrClosed)
	_, err = s.AppendToStream(ctx(t), c, events.Any, evs("b", 1)...)
	wantErr(t, "append", err, events.ErrClosed)
	_, err = s.ReadStream(ctx(t), c, events.ReadStreamOptions{Limit: 1})
	wantErr(t, "read", err, events.ErrClosed)
	_, err = s.ReadAll(ctx(t), events.ReadAllOptions{Limit: 1})
	wantErr(t, "read $all", err, events.ErrClosed)
	_, err = s.SubscribeToAll(ctx(t), events.SubscribeAllOptions{})
	wantErr(t, "subscribe", err, events.ErrClosed)
	err = s.SetStreamMetadata(ctx(t), c, events.StreamMetadata{})
	wantErr(t, "set metadata", err, events.ErrClosed)
	_, err = s.TombstoneStream(ctx(t), c, events.Any)
	wantErr(t, "tombstone", err, events.ErrClosed)
}

func testReopen(t *testing.T, b Backend) {
	if !b.Features.Reopen {
		t.Skip("backend does not persist")
	}
	s, reopen, _ := open(t, b)
	sp := newSpace()
	keep, soft, tomb := sp.s("keep"), sp.s("soft"), sp.s("tomb")
	mustAppend(t, s, keep, events.NoStream, evs("k", 3)...)
	mustAppend(t, s, sp.s("other"), events.NoStream, evs("o", 1)...)
	if err := s.SetStreamMetadata(ctx(t), keep, events.StreamMetadata{MaxCount: 2}); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, soft, events.NoStream, evs("s", 1)...)
	if _, err := s.DeleteStream(ctx(t), soft, events.Any); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, tomb, events.NoStream, evs("t", 1)...)
	if _, err := s.TombstoneStream(ctx(t), tomb, events.Any); err != nil {
		t.Fatal(err)
	}
	before := readLog(t, s, sp.all())

	s = reopen(t)
	wantDatas(t, "after reopen", readAll(t, s, keep), "k-1", "k-2")
	after := readLog(t, s, sp.all())
	if fmt.Sprint(datas(before)) != fmt.Sprint(datas(after)) {
		t.Fatalf("$all changed across reopen: %q then %q", datas(before), datas(after))
	}
	for i := range before {
		if before[i].Position != after[i].Position || before[i].ID != after[i].ID || !before[i].Created.Equal(after[i].Created) {
			t.Fatalf("event %d changed across reopen: %+v then %+v", i, before[i], after[i])
		}
	}
	_, err := s.ReadStream(ctx(t), soft, events.ReadStreamOptions{Limit: 1})
	wantErr(t, "soft delete survives reopen", err, events.ErrStreamNotFound)
	_, err = s.AppendToStream(ctx(t), tomb, events.Any, evs("x", 1)...)
	wantErr(t, "tombstone survives reopen", err, events.ErrStreamDeleted)
	res := mustAppend(t, s, keep, events.Exactly(2), evs("n", 1)...)
	if res.NextExpected != 3 || !before[len(before)-1].Position.Less(res.Position) {
		t.Fatalf("append after reopen at %d/%s, want revision 3 after %s", res.NextExpected, res.Position, before[len(before)-1].Position)
	}
	if res := mustAppend(t, s, soft, events.NoStream, evs("s2", 1)...); res.NextExpected != 1 {
		t.Fatalf("recreated soft-deleted stream at %d, want 1", res.NextExpected)
	}
}

func testCancelledContext(t *testing.T, b Backend) {
	s, _, _ := open(t, b)
	sp := newSpace()
	c, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.AppendToStream(c, sp.s("x"), events.Any, evs("a", 1)...)
	wantErr(t, "append", err, context.Canceled)
	_, err = s.ReadStream(c, sp.s("x"), events.ReadStreamOptions{Limit: 1})
	wantErr(t, "read", err, context.Canceled)
	if got := readLog(t, s, sp.all()); len(got) != 0 {
		t.Fatalf("a cancelled append wrote %d events", len(got))
	}
	sub, err := s.SubscribeToAll(ctx(t), events.SubscribeAllOptions{Filter: sp.all()})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	_, err = sub.Recv(c)
	wantErr(t, "recv", err, context.Canceled)
	// A Recv that gave up loses nothing: the next one gets the event.
	mustAppend(t, s, sp.s("x"), events.Any, evs("b", 1)...)
	wantDatas(t, "after a cancelled recv", recv(t, sub, 1), "b-0")
}
