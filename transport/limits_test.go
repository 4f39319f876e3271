package transport_test

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/client"
	"github.com/imsync/imsync/transport/wire"
)

// rawDial opens a bare QUIC connection to the server, not logged in.
func (ts *testServer) rawDial(t *testing.T) *quic.Conn {
	t.Helper()
	tc := ts.tls.Clone()
	tc.NextProtos = []string{transport.ALPN}
	qc, err := quic.DialAddr(ctx(t), ts.addr, tc, &quic.Config{MaxIdleTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	return qc
}

// liveHeap is the heap in use after a collection.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// waitFor polls cond until it holds; on timeout it fails, showing what the
// optional last functions return (the last value seen, for example).
func waitFor(t *testing.T, total time.Duration, what string, cond func() bool, last ...func() any) {
	t.Helper()
	for end := time.Now().Add(total); !cond(); {
		if time.Now().After(end) {
			var seen []any
			for _, f := range last {
				seen = append(seen, f())
			}
			t.Fatalf("timed out waiting for %s (last seen: %v)", what, seen)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func body16k(i int) []byte {
	return append([]byte(fmt.Sprintf("%06d", i)), bytes.Repeat([]byte("x"), 16<<10-6)...)
}

// Defect 1: 70 groups with a 16 KiB message each make the victim's
// conversation list 1.1 MB. Login still works, on a new device and on an
// up-to-date one; the rest of the list comes page by page.
func TestLoginWithManyLargeConversations(t *testing.T) {
	ts := startServer(t, transport.Config{})
	mal := ts.dial(t, "mal", "laptop", 0)
	const groups = 70
	for i := range groups {
		g, err := mal.CreateGroup(ctx(t), "", fmt.Sprint("g", i), []string{"vic"})
		if err != nil {
			t.Fatal(err)
		}
		// a short message travels inline; its edit to 16 KiB becomes the
		// latest message of the victim's list line
		sent, err := mal.Send(ctx(t), client.Message{Conversation: g, ClientMsgID: fmt.Sprint("m", i), Text: "hi"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := mal.Edit(ctx(t), g, sent.Seq, body16k(i)); err != nil {
			t.Fatal(err)
		}
	}
	// Fanout follows the acknowledgement: wait until the victim has them all.
	vic := ts.dial(t, "vic", "phone", 0)
	var all *eventspb.ConversationList
	waitFor(t, 20*time.Second, "the victim's 70 conversations", func() bool {
		l, err := vic.Conversations(ctx(t))
		if err != nil {
			t.Fatalf("conversations: %v", err)
		}
		all = l
		if len(l.Conversations) != groups {
			return false
		}
		for _, s := range l.Conversations {
			if len(s.LatestMessage.GetBody()) != 16<<10 {
				return false
			}
		}
		return true
	})
	seen := map[string]bool{}
	for _, s := range all.Conversations {
		if seen[s.ConversationId] {
			t.Fatalf("%s listed twice", s.ConversationId)
		}
		seen[s.ConversationId] = true
	}
	// a new device: its Welcome is a first page that fits, the rest follows
	fresh := ts.dial(t, "vic", "laptop", 0)
	w := fresh.Welcome()
	if !w.MoreChanged || len(w.Changed) == 0 || len(w.Changed) >= groups {
		t.Fatalf("welcome of a new device: %d changed, more %v", len(w.Changed), w.MoreChanged)
	}
	changed, err := fresh.Changed(ctx(t))
	if err != nil || len(changed.Conversations) != groups {
		t.Fatalf("changed since login: %d lines, %v", len(changed.Conversations), err)
	}
	// an up-to-date device: nothing changed
	upToDate := ts.dial(t, "vic", "tablet", all.UserSeq)
	if w := upToDate.Welcome(); len(w.Changed) != 0 || w.MoreChanged {
		t.Fatalf("welcome of an up-to-date device: %d changed, more %v", len(w.Changed), w.MoreChanged)
	}
	// one more message: exactly that conversation changed
	if _, err := mal.Send(ctx(t), client.Message{Conversation: all.Conversations[groups-1].ConversationId, ClientMsgID: "late", Text: "late"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the late message", func() bool {
		l, err := vic.Conversations(ctx(t))
		return err == nil && l.UserSeq > all.UserSeq
	})
	behind := ts.dial(t, "vic", "watch", all.UserSeq)
	if w := behind.Welcome(); len(w.Changed) != 1 || w.Changed[0].ConversationId != all.Conversations[groups-1].ConversationId || w.MoreChanged {
		t.Fatalf("welcome after one message: %v", w.Changed)
	}
}

// Defect 2 and 12: history --limit 500 of 16 KiB messages answers what
// fits and says there is more; paging gets every message once; after 0
// means from the first message.
func TestHistoryPagesFitTheFrame(t *testing.T) {
	ts := startServer(t, transport.Config{})
	ann := ts.dial(t, "ann", "phone", 0)
	g, err := ann.CreateGroup(ctx(t), "", "big", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	const n = 100 // 1.6 MB of messages
	for i := range n {
		if _, err := ann.Send(ctx(t), client.Message{Conversation: g, ClientMsgID: fmt.Sprint(i), Body: body16k(i)}); err != nil {
			t.Fatal(err)
		}
	}
	h, err := ann.History(ctx(t), g, client.HistoryQuery{Limit: 500})
	if err != nil {
		t.Fatalf("history --limit 500: %v", err)
	}
	if !h.More || len(h.Messages) == 0 || len(h.Messages) >= n {
		t.Fatalf("first page: %d messages, more %v", len(h.Messages), h.More)
	}
	got := map[uint64]bool{}
	for {
		for _, m := range h.Messages {
			if got[m.Seq] {
				t.Fatalf("seq %d twice", m.Seq)
			}
			got[m.Seq] = true
		}
		if !h.More {
			break
		}
		if h, err = ann.History(ctx(t), g, client.HistoryQuery{Before: h.Messages[len(h.Messages)-1].Seq, Limit: 500}); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != n {
		t.Fatalf("paged %d messages, want %d", len(got), n)
	}
	// after 0: the first messages (seq 1 is the creation), oldest first
	first, err := ann.History(ctx(t), g, client.HistoryQuery{FromStart: true, Limit: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Messages) != 3 || first.Messages[0].Seq != 2 || first.Messages[2].Seq != 4 || !first.More {
		t.Fatalf("from the start: %v more %v", seqsOf(first), first.More)
	}
	last, err := ann.History(ctx(t), g, client.HistoryQuery{After: n - 1, Limit: 10})
	if err != nil || len(last.Messages) != 2 || last.More {
		t.Fatalf("the last page: %v more %v, %v", seqsOf(last), last.More, err)
	}
	// bob never read: his first unread page starts at the first message
	bob := ts.dial(t, "bob", "phone", 0)
	unread, err := bob.History(ctx(t), g, client.HistoryQuery{FirstUnread: true, Limit: 2})
	if err != nil || len(unread.Messages) != 2 || unread.Messages[0].Seq != 2 || !unread.More {
		t.Fatalf("first unread with no read marker: %v more %v, %v", seqsOf(unread), unread.More, err)
	}
	// before and from the start at once is bad input
	if _, err := ann.History(ctx(t), g, client.HistoryQuery{Before: 10, FromStart: true, Limit: 2}); client.CodeOf(err) != client.CodeInvalid {
		t.Fatalf("before with from_start: %v", err)
	}
}

func seqsOf(h *eventspb.History) []uint64 {
	var out []uint64
	for _, m := range h.Messages {
		out = append(out, m.Seq)
	}
	return out
}

// Defect 2: a sync page of 1,000 entries of incompressible 1 KiB messages
// is over 1 MiB: it comes cut, says there is more, and pages to the end.
func TestSyncPagesFitTheFrame(t *testing.T) {
	ts := startServer(t, transport.Config{RequestsPerSecond: 100_000, RequestBurst: 100_000})
	ann := ts.dial(t, "ann", "phone", 0)
	conv, err := ann.OpenDirect(ctx(t), "bob")
	if err != nil {
		t.Fatal(err)
	}
	const n = 1000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				body := make([]byte, 1<<10)
				rand.Read(body)
				if _, err := ann.Send(ctx(t), client.Message{Conversation: conv, ClientMsgID: fmt.Sprint(i), Body: body}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	bob := ts.dial(t, "bob", "phone", 0)
	var page *eventspb.SyncPage
	waitFor(t, 20*time.Second, "bob's 1,000 entries", func() bool {
		var err error
		page, err = bob.Sync(ctx(t), 0, 1000)
		if err != nil {
			t.Fatalf("sync of 1,000 entries: %v", err)
		}
		return page.LastUserSeq >= n
	})
	if !page.More || len(page.Entries) == 0 || len(page.Entries) >= n {
		t.Fatalf("first page: %d entries, more %v", len(page.Entries), page.More)
	}
	next := uint64(0)
	for {
		for _, e := range page.Entries {
			if e.UserSeq != next+1 {
				t.Fatalf("entry %d after %d", e.UserSeq, next)
			}
			next = e.UserSeq
		}
		if !page.More {
			break
		}
		if page, err = bob.Sync(ctx(t), next, 1000); err != nil {
			t.Fatal(err)
		}
	}
	if next != page.LastUserSeq {
		t.Fatalf("paged to %d of %d", next, page.LastUserSeq)
	}
}

// Defect 3a: half-sent frames cost what was sent, not what was announced;
// frames over the connection's read budget are refused; a started frame
// that stalls is refused after the frame timeout.
func TestHalfSentFramesBounded(t *testing.T) {
	ts := startServer(t, transport.Config{FrameTimeout: 3 * time.Second})
	const conns, streams = 8, 60
	// announce 1 MiB, send 64 KiB of it (one buffer for all streams: the
	// heap measured is the server's)
	half := append(binary.AppendUvarint(nil, wire.DefaultMaxFrameSize), make([]byte, 64<<10)...)
	before := liveHeap()
	var sts []*quic.Stream
	for i := range conns {
		qc, _, _ := ts.rawLogin(t, "mal", fmt.Sprint("d", i))
		for range streams {
			st, err := qc.OpenStreamSync(ctx(t))
			if err != nil {
				t.Fatal(err)
			}
			go st.Write(half)
			sts = append(sts, st)
		}
	}
	// 480 frames announced 480 MiB. The server holds at most 4 MiB per
	// connection (read budget, receive window, streams); the heap measured
	// also holds the attacking client's side, hence twice that.
	bound := uint64(conns * 8 << 20)
	var grew uint64
	refused := 0
	deadline := time.Now().Add(60 * time.Second) // generous for a busy machine
	for i, st := range sts {
		if i%20 == 0 {
			if h := liveHeap(); h > before {
				grew = max(grew, h-before)
			}
		}
		st.SetReadDeadline(deadline)
		var res wire.Response
		if err := wire.NewReader(st, 0).Read(&res); err != nil {
			t.Fatalf("a half-sent frame got no answer: %v", err)
		}
		e := res.GetError()
		if e == nil || e.Code != wire.CodeBadFrame {
			t.Fatalf("a half-sent frame answered %v", &res)
		}
		if !strings.Contains(e.Message, "budget") && !strings.Contains(e.Message, "stalled") {
			t.Fatalf("refusal says %q", e.Message)
		}
		if strings.Contains(e.Message, "budget") {
			refused++
		}
	}
	t.Logf("heap growth %d KiB, bound %d KiB, %d frames refused for the budget", grew>>10, bound>>10, refused)
	if grew > bound {
		t.Fatalf("the heap grew by %d MiB for half-sent frames, bound %d MiB", grew>>20, bound>>20)
	}
	if refused == 0 {
		t.Fatalf("no frame was refused for the read budget")
	}
	// the connections still serve
	c := ts.dial(t, "mal", "phone", 0)
	if _, err := c.OpenDirect(ctx(t), "ann"); err != nil {
		t.Fatal(err)
	}
}

// Defect 3b: a client that asks for large answers and never reads them
// holds the server to its write budget per connection; other users log
// in meanwhile.
func TestUnreadAnswersBounded(t *testing.T) {
	ts := startServer(t, transport.Config{WriteTimeout: 2 * time.Second})
	mal := ts.dial(t, "mal", "phone", 0)
	g, err := mal.CreateGroup(ctx(t), "", "big", []string{"ann"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 60 { // about 1 MB of history
		if _, err := mal.Send(ctx(t), client.Message{Conversation: g, ClientMsgID: fmt.Sprint(i), Body: body16k(i)}); err != nil {
			t.Fatal(err)
		}
	}
	before := liveHeap()
	const conns, streams = 4, 60
	for i := range conns {
		qc, _, _ := ts.rawLogin(t, "mal", fmt.Sprint("d", i))
		for j := range streams {
			st, err := qc.OpenStreamSync(ctx(t))
			if err != nil {
				t.Fatal(err)
			}
			req := &wire.Request{Id: uint64(j + 1), Op: &wire.Request_History{History: &wire.HistoryPage{Conversation: g, Limit: 1000}}}
			if err := wire.WriteFrame(st, req); err != nil {
				t.Fatal(err)
			}
			st.Close() // and never read
		}
	}
	// 240 answers of ~770 KB would be 180 MB (twice that with their decoded
	// pages). The server holds at most 4 MiB per connection (write budget,
	// the pages being encoded); the heap measured also holds the
	// attacking client's side, hence twice that.
	bound := uint64(conns * 8 << 20)
	var grew uint64
	loggedIn := false
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); {
		if h := liveHeap(); h > before {
			grew = max(grew, h-before)
		}
		if !loggedIn {
			ann := ts.dial(t, "ann", "phone", 0) // fails the test if login does not work
			if _, err := ann.History(ctx(t), g, client.HistoryQuery{Limit: 5}); err != nil {
				t.Fatalf("another user's history while answers pile up: %v", err)
			}
			loggedIn = true
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("heap growth %d KiB, bound %d KiB", grew>>10, bound>>10)
	if grew > bound {
		t.Fatalf("the heap grew by %d MiB for unread answers, bound %d MiB", grew>>20, bound>>20)
	}
}

// Before login: Hello is small, and connections not yet welcomed are
// capped server-wide.
func TestPreAuthLimits(t *testing.T) {
	ts := startServer(t, transport.Config{MaxUnauthenticated: 3, HandshakeTimeout: 30 * time.Second})
	// a Hello over 4 KiB is refused
	qc := ts.rawDial(t)
	control, err := qc.OpenStreamSync(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := wire.WriteFrame(control, &wire.Hello{Token: strings.Repeat("t", 5<<10)}); err != nil {
		t.Fatal(err)
	}
	var p wire.ServerPush
	if err := wire.NewReader(control, 0).Read(&p); err != nil || p.GetError().GetCode() != wire.CodeBadFrame {
		t.Fatalf("a 5 KiB Hello: %v, %v", &p, err)
	}
	// its slot is freed when the server closes it, a moment after the answer
	waitFor(t, 10*time.Second, "the refused Hello's slot freed", func() bool { return ts.srv.Preauth() == 0 })
	// three connections that never say Hello fill the pre-login slots
	var silent []*quic.Conn
	for range 3 {
		qc := ts.rawDial(t)
		st, err := qc.OpenStreamSync(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		st.Write([]byte{0x10}) // a Hello of 16 bytes, never finished
		silent = append(silent, qc)
	}
	waitFor(t, 10*time.Second, "3 pre-login slots", func() bool { return ts.srv.Preauth() == 3 })
	tok, err := ts.key.Mint("ann", "phone", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dial := func() error {
		c, err := client.Dial(ctx(t), client.Config{Addr: ts.addr, Token: tok, TLS: ts.tls, NoReconnect: true})
		if err == nil {
			c.Close()
		}
		return err
	}
	var last error
	waitFor(t, 10*time.Second, "a refusal while the slots are full", func() bool {
		var ae *quic.ApplicationError
		last = dial()
		return errors.As(last, &ae) && ae.ErrorCode == wire.CodeBusy
	}, func() any { return last })
	silent[0].CloseWithError(0, "")
	waitFor(t, 10*time.Second, "a login once a slot is free", func() bool { return dial() == nil })
}

// One network prefix whose connections never log in fills only its own
// pre-login slots: an address of that /24 is refused, a user from another
// /24 logs in meanwhile.
func TestPreAuthPerAddress(t *testing.T) {
	ts := startServer(t, transport.Config{MaxUnauthenticatedPerPrefix: 3, HandshakeTimeout: 30 * time.Second})
	for range 3 {
		qc := ts.rawDial(t)
		st, err := qc.OpenStreamSync(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		st.Write([]byte{0x10}) // a Hello of 16 bytes, never finished
	}
	waitFor(t, 10*time.Second, "3 pre-login slots", func() bool { return ts.srv.Preauth() == 3 })
	tok, err := ts.key.Mint("ann", "phone", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var last error
	waitFor(t, 10*time.Second, "a refusal from the address that filled its slots", func() bool {
		c, err := client.Dial(ctx(t), client.Config{Addr: ts.addr, Token: tok, TLS: ts.tls, NoReconnect: true})
		if err == nil {
			c.Close()
		}
		last = err
		var ae *quic.ApplicationError
		return errors.As(err, &ae) && ae.ErrorCode == wire.CodeBusy
	}, func() any { return last })
	// 127.0.0.2 is in the same /24: refused too.
	if code := stalledFrom(t, ts, net.IPv4(127, 0, 0, 2)).closedWith(t); code != wire.CodeBusy {
		t.Fatalf("another address of the full /24: closed with %d, want %d", code, wire.CodeBusy)
	}
	// 127.0.1.1 is in another /24: its login is not delayed.
	ts.rawLoginFrom(t, &net.UDPAddr{IP: net.IPv4(127, 0, 1, 1)}, "bob", "phone")
}
