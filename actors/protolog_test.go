package actors

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"
)

// protoactorLog is a logger as protoactor-go gets it, writing text lines
// to buf, with a clock the test moves.
func protoactorLog(buf *bytes.Buffer, level slog.Level) (*slog.Logger, *time.Time) {
	now := time.Unix(1_700_000_000, 0)
	h := newProtoactorHandler(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: level})).(protoactorHandler)
	h.lim.now = func() time.Time { return now }
	return slog.New(h).With("lib", "protoactor"), &now
}

func logLines(buf *bytes.Buffer) []string {
	s := strings.TrimSpace(buf.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// A message repeated about one peer goes through once a minute, the next
// one carrying how many were held back; another peer, or another message,
// has its own allowance; messages that name no peer are never held back.
func TestProtoactorLogRepeatsOncePerPeerPerMinute(t *testing.T) {
	var buf bytes.Buffer
	log, now := protoactorLog(&buf, slog.LevelInfo)
	health := func(url string) {
		log.Error("Bad connection to the node health status", "error", "connection refused", "autoManMemberUrl", url)
	}
	for range 30 { // half a minute of health checks of two peers that are down
		health("http://127.0.0.1:9102/_health")
		health("http://127.0.0.1:9103/_health")
		log.Error("EndpointWriter failed to connect", "address", "127.0.0.1:8102", "retry", 0)
		log.Error("a failure about no peer")
		*now = now.Add(time.Second)
	}
	lines := logLines(&buf)
	count := func(sub string) int {
		n := 0
		for _, l := range lines {
			if strings.Contains(l, sub) {
				n++
			}
		}
		return n
	}
	if count("9102") != 1 || count("9103") != 1 || count("failed to connect") != 1 || count("no peer") != 30 {
		t.Fatalf("after 30 s: %d, %d, %d, %d lines, want 1, 1, 1, 30:\n%s", count("9102"), count("9103"), count("failed to connect"), count("no peer"), buf.String())
	}
	if count("suppressed") != 0 {
		t.Fatalf("a first message carries a count:\n%s", buf.String())
	}
	*now = now.Add(30 * time.Second) // a minute after the first ones
	buf.Reset()
	health("http://127.0.0.1:9102/_health")
	lines = logLines(&buf)
	if len(lines) != 1 || !strings.Contains(lines[0], "suppressed=29") || !strings.Contains(lines[0], "level=ERROR") || !strings.Contains(lines[0], "lib=protoactor") {
		t.Fatalf("a minute later: %q, want one ERROR line with suppressed=29", lines)
	}
	buf.Reset()
	health("http://127.0.0.1:9102/_health")
	if lines = logLines(&buf); len(lines) != 0 {
		t.Fatalf("right after: %q, want nothing", lines)
	}
}

// A peer's connection that ends (as at every clean leave) is not an error,
// nor is the health server stopping with its node; a failure to reconnect
// stays one.
func TestProtoactorLogLevels(t *testing.T) {
	var buf bytes.Buffer
	log, _ := protoactorLog(&buf, slog.LevelInfo)
	log.Error("EndpointWriter lost connection", "address", "127.0.0.1:8102", "error", "EOF")
	log.Error("Automanaged server stopping..!", "error", http.ErrServerClosed)
	log.Error("Automanaged server stopping..!", "error", errors.New("listen tcp: address already in use"))
	log.Error("EndpointWriter failed to connect", "address", "127.0.0.1:8102")
	log.Warn("Request retried but failed", "identity", "dm-ann~bob", "kind", "conversation")
	log.Info("Started Activation", "kind", "conversation") // protoactor's Info is our Debug
	want := []string{
		`level=INFO msg="EndpointWriter lost connection"`,
		`level=INFO msg="Automanaged server stopping..!"`,
		`level=ERROR msg="Automanaged server stopping..!"`,
		`level=ERROR msg="EndpointWriter failed to connect"`,
		`level=INFO msg="Request retried but failed"`,
	}
	lines := logLines(&buf)
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), buf.String())
	}
	for i, w := range want {
		if !strings.Contains(lines[i], w) {
			t.Errorf("line %d: %q, want %s", i, lines[i], w)
		}
	}
	// Lowered below the logger's level, they are not written at all.
	buf.Reset()
	quiet, _ := protoactorLog(&buf, slog.LevelWarn)
	quiet.Error("EndpointWriter lost connection", "address", "127.0.0.1:8102", "error", "EOF")
	if buf.Len() != 0 {
		t.Fatalf("at level WARN: %q", buf.String())
	}
}

// A burst of distinct keys within one window (peers coming and going, a
// message naming a PID) keeps the limiter at its bound: the key let
// through longest ago makes room, and the newest ones are still limited.
func TestRepeatLimiterStaysBounded(t *testing.T) {
	l := newRepeatLimiter(time.Minute, repeatLimit)
	now := time.Unix(1_700_000_000, 0)
	l.now = func() time.Time { return now }
	for i := range 20 * repeatLimit {
		if pass, _ := l.admit(fmt.Sprintf("m\x00peer-%d\x00", i)); !pass {
			t.Fatalf("key %d, never seen, was held back", i)
		}
		if n := len(l.seen); n > repeatLimit || n != l.order.Len() {
			t.Fatalf("after %d keys the limiter holds %d (order %d), want at most %d", i+1, n, l.order.Len(), repeatLimit)
		}
	}
	last := fmt.Sprintf("m\x00peer-%d\x00", 20*repeatLimit-1)
	if pass, _ := l.admit(last); pass {
		t.Fatal("the newest key was forgotten")
	}
	if pass, _ := l.admit("m\x00peer-0\x00"); !pass {
		t.Fatal("the oldest key was kept past the bound")
	}
}

// A PID names a process, not a peer: lines naming a thousand PIDs all pass
// and leave the limiter empty.
func TestProtoactorLogPidIsNoPeer(t *testing.T) {
	var buf bytes.Buffer
	log, _ := protoactorLog(&buf, slog.LevelInfo)
	for i := range 1000 {
		log.Error("EndpointReader failed to get local process", "pid", fmt.Sprintf("pid-%d", i))
	}
	if n := len(logLines(&buf)); n != 1000 {
		t.Fatalf("%d of 1000 lines passed", n)
	}
	h := log.Handler().(protoactorHandler)
	if n := len(h.lim.seen); n != 0 {
		t.Fatalf("the limiter holds %d keys for lines that name no peer", n)
	}
}

// A different error about the same peer is news: it goes through at once;
// the same error again is held back.
func TestProtoactorLogDifferentErrorPasses(t *testing.T) {
	var buf bytes.Buffer
	log, _ := protoactorLog(&buf, slog.LevelInfo)
	fail := func(key, err string) {
		log.Error("EndpointWriter failed to connect", "address", "10.0.0.2:8090", key, err)
	}
	fail("error", "connection refused")
	fail("error", "x509: certificate signed by unknown authority")
	fail("err", "no route to host")
	fail("error", "connection refused")
	lines := logLines(&buf)
	if len(lines) != 3 || !strings.Contains(lines[1], "x509") || !strings.Contains(lines[2], "no route") {
		t.Fatalf("got %q, want the three different errors once each", lines)
	}
}
