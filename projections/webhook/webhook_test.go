package webhook_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/projections"
	"github.com/imsync/imsync/projections/webhook"
)

var secret = []byte("s3cret-for-tests")

// receiver is a real HTTP server that verifies signatures and records
// every batch it acknowledges (and every one it refuses).
type receiver struct {
	srv *httptest.Server

	mu       sync.Mutex
	down     bool          // answer 503
	hold     chan struct{} // non-nil: block each request until closed
	got      []webhook.Event
	batches  int
	refused  int
	badSigs  int
	arrivals chan struct{} // one per request, before answering
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{arrivals: make(chan struct{}, 1024)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		select {
		case r.arrivals <- struct{}{}:
		default:
		}
		r.mu.Lock()
		hold, down := r.hold, r.down
		r.mu.Unlock()
		if hold != nil {
			select {
			case <-hold:
			case <-req.Context().Done():
				return
			}
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if !webhook.Verify(secret, body, req.Header.Get(webhook.SignatureHeader)) {
			r.badSigs++
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		if down {
			r.refused++
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		var b webhook.Batch
		if err := json.Unmarshal(body, &b); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.got = append(r.got, b.Events...)
		r.batches++
	}))
	t.Cleanup(func() {
		r.mu.Lock()
		if r.hold != nil {
			close(r.hold)
			r.hold = nil
		}
		r.mu.Unlock()
		r.srv.Close()
	})
	return r
}

func (r *receiver) events() []webhook.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]webhook.Event(nil), r.got...)
}

