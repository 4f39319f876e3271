package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/quic-go/quic-go"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/client"
)

// drainTimeout is the child's --drain-timeout.
const drainTimeout = 10 * time.Second

// drainChild is a running `imsync serve` child.
type drainChild struct {
	cmd  *exec.Cmd
	addr string // QUIC
	ops  string // http://HOST:PORT
	logs *syncBuffer
}

func startDrainChild(t *testing.T, data, addr string) *drainChild {
	t.Helper()
	logs := &syncBuffer{}
	ch := startServe(t, data, serveOptions{drain: true, stderr: logs},
		"--listen", addr, "--ops", "127.0.0.1:0", "--log-format", "json", "--drain-timeout", drainTimeout.String())
	return &drainChild{cmd: ch.cmd, addr: ch.addr, ops: ch.ops, logs: logs}
}

// logLine returns the first JSON log line with msg, or nil.
func (ch *drainChild) logLine(msg string) map[string]any {
	for _, l := range strings.Split(ch.logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == msg {
			return m
		}
	}
	return nil
}

// stop sends SIGTERM and waits for the exit; it returns how long that took.
func (ch *drainChild) stop(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	if err := ch.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := ch.cmd.Wait()
	took := time.Since(start)
	if err != nil {
		t.Fatalf("serve did not exit 0 after SIGTERM: %v\n%s", err, ch.logs.String())
	}
	return took
}

func getStatus(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestSIGTERMDrainsUnderLoad runs `imsync serve --ops --log-format json`
// in a child process while devices send: /metrics shows imsync's, protoactor's
// and pebble's series; a refused login is logged as JSON without the token;
// SIGTERM drains (devices finish their calls, leave, and reconnect to the
// restarted server) and the process exits 0 within the drain timeout; no
// acknowledged send is lost, and none in flight was cut and repeated.
func TestSIGTERMDrainsUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	data := filepath.Join(t.TempDir(), "data")
	key, err := transport.LoadOrCreateKey(data)
	if err != nil {
		t.Fatal(err)
	}
	ch := startDrainChild(t, data, "127.0.0.1:0")
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := getStatus(t, ch.ops+path); code != http.StatusOK {
			t.Fatalf("%s: %d %s", path, code, body)
		}
	}
	tlsConf := pinnedTLSOf(t, data)

	// A refused login: JSON, with the reason and the address, no token.
	other, err := transport.LoadOrCreateKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := other.Mint("ann", "phone", time.Hour, time.Now())
	if _, err := client.Dial(context.Background(), client.Config{Addr: ch.addr, Token: forged, TLS: tlsConf}); err == nil {
		t.Fatal("a forged token logged in")
	}
	var refused map[string]any
	waitFor(t, "the refused login's log line", func() bool { refused = ch.logLine("login refused"); return refused != nil })
	if r, _ := refused["reason"].(string); !strings.Contains(r, "bad token") {
		t.Errorf("refused login logged with reason %q", r)
	}
	if r, _ := refused["remote"].(string); !strings.HasPrefix(r, "127.0.0.1:") {
		t.Errorf("refused login logged with remote %q", r)
	}
	for _, part := range strings.Split(forged, ".") {
		if len(part) > 3 && strings.Contains(ch.logs.String(), part) {
			t.Fatalf("the log holds token text %q", part)
		}
	}

	// Load: each device has several sends in flight, to its own peer and
	// to a shared one.
	const senders, inFlight = 4, 4
	type ack struct {
		conv, id string
		seq      uint64
		after    bool // acknowledged by the restarted server
	}
	var (
		mu        sync.Mutex
		acked     []ack
		errs      []error
		restarted bool
		wg        sync.WaitGroup
	)
	count := func(after bool) (n int) {
		mu.Lock()
		defer mu.Unlock()
		for _, a := range acked {
			if a.after == after {
				n++
			}
		}
		return n
	}
	stop := make(chan struct{})
	for i := range senders {
		tok, _ := key.Mint(fmt.Sprint("u", i), "phone", time.Hour, time.Now())
		c, err := client.Dial(context.Background(), client.Config{Addr: ch.addr, Token: tok, TLS: tlsConf})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		for k := range inFlight {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; ; j++ {
					select {
					case <-stop:
						return
					default:
					}
					id := fmt.Sprintf("u%d-%d-%d", i, k, j)
					to := "shared"
					if j%2 == 0 {
						to = fmt.Sprint("peer", i)
					}
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					s, err := c.Send(ctx, client.Message{To: to, ClientMsgID: id, Text: id})
					cancel()
					mu.Lock()
					if err != nil {
						errs = append(errs, fmt.Errorf("send %s: %w", id, err))
					} else {
						if s.Duplicate {
							errs = append(errs, fmt.Errorf("send %s was cut and repeated (duplicate at seq %d)", id, s.Seq))
						}
						acked = append(acked, ack{s.Conversation, id, s.Seq, restarted})
					}
					mu.Unlock()
					if err != nil {
						return
					}
				}
			}()
		}
	}
	waitFor(t, "sends under load", func() bool { return count(false) >= senders*20 })

	// The metrics while the load runs.
	res, err := http.Get(ch.ops + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	var stored float64
	if f := fams["imsync_sends_total"]; f != nil {
		for _, m := range f.Metric {
			stored += m.GetCounter().GetValue()
		}
	}
	if stored < senders*20 {
		t.Errorf("imsync_sends_total = %v after %d acknowledged sends", stored, count(false))
	}
	var protoactor bool
	for name := range fams {
		protoactor = protoactor || strings.HasPrefix(name, "protoactor_")
	}
	if !protoactor {
		t.Error("no protoactor_ series")
	}
	if fams["imsync_devices_online"] == nil {
		t.Error("no gateway series")
	}
	// pebble's series exist with the embedded store only.
	if embedded := storeFor(t, data) == ""; (fams["imsync_pebble_disk_bytes"] != nil) != embedded {
		t.Errorf("pebble series present: %v, embedded store: %v", fams["imsync_pebble_disk_bytes"] != nil, embedded)
	}

	// SIGTERM under load.
	before := count(false)
	took := ch.stop(t)
	t.Logf("SIGTERM to exit: %s, %d sends acknowledged before", took.Round(time.Millisecond), before)
	if testing.Verbose() {
		t.Log(ch.logs.String())
	}
	if took > drainTimeout {
		t.Errorf("serve took %s to exit, more than its drain timeout %s", took, drainTimeout)
	}
	if ch.logLine("drained") == nil || ch.logLine("drain timeout") != nil {
		t.Errorf("the drain did not end with every device gone:\n%s", ch.logs.String())
	}

	// The devices reconnect to the restarted server and go on.
	mu.Lock()
	restarted = true
	mu.Unlock()
	ch2 := startDrainChild(t, data, ch.addr)
	waitFor(t, "sends after the restart", func() bool { return count(true) >= senders*5 })
	close(stop)
	wg.Wait()
	ch2.stop(t)
	for _, err := range errs {
		t.Error(err)
	}

	// Every acknowledged send is stored, at its seq.
	store := openStoreOf(t, data)
	defer store.Close()
	for _, a := range acked {
		evs, err := store.ReadStream(context.Background(), events.ConversationStream(a.conv), events.ReadStreamOptions{From: events.Revision(a.seq - 1), Limit: 1})
		if err != nil || len(evs) != 1 || !bytes.Contains(evs[0].Data, []byte(a.id)) {
			t.Fatalf("acknowledged send %s (%s/%d) is not in the store: %v", a.id, a.conv, a.seq, err)
		}
	}
	t.Logf("%d sends acknowledged, all stored", len(acked))
}

