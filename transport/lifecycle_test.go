package transport_test

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/client"
	"github.com/imsync/imsync/transport/wire"
)

// Two connections of one device each get the device's pushes; when one
// closes, the other keeps receiving.
func TestSameDeviceConnectionsBothReceive(t *testing.T) {
	ts := startServer(t, transport.Config{})
	app := ts.dial(t, "bob", "phone", 0)
	cli := ts.dial(t, "bob", "phone", 0) // e.g. one CLI command with the app's token
	ann := ts.dial(t, "ann", "phone", 0)

	first, err := ann.Send(ctx(t), client.Message{To: "bob", ClientMsgID: "1", Text: "one"})
	if err != nil {
		t.Fatal(err)
	}
	next(t, app, pointerTo(first.Conversation, first.Seq))
	next(t, cli, pointerTo(first.Conversation, first.Seq))

	cli.Close()
	second, err := ann.Send(ctx(t), client.Message{To: "bob", ClientMsgID: "2", Text: "two"})
	if err != nil {
		t.Fatal(err)
	}
	next(t, app, pointerTo(second.Conversation, second.Seq))
}

// halfOpenLogin logs a device in over a UDP socket of its own and then
// closes that socket: the server is left with a connection whose peer is
// gone without a CONNECTION_CLOSE, as after a phone lost its network.
func (ts *testServer) halfOpenLogin(t *testing.T, user, device string) {
	t.Helper()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	t.Cleanup(func() { tr.Close() })
	raddr, err := net.ResolveUDPAddr("udp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := ts.key.Mint(user, device, time.Hour, time.Now())
	tc := ts.tls.Clone()
	tc.NextProtos = []string{transport.ALPN}
	qc, err := tr.Dial(ctx(t), raddr, tc, &quic.Config{MaxIdleTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	control, err := qc.OpenStreamSync(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	wire.WriteFrame(control, &wire.Hello{Token: tok})
	var welcome wire.ServerPush
	if err := wire.NewReader(control, 0).Read(&welcome); err != nil || welcome.GetWelcome() == nil {
		t.Fatalf("welcome: %v %v", &welcome, err)
	}
	udp.Close() // gone, without a word
}

// A user at the connection cap reconnects a device whose old connection
// is half-open: the new connection replaces it. A device with no
// connection is still refused at the cap, and other devices keep theirs.
func TestReconnectReplacesHalfOpenConnection(t *testing.T) {
	ts := startServer(t, transport.Config{MaxConnsPerUser: 2, IdleTimeout: time.Minute})
	ts.halfOpenLogin(t, "bob", "phone")
	laptop := ts.dial(t, "bob", "laptop", 0) // bob is at the cap now

	tok, _ := ts.key.Mint("bob", "tablet", time.Hour, time.Now())
	if _, err := client.Dial(ctx(t), client.Config{Addr: ts.addr, Token: tok, TLS: ts.tls, NoReconnect: true}); client.CodeOf(err) != wire.CodeTooMany {
		t.Fatalf("a third device at the cap: %v, want code %d", err, wire.CodeTooMany)
	}

	phone := ts.dial(t, "bob", "phone", 0) // refused with "too many" before
	ann := ts.dial(t, "ann", "phone", 0)
	sent, err := ann.Send(ctx(t), client.Message{To: "bob", ClientMsgID: "1", Text: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	next(t, phone, pointerTo(sent.Conversation, sent.Seq))
	next(t, laptop, pointerTo(sent.Conversation, sent.Seq))
	if _, err := laptop.Conversations(ctx(t)); err != nil {
		t.Fatalf("the laptop lost its connection: %v", err)
	}
}

// A Send over the frame limit fails with a clear error, and the client
// keeps working: the next Send on it succeeds.
func TestOversizeSendKeepsSession(t *testing.T) {
	ts := startServer(t, transport.Config{})
	ann := ts.dial(t, "ann", "phone", 0)
	_, err := ann.Send(ctx(t), client.Message{To: "bob", ClientMsgID: "big", Body: make([]byte, 1<<20)})
	if err == nil || client.CodeOf(err) != client.CodeTooLarge || !strings.Contains(err.Error(), "frame limit") {
		t.Fatalf("1 MiB send: %v, want code %d about the frame limit", err, client.CodeTooLarge)
	}
	for i, id := range []string{"small-1", "small-2"} {
		if _, err := ann.Send(ctx(t), client.Message{To: "bob", ClientMsgID: id, Text: "fits"}); err != nil {
			t.Fatalf("send %d after the oversize one: %v", i+1, err)
		}
	}
}

// A connection ends when its token expires; the client then reports the
// expiry instead of reconnecting.
func TestTokenExpiryEndsConnection(t *testing.T) {
	ts := startServer(t, transport.Config{})
	ann := ts.dialTTL(t, "ann", "phone", 3*time.Second, 0)
	if _, err := ann.Conversations(ctx(t)); err != nil {
		t.Fatal(err)
	}
	var last error
	waitFor(t, 10*time.Second, "the connection to end at the token's expiry", func() bool {
		c, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, last = ann.Conversations(c)
		return last != nil && !errors.Is(last, context.DeadlineExceeded)
	})
	// The server's close, not a refused login after some other loss.
	var we *wire.Error
	if !errors.As(last, &we) || we.Code != wire.CodeUnauthorized || we.Message != "token expired" {
		t.Fatalf("after expiry: %v, want code %d \"token expired\"", last, wire.CodeUnauthorized)
	}
	// And it stays that way, at once, without waiting for a reconnect.
	c, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := ann.Send(c, client.Message{To: "bob", ClientMsgID: "late", Text: "x"}); client.CodeOf(err) != wire.CodeUnauthorized {
		t.Fatalf("send after expiry: %v", err)
	}
}

// waitEntriesClosed reads c's entries until the channel closes.
func waitEntriesClosed(t *testing.T, c *client.Client) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case _, ok := <-c.Entries():
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("Entries still open")
		}
	}
}

// A client whose token expires stops for good: Entries and Changes close,
// and Err says why.
func TestTokenExpiryClosesEntries(t *testing.T) {
	ts := startServer(t, transport.Config{})
	ann := ts.dialTTL(t, "ann", "phone", 2*time.Second, 0)
	if err := ann.Err(); err != nil {
		t.Fatalf("Err of a running client: %v", err)
	}
	waitEntriesClosed(t, ann)
	if _, ok := <-ann.Changes(); ok {
		t.Fatal("Changes still open after Entries closed")
	}
	var we *wire.Error
	if err := ann.Err(); !errors.As(err, &we) || we.Code != wire.CodeUnauthorized || we.Message != "token expired" {
		t.Fatalf("Err after expiry: %v, want code %d \"token expired\"", err, wire.CodeUnauthorized)
	}
}

// A client that reconnects to a server with another key is refused (102)
// and stops for good: Entries closes and Err says why.
func TestRefusedReconnectClosesEntries(t *testing.T) {
	ts := startServer(t, transport.Config{})
	ann := ts.dial(t, "ann", "phone", 0)
	other, err := transport.LoadOrCreateKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ts.restart(t, func(cfg *transport.Config) { cfg.Key = other }) // the same service and address, another key
	waitEntriesClosed(t, ann)
	if err := ann.Err(); client.CodeOf(err) != wire.CodeUnauthorized {
		t.Fatalf("Err after a refused reconnect: %v, want code %d", err, wire.CodeUnauthorized)
	}
}

// A client that never reads its control stream while provoking error
// frames on it (acks beyond its newest seq) loses its connection once a
// write waits WriteTimeout; the server never blocks on it for good.
func TestUnreadControlStreamEndsConnection(t *testing.T) {
	ts := startServer(t, transport.Config{WriteTimeout: time.Second, RequestsPerSecond: 1e9, RequestBurst: 1 << 30})
	tok, _ := ts.key.Mint("eve", "raw", time.Hour, time.Now())
	qc := floodUnreadErrors(t, ts, tok)
	select {
	case <-qc.Context().Done():
		var ae *quic.ApplicationError
		if err := context.Cause(qc.Context()); !errors.As(err, &ae) || ae.ErrorCode != wire.CodeBadFrame {
			t.Fatalf("connection ended with %v, want the server's close for an unread control stream", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the server kept a connection whose control stream is never read")
	}
}

// A request refused as too large is answered with its own id when its
// first bytes name it, so that a client can match the refusal to its call.
func TestOversizeFrameAnsweredWithItsID(t *testing.T) {
	ts := startServer(t, transport.Config{})
	qc, _, _ := ts.rawLogin(t, "eve", "raw")
	st, err := qc.OpenStreamSync(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	frame := binary.AppendUvarint(nil, 2<<20)   // announces 2 MiB
	frame = append(frame, 0x08, 42)             // id = 42
	frame = append(frame, make([]byte, 200)...) // the start of a body that never fits
	st.Write(frame)
	st.Close()
	var res wire.Response
	if err := wire.NewReader(st, 0).Read(&res); err != nil {
		t.Fatal(err)
	}
	if res.Id != 42 || res.GetError().GetCode() != wire.CodeBadFrame {
		t.Fatalf("answer to an oversize request with id 42: %v", &res)
	}
}

// floodUnreadErrors logs in with tok on a raw connection and keeps writing
// acks beyond the newest seq, each of which gets an error frame, without
// ever reading its control stream: the server's writes to it come to wait.
func floodUnreadErrors(t *testing.T, ts *testServer, tok string) *quic.Conn {
	t.Helper()
	tc := ts.tls.Clone()
	tc.NextProtos = []string{transport.ALPN}
	qc, err := quic.DialAddr(ctx(t), ts.addr, tc, &quic.Config{MaxIdleTimeout: time.Minute, KeepAlivePeriod: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	control, err := qc.OpenStreamSync(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	wire.WriteFrame(control, &wire.Hello{Token: tok})
	var welcome wire.ServerPush
	if err := wire.NewReader(control, 0).Read(&welcome); err != nil || welcome.GetWelcome() == nil {
		t.Fatalf("welcome: %v %v", &welcome, err)
	}
	go func() {
		var b []byte
		for range 1000 {
			b, _ = wire.AppendFrame(b, &wire.ClientControl{Control: &wire.ClientControl_Ack{Ack: &wire.Ack{UserSeq: 1 << 40}}})
		}
		for qc.Context().Err() == nil {
			if _, err := control.Write(b); err != nil {
				return
			}
		}
	}()
	return qc
}
