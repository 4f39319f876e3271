package main

import (
	"context"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/client"
)

// startServeAt runs `imsync serve` on addr in a child process and returns
// it once it listens, with the address it listens on.
func startServeAt(t *testing.T, data, addr string) (*exec.Cmd, string) {
	t.Helper()
	ch := startServe(t, data, serveOptions{}, "--listen", addr)
	return ch.cmd, ch.addr
}

// lossLog records why the client's connections ended (its debug log).
type lossLog struct {
	mu     sync.Mutex
	causes []string
}

func (l *lossLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *lossLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *lossLog) WithGroup(string) slog.Handler            { return l }
func (l *lossLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "connection lost" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" {
			l.mu.Lock()
			l.causes = append(l.causes, a.Value.String())
			l.mu.Unlock()
		}
		return true
	})
	return nil
}

func (l *lossLog) first() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.causes) == 0 {
		return ""
	}
	return l.causes[0]
}

// TestClientResumesAfterKill9: the server is killed with SIGKILL and
// restarted on the same address and data directory. A connected, idle
// client learns it from the restarted server's stateless reset (not from
// its idle timeout), reconnects and receives again; a send in flight at
// the kill completes; a new send succeeds within 5 s of the restart.
func TestClientResumesAfterKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	data := filepath.Join(t.TempDir(), "data")
	key, err := transport.LoadOrCreateKey(data)
	if err != nil {
		t.Fatal(err)
	}
	child, addr := startServeAt(t, data, "127.0.0.1:0")
	tlsConf := pinnedTLSOf(t, data)
	dial := func(user string, log slog.Handler) *client.Client {
		tok, _ := key.Mint(user, "phone", time.Hour, time.Now())
		c, err := client.Dial(context.Background(), client.Config{Addr: addr, Token: tok, TLS: tlsConf, Logger: slog.New(log)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	bobLog, annLog := &lossLog{}, &lossLog{}
	bob, ann := dial("bob", bobLog), dial("ann", annLog)
	send := func(ctx context.Context, id string) (uint64, error) {
		r, err := ann.Send(ctx, client.Message{To: "bob", ClientMsgID: id, Text: id})
		if err != nil {
			return 0, err
		}
		return r.Seq, nil
	}
	waitEntry := func(seq uint64, within time.Duration) {
		t.Helper()
		deadline := time.After(within)
		for {
			select {
			case e := <-bob.Entries():
				if p, ok := e.Message.(*eventspb.MessagePointer); ok && p.Seq == seq {
					return
				}
			case <-deadline:
				t.Fatalf("bob did not get message %d within %s (last %d; first loss %q)", seq, within, bob.LastUserSeq(), bobLog.first())
			}
		}
	}
	seq1, err := send(context.Background(), "before")
	if err != nil {
		t.Fatal(err)
	}
	waitEntry(seq1, 10*time.Second)

	child.Process.Signal(syscall.SIGKILL)
	child.Wait()
	killed := time.Now()
	// A send in flight while the server is down.
	inflight := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := send(ctx, "in-flight")
		inflight <- err
	}()

	_, addr2 := startServeAt(t, data, addr)
	if addr2 != addr {
		t.Fatalf("restarted on %s, not %s", addr2, addr)
	}
	restarted := time.Now()
	t.Logf("server down for %s", restarted.Sub(killed).Round(time.Millisecond))

	// The "done when" contract: within 5 s of the restart (plus slack for
	// a loaded machine) a send succeeds and bob receives it.
	select {
	case err := <-inflight:
		if err != nil {
			t.Fatalf("the send in flight at the kill: %v", err)
		}
	case <-time.After(8 * time.Second):
		t.Fatal("the send in flight at the kill did not finish within 8 s of the restart")
	}
	t.Logf("in-flight send done %s after the restart", time.Since(restarted).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	seq2, err := send(ctx, "after")
	if err != nil {
		t.Fatalf("send after the restart: %v", err)
	}
	waitEntry(seq2, 8*time.Second)
	t.Logf("bob received a new message %s after the restart", time.Since(restarted).Round(time.Millisecond))

	// Both sessions ended by the new server's stateless reset, not by
	// the idle timeout.
	for who, l := range map[string]*lossLog{"bob": bobLog, "ann": annLog} {
		if cause := l.first(); !strings.Contains(cause, "stateless reset") {
			t.Errorf("%s's connection ended by %q, want a stateless reset", who, cause)
		}
	}
}
