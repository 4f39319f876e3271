package client_test

import (
	"context"
	"crypto/tls"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/imsync/imsync/transport/client"
)

// OnConnState hears of a lost connection and of the reconnection when the
// server restarts on its address, once each and in that order, with the
// addresses and the position the timeline resumes from; Dial's own
// connection is not reported.
func TestOnConnStateAcrossServerRestart(t *testing.T) {
	cert, tlsConf := pinnedTestCert(t)
	serve := func(addr string) (*quic.Listener, chan *quic.Conn) {
		// The stopped server's socket closes in the background: retry.
		var ln *quic.Listener
		var err error
		for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if ln, err = quic.ListenAddr(addr, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{client.ALPN}}, nil); err == nil {
				break
			}
			if time.Now().After(end) {
				t.Fatal(err)
			}
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
		return ln, conns
	}
	ln, conns := serve("127.0.0.1:0")
	addr := ln.Addr().String()

	states := make(chan client.ConnState, 16)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Config{Addr: addr, Token: "any", TLS: tlsConf, OnConnState: func(st client.ConnState) { states <- st }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.MarkRead(ctx, "c", 3); err != nil {
		t.Fatal(err)
	}
	select {
	case st := <-states:
		t.Fatalf("state %+v reported for Dial's own connection", st)
	default:
	}

	// The server stops, its connection with it, and starts again on the
	// same address.
	ln.Close()
	(<-conns).CloseWithError(0, "server stopping")
	next := func() client.ConnState {
		t.Helper()
		select {
		case st := <-states:
			return st
		case <-ctx.Done():
			t.Fatal("no connection state reported")
			return client.ConnState{}
		}
	}
	lost := next()
	if lost.Connected || lost.Addr != addr || lost.Err == nil {
		t.Fatalf("first state %+v, want the loss of %s with its error", lost, addr)
	}
	serve(addr)
	back := next()
	if !back.Connected || back.Addr != addr || back.Err != nil || back.LastUserSeq != c.LastUserSeq() {
		t.Fatalf("second state %+v, want connected to %s after user seq %d", back, addr, c.LastUserSeq())
	}
	if _, err := c.MarkRead(ctx, "c", 4); err != nil {
		t.Fatalf("call after the restart: %v", err)
	}
	select {
	case st := <-states:
		t.Fatalf("unexpected further state %+v", st)
	default:
	}
}

// Close while a reconnection is under way (here held in its login, in the
// token source): the connection it completes is closed and not used, and
// OnConnState hears of no reconnection.
func TestCloseDuringReconnection(t *testing.T) {
	cert, tlsConf := pinnedTestCert(t)
	ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{client.ALPN}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
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
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var logins atomic.Int32
	relogin, release := make(chan struct{}), make(chan struct{})
	tokens := func(context.Context) (string, error) {
		if logins.Add(1) == 2 {
			close(relogin)
			<-release
		}
		return "any", nil
	}
	states := make(chan client.ConnState, 16)
	c, err := client.Dial(ctx, client.Config{Addr: ln.Addr().String(), TokenSource: tokens, TLS: tlsConf, OnConnState: func(st client.ConnState) { states <- st }})
	if err != nil {
		t.Fatal(err)
	}
	first := <-conns
	first.CloseWithError(0, "lost")
	select {
	case <-relogin: // the reconnection is logging in on a new connection
	case <-ctx.Done():
		t.Fatal("no reconnection")
	}
	closed := make(chan struct{})
	go func() {
		c.Close()
		close(closed)
	}()
	for c.Err() != client.ErrClosed { // Close has begun
		if ctx.Err() != nil {
			t.Fatal("Close did not begin")
		}
		runtime.Gosched()
	}
	close(release)
	select {
	case <-closed:
	case <-ctx.Done():
		t.Fatal("Close did not return")
	}
	second := <-conns
	select {
	case <-second.Context().Done(): // the reconnection's connection is closed
	case <-ctx.Done():
		t.Fatal("the connection completed during Close stays open")
	}
	close(states)
	var got []client.ConnState
	for st := range states {
		got = append(got, st)
	}
	if len(got) != 1 || got[0].Connected {
		t.Fatalf("states %+v, want only the loss", got)
	}
	if _, err := c.MarkRead(ctx, "c", 1); err != client.ErrClosed {
		t.Fatalf("call after Close: %v, want ErrClosed", err)
	}
}
