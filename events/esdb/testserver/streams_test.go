package testserver_test

import (
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/EventStore/EventStore-Client-Go/v4/protos/shared"
	api "github.com/EventStore/EventStore-Client-Go/v4/protos/streams"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/esdb/testserver"
)

func TestAppendAndReadStream(t *testing.T) {
	_, c, ctx := setup(t)
	before := time.Now()
	a, b := event("Sent", "a"), event("Sent", "b")
	b.Metadata = []byte("meta-b")
	res := appendEvents(t, ctx, c, "conv-1", esdb.NoStream{}, a, b)
	if res.NextExpectedVersion != 1 || res.CommitPosition == 0 || res.CommitPosition != res.PreparePosition {
		t.Fatalf("first append = %+v, want revision 1 and a position", res)
	}
	j := esdb.EventData{EventID: uuid.New(), EventType: "Json", ContentType: esdb.ContentTypeJson, Data: []byte(`{"c":1}`)}
	res2 := appendEvents(t, ctx, c, "conv-1", esdb.Revision(1), j)
	if res2.NextExpectedVersion != 2 || res2.CommitPosition <= res.CommitPosition {
		t.Fatalf("second append = %+v after %+v, want revision 2 at a later position", res2, res)
	}
	appendEvents(t, ctx, c, "conv-1", esdb.StreamExists{}, event("Sent", "d"))
	appendEvents(t, ctx, c, "conv-1", esdb.Any{}, event("Sent", "e"))

	all := readStream(t, ctx, c, "conv-1", esdb.ReadStreamOptions{}, 100)
	if got := datas(all); !slices.Equal(got, []string{"a", "b", `{"c":1}`, "d", "e"}) {
		t.Fatalf("forwards = %q", got)
	}
	for i, e := range all {
		if e.EventNumber != uint64(i) || e.StreamID != "conv-1" {
			t.Errorf("event %d: number %d stream %q", i, e.EventNumber, e.StreamID)
		}
		if i > 0 && !(all[i-1].Position.Commit < e.Position.Commit) {
			t.Errorf("event %d: position %v not after %v", i, e.Position, all[i-1].Position)
		}
		if e.CreatedDate.Before(before.Add(-time.Second)) || e.CreatedDate.After(time.Now().Add(time.Second)) {
			t.Errorf("event %d: created %v, want about now", i, e.CreatedDate)
		}
	}
	if all[0].EventID != a.EventID || all[0].EventType != "Sent" || all[0].ContentType != "application/octet-stream" {
		t.Errorf("event 0 = %+v", all[0])
	}
	if string(all[1].UserMetadata) != "meta-b" {
		t.Errorf("event 1 metadata = %q", all[1].UserMetadata)
	}
	if all[2].ContentType != "application/json" || len(all[2].UserMetadata) != 0 {
		t.Errorf("json event: content type %q, metadata %q", all[2].ContentType, all[2].UserMetadata)
	}

	back := readStream(t, ctx, c, "conv-1", esdb.ReadStreamOptions{Direction: esdb.Backwards, From: esdb.End{}}, 2)
	if got := datas(back); !slices.Equal(got, []string{"e", "d"}) {
		t.Errorf("backwards from end = %q", got)
	}
	back = readStream(t, ctx, c, "conv-1", esdb.ReadStreamOptions{Direction: esdb.Backwards, From: esdb.Revision(1)}, 10)
	if got := datas(back); !slices.Equal(got, []string{"b", "a"}) {
		t.Errorf("backwards from revision 1 = %q", got)
	}
	mid := readStream(t, ctx, c, "conv-1", esdb.ReadStreamOptions{From: esdb.Revision(2)}, 2)
	if got := datas(mid); !slices.Equal(got, []string{`{"c":1}`, "d"}) {
		t.Errorf("forwards from revision 2 = %q", got)
	}
	if got := readStream(t, ctx, c, "conv-1", esdb.ReadStreamOptions{From: esdb.End{}}, 10); len(got) != 0 {
		t.Errorf("forwards from end = %q, want nothing", datas(got))
	}

	_, err := drain(c.ReadStream(ctx, "conv-none", esdb.ReadStreamOptions{}, 10))
	if code := errCode(t, err); code != esdb.ErrorCodeResourceNotFound {
		t.Errorf("read of a missing stream: code %d (%v), want ResourceNotFound", code, err)
	}
}

