package webhook_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/projections"
	"github.com/imsync/imsync/projections/webhook"
)

// A receiver checks the signature, drops what it has seen, then acts.
func Example() {
	secret := []byte("shared secret")
	seen := map[string]bool{}
	got := make(chan string, 10)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !webhook.Verify(secret, body, r.Header.Get(webhook.SignatureHeader)) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var b webhook.Batch
		json.Unmarshal(body, &b)
		for _, e := range b.Events {
			if seen[e.IdempotencyKey] {
				continue
			}
			seen[e.IdempotencyKey] = true
			got <- fmt.Sprintf("%s seq %d %s: %s", e.Conversation, e.Seq, e.Type, *e.Text)
		}
	}))
	defer receiver.Close()

	store, _ := events.OpenInMemory(events.Options{})
	defer store.Close()
	ev, _ := events.Encode([16]byte{}, &eventspb.MessageSent{Sender: "ann", Kind: "text", Body: []byte("pack light")})
	store.AppendToStream(context.Background(), events.ConversationStream("trip"), events.Any, ev)

	s, _ := webhook.New(webhook.Config{Store: store, Checkpoints: &projections.MemoryCheckpoints{}, URL: receiver.URL, Secret: secret})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	fmt.Println(<-got)
	cancel()
	<-done
	// Output: trip seq 1 MessageSent: pack light
}

func ExampleVerify() {
	secret, body := []byte("shared secret"), []byte(`{"events":[]}`)
	header := webhook.Sign(secret, body)
	fmt.Println(webhook.Verify(secret, body, header), webhook.Verify([]byte("other"), body, header))
	// Output: true false
}
