package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imsync/imsync/projections/webhook"
	"github.com/imsync/imsync/transport/client"
)

// moderationHook is a before-send webhook receiver: a real HTTP server
// that checks signatures, rejects "spam" (reason "no-spam"), rewrites
// "darn" to "d**n" and tags the message, never answers about "slow", and
// allows the rest.
type moderationHook struct {
	srv    *httptest.Server
	secret []byte

	mu     sync.Mutex
	asked  []webhook.Outgoing
	badSig int
}

func newModerationHook(t *testing.T, secret []byte) *moderationHook {
	h := &moderationHook{secret: secret}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !webhook.Verify(h.secret, body, r.Header.Get(webhook.SignatureHeader)) {
			h.mu.Lock()
			h.badSig++
			h.mu.Unlock()
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var m webhook.Outgoing
		if err := json.Unmarshal(body, &m); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h.mu.Lock()
		h.asked = append(h.asked, m)
		h.mu.Unlock()
		text := ""
		if m.Text != nil {
			text = *m.Text
		}
		switch {
		case strings.Contains(text, "slow"):
			<-r.Context().Done() // answers only too late: the server gave up
			return
		case strings.Contains(text, "spam"):
			w.Write([]byte(`{"action":"reject","reason":"no-spam"}`))
		case strings.Contains(text, "darn"):
			json.NewEncoder(w).Encode(map[string]any{"action": "rewrite",
				"text": strings.ReplaceAll(text, "darn", "d**n"), "metadata": map[string]string{"moderated": "yes"}})
		default:
			w.Write([]byte(`{"action":"allow"}`))
		}
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *moderationHook) questions() []webhook.Outgoing {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]webhook.Outgoing(nil), h.asked...)
}

