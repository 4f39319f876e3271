package webhook_test

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/projections"
	"github.com/imsync/imsync/projections/webhook"
)

// A receiver that answers a batch with a redirect has not acknowledged
// it: following the redirect would turn the POST into a GET without the
// body, whose 2xx would move the checkpoint past events nobody received.
// The batch is retried until the receiver itself answers 2xx.
func TestRedirectIsNotAnAcknowledgement(t *testing.T) {
	store := openStore(t)
	rec := newReceiver(t)
	var mu sync.Mutex
	redirect, redirects, followed := true, 0, 0
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.URL.Path == "/moved":
			followed++ // what a receiver that moved would answer
		case redirect:
			redirects++
			http.Redirect(w, r, "/moved", http.StatusFound)
		default:
			rec.srv.Config.Handler.ServeHTTP(w, r)
		}
	}))
	defer front.Close()
	appendMsg(t, store, events.ConversationStream("g"), sent("ann", "not lost"))
	cp := &projections.MemoryCheckpoints{}
	s, _ := run(t, webhook.Config{Store: store, Checkpoints: cp, URL: front.URL + "/hook"})
	waitFor(t, "three redirected attempts", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return redirects >= 3
	})
	if _, n := s.Acknowledged(); n != 0 {
		t.Fatalf("%d batches counted as acknowledged after redirects", n)
	}
	mu.Lock()
	if followed != 0 {
		t.Errorf("the sender followed %d redirects", followed)
	}
	redirect = false
	mu.Unlock()
	waitFor(t, "the event", func() bool { return len(rec.events()) == 1 })
	if e := rec.events()[0]; e.Text == nil || *e.Text != "not lost" {
		t.Fatalf("delivered %+v", e)
	}
}