func (r *receiver) setDown(v bool) {
	r.mu.Lock()
	r.down = v
	r.mu.Unlock()
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func openStore(t *testing.T) events.Store {
	s, err := events.OpenInMemory(events.Options{ScavengeInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func appendMsg(t *testing.T, store events.Store, stream string, m proto.Message) uuid.UUID {
	t.Helper()
	ed, err := events.Encode(uuid.Nil, m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.AppendToStream(context.Background(), stream, events.Any, ed); err != nil {
		t.Fatal(err)
	}
	return ed.ID
}

func sent(sender, text string) *eventspb.MessageSent {
	return &eventspb.MessageSent{Sender: sender, Kind: "text", Body: []byte(text)}
}

// run starts a sender; the returned stop ends it and waits for it.
func run(t *testing.T, cfg webhook.Config) (*webhook.Sender, func()) {
	t.Helper()
	if cfg.Secret == nil {
		cfg.Secret = secret
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = time.Millisecond, 20*time.Millisecond
	}
	s, err := webhook.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("Run ended with %v", err)
		}
	}
	t.Cleanup(stop)
	return s, stop
}

// checkOrder asserts that each conversation's events arrived with seqs
// 1, 2, 3, ... (duplicates allowed only as exact repeats of a seq already
// seen), and returns the distinct event ids per conversation.
func checkOrder(t *testing.T, got []webhook.Event) map[string][]string {
	t.Helper()
	ids := map[string][]string{}
	next := map[string]uint64{}
	for _, e := range got {
		if e.Kind != webhook.KindEvent {
			continue
		}
		switch {
		case e.Seq == next[e.Conversation]+1:
			next[e.Conversation] = e.Seq
			ids[e.Conversation] = append(ids[e.Conversation], e.ID)
		case e.Seq <= next[e.Conversation]:
			if ids[e.Conversation][e.Seq-1] != e.ID {
				t.Fatalf("%s seq %d delivered again with another id", e.Conversation, e.Seq)
			}
		default:
			t.Fatalf("%s: seq %d after %d", e.Conversation, e.Seq, next[e.Conversation])
		}
	}
	return ids
}

func TestDeliversEveryEventInOrderSigned(t *testing.T) {
	store := openStore(t)
	rec := newReceiver(t)
	want := map[string][]uuid.UUID{}
	for i := range 30 {
		conv := fmt.Sprintf("g%d", i%3)
		want[conv] = append(want[conv], appendMsg(t, store, events.ConversationStream(conv), sent("ann", fmt.Sprintf("hello %d", i))))
	}
	// An event of a type this build does not know is delivered raw.
	raw := events.EventData{ID: uuid.New(), Type: "SomethingNew", Data: []byte{1, 2, 3}}
	if _, err := store.AppendToStream(context.Background(), events.ConversationStream("g0"), events.Any, raw); err != nil {
		t.Fatal(err)
	}
	want["g0"] = append(want["g0"], raw.ID)
	// Streams the webhook does not post.
	appendMsg(t, store, events.FanoutStream("g0"), &eventspb.FanoutCheckpoint{Seq: 3})
	run(t, webhook.Config{Store: store, Checkpoints: &projections.MemoryCheckpoints{}, URL: rec.srv.URL, MaxBatch: 7})
	waitFor(t, "31 events", func() bool { return len(rec.events()) >= 31 })
	got := rec.events()
	if len(got) != 31 {
		t.Fatalf("got %d events, want 31", len(got))
	}
	if last := got[len(got)-1]; last.Type != "SomethingNew" || string(last.Raw) != "\x01\x02\x03" || last.Data != nil {
		t.Fatalf("unknown event delivered as %+v", last)
	}
	ids := checkOrder(t, got)
	for conv, w := range want {
		for i, id := range w {
			if ids[conv][i] != id.String() {
				t.Fatalf("%s seq %d: id %s, want %s", conv, i+1, ids[conv][i], id)
			}
		}
	}
	e := got[0]
	if e.Type != "MessageSent" || e.Stream != "conv-"+e.Conversation || e.IdempotencyKey != e.ID || e.Text == nil || *e.Text != "hello 0" || e.Time.IsZero() {
		t.Fatalf("first event: %+v", e)
	}
	var data struct{ Sender, Body string }
	if err := json.Unmarshal(e.Data, &data); err != nil || data.Sender != "ann" {
		t.Fatalf("data %s: %v", e.Data, err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.badSigs != 0 || rec.batches < 5 {
		t.Fatalf("bad signatures %d, batches %d (MaxBatch 7 for 30 events)", rec.badSigs, rec.batches)
	}
}

func TestWrongSecretIsRefusedAndRetried(t *testing.T) {
	store := openStore(t)
	rec := newReceiver(t)
	appendMsg(t, store, events.ConversationStream("g"), sent("ann", "x"))
	run(t, webhook.Config{Store: store, Checkpoints: &projections.MemoryCheckpoints{}, URL: rec.srv.URL, Secret: []byte("another secret")})
	waitFor(t, "three refused attempts", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.badSigs >= 3
	})
	if n := len(rec.events()); n != 0 {
		t.Fatalf("%d events accepted with a wrong signature", n)
	}
}

func TestReceiverDownForAWhileGetsEverything(t *testing.T) {
	store := openStore(t)
	rec := newReceiver(t)
	rec.setDown(true)
	cps := &projections.MemoryCheckpoints{}
	s, _ := run(t, webhook.Config{Store: store, Checkpoints: cps, URL: rec.srv.URL, MaxBatch: 4})
	for i := range 10 {
		appendMsg(t, store, events.ConversationStream("g"), sent("ann", fmt.Sprint(i)))
	}
	waitFor(t, "refusals", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.refused >= 3
	})
	if _, n := s.Acknowledged(); n != 0 {
		t.Fatalf("%d batches acknowledged while the receiver is down", n)
	}
	if _, ok, _ := cps.Load(context.Background(), "webhook"); ok {
		t.Fatal("checkpoint saved past events the receiver has not acknowledged")
	}
	rec.setDown(false)
	for i := 10; i < 15; i++ {
		appendMsg(t, store, events.ConversationStream("g"), sent("ann", fmt.Sprint(i)))
	}
	waitFor(t, "15 events", func() bool { return len(rec.events()) >= 15 })
	if got := checkOrder(t, rec.events()); len(got["g"]) != 15 || len(rec.events()) != 15 {
		t.Fatalf("got %d distinct of %d events", len(got["g"]), len(rec.events()))
	}
}

// A stop while a batch is in flight (the receiver holds it) resends that
// batch and nothing else: the checkpoint stands after the last
// acknowledged batch.
func TestRestartResendsOnlyTheBatchInFlight(t *testing.T) {
	store := openStore(t)
	rec := newReceiver(t)
	cps := projections.FileCheckpoints{Dir: t.TempDir()}
	cfg := webhook.Config{Store: store, Checkpoints: cps, URL: rec.srv.URL, MaxBatch: 5}
	for i := range 12 {
		appendMsg(t, store, events.ConversationStream("g"), sent("ann", fmt.Sprint(i)))
	}
	s, stop := run(t, cfg)
	waitFor(t, "12 events", func() bool { return len(rec.events()) >= 12 })
	// The checkpoint is saved just after the acknowledgement is counted.
	var acked events.Position
	waitFor(t, "the checkpoint at the last acknowledged batch", func() bool {
		acked, _ = s.Acknowledged()
		cp, ok, err := cps.Load(context.Background(), "webhook")
		return err == nil && ok && cp.Position == acked
	})
	// The next batch is held by the receiver when the sender stops.
	rec.mu.Lock()
	rec.hold = make(chan struct{})
	rec.mu.Unlock()
	for len(rec.arrivals) > 0 {
		<-rec.arrivals
	}
	var inflight []string
	for i := range 3 {
		inflight = append(inflight, appendMsg(t, store, events.ConversationStream("g"), sent("ann", fmt.Sprint("held", i))).String())
	}
	waitFor(t, "the held batch to arrive", func() bool { return len(rec.arrivals) > 0 })
	stop()
	rec.mu.Lock()
	close(rec.hold)
	rec.hold = nil
	rec.mu.Unlock()
	for i := range 4 {
		appendMsg(t, store, events.ConversationStream("g"), sent("ann", fmt.Sprint("after", i)))
	}
	run(t, cfg)
	waitFor(t, "19 events", func() bool { return len(checkOrder(t, rec.events())["g"]) >= 19 })
	got := rec.events()
	seen := map[string]int{}
	for _, e := range got {
		seen[e.ID]++
	}
	dups := 0
	for id, n := range seen {
		if n > 1 {
			dups++
			if !contains(inflight, id) {
				t.Fatalf("event %s delivered %d times but was not in flight", id, n)
			}
		}
	}
	if len(got) != 19+dups {
		t.Fatalf("%d deliveries of 19 events with %d duplicated", len(got), dups)
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func TestNewRefusesBadConfig(t *testing.T) {
	store := openStore(t)
	for _, u := range []string{"", "ftp://x/y", "not a url", "http://"} {
		if _, err := webhook.New(webhook.Config{Store: store, Checkpoints: &projections.MemoryCheckpoints{}, URL: u}); err == nil {
			t.Errorf("URL %q accepted", u)
		}
	}
	if _, err := webhook.New(webhook.Config{URL: "http://x/"}); err == nil {
		t.Error("no store accepted")
	}
}