// waitFor polls cond until it holds or 20 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestServeOpsFlags: bad operations and log flags are usage errors that
// create nothing.
func TestServeOpsFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--ops", "0.0.0.0:9400"}, "--ops-public"},
		{[]string{"--ops", ":9400"}, "--ops-public"},
		{[]string{"--log-level", "loud"}, "--log-level"},
		{[]string{"--log-format", "xml"}, "--log-format"},
		{[]string{"--drain-timeout", "0s"}, "--drain-timeout"},
	} {
		data := filepath.Join(t.TempDir(), "data")
		err := run(context.Background(), serveArgs(t, data, append([]string{"--listen", "127.0.0.1:0"}, tc.args...)...), io.Discard)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("serve %v: %v, want a usage error naming %s", tc.args, err, tc.want)
		}
		if _, err := os.Stat(data); !os.IsNotExist(err) {
			t.Errorf("serve %v created %s", tc.args, data)
		}
	}
}

// TestServeReadyz: /readyz of `imsync serve` answers 200 while it serves
// and 503 once it drains (held open here by a connection that never logs
// in); the drain ends when that connection does.
func TestServeReadyz(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	addr, out, stopServe := serveInProcess(t, serveArgs(t, data, "--listen", "127.0.0.1:0", "--ops", "127.0.0.1:0", "--drain-timeout", "20s", "--log-level", "error")...)
	ops := opsRE.FindStringSubmatch(out.String())[1] // printed before "listening on"
	if code, body := getStatus(t, ops+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz while serving: %d %s", code, body)
	}
	tc := pinnedTLSOf(t, data)
	tc.NextProtos = []string{transport.ALPN}
	held, err := quic.DialAddr(context.Background(), addr, tc, &quic.Config{MaxIdleTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer held.CloseWithError(0, "")
	waitFor(t, "the server to count the held connection", func() bool {
		_, body := getStatus(t, ops+"/metrics")
		return strings.Contains(body, "\nimsync_connections 1\n")
	})
	served := make(chan error, 1)
	go func() { served <- stopServe() }() // as SIGTERM does
	waitFor(t, "/readyz 503 while draining", func() bool {
		code, body := getStatus(t, ops+"/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "draining")
	})
	held.CloseWithError(0, "")
	select {
	case err := <-served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the drain did not end when the last connection did")
	}
}

// TestServeWithoutActorMetrics: --ops-actor-metrics=false keeps imsync's
// series and leaves protoactor-go's out.
func TestServeWithoutActorMetrics(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	_, out, stop := serveInProcess(t, serveArgs(t, data, "--listen", "127.0.0.1:0", "--ops", "127.0.0.1:0", "--ops-actor-metrics=false", "--log-level", "error")...)
	ops := opsRE.FindStringSubmatch(out.String())[1] // printed before "listening on"
	code, body := getStatus(t, ops+"/metrics")
	if code != http.StatusOK || !strings.Contains(body, "\nimsync_connections ") {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	if strings.Contains(body, "\nprotoactor_") {
		t.Error("protoactor-go's series with --ops-actor-metrics=false")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
