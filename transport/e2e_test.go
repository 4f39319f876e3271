package transport_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/client"
	"github.com/imsync/imsync/transport/transporttest"
	"github.com/imsync/imsync/transport/wire"
)

// testServer is a real server on a random loopback port.
type testServer struct {
	srv  *transport.Server
	key  *transport.Key
	addr string
	tls  *tls.Config // what clients trust: the server's own certificate
}

func startServer(t *testing.T, cfg transport.Config) *testServer {
	t.Helper()
	cfg.Service = transporttest.Service(t, actors.Config{})
	return listen(t, cfg)
}

// listen starts a gateway for cfg, whose Service is set.
func listen(t *testing.T, cfg transport.Config) *testServer {
	t.Helper()
	gw := transporttest.Listen(t, "", cfg)
	return &testServer{srv: gw.Server, key: gw.Key, addr: gw.Addr, tls: gw.TLS}
}

// restart closes ts's server and starts another on its address, over the
// same service, with its configuration as change leaves it.
func (ts *testServer) restart(t *testing.T, change func(*transport.Config)) *transport.Server {
	t.Helper()
	cfg := ts.srv.Config()
	ts.srv.Close()
	change(&cfg)
	srv, err := transport.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		err := srv.Listen(ts.addr) // the old socket may take a moment to go
		if err == nil {
			break
		}
		if time.Now().After(end) {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func (ts *testServer) dial(t *testing.T, user, device string, last uint64) *client.Client {
	t.Helper()
	return ts.dialTTL(t, user, device, time.Hour, last)
}

// dialTTL is dial with a token that expires after ttl.
func (ts *testServer) dialTTL(t *testing.T, user, device string, ttl time.Duration, last uint64) *client.Client {
	t.Helper()
	tok, err := ts.key.Mint(user, device, ttl, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial(ctx(t), client.Config{Addr: ts.addr, Token: tok, TLS: ts.tls, LastUserSeq: last})
	if err != nil {
		t.Fatalf("dial %s/%s: %v", user, device, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// next reads entries until one satisfies want.
func next(t *testing.T, c *client.Client, want func(client.Entry) bool) client.Entry {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case e, ok := <-c.Entries():
			if !ok {
				t.Fatal("entries closed")
			}
			if want(e) {
				return e
			}
		case <-deadline:
			t.Fatal("timed out waiting for an entry")
		}
	}
}

func pointerTo(conv string, seq uint64) func(client.Entry) bool {
	return func(e client.Entry) bool {
		p, ok := e.Message.(*eventspb.MessagePointer)
		return ok && p.ConversationId == conv && p.Seq == seq
	}
}

func TestEndToEnd(t *testing.T) {
	ts := startServer(t, transport.Config{})
	ann := ts.dial(t, "ann", "phone", 0)
	bobPhone := ts.dial(t, "bob", "phone", 0)
	bobLaptop := ts.dial(t, "bob", "laptop", 0)

	// A direct message reaches both of bob's devices, in order, inline.
	sent, err := ann.Send(ctx(t), client.Message{To: "bob", ClientMsgID: "m1", Text: "hi bob"})
	if err != nil {
		t.Fatal(err)
	}
	for _, dev := range []*client.Client{bobPhone, bobLaptop} {
		e := next(t, dev, pointerTo(sent.Conversation, sent.Seq))
		if p := e.Message.(*eventspb.MessagePointer); string(p.Message.GetBody()) != "hi bob" {
			t.Fatalf("pointer without the inline message: %v", p)
		}
	}
	again, err := ann.Send(ctx(t), client.Message{To: "bob", ClientMsgID: "m1", Text: "hi bob"})
	if err != nil || !again.Duplicate || again.Seq != sent.Seq {
		t.Fatalf("retried send: %v %v", again, err)
	}

	// The laptop goes offline; messages arrive meanwhile.
	offlineAt := bobLaptop.LastUserSeq()
	bobLaptop.Close()
	g, err := ann.CreateGroup(ctx(t), "", "trip", []string{"bob", "cat"})
	if err != nil {
		t.Fatal(err)
	}
	var last *wire.Sent
	for i := range 5 {
		if last, err = ann.Send(ctx(t), client.Message{Conversation: g, ClientMsgID: fmt.Sprint("g", i), Text: fmt.Sprint("plan ", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ann.Recall(ctx(t), g, last.Seq); err != nil {
		t.Fatal(err)
	}
	// Bob reads on his phone, once the recall reached it too.
	next(t, bobPhone, pointerTo(g, last.Seq))
	next(t, bobPhone, func(e client.Entry) bool {
		r, ok := e.Message.(*eventspb.RecallNotice)
		return ok && r.RecalledSeq == last.Seq
	})
	if m, err := bobPhone.MarkRead(ctx(t), g, last.Seq-1); err != nil || m != last.Seq-1 {
		t.Fatalf("read to %d: marker %d, %v", last.Seq-1, m, err)
	}
	// An older read answers with the marker that stays.
	if m, err := bobPhone.MarkRead(ctx(t), g, 1); err != nil || m != last.Seq-1 {
		t.Fatalf("read to 1 after %d: marker %d, %v", last.Seq-1, m, err)
	}

	// The laptop reconnects from where it was and gets exactly the missing
	// range: every entry once, gapless, ending with the read marker.
	laptop := ts.dial(t, "bob", "laptop", offlineAt)
	w := laptop.Welcome()
	if w.User != "bob" || w.UserSeq <= offlineAt || len(w.Changed) == 0 {
		t.Fatalf("welcome: %v", w)
	}
	var got []client.Entry
	for len(got) == 0 || got[len(got)-1].UserSeq < w.UserSeq {
		got = append(got, next(t, laptop, func(client.Entry) bool { return true }))
	}
	for i, e := range got {
		if e.UserSeq != offlineAt+uint64(i)+1 {
			t.Fatalf("entry %d has user seq %d after %d: not the missing range", i, e.UserSeq, offlineAt)
		}
	}
	if _, ok := got[len(got)-1].Message.(*eventspb.ReadMarkerMoved); !ok {
		t.Fatalf("last entry %T, want the read marker from the phone", got[len(got)-1].Message)
	}
	if err := laptop.Ack(ctx(t), w.UserSeq); err != nil {
		t.Fatal(err)
	}

	// Conversation list, history, first unread.
	list, err := laptop.Conversations(ctx(t))
	if err != nil || len(list.Conversations) != 2 {
		t.Fatalf("bob's list: %v %v", list, err)
	}
	h, err := laptop.History(ctx(t), g, client.HistoryQuery{Limit: 10})
	if err != nil || len(h.Messages) != 5 || !h.Messages[0].Recalled {
		t.Fatalf("history: %v %v", h, err)
	}
	unread, err := laptop.History(ctx(t), g, client.HistoryQuery{FirstUnread: true, Limit: 10})
	if err != nil || len(unread.Messages) != 1 || unread.Messages[0].Seq != last.Seq {
		t.Fatalf("first unread: %v %v", unread, err)
	}

	// Errors travel with their codes.
	_, err = laptop.Send(ctx(t), client.Message{Conversation: "nope", Text: "x"})
	if client.CodeOf(err) != client.CodeNotFound {
		t.Fatalf("send to an unknown conversation: %v", err)
	}
	_, err = laptop.Send(ctx(t), client.Message{Conversation: g, Body: make([]byte, 20000)})
	if client.CodeOf(err) != client.CodeTooLarge {
		t.Fatalf("oversize message: %v", err)
	}
}

func TestBadTokens(t *testing.T) {
	ts := startServer(t, transport.Config{})
	other := transport.NewKey([]byte("some-other-key-some-other-key-xx"))
	good, _ := ts.key.Mint("ann", "phone", time.Hour, time.Now())
	expired, _ := ts.key.Mint("ann", "phone", time.Second, time.Now().Add(-time.Hour))
	wrongKey, _ := other.Mint("ann", "phone", time.Hour, time.Now())
	for name, tok := range map[string]string{"expired": expired, "wrong key": wrongKey, "forged": good[:len(good)-4] + "AAAA", "empty": ""} {
		_, err := client.Dial(ctx(t), client.Config{Addr: ts.addr, Token: tok, TLS: ts.tls, NoReconnect: true})
		if client.CodeOf(err) != wire.CodeUnauthorized {
			t.Errorf("%s token: %v", name, err)
		}
	}
	// A client that does not trust the certificate is refused by TLS.
	if _, err := client.Dial(ctx(t), client.Config{Addr: ts.addr, Token: good, TLS: &tls.Config{}, NoReconnect: true}); err == nil {
		t.Fatal("connected without trusting the server certificate")
	}
	// The server still serves others.
	c := ts.dial(t, "ann", "phone", 0)
	if _, err := c.Conversations(ctx(t)); err != nil {
		t.Fatal(err)
	}
}

// TestBadFrames sends garbage on a raw QUIC connection: each bad stream gets
// its error and the connection, and others, keep being served.
func TestBadFrames(t *testing.T) {
	ts := startServer(t, transport.Config{})
	qc, _, _ := ts.rawLogin(t, "eve", "raw")
	cases := map[string][]byte{
		"oversize":  {0xff, 0xff, 0xff, 0x0f}, // 256 MiB announced
		"malformed": {3, 0xff, 0xff, 0xff},
		"unknown":   mustFrame(t, &wire.Request{Id: 9}),
		"truncated": {10, 1, 2},
	}
	for name, raw := range cases {
		st, err := qc.OpenStreamSync(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		st.Write(raw)
		st.Close()
		var res wire.Response
		if err := wire.NewReader(st, 0).Read(&res); err != nil {
			t.Fatalf("%s: no answer: %v", name, err)
		}
		want := uint32(wire.CodeBadFrame)
		if name == "unknown" {
			want = wire.CodeUnknown
		}
		if res.GetError().GetCode() != want {
			t.Fatalf("%s: answered %v, want code %d", name, &res, want)
		}
	}
	// The same connection still serves a good request.
	st, _ := qc.OpenStreamSync(ctx(t))
	wire.WriteFrame(st, &wire.Request{Id: 1, Op: &wire.Request_Conversations{Conversations: &wire.ListConversations{}}})
	st.Close()
	var res wire.Response
	if err := wire.NewReader(st, 0).Read(&res); err != nil || res.GetConversations() == nil {
		t.Fatalf("good request after bad ones: %v %v", &res, err)
	}
}

// rawLogin logs a device in over a bare QUIC connection (no client
// library), for tests that misbehave on purpose; it returns the server's
// push stream and a reader of it.
func (ts *testServer) rawLogin(t *testing.T, user, device string) (*quic.Conn, *quic.ReceiveStream, *wire.Reader) {
	t.Helper()
	return ts.rawLoginFrom(t, nil, user, device)
}

// rawLoginFrom is rawLogin from a given local address (nil: any).
func (ts *testServer) rawLoginFrom(t *testing.T, local *net.UDPAddr, user, device string) (*quic.Conn, *quic.ReceiveStream, *wire.Reader) {
	t.Helper()
	tok, _ := ts.key.Mint(user, device, time.Hour, time.Now())
	tc := ts.tls.Clone()
	tc.NextProtos = []string{transport.ALPN}
	udp, err := net.ListenUDP("udp", local)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { udp.Close() })
	raddr, err := net.ResolveUDPAddr("udp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	qc, err := quic.Dial(ctx(t), udp, raddr, tc, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	control, err := qc.OpenStreamSync(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	wire.WriteFrame(control, &wire.Hello{Token: tok})
	rd := wire.NewReader(control, 0)
	var welcome wire.ServerPush
	if err := rd.Read(&welcome); err != nil || welcome.GetWelcome() == nil {
		t.Fatalf("welcome: %v %v", &welcome, err)
	}
	push, err := qc.AcceptUniStream(ctx(t))
	if err != nil {
		t.Fatalf("no push stream: %v", err)
	}
	return qc, push, wire.NewReader(push, 0)
}

func mustFrame(t *testing.T, r *wire.Request) []byte {
	b, err := wire.AppendFrame(nil, r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSlowDeviceBounded: a device that never reads its notifications does
// not make the server queue them: once its stream is full, the queue
// coalesces into "pull from here", and the device still learns the newest
// seq when it reads again.
func TestSlowDeviceBounded(t *testing.T) {
	ts := startServer(t, transport.Config{PushQueue: 16, RequestsPerSecond: 1e6})
	qc, pushes, rd := ts.rawLogin(t, "bob", "slow")
	var err error
	ann := ts.dial(t, "ann", "phone", 0)
	const n = 1500
	body := make([]byte, 1000) // inlined: about 1 KB per notification
	var last *wire.Sent
	for i := range n {
		if last, err = ann.Send(ctx(t), client.Message{To: "bob", ClientMsgID: fmt.Sprint(i), Body: body}); err != nil {
			t.Fatal(err)
		}
	}
	// Bob's timeline: joined + n messages. Wait until the server has it all.
	want := uint64(n + 1)
	bob := ts.dial(t, "bob", "phone", want-1)
	next(t, bob, func(e client.Entry) bool { return e.UserSeq == want })
	_ = last

	// Now read what the slow device was sent.
	frames, newest := 0, uint64(0)
	for newest < want {
		pushes.SetReadDeadline(time.Now().Add(5 * time.Second))
		var p wire.ServerPush
		if err := rd.Read(&p); err != nil {
			t.Fatalf("after %d notifications (newest %d): %v", frames, newest, err)
		}
		frames++
		newest = max(newest, p.GetNotify().GetUserSeq())
	}
	if frames >= n {
		t.Fatalf("the slow device was sent %d notifications for %d entries: nothing was coalesced", frames, n)
	}
	// And the server never held more for it than PushQueue notifications
	// of about 1 KB each, though 1,500 came while it did not read.
	notes, bytes := ts.srv.QueuePeak()
	if notes == 0 || notes > 16 || bytes > 16*(len(body)+256) {
		t.Fatalf("a connection had %d notifications (%d bytes) queued at once; the bound is 16 of about 1 KB", notes, bytes)
	}

	// A new device pulls the whole timeline: pages come compressed, and
	// every entry arrives once, in order.
	st, err := qc.OpenStreamSync(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	wire.WriteFrame(st, &wire.Request{Id: 1, Op: &wire.Request_Sync{Sync: &wire.SyncPull{Limit: 500, Zstd: true}}})
	st.Close()
	var res wire.Response
	if err := wire.NewReader(st, 0).Read(&res); err != nil || res.GetSyncZstd() == nil {
		t.Fatalf("a 500-entry page came uncompressed: %v %v", res.GetError(), err)
	}
	tablet := ts.dial(t, "bob", "tablet", 0)
	for i := uint64(1); i <= want; i++ {
		e := next(t, tablet, func(client.Entry) bool { return true })
		if e.UserSeq != i {
			t.Fatalf("tablet got %d, want %d", e.UserSeq, i)
		}
	}
	t.Logf("%d entries reached the slow device as %d notifications", want, frames)
}

// TestRateLimitAndConnectionLimit: the request limiter runs on the server's
// clock (Config.Now), so the test drives it: the burst passes, the rest is
// refused while the clock stands still, and exactly the refill passes once
// it moves.
func TestRateLimitAndConnectionLimit(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	ts := startServer(t, transport.Config{RequestsPerSecond: 1, RequestBurst: 5, MaxConnsPerUser: 2, Now: clock})
	qc, _, _ := ts.rawLogin(t, "ann", "phone") // a bare connection: no request but the test's own
	round := func(n int) (passed, limited int) {
		t.Helper()
		st, err := qc.OpenStreamSync(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			wire.WriteFrame(st, &wire.Request{Id: uint64(i + 1), Op: &wire.Request_Conversations{Conversations: &wire.ListConversations{}}})
		}
		st.Close()
		rd := wire.NewReader(st, 0)
		for range n {
			var res wire.Response
			if err := rd.Read(&res); err != nil {
				t.Fatalf("after %d answers: %v", passed+limited, err)
			}
			switch res.GetError().GetCode() {
			case 0:
				passed++
			case wire.CodeRateLimited:
				limited++
			default:
				t.Fatalf("answer %v", &res)
			}
		}
		return passed, limited
	}
	if p, l := round(20); p != 5 || l != 15 {
		t.Fatalf("with the clock standing: %d passed, %d limited; want the burst of 5, then 15 limited", p, l)
	}
	if p, l := round(5); p != 0 || l != 5 {
		t.Fatalf("still standing: %d passed, %d limited; want none to pass", p, l)
	}
	now.Add(int64(3 * time.Second))
	if p, l := round(10); p != 3 || l != 7 {
		t.Fatalf("3 s later: %d passed, %d limited; want the 3 requests refilled", p, l)
	}

	ts.dial(t, "ann", "laptop", 0)
	tok, _ := ts.key.Mint("ann", "tablet", time.Hour, time.Now())
	if _, err := client.Dial(ctx(t), client.Config{Addr: ts.addr, Token: tok, TLS: ts.tls, NoReconnect: true}); client.CodeOf(err) != wire.CodeTooMany {
		t.Fatalf("third connection of ann: %v", err)
	}
}

// TestReconnectResumes: the gateway restarts under a connected device; the
// client reconnects by itself and resumes its timeline without a gap.
func TestReconnectResumes(t *testing.T) {
	ts := startServer(t, transport.Config{})
	bob := ts.dial(t, "bob", "phone", 0)
	ann := ts.dial(t, "ann", "phone", 0)
	first, err := ann.Send(ctx(t), client.Message{To: "bob", ClientMsgID: "1", Text: "one"})
	if err != nil {
		t.Fatal(err)
	}
	next(t, bob, pointerTo(first.Conversation, first.Seq))

	// Restart the gateway on the same address, over the same service.
	ts.restart(t, func(*transport.Config) {})

	// Both clients reconnect; the send is retried by the caller until then.
	var second *wire.Sent
	for end := time.Now().Add(15 * time.Second); second == nil; {
		c, cancel := context.WithTimeout(context.Background(), time.Second)
		second, err = ann.Send(c, client.Message{To: "bob", ClientMsgID: "2", Text: "two"})
		cancel()
		if time.Now().After(end) {
			t.Fatalf("no reconnect: %v", err)
		}
	}
	e := next(t, bob, func(client.Entry) bool { return true })
	if p, ok := e.Message.(*eventspb.MessagePointer); !ok || p.Seq != second.Seq || e.UserSeq != 3 {
		t.Fatalf("after the reconnect bob got %d %v, want user seq 3 = message %d", e.UserSeq, e.Message, second.Seq)
	}
}
