package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/projections/webhook"
	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/api"
	"github.com/imsync/imsync/transport/client"
	"github.com/imsync/imsync/transport/wire"
)

// startWebhookChild runs `imsync serve --data DATA ARGS` in a child process and
// returns it with its QUIC address and, with --api, the API's URL.
func startWebhookChild(t *testing.T, data string, args ...string) (*exec.Cmd, string, string) {
	t.Helper()
	ch := startServe(t, data, serveOptions{}, args...)
	return ch.cmd, ch.addr, ch.api
}

// hookReceiver is the webhook's receiver: a real HTTP server in the test.
// It verifies each signature, records every event it gets (an event in a
// request whose answer is lost counts as received: the receiver acted on
// it), and can refuse (down) or hold requests.
type hookReceiver struct {
	srv    *httptest.Server
	secret []byte

	mu       sync.Mutex
	got      []webhook.Event
	down     bool
	hold     chan struct{} // non-nil: requests wait for it to close
	held     []string      // ids of the events of the requests held
	holding  int           // requests waiting now
	refused  int
	badSig   int
	accepted int // requests answered 2xx
}

func newHookReceiver(t *testing.T, secret []byte) *hookReceiver {
	r := &hookReceiver{secret: secret}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		if !webhook.Verify(r.secret, body, req.Header.Get(webhook.SignatureHeader)) {
			r.badSig++
			r.mu.Unlock()
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		if r.down {
			r.refused++
			r.mu.Unlock()
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		var b webhook.Batch
		if err := json.Unmarshal(body, &b); err != nil {
			r.mu.Unlock()
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.got = append(r.got, b.Events...)
		hold := r.hold
		if hold != nil {
			for _, e := range b.Events {
				r.held = append(r.held, e.ID)
			}
			r.holding++
		}
		r.mu.Unlock()
		if hold != nil {
			select {
			case <-hold:
			case <-req.Context().Done():
			}
			r.mu.Lock()
			r.holding--
			r.mu.Unlock()
		}
		r.mu.Lock()
		r.accepted++
		r.mu.Unlock()
	}))
	t.Cleanup(func() {
		r.release()
		r.srv.Close()
	})
	return r
}

func (r *hookReceiver) holdRequests() {
	r.mu.Lock()
	r.hold = make(chan struct{})
	r.mu.Unlock()
}

func (r *hookReceiver) release() {
	r.mu.Lock()
	if r.hold != nil {
		close(r.hold)
		r.hold = nil
	}
	r.mu.Unlock()
}

func (r *hookReceiver) setDown(v bool) {
	r.mu.Lock()
	r.down = v
	r.mu.Unlock()
}

func (r *hookReceiver) state() (holding, refused, badSig int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.holding, r.refused, r.badSig
}

// has reports whether a MessageSent at conv's seq was received.
func (r *hookReceiver) has(conv string, seq uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.got {
		if e.Conversation == conv && e.Seq == seq {
			return true
		}
	}
	return false
}