// beforeSendPair starts `imsync serve` with flags and returns ann and bob
// connected, in a group "g" of the two.
func beforeSendPair(t *testing.T, flags ...string) (ann, bob *client.Client) {
	t.Helper()
	addr, data := cliServerWith(t, append([]string{"--listen", "127.0.0.1:0"}, flags...)...)
	tc := pinnedTLSOf(t, data)
	dial := func(user string) *client.Client {
		tok, err := runCmd(t, "token", "--data", data, "--user", user, "--device", "d")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := client.Dial(ctx, client.Config{Addr: addr, Token: strings.TrimSpace(tok), TLS: tc})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	ann, bob = dial("ann"), dial("bob")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := ann.CreateGroup(ctx, "g", "g", []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	return ann, bob
}

// gapless checks that bob's history of g holds exactly the texts want, in
// order, at consecutive seqs, and returns the messages' metadata.
func gapless(t *testing.T, bob *client.Client, want ...string) []map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := bob.History(ctx, "g", client.HistoryQuery{FromStart: true, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Messages) != len(want) {
		t.Fatalf("bob's history holds %d messages, want %d: %v", len(h.Messages), len(want), h.Messages)
	}
	var md []map[string]string
	for i, m := range h.Messages {
		if got := string(m.Message.Body); got != want[i] {
			t.Fatalf("bob's message %d: %q, want %q", i, got, want[i])
		}
		if i > 0 && m.Seq != h.Messages[i-1].Seq+1 {
			t.Fatalf("seqs %d then %d: a refused message left a gap", h.Messages[i-1].Seq, m.Seq)
		}
		md = append(md, m.Message.Metadata)
	}
	if h.LastSeq != h.Messages[len(h.Messages)-1].Seq {
		t.Fatalf("last seq %d, latest message at %d", h.LastSeq, h.Messages[len(h.Messages)-1].Seq)
	}
	return md
}

// TestBeforeSendWebhook runs `imsync serve --before-send-webhook` against a
// real HTTP receiver: a reject reaches the sending device as REJECTED with
// the receiver's reason, a rewrite is what the other member receives, an
// edit is asked too, and a receiver that answers too late or is down
// refuses messages with CHECK_FAILED when failing closed and lets them
// through unchanged when failing open. Refused messages leave no gap.
func TestBeforeSendWebhook(t *testing.T) {
	secret := []byte("before-send secret")
	secretFile := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secretFile, append(secret, '\n'), 0o600)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("closed", func(t *testing.T) {
		hook := newModerationHook(t, secret)
		ann, bob := beforeSendPair(t, "--before-send-webhook", hook.srv.URL, "--webhook-secret", secretFile,
			"--before-send-timeout", "500ms", "--before-send-fail", "closed")

		if _, err := ann.Send(ctx, client.Message{Conversation: "g", ClientMsgID: "1", Text: "hello"}); err != nil {
			t.Fatal(err)
		}
		_, err := ann.Send(ctx, client.Message{Conversation: "g", ClientMsgID: "2", Text: "buy spam"})
		if client.CodeOf(err) != client.CodeRejected || client.ReasonOf(err) != "no-spam" {
			t.Fatalf("spam: %v (code %d, reason %q), want REJECTED no-spam", err, client.CodeOf(err), client.ReasonOf(err))
		}
		if _, err := ann.Send(ctx, client.Message{Conversation: "g", ClientMsgID: "3", Text: "darn it"}); err != nil {
			t.Fatal(err)
		}
		md := gapless(t, bob, "hello", "d**n it")
		if md[1]["moderated"] != "yes" || md[0]["moderated"] != "" {
			t.Fatalf("metadata the rewrite set: %v", md)
		}
		// An edit is asked about too, with the seq it replaces.
		h, err := bob.History(ctx, "g", client.HistoryQuery{Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		seq := h.Messages[0].Seq
		if _, err := ann.Edit(ctx, "g", seq, []byte("spam after all")); client.CodeOf(err) != client.CodeRejected {
			t.Fatalf("an edit to spam: %v", err)
		}
		qs := hook.questions()
		last := qs[len(qs)-1]
		if last.Edits != seq || last.Sender != "ann" || last.Conversation != "g" || last.Kind != "text" {
			t.Fatalf("the edit was asked as %+v", last)
		}
		if qs[0].ClientMsgID != "1" || qs[0].Device != "d" || qs[0].Kind != "text" {
			t.Fatalf("the first send was asked as %+v", qs[0])
		}

		// A receiver that does not answer in time: fail closed refuses.
		_, err = ann.Send(ctx, client.Message{Conversation: "g", ClientMsgID: "slow", Text: "slow"})
		if client.CodeOf(err) != client.CodeCheckFailed || client.ReasonOf(err) != webhook.CheckName {
			t.Fatalf("receiver too slow, fail closed: %v (code %d), want CHECK_FAILED", err, client.CodeOf(err))
		}

		// The receiver goes down: fail closed refuses, and nothing is stored.
		hook.srv.Close()
		_, err = ann.Send(ctx, client.Message{Conversation: "g", ClientMsgID: "4", Text: "anyone?"})
		if client.CodeOf(err) != client.CodeCheckFailed || client.ReasonOf(err) != webhook.CheckName {
			t.Fatalf("receiver down, fail closed: %v (code %d, reason %q), want CHECK_FAILED", err, client.CodeOf(err), client.ReasonOf(err))
		}
		gapless(t, bob, "hello", "d**n it")
		hook.mu.Lock()
		bad := hook.badSig
		hook.mu.Unlock()
		if bad != 0 {
			t.Fatalf("%d requests with a bad signature", bad)
		}
	})

	t.Run("open", func(t *testing.T) {
		hook := newModerationHook(t, secret)
		ann, bob := beforeSendPair(t, "--before-send-webhook", hook.srv.URL, "--before-send-secret", secretFile,
			"--before-send-timeout", "300ms", "--before-send-fail", "open")
		_, err := ann.Send(ctx, client.Message{Conversation: "g", ClientMsgID: "1", Text: "spam"})
		if client.CodeOf(err) != client.CodeRejected {
			t.Fatalf("spam while the receiver is up: %v", err)
		}
		// Too slow: fail open lets it through unchanged.
		if _, err := ann.Send(ctx, client.Message{Conversation: "g", ClientMsgID: "slow", Text: "slow darn"}); err != nil {
			t.Fatalf("receiver too slow, fail open: %v", err)
		}
		hook.srv.Close()
		// Down: fail open lets messages through unchanged, even one the
		// receiver would have rewritten.
		for i, text := range []string{"darn, it is down", "still down"} {
			if _, err := ann.Send(ctx, client.Message{Conversation: "g", ClientMsgID: string(rune('a' + i)), Text: text}); err != nil {
				t.Fatalf("receiver down, fail open: %v", err)
			}
		}
		md := gapless(t, bob, "slow darn", "darn, it is down", "still down")
		for _, m := range md {
			if m["moderated"] != "" {
				t.Fatalf("a message let through unchecked carries %v", m)
			}
		}
	})
}

// TestBeforeSendFlagsRefused: bad before-send flags refuse to start and
// create nothing.
func TestBeforeSendFlagsRefused(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("s3cret\n"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	for _, args := range [][]string{
		{"--before-send-webhook", "ftp://example.com/x"},
		{"--before-send-webhook", "http://127.0.0.1:1/", "--before-send-fail", "sometimes"},
		{"--before-send-webhook", "http://127.0.0.1:1/", "--before-send-timeout", "0s"},
		{"--before-send-webhook", "http://127.0.0.1:1/", "--before-send-timeout", "3s"}, // beyond the checks' 2 s
		{"--before-send-webhook", "http://127.0.0.1:1/", "--before-send-secret", empty},
		{"--before-send-webhook", "http://127.0.0.1:1/", "--before-send-secret", filepath.Join(dir, "missing")},
		{"--before-send-secret", secret},
	} {
		data := filepath.Join(dir, "data")
		err := run(context.Background(), append([]string{"serve", "--data", data}, args...), io.Discard)
		if err == nil {
			t.Fatalf("serve %v started", args)
		}
		if !strings.Contains(err.Error(), "before-send") {
			t.Fatalf("serve %v: unclear error %v", args, err)
		}
		if _, statErr := os.Stat(data); !os.IsNotExist(statErr) {
			t.Fatalf("serve %v: %v, but created %s", args, err, data)
		}
	}
}
