package webhook_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/imsync/imsync/projections/webhook"
)

// moderator is a real before-send webhook: it rejects "spam", rewrites
// "darn", stalls on "slow" and fails on "boom".
func moderator(t *testing.T) *httptest.Server {
	stall := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !webhook.Verify(secret, body, r.Header.Get(webhook.SignatureHeader)) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var m webhook.Outgoing
		json.Unmarshal(body, &m)
		text := ""
		if m.Text != nil {
			text = *m.Text
		}
		switch {
		case strings.Contains(text, "spam"):
			w.Write([]byte(`{"action":"reject","reason":"no spam"}`))
		case strings.Contains(text, "darn"):
			json.NewEncoder(w).Encode(map[string]string{"action": "rewrite", "text": strings.ReplaceAll(text, "darn", "d**n")})
		case text == "slow":
			select {
			case <-stall:
			case <-r.Context().Done():
			}
		case text == "boom":
			http.Error(w, "boom", http.StatusInternalServerError)
		case text == "odd":
			w.Write([]byte(`{"action":"shrug"}`))
		default:
			w.Write([]byte(`{"action":"allow"}`))
		}
	}))
	t.Cleanup(func() { close(stall); srv.Close() })
	return srv
}

func TestBeforeSend(t *testing.T) {
	srv := moderator(t)
	out := func(text string) webhook.Outgoing {
		return webhook.Outgoing{Conversation: "g", Sender: "ann", Body: []byte(text)}
	}
	for _, failOpen := range []bool{false, true} {
		b := &webhook.BeforeSend{URL: srv.URL, Secret: secret, Timeout: 100 * time.Millisecond, FailOpen: failOpen}
		if err := b.Validate(); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if v := b.Check(ctx, out("hello")); !v.Allow || v.Body != nil || v.Failed {
			t.Fatalf("allow: %+v", v)
		}
		if v := b.Check(ctx, out("buy spam")); v.Allow || v.Reason != "no spam" || v.Failed {
			t.Fatalf("reject: %+v", v)
		}
		if v := b.Check(ctx, out("darn it")); !v.Allow || string(v.Body) != "d**n it" {
			t.Fatalf("rewrite: %+v", v)
		}
		for _, failing := range []string{"slow", "boom", "odd"} {
			v := b.Check(ctx, out(failing))
			if !v.Failed || v.Err == nil || v.Allow != failOpen || v.Body != nil || (!failOpen && v.Reason == "") {
				t.Fatalf("fail open %v, %q: %+v", failOpen, failing, v)
			}
		}
	}
	wrong := &webhook.BeforeSend{URL: srv.URL, Secret: []byte("other")}
	if v := wrong.Check(context.Background(), out("hello")); !v.Failed || v.Allow {
		t.Fatalf("a wrong secret: %+v", v)
	}
	if _, err := webhook.ParseFailPolicy("sometimes"); err == nil {
		t.Fatal("a bad policy accepted")
	}
	if open, err := webhook.ParseFailPolicy("open"); !open || err != nil {
		t.Fatal("open")
	}
	if err := (&webhook.BeforeSend{URL: "nope"}).Validate(); err == nil {
		t.Fatal("a bad URL accepted")
	}
}
