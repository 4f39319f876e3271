package client_test

import (
	"context"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/client"
	"github.com/imsync/imsync/transport/wire"
)

// fakeServer logs any device in and answers every request with Done, but
// ends a request stream cleanly, without answering, when it reads a
// recall of seq 1.
func fakeServer(t *testing.T) (string, *tls.Config) {
	t.Helper()
	dir := t.TempDir()
	cert, err := transport.LoadOrCreateCert(dir)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{client.ALPN}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			qc, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			go fakeConn(qc)
		}
	}()
	pem, err := os.ReadFile(filepath.Join(dir, transport.CertFile))
	if err != nil {
		t.Fatal(err)
	}
	pinned, err := client.PinnedTLS(pem)
	if err != nil {
		t.Fatal(err)
	}
	return ln.Addr().String(), pinned
}

func fakeConn(qc *quic.Conn) {
	ctx := qc.Context()
	control, err := qc.AcceptStream(ctx)
	if err != nil {
		return
	}
	var hello wire.Hello
	if wire.NewReader(control, 0).Read(&hello) != nil {
		return
	}
	wire.WriteFrame(control, &wire.ServerPush{Push: &wire.ServerPush_Welcome{Welcome: &wire.Welcome{User: "ann", Device: "phone", MaxFrameSize: wire.DefaultMaxFrameSize}}})
	push, err := qc.OpenUniStreamSync(ctx)
	if err != nil {
		return
	}
	wire.WriteFrame(push, &wire.ServerPush{Push: &wire.ServerPush_Notify{Notify: &wire.Notify{}}})
	for {
		st, err := qc.AcceptStream(ctx)
		if err != nil {
			return
		}
		go func() {
			rd := wire.NewReader(st, 0)
			for {
				var req wire.Request
				if rd.Read(&req) != nil {
					st.Close()
					return
				}
				if r := req.GetRecall(); r != nil && r.Seq == 1 {
					st.CancelRead(0)
					st.Close() // a clean end, with the request unanswered
					return
				}
				wire.WriteFrame(st, &wire.Response{Id: req.Id, Result: &wire.Response_Done{Done: &wire.Done{Seq: 7}}})
			}
		}()
	}
}

// A request stream that the server ends cleanly fails the call pending on
// it with an error (never a nil error with no answer), and the next call
// goes on a new stream.
func TestRequestStreamEndedByServer(t *testing.T) {
	addr, tlsConf := fakeServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Config{Addr: addr, Token: "any", TLS: tlsConf})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.MarkRead(ctx, "c", 3); err != nil {
		t.Fatal(err)
	}
	seq, err := c.Recall(ctx, "c", 1)
	if err == nil || !strings.Contains(err.Error(), "request stream ended") {
		t.Fatalf("recall on a stream the server ended: seq %d, err %v", seq, err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("recall waited for its deadline: %v", err)
	}
	for i := range 3 {
		if seq, err := c.Recall(ctx, "c", 2); err != nil || seq != 7 {
			t.Fatalf("call %d after the stream ended: %d %v", i+1, seq, err)
		}
	}
}