// A read longer than the store's page limit is served in several pages.
func TestReadStreamBeyondOnePage(t *testing.T) {
	_, c, ctx := setup(t)
	const n = events.MaxReadLimit + 5
	batch := make([]esdb.EventData, 0, 1000)
	for i := 0; i < n; i++ {
		batch = append(batch, event("E", strings.Repeat("x", i%3)))
		if len(batch) == cap(batch) || i == n-1 {
			appendEvents(t, ctx, c, "big", esdb.Any{}, batch...)
			batch = batch[:0]
		}
	}
	got := readStream(t, ctx, c, "big", esdb.ReadStreamOptions{}, n+10)
	if len(got) != n {
		t.Fatalf("read %d events, want %d", len(got), n)
	}
	for i, e := range got {
		if e.EventNumber != uint64(i) {
			t.Fatalf("event %d has number %d", i, e.EventNumber)
		}
	}
}

func TestWrongExpectedVersion(t *testing.T) {
	_, c, ctx := setup(t)
	appendEvents(t, ctx, c, "s", esdb.NoStream{}, event("E", "0"), event("E", "1"), event("E", "2"))
	cases := []struct {
		stream   string
		expected esdb.ExpectedRevision
		msg      string
	}{
		{"s", esdb.Revision(5), "expecting '5' but got '2'"},
		{"s", esdb.Revision(1), "expecting '1' but got '2'"},
		{"s", esdb.NoStream{}, "expecting 'no_stream' but got '2'"},
		{"missing", esdb.StreamExists{}, "expecting 'stream_exists' but got 'no_stream'"},
		{"missing", esdb.Revision(0), "expecting '0' but got 'no_stream'"},
	}
	for _, tc := range cases {
		_, err := c.AppendToStream(ctx, tc.stream, esdb.AppendToStreamOptions{ExpectedRevision: tc.expected}, event("E", "x"))
		if code := errCode(t, err); code != esdb.ErrorCodeWrongExpectedVersion || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("append to %s expecting %v: %v (code %d), want wrong expected version %q", tc.stream, tc.expected, err, code, tc.msg)
		}
	}
	if got := readStream(t, ctx, c, "s", esdb.ReadStreamOptions{}, 10); len(got) != 3 {
		t.Errorf("stream has %d events after refused appends, want 3", len(got))
	}
}

// An append repeated with the same event ids (a retry after a lost
// acknowledgement) returns the first result and writes nothing.
func TestIdempotentRetry(t *testing.T) {
	_, c, ctx := setup(t)
	evs := []esdb.EventData{event("E", "a"), event("E", "b")}
	first := appendEvents(t, ctx, c, "s", esdb.NoStream{}, evs...)
	again := appendEvents(t, ctx, c, "s", esdb.NoStream{}, evs...)
	if *again != *first {
		t.Errorf("retry with NoStream = %+v, want %+v", again, first)
	}
	third := event("E", "c")
	want := appendEvents(t, ctx, c, "s", esdb.Revision(1), third)
	for _, exp := range []esdb.ExpectedRevision{esdb.Revision(1), esdb.Any{}} {
		if got := appendEvents(t, ctx, c, "s", exp, third); *got != *want {
			t.Errorf("retry expecting %v = %+v, want %+v", exp, got, want)
		}
	}
	if got := datas(readStream(t, ctx, c, "s", esdb.ReadStreamOptions{}, 10)); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("stream = %q, want each event once", got)
	}
}

