package testserver_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/google/uuid"

	"github.com/imsync/imsync/events/esdb/testserver"
)

// testTimeout bounds every test's calls, so that a missing event fails the
// test instead of hanging it.
const testTimeout = 30 * time.Second

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func startServer(t *testing.T, opts testserver.Options) *testserver.Server {
	t.Helper()
	srv, err := testserver.Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("close server: %v", err)
		}
	})
	return srv
}

func newClient(t *testing.T, url string) *esdb.Client {
	t.Helper()
	conf, err := esdb.ParseConnectionString(url)
	if err != nil {
		t.Fatal(err)
	}
	conf.Logger = esdb.NoopLogging()
	c, err := esdb.NewClient(conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// setup starts an in-memory server and a client connected to it.
func setup(t *testing.T) (*testserver.Server, *esdb.Client, context.Context) {
	srv := startServer(t, testserver.Options{})
	return srv, newClient(t, srv.URL()), testContext(t)
}

func event(typ string, data string) esdb.EventData {
	return esdb.EventData{EventID: uuid.New(), EventType: typ, ContentType: esdb.ContentTypeBinary, Data: []byte(data)}
}

func appendEvents(t *testing.T, ctx context.Context, c *esdb.Client, stream string, expected esdb.ExpectedRevision, evs ...esdb.EventData) *esdb.WriteResult {
	t.Helper()
	res, err := c.AppendToStream(ctx, stream, esdb.AppendToStreamOptions{ExpectedRevision: expected}, evs...)
	if err != nil {
		t.Fatalf("append to %s: %v", stream, err)
	}
	return res
}

// drain reads a read's events until its end.
func drain(rs *esdb.ReadStream, err error) ([]*esdb.RecordedEvent, error) {
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []*esdb.RecordedEvent
	for {
		e, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, e.OriginalEvent())
	}
}

func readStream(t *testing.T, ctx context.Context, c *esdb.Client, stream string, opts esdb.ReadStreamOptions, count uint64) []*esdb.RecordedEvent {
	t.Helper()
	evs, err := drain(c.ReadStream(ctx, stream, opts, count))
	if err != nil {
		t.Fatalf("read %s: %v", stream, err)
	}
	return evs
}

func readAll(t *testing.T, ctx context.Context, c *esdb.Client, opts esdb.ReadAllOptions, count uint64) []*esdb.RecordedEvent {
	t.Helper()
	evs, err := drain(c.ReadAll(ctx, opts, count))
	if err != nil {
		t.Fatalf("read $all: %v", err)
	}
	return evs
}

// errCode returns the client's error code of err.
func errCode(t *testing.T, err error) esdb.ErrorCode {
	t.Helper()
	var e *esdb.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *esdb.Error", err, err)
	}
	return e.Code()
}

// datas returns the payloads of evs as strings.
func datas(evs []*esdb.RecordedEvent) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = string(e.Data)
	}
	return out
}

// subEvent is what a subscription delivered, reduced to what tests compare.
type subEvent struct {
	kind string // "event", "caught-up", "checkpoint", "dropped"
	data string
	rev  uint64
	pos  esdb.Position
	err  error
}

func (e subEvent) String() string {
	switch e.kind {
	case "event":
		return fmt.Sprintf("event %q@%d", e.data, e.rev)
	case "checkpoint":
		return fmt.Sprintf("checkpoint %d", e.pos.Commit)
	case "dropped":
		return fmt.Sprintf("dropped: %v", e.err)
	}
	return e.kind
}

func next(sub *esdb.Subscription) subEvent {
	ev := sub.Recv()
	switch {
	case ev.EventAppeared != nil:
		e := ev.EventAppeared.OriginalEvent()
		return subEvent{kind: "event", data: string(e.Data), rev: e.EventNumber, pos: e.Position}
	case ev.CaughtUp != nil:
		return subEvent{kind: "caught-up"}
	case ev.CheckPointReached != nil:
		return subEvent{kind: "checkpoint", pos: *ev.CheckPointReached}
	case ev.SubscriptionDropped != nil:
		return subEvent{kind: "dropped", err: ev.SubscriptionDropped.Error}
	}
	return subEvent{kind: "other"}
}

// expectSub reads len(want) items from sub and compares their String forms.
func expectSub(t *testing.T, sub *esdb.Subscription, want ...string) []subEvent {
	t.Helper()
	var got []subEvent
	for i, w := range want {
		e := next(sub)
		got = append(got, e)
		if e.String() != w {
			t.Fatalf("subscription item %d = %s, want %s (so far %v)", i, e, w, got)
		}
	}
	return got
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %s: %v", what, testTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
