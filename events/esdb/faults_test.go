package esdb_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/esdb"
	"github.com/imsync/imsync/events/esdb/testserver"
)

// appendRetrying appends event i of a sequence with a fixed id at its
// exact revision, repeating the append while the store is unavailable: it
// must then succeed exactly once.
func appendRetrying(ctx context.Context, s events.Store, stream string, i int) error {
	ns := uuid.MustParse("2f1a6a52-7c4e-4b8e-9d1c-5b0f3a1e8c11")
	e := events.EventData{ID: uuid.NewSHA1(ns, []byte(stream+"/"+strconv.Itoa(i))), Type: "Seq", Data: []byte(strconv.Itoa(i))}
	exp := events.NoStream
	if i > 0 {
		exp = events.Exactly(events.Revision(i - 1))
	}
	for {
		res, err := s.AppendToStream(ctx, stream, exp, e)
		if err == nil {
			if res.NextExpected != events.Revision(i) {
				return fmt.Errorf("event %d landed at revision %d", i, res.NextExpected)
			}
			return nil
		}
		if !errors.Is(err, events.ErrUnavailable) || ctx.Err() != nil {
			return fmt.Errorf("append %d: %w", i, err)
		}
	}
}

// checkSeq checks that got holds the events 0..n-1 of the sequence, once
// each, in order.
func checkSeq(t *testing.T, what string, got []events.RecordedEvent, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("%s: %d events, want %d", what, len(got), n)
	}
	for i, e := range got {
		if string(e.Data) != strconv.Itoa(i) {
			t.Fatalf("%s: event %d is %q", what, i, e.Data)
		}
	}
}

// TestResubscribeAfterDroppedConnections cuts every connection again and
// again while a writer appends and two subscriptions follow: every append
// lands once, and both subscriptions deliver every event once, in order.
func TestResubscribeAfterDroppedConnections(t *testing.T) {
	srv := startServer(t, nil)
	s := open(t, srv.URL())
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n = 300
	stream := "drop-" + uuid.NewString()
	streamSub, err := s.SubscribeToStream(ctx, stream, events.SubscribeFromStart())
	if err != nil {
		t.Fatal(err)
	}
	defer streamSub.Close()
	allSub, err := s.SubscribeToAll(ctx, events.SubscribeAllOptions{Filter: events.Filter{StreamPrefixes: []string{stream}}})
	if err != nil {
		t.Fatal(err)
	}
	defer allSub.Close()

	writeErr := make(chan error, 1)
	go func() {
		for i := range n {
			if i%25 == 10 {
				srv.DropConnections()
			}
			if err := appendRetrying(ctx, s, stream, i); err != nil {
				writeErr <- err
				return
			}
		}
		writeErr <- nil
	}()
	var wg sync.WaitGroup
	results := make([][]events.RecordedEvent, 2)
	for k, sub := range []events.Subscription{streamSub, allSub} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for len(results[k]) < n {
				e, err := sub.Recv(ctx)
				if err != nil {
					t.Errorf("subscription %d after %d events: %v", k, len(results[k]), err)
					return
				}
				results[k] = append(results[k], e)
				if k == 0 && len(results[k])%40 == 0 {
					srv.DropConnections() // also while nothing is being written
				}
			}
		}()
	}
	if err := <-writeErr; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	checkSeq(t, "stream subscription", results[0], n)
	checkSeq(t, "$all subscription", results[1], n)
	got, err := s.ReadStream(ctx, stream, events.ReadStreamOptions{Limit: events.MaxReadLimit})
	if err != nil {
		t.Fatal(err)
	}
	checkSeq(t, "stream", got, n)
}

// TestServerRestart stops the server for longer than the client's
// discovery attempts last, then starts it again on the same address and
// data: calls fail with ErrUnavailable meanwhile, then work again through
// the same Store, and a subscription resumes where it was.
func TestServerRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	srv, err := testserver.Start(context.Background(), testserver.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr().String()
	logs := &logRecorder{}
	s, err := esdb.Open(context.Background(), srv.URL(), esdb.Options{Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stream := "restart-" + uuid.NewString()
	sub, err := s.SubscribeToStream(ctx, stream, events.SubscribeFromStart())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	for i := range 5 {
		if err := appendRetrying(ctx, s, stream, i); err != nil {
			t.Fatal(err)
		}
	}
	var got []events.RecordedEvent
	for len(got) < 3 {
		e, err := sub.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, e)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	// Down: calls fail with ErrUnavailable; the client tries to find the
	// server, gives up for good, and the store replaces it.
	_, err = s.AppendToStream(ctx, stream, events.Exactly(4), events.EventData{Type: "Seq", Data: []byte("x")})
	if !errors.Is(err, events.ErrUnavailable) {
		t.Fatalf("append while the server is down: %v, want ErrUnavailable", err)
	}
	for !logs.has("new client") {
		if ctx.Err() != nil {
			t.Fatal("the client was never replaced")
		}
		_, err = s.ReadStream(ctx, stream, events.ReadStreamOptions{Limit: 1})
		if !errors.Is(err, events.ErrUnavailable) {
			t.Fatalf("read while the server is down: %v, want ErrUnavailable", err)
		}
	}
	srv, err = testserver.Start(context.Background(), testserver.Options{Dir: dir, Listen: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for i := 5; i < 10; i++ {
		if err := appendRetrying(ctx, s, stream, i); err != nil {
			t.Fatal(err)
		}
	}
	for len(got) < 10 {
		e, err := sub.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, e)
	}
	checkSeq(t, "subscription across the restart", got, 10)
	all, err := s.ReadStream(ctx, stream, events.ReadStreamOptions{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	checkSeq(t, "stream across the restart", all, 10)
}

// logRecorder is a slog.Handler that keeps the messages it gets.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, r.Message)
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

func (l *logRecorder) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range l.msgs {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}