func TestReadAll(t *testing.T) {
	_, c, ctx := setup(t)
	appendEvents(t, ctx, c, "conv-1", esdb.NoStream{}, event("E", "c1a"))
	appendEvents(t, ctx, c, "inbox-1", esdb.NoStream{}, event("E", "i1a"))
	appendEvents(t, ctx, c, "conv-2", esdb.NoStream{}, event("E", "c2a"))
	appendEvents(t, ctx, c, "conv-1", esdb.Revision(0), event("E", "c1b"))

	fwd := readAll(t, ctx, c, esdb.ReadAllOptions{From: esdb.Start{}}, 100)
	if got := datas(fwd); !slices.Equal(got, []string{"c1a", "i1a", "c2a", "c1b"}) {
		t.Fatalf("$all forwards = %q", got)
	}
	for i := 1; i < len(fwd); i++ {
		if !(fwd[i-1].Position.Commit < fwd[i].Position.Commit) {
			t.Errorf("$all positions not increasing: %v then %v", fwd[i-1].Position, fwd[i].Position)
		}
	}
	back := readAll(t, ctx, c, esdb.ReadAllOptions{Direction: esdb.Backwards, From: esdb.End{}}, 3)
	if got := datas(back); !slices.Equal(got, []string{"c1b", "c2a", "i1a"}) {
		t.Errorf("$all backwards from end = %q", got)
	}
	// Forwards from a position includes the event there; backwards excludes it.
	from := fwd[1].Position
	if got := datas(readAll(t, ctx, c, esdb.ReadAllOptions{From: from}, 2)); !slices.Equal(got, []string{"i1a", "c2a"}) {
		t.Errorf("$all forwards from %v = %q", from, got)
	}
	from = fwd[2].Position
	if got := datas(readAll(t, ctx, c, esdb.ReadAllOptions{Direction: esdb.Backwards, From: from}, 10)); !slices.Equal(got, []string{"i1a", "c1a"}) {
		t.Errorf("$all backwards from %v = %q", from, got)
	}
}

