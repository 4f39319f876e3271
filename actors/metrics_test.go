package actors_test

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imsync/imsync/actors"
)

// records keeps log records for inspection.
type records struct {
	mu   sync.Mutex
	list []slog.Record
	lib  []string // the lib attribute the handler was derived with, per record
	with string
	root *records
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) WithGroup(string) slog.Handler            { return r }
func (r *records) WithAttrs(as []slog.Attr) slog.Handler {
	root := r.root
	if root == nil {
		root = r
	}
	with := r.with
	for _, a := range as {
		if a.Key == "lib" {
			with = a.Value.String()
		}
	}
	return &records{root: root, with: with}
}
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	root := r.root
	if root == nil {
		root = r
	}
	root.mu.Lock()
	defer root.mu.Unlock()
	root.list = append(root.list, rec)
	root.lib = append(root.lib, r.with)
	return nil
}

// TestMetricsHooks: the fanout lag hook hears each finished fanout, the
// backlog returns to zero once fanout settles, the active grains are
// counted, and protoactor-go's logs reach the configured logger one level
// down, tagged lib=protoactor.
func TestMetricsHooks(t *testing.T) {
	logs := &records{}
	var lags atomic.Int64
	svc := start(t, actors.Config{
		Store:   newStore(t),
		Logger:  slog.New(logs),
		Metrics: actors.Metrics{FanoutLag: func(d time.Duration) { lags.Add(1) }},
	})
	ctx := tctx(t)
	conv, err := svc.OpenDirect(ctx, "ann", "bob")
	if err != nil {
		t.Fatal(err)
	}
	r, err := svc.Send(ctx, actors.SendRequest{Conversation: conv, Sender: "ann", ClientMsgID: "m1", Body: []byte("hi")})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.EnsureFanout(ctx, conv, r.Seq); err != nil {
		t.Fatal(err)
	}
	if left, err := svc.SettleFanout(ctx); err != nil || left != 0 {
		t.Fatalf("fanout did not settle: %d left, %v", left, err)
	}
	if lags.Load() == 0 {
		t.Error("the fanout lag hook was never called")
	}
	if g := svc.GrainsActive(); g.Conversations < 1 || g.Users < 2 {
		t.Errorf("grains active: %+v", g)
	}

	logs.mu.Lock()
	defer logs.mu.Unlock()
	started := false
	for i, rec := range logs.list {
		if logs.lib[i] != "protoactor" {
			continue
		}
		if rec.Message == "actor system started" { // protoactor-go's Info
			started = true
			if rec.Level != slog.LevelDebug {
				t.Errorf("protoactor-go's info logged at %v, want debug", rec.Level)
			}
		}
	}
	if !started {
		t.Error("protoactor-go's logs do not reach the logger")
	}
}
