package client_test

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/client"
)

// silentAddr is a UDP address that receives and never answers: a node
// that is down behind its address.
func silentAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
}

// A client given several addresses connects to the first that answers,
// whether they come in Addr, comma-separated, or in Addrs.
func TestDialSeveralAddresses(t *testing.T) {
	live, tlsConf := fakeServer(t)
	dead := silentAddr(t)
	for name, cfg := range map[string]client.Config{
		"comma-separated": {Addr: dead + "," + live},
		"Addrs":           {Addr: dead, Addrs: []string{live}},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			cfg.Token, cfg.TLS = "any", tlsConf
			c, err := client.Dial(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.MarkRead(ctx, "c", 3); err != nil {
				t.Fatal(err)
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	other := silentAddr(t)
	_, err := client.Dial(ctx, client.Config{Addr: dead, Addrs: []string{other}, Token: "any", TLS: tlsConf})
	if err == nil || !strings.Contains(err.Error(), dead) || !strings.Contains(err.Error(), other) {
		t.Fatalf("dial with no address answering: %v, want an error naming both", err)
	}
}

// When the node it is connected to goes away, the client reconnects to
// another of its addresses and its calls go on there.
func TestReconnectToAnotherAddress(t *testing.T) {
	cert, tlsConf := pinnedTestCert(t)
	type node struct {
		*quic.Listener
		conns chan *quic.Conn
	}
	listen := func() node {
		ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{client.ALPN}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		n := node{ln, make(chan *quic.Conn, 16)}
		go func() {
			for {
				qc, err := ln.Accept(context.Background())
				if err != nil {
					return
				}
				n.conns <- qc
				go fakeConn(qc)
			}
		}()
		return n
	}
	first, second := listen(), listen()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Config{Addr: first.Addr().String(), Addrs: []string{second.Addr().String()}, Token: "any", TLS: tlsConf})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.MarkRead(ctx, "c", 3); err != nil {
		t.Fatal(err)
	}
	// The first node goes, its connections with it.
	first.Close()
	(<-first.conns).CloseWithError(0, "node stopping")
	if seq, err := c.MarkRead(ctx, "c", 4); err != nil || seq != 7 {
		t.Fatalf("call after the first node went: %d %v", seq, err)
	}
}

// After a lost connection the client reconnects to the next address first,
// even when the lost one answers again: a node that just went away is
// likely down, and a node that is down costs seconds of handshake.
func TestReconnectStartsWithTheNextAddress(t *testing.T) {
	cert, tlsConf := pinnedTestCert(t)
	listen := func() (string, chan *quic.Conn) {
		ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{client.ALPN}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		conns := make(chan *quic.Conn, 16)
		go func() {
			for {
				qc, err := ln.Accept(context.Background())
				if err != nil {
					return
				}
				conns <- qc
				go fakeConn(qc)
			}
		}()
		return ln.Addr().String(), conns
	}
	addrs := make([]string, 3)
	conns := make([]chan *quic.Conn, 3)
	for i := range addrs {
		addrs[i], conns[i] = listen()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Config{Addr: strings.Join(addrs, ","), Token: "any", TLS: tlsConf})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	accepted := func(i int) *quic.Conn {
		t.Helper()
		select {
		case qc := <-conns[i]:
			return qc
		case <-ctx.Done():
			t.Fatalf("no connection at address %d", i)
			return nil
		}
	}
	qc := accepted(0)
	for _, next := range []int{1, 2, 0} { // round the list, every node up
		qc.CloseWithError(0, "node stopping")
		qc = accepted(next)
		if _, err := c.MarkRead(ctx, "c", 4); err != nil {
			t.Fatalf("call after moving to address %d: %v", next, err)
		}
	}
	for i := range conns {
		select {
		case extra := <-conns[i]:
			t.Fatalf("an extra connection at address %d from %s", i, extra.RemoteAddr())
		default:
		}
	}
}

// pinnedTestCert is a new self-signed server certificate and the client
// TLS configuration that pins it.
func pinnedTestCert(t *testing.T) (tls.Certificate, *tls.Config) {
	t.Helper()
	dir := t.TempDir()
	cert, err := transport.LoadOrCreateCert(dir)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(filepath.Join(dir, transport.CertFile))
	if err != nil {
		t.Fatal(err)
	}
	tlsConf, err := client.PinnedTLS(pem)
	if err != nil {
		t.Fatal(err)
	}
	return cert, tlsConf
}