// The official client offers no filter on plain $all reads, so this test
// talks to the server through the generated gRPC client.
func TestReadAllFiltered(t *testing.T) {
	srv, c, ctx := setup(t)
	appendEvents(t, ctx, c, "conv-1", esdb.NoStream{}, event("Sent", "c1"))
	appendEvents(t, ctx, c, "inbox-1", esdb.NoStream{}, event("Pointer", "i1"))
	appendEvents(t, ctx, c, "conv-2", esdb.NoStream{}, event("Sent", "c2"), event("Recalled", "c2r"))

	conn, err := grpc.NewClient(srv.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	streams := api.NewStreamsClient(conn)
	read := func(f *api.ReadReq_Options_FilterOptions, backwards bool, count uint64) []string {
		t.Helper()
		o := &api.ReadReq_Options{
			StreamOption: &api.ReadReq_Options_All{All: &api.ReadReq_Options_AllOptions{
				AllOption: &api.ReadReq_Options_AllOptions_Start{Start: &shared.Empty{}}}},
			CountOption:  &api.ReadReq_Options_Count{Count: count},
			FilterOption: &api.ReadReq_Options_Filter{Filter: f},
			UuidOption:   &api.ReadReq_Options_UUIDOption{Content: &api.ReadReq_Options_UUIDOption_String_{String_: &shared.Empty{}}},
		}
		if backwards {
			o.ReadDirection = api.ReadReq_Options_Backwards
			o.StreamOption = &api.ReadReq_Options_All{All: &api.ReadReq_Options_AllOptions{
				AllOption: &api.ReadReq_Options_AllOptions_End{End: &shared.Empty{}}}}
		}
		rc, err := streams.Read(ctx, &api.ReadReq{Options: o})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for {
			m, err := rc.Recv()
			if err != nil {
				break
			}
			e := m.GetEvent().GetEvent()
			if e == nil {
				t.Fatalf("filtered read sent %v, want only events", m)
			}
			if _, err := uuid.Parse(e.GetId().GetString_()); err != nil {
				t.Errorf("event id %v is not the string form asked for", e.GetId())
			}
			got = append(got, string(e.GetData()))
		}
		return got
	}
	byStream := &api.ReadReq_Options_FilterOptions{Filter: &api.ReadReq_Options_FilterOptions_StreamIdentifier{
		StreamIdentifier: &api.ReadReq_Options_FilterOptions_Expression{Prefix: []string{"conv-"}}}}
	if got := read(byStream, false, 100); !slices.Equal(got, []string{"c1", "c2", "c2r"}) {
		t.Errorf("prefix conv- forwards = %q", got)
	}
	if got := read(byStream, true, 2); !slices.Equal(got, []string{"c2r", "c2"}) {
		t.Errorf("prefix conv- backwards, 2 = %q", got)
	}
	byType := &api.ReadReq_Options_FilterOptions{Filter: &api.ReadReq_Options_FilterOptions_EventType{
		EventType: &api.ReadReq_Options_FilterOptions_Expression{Regex: "^(Pointer|Recalled)$"}}}
	if got := read(byType, false, 100); !slices.Equal(got, []string{"i1", "c2r"}) {
		t.Errorf("event type regex = %q", got)
	}
}

func TestDeleteAndTombstone(t *testing.T) {
	_, c, ctx := setup(t)
	w := appendEvents(t, ctx, c, "soft", esdb.NoStream{}, event("E", "a"), event("E", "b"))
	del, err := c.DeleteStream(ctx, "soft", esdb.DeleteStreamOptions{ExpectedRevision: esdb.Revision(1)})
	if err != nil {
		t.Fatal(err)
	}
	if del.Position.Commit < w.CommitPosition {
		t.Errorf("delete position %v before the last append's %d", del.Position, w.CommitPosition)
	}
	_, err = drain(c.ReadStream(ctx, "soft", esdb.ReadStreamOptions{}, 10))
	if code := errCode(t, err); code != esdb.ErrorCodeResourceNotFound {
		t.Errorf("read of a deleted stream: %v, want ResourceNotFound", err)
	}
	// A soft-deleted stream comes back with its next append; revisions go on.
	res := appendEvents(t, ctx, c, "soft", esdb.Any{}, event("E", "c"))
	if res.NextExpectedVersion != 2 {
		t.Errorf("append after delete: revision %d, want 2", res.NextExpectedVersion)
	}
	if got := readStream(t, ctx, c, "soft", esdb.ReadStreamOptions{}, 10); len(got) != 1 || got[0].EventNumber != 2 {
		t.Errorf("recreated stream = %v", datas(got))
	}
	if _, err := c.DeleteStream(ctx, "never-written", esdb.DeleteStreamOptions{ExpectedRevision: esdb.Any{}}); err != nil {
		t.Errorf("delete of a stream without events, expecting any: %v", err)
	}
	if _, err := c.DeleteStream(ctx, "soft", esdb.DeleteStreamOptions{ExpectedRevision: esdb.Revision(0)}); err == nil {
		t.Error("delete with a wrong expected revision succeeded")
	}

	appendEvents(t, ctx, c, "hard", esdb.NoStream{}, event("E", "a"))
	tomb, err := c.TombstoneStream(ctx, "hard", esdb.TombstoneStreamOptions{ExpectedRevision: esdb.StreamExists{}})
	if err != nil {
		t.Fatal(err)
	}
	if tomb.Position.Commit < res.CommitPosition {
		t.Errorf("tombstone position %v before earlier append %d", tomb.Position, res.CommitPosition)
	}
	_, err = drain(c.ReadStream(ctx, "hard", esdb.ReadStreamOptions{}, 10))
	if code := errCode(t, err); code != esdb.ErrorCodeStreamDeleted || !strings.Contains(err.Error(), "'hard'") {
		t.Errorf("read of a tombstoned stream: %v, want StreamDeleted naming it", err)
	}
	_, err = c.AppendToStream(ctx, "hard", esdb.AppendToStreamOptions{}, event("E", "b"))
	if code := errCode(t, err); code != esdb.ErrorCodeStreamDeleted {
		t.Errorf("append to a tombstoned stream: %v, want StreamDeleted", err)
	}
	_, err = c.TombstoneStream(ctx, "hard", esdb.TombstoneStreamOptions{})
	if code := errCode(t, err); code != esdb.ErrorCodeStreamDeleted {
		t.Errorf("second tombstone: %v, want StreamDeleted", err)
	}
	if got := datas(readAll(t, ctx, c, esdb.ReadAllOptions{}, 100)); !slices.Equal(got, []string{"c"}) {
		t.Errorf("$all after deletes = %q, want only the recreated event", got)
	}
}

func TestStreamMetadata(t *testing.T) {
	_, c, ctx := setup(t)
	if _, err := c.GetStreamMetadata(ctx, "s", esdb.ReadStreamOptions{}); err == nil {
		t.Error("metadata of a stream without any: no error")
	}
	for i := 0; i < 5; i++ {
		appendEvents(t, ctx, c, "s", esdb.Any{}, event("E", string(rune('a'+i))))
	}
	var meta esdb.StreamMetadata
	meta.SetMaxCount(2)
	meta.SetMaxAge(time.Hour)
	meta.AddCustomProperty("owner", "tests")
	res, err := c.SetStreamMetadata(ctx, "s", esdb.AppendToStreamOptions{ExpectedRevision: esdb.NoStream{}}, meta)
	if err != nil {
		t.Fatal(err)
	}
	if res.NextExpectedVersion != 0 {
		t.Errorf("first metadata write: revision %d, want 0", res.NextExpectedVersion)
	}
	got, err := c.GetStreamMetadata(ctx, "s", esdb.ReadStreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.MaxCount() == nil || *got.MaxCount() != 2 || got.MaxAge() == nil || *got.MaxAge() != time.Hour || got.CustomProperty("owner") != "tests" {
		t.Errorf("metadata read back = %+v", got)
	}
	if evs := datas(readStream(t, ctx, c, "s", esdb.ReadStreamOptions{}, 10)); !slices.Equal(evs, []string{"d", "e"}) {
		t.Errorf("stream with $maxCount 2 = %q", evs)
	}
	_, err = c.SetStreamMetadata(ctx, "s", esdb.AppendToStreamOptions{ExpectedRevision: esdb.NoStream{}}, meta)
	if code := errCode(t, err); code != esdb.ErrorCodeWrongExpectedVersion || !strings.Contains(err.Error(), "got '0'") {
		t.Errorf("metadata write expecting no stream over revision 0: %v", err)
	}
	var tb esdb.StreamMetadata
	tb.SetTruncateBefore(4)
	res, err = c.SetStreamMetadata(ctx, "s", esdb.AppendToStreamOptions{ExpectedRevision: esdb.Revision(0)}, tb)
	if err != nil || res.NextExpectedVersion != 1 {
		t.Fatalf("second metadata write = %+v, %v; want revision 1", res, err)
	}
	got, err = c.GetStreamMetadata(ctx, "s", esdb.ReadStreamOptions{})
	if err != nil || got.MaxCount() != nil || got.TruncateBefore() == nil || *got.TruncateBefore() != 4 {
		t.Errorf("metadata after replacing it = %+v, %v", got, err)
	}
	if evs := datas(readStream(t, ctx, c, "s", esdb.ReadStreamOptions{}, 10)); !slices.Equal(evs, []string{"e"}) {
		t.Errorf("stream with $tb 4 = %q", evs)
	}
	meta0 := readStream(t, ctx, c, "$$s", esdb.ReadStreamOptions{}, 1)
	if len(meta0) != 1 || meta0[0].EventType != "$metadata" || meta0[0].EventNumber != 1 || meta0[0].ContentType != "application/json" {
		t.Errorf("$$s read = %+v", meta0)
	}
}

func TestDiscover(t *testing.T) {
	srv := startServer(t, testserver.Options{})
	ctx := testContext(t)
	if !strings.HasPrefix(srv.DiscoverURL(), "esdb+discover://127.0.0.1:") {
		t.Fatalf("DiscoverURL = %s", srv.DiscoverURL())
	}
	c := newClient(t, srv.DiscoverURL())
	appendEvents(t, ctx, c, "s", esdb.NoStream{}, event("E", "a"))
	if got := datas(readStream(t, ctx, c, "s", esdb.ReadStreamOptions{}, 10)); !slices.Equal(got, []string{"a"}) {
		t.Errorf("read through a discovered connection = %q", got)
	}
}

// A store that fails makes calls fail with Unavailable, which the client
// answers by rediscovering the node.
func TestUnavailableStore(t *testing.T) {
	store, err := events.OpenInMemory(events.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, testserver.Options{Store: store})
	c := newClient(t, srv.URL())
	ctx := testContext(t)
	appendEvents(t, ctx, c, "s", esdb.NoStream{}, event("E", "a"))
	store.Close()
	_, err = c.AppendToStream(ctx, "s", esdb.AppendToStreamOptions{}, event("E", "b"))
	if code := errCode(t, err); code != esdb.ErrorUnavailable {
		t.Errorf("append to a closed store: %v, want Unavailable", err)
	}
}

// An append without events only checks the expectation.
func TestAppendWithoutEvents(t *testing.T) {
	_, c, ctx := setup(t)
	if _, err := c.AppendToStream(ctx, "s", esdb.AppendToStreamOptions{ExpectedRevision: esdb.NoStream{}}); err != nil {
		t.Errorf("empty append expecting no stream to a missing stream: %v", err)
	}
	_, err := c.AppendToStream(ctx, "s", esdb.AppendToStreamOptions{ExpectedRevision: esdb.StreamExists{}})
	if code := errCode(t, err); code != esdb.ErrorCodeWrongExpectedVersion {
		t.Errorf("empty append expecting an existing stream to a missing one: %v", err)
	}
	appendEvents(t, ctx, c, "s", esdb.NoStream{}, event("E", "a"))
	res, err := c.AppendToStream(ctx, "s", esdb.AppendToStreamOptions{ExpectedRevision: esdb.Revision(0)})
	if err != nil || res.NextExpectedVersion != 0 {
		t.Errorf("empty append at revision 0 = %+v, %v", res, err)
	}
	if got := readStream(t, ctx, c, "s", esdb.ReadStreamOptions{}, 10); len(got) != 1 {
		t.Errorf("stream holds %d events after empty appends, want 1", len(got))
	}
}

// The server has no system streams: they read as missing and refuse writes.
func TestSystemStreams(t *testing.T) {
	_, c, ctx := setup(t)
	_, err := drain(c.ReadStream(ctx, "$et-Sent", esdb.ReadStreamOptions{}, 10))
	if code := errCode(t, err); code != esdb.ErrorCodeResourceNotFound {
		t.Errorf("read of a system stream: %v, want ResourceNotFound", err)
	}
	_, err = c.AppendToStream(ctx, "$system", esdb.AppendToStreamOptions{}, event("E", "a"))
	if err == nil || !strings.Contains(err.Error(), "InvalidArgument") {
		t.Errorf("append to a system stream: %v, want InvalidArgument", err)
	}
	if _, err := c.SetStreamMetadata(ctx, "s", esdb.AppendToStreamOptions{}, esdb.StreamMetadata{}); err != nil {
		t.Errorf("empty metadata: %v", err)
	}
	if m, err := c.GetStreamMetadata(ctx, "s", esdb.ReadStreamOptions{}); err != nil || m.MaxCount() != nil || m.MaxAge() != nil {
		t.Errorf("empty metadata read back = %+v, %v", m, err)
	}
	_, err = c.AppendToStream(ctx, "$$s", esdb.AppendToStreamOptions{}, event("NotMetadata", "{}"))
	if err == nil || !strings.Contains(err.Error(), "InvalidArgument") {
		t.Errorf("append of another event type to a metadata stream: %v, want InvalidArgument", err)
	}
}

// Errors carry the trailers EventStoreDB sends, read here without the
// official client's interpretation.
func TestErrorTrailers(t *testing.T) {
	srv, c, ctx := setup(t)
	appendEvents(t, ctx, c, "gone", esdb.NoStream{}, event("E", "a"))
	if _, err := c.TombstoneStream(ctx, "gone", esdb.TombstoneStreamOptions{}); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(srv.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	streams := api.NewStreamsClient(conn)

	var trailer metadata.MD
	rc, err := streams.Read(ctx, &api.ReadReq{Options: &api.ReadReq_Options{
		StreamOption: &api.ReadReq_Options_Stream{Stream: &api.ReadReq_Options_StreamOptions{
			StreamIdentifier: &shared.StreamIdentifier{StreamName: []byte("gone")},
			RevisionOption:   &api.ReadReq_Options_StreamOptions_Start{Start: &shared.Empty{}}}},
		CountOption: &api.ReadReq_Options_Count{Count: 10},
	}}, grpc.Trailer(&trailer))
	if err != nil {
		t.Fatal(err)
	}
	_, err = rc.Recv()
	if status.Code(err) != codes.FailedPrecondition || !slices.Equal(trailer.Get("exception"), []string{"stream-deleted"}) ||
		!slices.Equal(trailer.Get("stream-name"), []string{"gone"}) {
		t.Errorf("read of a tombstoned stream: %v, trailer %v", err, trailer)
	}

	ac, err := streams.Append(ctx, grpc.Trailer(&trailer))
	if err != nil {
		t.Fatal(err)
	}
	send := func(m *api.AppendReq) {
		if err := ac.Send(m); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	send(&api.AppendReq{Content: &api.AppendReq_Options_{Options: &api.AppendReq_Options{
		StreamIdentifier:       &shared.StreamIdentifier{StreamName: []byte("big")},
		ExpectedStreamRevision: &api.AppendReq_Options_Any{Any: &shared.Empty{}}}}})
	for i := 0; i < 5; i++ {
		send(&api.AppendReq{Content: &api.AppendReq_ProposedMessage_{ProposedMessage: &api.AppendReq_ProposedMessage{
			Id:       &shared.UUID{Value: &shared.UUID_String_{String_: uuid.NewString()}},
			Metadata: map[string]string{"type": "E", "content-type": "application/octet-stream"},
			Data:     make([]byte, 1<<20-100),
		}}})
	}
	_, err = ac.CloseAndRecv()
	if status.Code(err) != codes.InvalidArgument || !slices.Equal(trailer.Get("exception"), []string{"maximum-append-size-exceeded"}) ||
		!slices.Equal(trailer.Get("maximum-append-size"), []string{strconv.Itoa(events.MaxAppendSize)}) {
		t.Errorf("append of 5 MiB: %v, trailer %v", err, trailer)
	}
	if _, err := drain(c.ReadStream(ctx, "big", esdb.ReadStreamOptions{}, 10)); errCode(t, err) != esdb.ErrorCodeResourceNotFound {
		t.Errorf("refused append wrote something: %v", err)
	}
}

// Writes without a position of their own (metadata, deleting a stream that
// has no events) report one no earlier than any reported before, even when
// the last events of $all were tombstoned.
func TestReportedPositionsNeverGoBack(t *testing.T) {
	_, c, ctx := setup(t)
	appendEvents(t, ctx, c, "kept", esdb.NoStream{}, event("E", "a"))
	last := appendEvents(t, ctx, c, "gone", esdb.NoStream{}, event("E", "b"), event("E", "c"))
	tomb, err := c.TombstoneStream(ctx, "gone", esdb.TombstoneStreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tomb.Position.Commit < last.CommitPosition {
		t.Fatalf("tombstone at %v, before the last append at %d", tomb.Position, last.CommitPosition)
	}
	var meta esdb.StreamMetadata
	meta.SetMaxCount(5)
	res, err := c.SetStreamMetadata(ctx, "kept", esdb.AppendToStreamOptions{}, meta)
	if err != nil {
		t.Fatal(err)
	}
	if res.CommitPosition < tomb.Position.Commit {
		t.Errorf("metadata write at %d, before the tombstone at %v", res.CommitPosition, tomb.Position)
	}
	del, err := c.DeleteStream(ctx, "never-written", esdb.DeleteStreamOptions{ExpectedRevision: esdb.NoStream{}})
	if err != nil {
		t.Fatal(err)
	}
	if del.Position.Commit < res.CommitPosition {
		t.Errorf("delete at %v, before the metadata write at %d", del.Position, res.CommitPosition)
	}
}

// A store given in Options is served as is: here with a clock the test
// moves, so that created stamps and $maxAge follow it.
func TestServesGivenStore(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	store, err := events.OpenInMemory(events.Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	srv := startServer(t, testserver.Options{Store: store})
	c := newClient(t, srv.URL())
	ctx := testContext(t)
	appendEvents(t, ctx, c, "s", esdb.NoStream{}, event("E", "a"))
	got := readStream(t, ctx, c, "s", esdb.ReadStreamOptions{}, 10)
	if len(got) != 1 || !got[0].CreatedDate.Equal(now) {
		t.Fatalf("read %v, want one event created at %v", got, now)
	}
	var meta esdb.StreamMetadata
	meta.SetMaxAge(time.Minute)
	if _, err := c.SetStreamMetadata(ctx, "s", esdb.AppendToStreamOptions{}, meta); err != nil {
		t.Fatal(err)
	}
	if m, err := store.GetStreamMetadata(ctx, "s"); err != nil || m.MaxAge != time.Minute {
		t.Fatalf("store metadata = %+v, %v; want $maxAge 1m", m, err)
	}
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	if got := readStream(t, ctx, c, "s", esdb.ReadStreamOptions{}, 10); len(got) != 0 {
		t.Errorf("after $maxAge: %q, want no events", datas(got))
	}
}
