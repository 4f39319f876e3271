package testserver_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/google/uuid"

	"github.com/imsync/imsync/events/esdb/testserver"
)

// writeSequence appends events "0".."n-1" to stream one by one, each with
// a fixed id, retrying each until it succeeds: a retry of an append that
// was cut after the store took it must not write it twice. gate, if not
// nil, runs before each append.
func writeSequence(ctx context.Context, c *esdb.Client, stream string, n int, gate func(i int)) error {
	ns := uuid.MustParse("6ba7b811-9dad-11d1-80b4-00c04fd430c8")
	for i := 0; i < n; i++ {
		if gate != nil {
			gate(i)
		}
		e := esdb.EventData{
			EventID:     uuid.NewSHA1(ns, []byte(stream+"/"+strconv.Itoa(i))),
			EventType:   "E",
			ContentType: esdb.ContentTypeBinary,
			Data:        []byte(strconv.Itoa(i)),
		}
		for {
			_, err := c.AppendToStream(ctx, stream, esdb.AppendToStreamOptions{ExpectedRevision: esdb.Any{}}, e)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("append %d: %w", i, err)
			}
		}
	}
	return nil
}

// followStream subscribes to stream and collects n events, resubscribing
// after the last one it saw whenever the subscription drops. onEvent runs
// after each event with the number collected so far.
func followStream(ctx context.Context, c *esdb.Client, stream string, n int, onEvent func(int)) ([]subEvent, int, error) {
	var got []subEvent
	drops := 0
	for len(got) < n {
		from := esdb.StreamPosition(esdb.Start{})
		if len(got) > 0 {
			from = esdb.Revision(got[len(got)-1].rev)
		}
		sub, err := c.SubscribeToStream(ctx, stream, esdb.SubscribeToStreamOptions{From: from})
		if err != nil {
			if ctx.Err() != nil {
				return got, drops, err
			}
			continue // the client reconnects on its next call
		}
		for len(got) < n {
			e := next(sub)
			if e.kind == "dropped" {
				drops++
				break
			}
			if e.kind == "event" {
				got = append(got, e)
				onEvent(len(got))
			}
		}
		sub.Close()
	}
	return got, drops, nil
}

func checkSequence(t *testing.T, got []subEvent, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("got %d events, want %d", len(got), n)
	}
	for i, e := range got {
		if e.rev != uint64(i) || e.data != strconv.Itoa(i) {
			t.Fatalf("event %d = %v, want %q@%d (lost, repeated or reordered)", i, e, strconv.Itoa(i), i)
		}
	}
}

// Cutting every connection in the middle of appends and a subscription
// loses nothing and repeats nothing: the writer retries with the same ids,
// the subscriber resubscribes after the last revision it saw.
func TestDropConnectionsDuringAppendsAndSubscription(t *testing.T) {
	srv, _, ctx := setup(t)
	writer, reader := newClient(t, srv.URL()), newClient(t, srv.URL())
	const n, lead = 60, 5
	// The writer stays at most lead events ahead of the reader, so that
	// appends are in flight when the connections are cut.
	progress := make(chan int, n)
	gate := func(i int) {
		for seen := 0; seen < i-lead; {
			select {
			case seen = <-progress:
			case <-ctx.Done():
				return
			}
		}
	}
	written := make(chan error, 1)
	go func() { written <- writeSequence(ctx, writer, "s", n, gate) }()

	got, drops, err := followStream(ctx, reader, "s", n, func(seen int) {
		progress <- seen
		if seen == 10 || seen == 30 {
			srv.DropConnections()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	if drops == 0 {
		t.Error("the subscription never dropped: DropConnections cut nothing")
	}
	checkSequence(t, got, n)
	all := readStream(t, ctx, reader, "s", esdb.ReadStreamOptions{}, 2*n)
	if len(all) != n {
		t.Errorf("stream holds %d events, want %d", len(all), n)
	}
}

// A server closed and started again on the same directory and address, in
// the middle of appends and a subscription, has every acknowledged event
// and its metadata; the same clients go on using it.
func TestRestartDuringAppendsAndSubscription(t *testing.T) {
	dir := t.TempDir()
	ctx := testContext(t)
	srv := startServer(t, testserver.Options{Dir: dir})
	addr := srv.Addr().String()
	writer, reader := newClient(t, srv.URL()), newClient(t, srv.URL())
	var meta esdb.StreamMetadata
	meta.SetMaxCount(1000)
	if _, err := writer.SetStreamMetadata(ctx, "s", esdb.AppendToStreamOptions{}, meta); err != nil {
		t.Fatal(err)
	}
	const n, lead = 40, 5
	progress := make(chan int, n)
	gate := func(i int) {
		for seen := 0; seen < i-lead; {
			select {
			case seen = <-progress:
			case <-ctx.Done():
				return
			}
		}
	}
	written := make(chan error, 1)
	go func() { written <- writeSequence(ctx, writer, "s", n, gate) }()

	var restarted *testserver.Server
	got, drops, err := followStream(ctx, reader, "s", n, func(seen int) {
		progress <- seen
		if seen != n/3 {
			return
		}
		if err := srv.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		restarted = startServer(t, testserver.Options{Dir: dir, Listen: addr})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	if drops == 0 {
		t.Error("the subscription never dropped: the server did not stop")
	}
	checkSequence(t, got, n)
	if restarted.URL() != srv.URL() {
		t.Errorf("restarted at %s, want %s", restarted.URL(), srv.URL())
	}
	m, err := reader.GetStreamMetadata(ctx, "s", esdb.ReadStreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if m.MaxCount() == nil || *m.MaxCount() != 1000 {
		t.Errorf("metadata after restart = %+v", m)
	}
	if evs := readStream(t, ctx, reader, "s", esdb.ReadStreamOptions{}, 2*n); len(evs) != n {
		t.Errorf("stream holds %d events after restart, want %d", len(evs), n)
	}
}