func pollUntil(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWebhookAcrossKill9 runs `imsync serve --webhook` as a real process
// and kills it with SIGKILL while the receiver holds a batch: every
// committed event reaches the receiver at least once, in order per
// conversation, and only the events of the batch in flight twice. Then the
// receiver is down for a while, and later blocks every request: sends
// complete all the same, and everything arrives once it is back. On the
// way: an offline device gets device.pending and a connected one does not;
// the server API of the same process sends, reads device state and
// revokes a user's tokens, which a restart keeps.
func TestWebhookAcrossKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	key, err := transport.LoadOrCreateKey(data)
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("webhook-secret-for-the-test")
	secretFile, apiKeyFile := filepath.Join(dir, "hook.secret"), filepath.Join(dir, "api.key")
	os.WriteFile(secretFile, append(secret, '\n'), 0o600)
	os.WriteFile(apiKeyFile, []byte("api-key-for-the-test-0123\n"), 0o600)
	rec := newHookReceiver(t, secret)
	args := []string{"--listen", "127.0.0.1:0", "--webhook", rec.srv.URL, "--webhook-secret", secretFile, "--api", "127.0.0.1:0", "--api-key", apiKeyFile}

	dialDevice := func(addr, user, device string) *client.Client {
		t.Helper()
		c := dialServe(t, data, addr, key, user, device, 0)
		t.Cleanup(func() { c.Close() })
		return c
	}
	dial := func(addr, user string) *client.Client { return dialDevice(addr, user, "phone") }
	type ref struct {
		conv string
		seq  uint64
	}
	var acked []ref
	send := func(c *client.Client, m client.Message) {
		t.Helper()
		err := withTimeout(20*time.Second, func(ctx context.Context) error {
			s, err := c.Send(ctx, m)
			if err == nil {
				acked = append(acked, ref{s.Conversation, s.Seq})
			}
			return err
		})
		if err != nil {
			t.Fatalf("send %+v: %v", m, err)
		}
	}
	sendSome := func(ann, bob *client.Client, n int, tag string) {
		for i := range n {
			if i%2 == 0 {
				send(ann, client.Message{Conversation: "trip", ClientMsgID: fmt.Sprintf("%s-%d", tag, i), Text: fmt.Sprintf("%s %d", tag, i)})
			} else {
				send(bob, client.Message{To: "ann", ClientMsgID: fmt.Sprintf("%s-%d", tag, i), Text: fmt.Sprintf("%s %d", tag, i)})
			}
		}
	}
	allArrived := func() bool {
		for _, a := range acked {
			if !rec.has(a.conv, a.seq) {
				return false
			}
		}
		return true
	}

	// 1. Sends arrive at the receiver.
	child, addr, apiURL := startWebhookChild(t, data, args...)
	ann, bob := dial(addr, "ann"), dial(addr, "bob")
	err = withTimeout(20*time.Second, func(ctx context.Context) error {
		_, err := ann.CreateGroup(ctx, "trip", "Trip", []string{"bob"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// Bob's phone and laptop each acknowledge the group's creation (so the
	// store knows them); the laptop goes offline, the phone stays.
	laptop := dialDevice(addr, "bob", "laptop")
	for _, c := range []*client.Client{bob, laptop} {
		err := withTimeout(20*time.Second, func(ctx context.Context) error {
			select {
			case e := <-c.Entries():
				return c.Ack(ctx, e.UserSeq)
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// Acks are asynchronous: the server API says when they are recorded.
	for _, dev := range []string{"phone", "laptop"} {
		pollUntil(t, "bob's "+dev+" acknowledged", 30*time.Second, func() bool {
			d := apiDevice(t, apiURL, "bob", dev)
			return d.AckedUserSeq >= 1 && d.Online
		})
	}
	laptop.Close()
	pollUntil(t, "bob's laptop offline", 30*time.Second, func() bool { return !apiDevice(t, apiURL, "bob", "laptop").Online })
	// ann's message wakes the laptop, never the phone, which is connected.
	send(ann, client.Message{Conversation: "trip", ClientMsgID: "wake", Text: "wake up"})
	var wake *webhook.Event
	pollUntil(t, "device.pending for bob's laptop", 30*time.Second, func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		for _, e := range rec.got {
			if e.Kind == webhook.KindDevicePending {
				wake = &e
			}
		}
		return wake != nil
	})
	if wake.User != "bob" || wake.Device != "laptop" || wake.Count != wake.UserSeq-1 || wake.Latest == nil || wake.Latest.Text != "wake up" || wake.Latest.Sender != "ann" || wake.Latest.Conversation != "trip" {
		t.Fatalf("device.pending %+v, latest %+v", wake, wake.Latest)
	}
	sendSome(ann, bob, 20, "before")
	pollUntil(t, "the first messages at the receiver", 30*time.Second, allArrived)

	// 2. SIGKILL while the receiver holds a batch it has acted on.
	rec.holdRequests()
	sendSome(ann, bob, 6, "inflight")
	pollUntil(t, "a batch in flight", 30*time.Second, func() bool { h, _, _ := rec.state(); return h > 0 })
	child.Process.Kill()
	child.Wait()
	rec.release()
	rec.mu.Lock()
	inflight := map[string]bool{}
	for _, id := range rec.held {
		inflight[id] = true
	}
	rec.held = nil
	rec.mu.Unlock()

	// 3. Restarted, with the receiver down: sends go on; nothing is lost.
	rec.setDown(true)
	child, addr, apiURL = startWebhookChild(t, data, args...)
	if apiURL == "" {
		t.Fatal("serve --api printed no address")
	}
	ann, bob = dial(addr, "ann"), dial(addr, "bob")
	sendSome(ann, bob, 10, "down")
	pollUntil(t, "the receiver refusing batches", 30*time.Second, func() bool { _, r, _ := rec.state(); return r >= 2 })

	// 4. The receiver now blocks every request: sends still complete
	// while a webhook request waits (the sender reads the store, off the
	// sending path).
	rec.holdRequests()
	rec.setDown(false)
	pollUntil(t, "a blocked webhook request", 60*time.Second, func() bool { h, _, _ := rec.state(); return h > 0 })
	sendSome(ann, bob, 10, "blocked")
	// The server API sends too (as a user, and as a system sender).
	for i, body := range []string{
		`{"conversation":"trip","sender":"bob","client_msg_id":"api-1","text":"from the backend"}`,
		`{"conversation":"trip","sender":"bot-news","system":true,"text":"system notice"}`,
	} {
		req, _ := http.NewRequest("POST", apiURL+"/v1/messages", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer api-key-for-the-test-0123")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var s struct {
			Conversation string
			Seq          uint64
		}
		json.NewDecoder(res.Body).Decode(&s)
		res.Body.Close()
		if res.StatusCode != 200 || s.Seq == 0 {
			t.Fatalf("API send %d: %d %+v", i, res.StatusCode, s)
		}
		acked = append(acked, ref{s.Conversation, s.Seq})
	}
	if h, _, _ := rec.state(); h == 0 {
		t.Fatal("the webhook request stopped blocking before the sends completed")
	}
	rec.release()
	pollUntil(t, "every acknowledged message at the receiver", 60*time.Second, allArrived)
	if _, _, bad := rec.state(); bad != 0 {
		t.Fatalf("%d requests with a bad signature", bad)
	}

	// A revocation through the API closes bob's connection now and is
	// kept across the restart below.
	before := time.Now()
	req, _ := http.NewRequest("POST", apiURL+"/v1/users/bob/revoke-tokens", nil)
	req.Header.Set("Authorization", "Bearer api-key-for-the-test-0123")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var revoked api.Revoked
	json.NewDecoder(res.Body).Decode(&revoked)
	res.Body.Close()
	if res.StatusCode != 200 || revoked.Closed != 1 {
		t.Fatalf("revoke: %d %+v", res.StatusCode, revoked)
	}

	// 5. Against the store: every committed conversation event arrived, in
	// order, and only the batch in flight at the kill twice.
	child.Process.Kill()
	child.Wait()
	store := openStoreOf(t, data)
	closeStore := sync.OnceFunc(func() { store.Close() })
	defer closeStore()
	var committed []events.RecordedEvent
	from := events.PositionStart
	for {
		page, err := store.ReadAll(context.Background(), events.ReadAllOptions{From: from, Limit: 1000, Filter: events.Filter{StreamPrefixes: []string{events.ConversationPrefix}}})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page {
			if e.Position != from || from == events.PositionStart {
				committed = append(committed, e)
			}
		}
		if len(page) < 1000 {
			break
		}
		from = page[len(page)-1].Position
	}
	rec.mu.Lock()
	got := append([]webhook.Event(nil), rec.got...)
	rec.mu.Unlock()
	byConv := map[string][]webhook.Event{}
	count := map[string]int{}
	for _, e := range got {
		if e.Kind == webhook.KindEvent {
			byConv[e.Stream] = append(byConv[e.Stream], e)
			count[e.ID]++
		}
	}
	for id, n := range count {
		if n > 1 && !inflight[id] {
			t.Fatalf("event %s delivered %d times; only the %d events in flight may be", id, n, len(inflight))
		}
	}
	want := map[string][]string{}
	for _, e := range committed {
		want[e.Stream] = append(want[e.Stream], e.ID.String())
	}
	for stream, ids := range want {
		var firsts []string
		seen := map[string]bool{}
		var last uint64
		for _, e := range byConv[stream] {
			if seen[e.ID] {
				continue
			}
			if e.Seq != last+1 {
				t.Fatalf("%s: seq %d arrived after %d", stream, e.Seq, last)
			}
			last = e.Seq
			seen[e.ID] = true
			firsts = append(firsts, e.ID)
		}
		if strings.Join(firsts, ",") != strings.Join(ids, ",") {
			t.Fatalf("%s: received %d events, committed %d (or other ids)", stream, len(firsts), len(ids))
		}
	}
	if len(want) != 2 || len(committed) < len(acked) {
		t.Fatalf("%d conversations, %d events for %d acknowledged messages", len(want), len(committed), len(acked))
	}
	t.Logf("%d committed events, %d deliveries, %d events in flight at the kill", len(committed), len(got), len(inflight))

	// 6. Restarted, the server still refuses bob's tokens issued before
	// the revocation, and takes one issued after it.
	closeStore()
	_, addr, _ = startWebhookChild(t, data, args...)
	tlsConf := pinnedTLSOf(t, data)
	for _, c := range []struct {
		issued time.Time
		ok     bool
	}{{before, false}, {revoked.RevokedAt.Add(time.Second), true}} {
		tok, _ := key.Mint("bob", "tablet", time.Hour, c.issued)
		err := withTimeout(20*time.Second, func(ctx context.Context) error {
			cl, err := client.Dial(ctx, client.Config{Addr: addr, Token: tok, TLS: tlsConf, NoReconnect: true})
			if err == nil {
				cl.Close()
			}
			return err
		})
		var we *wire.Error
		if c.ok && err != nil || !c.ok && (!errors.As(err, &we) || we.Code != wire.CodeUnauthorized) {
			t.Fatalf("after the restart, a token issued at %s: %v", c.issued, err)
		}
	}
}

// apiDevice reads a device's state through the server API.
func apiDevice(t *testing.T, apiURL, user, device string) api.Device {
	t.Helper()
	req, _ := http.NewRequest("GET", apiURL+"/v1/users/"+user+"/devices/"+device, nil)
	req.Header.Set("Authorization", "Bearer api-key-for-the-test-0123")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var d api.Device
	if err := json.NewDecoder(res.Body).Decode(&d); err != nil || res.StatusCode != 200 {
		t.Fatalf("device %s/%s: %d %v", user, device, res.StatusCode, err)
	}
	return d
}

func TestServeRefusesBadExtensionFlags(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	os.WriteFile(key, []byte("short\n"), 0o600)
	for _, args := range [][]string{
		{"--api", "127.0.0.1:0"},
		{"--api-key", key},
		{"--api", "127.0.0.1:0", "--api-key", key},
		{"--api", "127.0.0.1:0", "--api-key", filepath.Join(dir, "missing")},
		{"--webhook", "ftp://example.com/x"},
		{"--webhook-secret", key},
		{"--webhook", "http://127.0.0.1:1/", "--webhook-secret", filepath.Join(dir, "missing")},
	} {
		data := filepath.Join(dir, "data")
		err := run(context.Background(), append([]string{"serve", "--data", data}, args...), io.Discard)
		if err == nil {
			t.Fatalf("serve %v started", args)
		}
		if _, statErr := os.Stat(data); !errors.Is(statErr, os.ErrNotExist) {
			t.Fatalf("serve %v: %v, but created %s", args, err, data)
		}
		if !strings.Contains(err.Error(), "api") && !strings.Contains(err.Error(), "webhook") {
			t.Fatalf("serve %v: unclear error %v", args, err)
		}
	}
}
