package transport_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/wire"
)

// stalled is a connection that started a Hello and never finished it.
// stalled is a connection that never logs in; refused is set instead when
// the server closed it before the client's handshake completed.
type stalled struct {
	qc      *quic.Conn
	refused error
}

// stalledFrom connects from ip (an address of 127.0.0.0/8, all of which
// reach the loopback interface on Linux) and starts a Hello it never
// finishes.
func stalledFrom(t *testing.T, ts *testServer, ip net.IP) stalled {
	t.Helper()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { udp.Close() })
	raddr, err := net.ResolveUDPAddr("udp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	tc := ts.tls.Clone()
	tc.NextProtos = []string{transport.ALPN}
	qc, err := quic.Dial(ctx(t), udp, raddr, tc, &quic.Config{MaxIdleTimeout: time.Minute})
	var ae *quic.ApplicationError
	if errors.As(err, &ae) && ae.Remote {
		return stalled{refused: err} // a busy server may refuse before the handshake ends
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	if st, err := qc.OpenStream(); err == nil {
		st.Write([]byte{0x10}) // a Hello of 16 bytes, never finished
	}
	return stalled{qc: qc}
}

// closedWith waits for the server to close the connection and returns its
// application error code.
func (s stalled) closedWith(t *testing.T) uint64 {
	t.Helper()
	if s.refused != nil {
		var ae *quic.ApplicationError
		errors.As(s.refused, &ae)
		return uint64(ae.ErrorCode)
	}
	select {
	case <-s.qc.Context().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the connection is still open")
	}
	var ae *quic.ApplicationError
	if err := context.Cause(s.qc.Context()); !errors.As(err, &ae) || !ae.Remote {
		t.Fatalf("connection ended by %v, not by the server", err)
	}
	return uint64(ae.ErrorCode)
}

func (s stalled) open() bool { return s.qc != nil && s.qc.Context().Err() == nil }

// Many addresses of one /24 that never log in hold that prefix's slots
// only: they cannot fill the server-wide pool, and a login from another
// /24 goes through.
func TestPreAuthManyAddressesOnePrefix(t *testing.T) {
	ts := startServer(t, transport.Config{MaxUnauthenticated: 8, MaxUnauthenticatedPerPrefix: 2, HandshakeTimeout: 30 * time.Second})
	stalledFrom(t, ts, net.IPv4(127, 0, 0, 2))
	stalledFrom(t, ts, net.IPv4(127, 0, 0, 2))
	waitFor(t, 10*time.Second, "2 pre-login slots", func() bool { return ts.srv.Preauth() == 2 })
	for i := range 7 {
		for range 2 {
			ip := net.IPv4(127, 0, 0, byte(3+i))
			if code := stalledFrom(t, ts, ip).closedWith(t); code != wire.CodeBusy {
				t.Fatalf("a connection from %s while its /24 holds its 2 slots: closed with %d, want %d", ip, code, wire.CodeBusy)
			}
		}
	}
	if n := ts.srv.Preauth(); n != 2 {
		t.Fatalf("%d pre-login slots held, want 2", n)
	}
	ts.rawLoginFrom(t, &net.UDPAddr{IP: net.IPv4(127, 0, 1, 1)}, "ann", "phone")
}

// When the server-wide pool is full, a connection from a prefix that holds
// no slot takes the oldest slot of the prefix holding the most; one from a
// prefix holding as many as any other is refused.
func TestPreAuthFullPoolEvictsLargestPrefix(t *testing.T) {
	ts := startServer(t, transport.Config{MaxUnauthenticated: 6, MaxUnauthenticatedPerPrefix: 3, HandshakeTimeout: 30 * time.Second})
	var held []stalled
	for _, ip := range []string{"127.0.1.1", "127.0.2.1", "127.0.2.2", "127.0.3.1", "127.0.3.2", "127.0.1.2"} {
		held = append(held, stalledFrom(t, ts, net.ParseIP(ip)))
		waitFor(t, 10*time.Second, fmt.Sprintf("%d pre-login slots", len(held)), func() bool { return ts.srv.Preauth() == len(held) })
	}
	// 127.0.2.0/24 holds as many slots as any prefix: no slot for it.
	if code := stalledFrom(t, ts, net.IPv4(127, 0, 2, 3)).closedWith(t); code != wire.CodeBusy {
		t.Fatalf("a third connection of a prefix holding the most: closed with %d, want %d", code, wire.CodeBusy)
	}
	// A login from an uninvolved prefix goes through: the oldest slot of
	// the largest prefixes (127.0.1.1's, the oldest of all) is freed for it.
	ts.rawLoginFrom(t, &net.UDPAddr{IP: net.IPv4(127, 0, 4, 1)}, "ann", "phone")
	if code := held[0].closedWith(t); code != wire.CodeBusy {
		t.Fatalf("the evicted connection: closed with %d, want %d", code, wire.CodeBusy)
	}
	for i, s := range held[1:] {
		if !s.open() {
			t.Fatalf("connection %d closed; only the oldest should be", i+1)
		}
	}
}
