package transport_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/client"
	"github.com/imsync/imsync/transport/ops"
	"github.com/imsync/imsync/transport/transporttest"
)

// opsServer is a real server with metrics on the embedded store and an
// operations listener, all on random loopback ports.
type opsServer struct {
	*testServer
	svc     *actors.Service
	store   events.Store
	metrics *transport.Metrics
	ops     string // base URL of the operations listener
}

func startOpsServer(t *testing.T, cfg transport.Config, logger *slog.Logger) *opsServer {
	t.Helper()
	dir := t.TempDir()
	store, err := events.Open(filepath.Join(dir, "events"), events.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	m, err := transport.NewMetrics()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	svc := transporttest.Service(t, actors.Config{Store: m.InstrumentStore(store), Metrics: m.Actors(), Logger: logger})
	m.WatchService(svc)
	m.WatchStore(store.Stats)
	cfg.Service, cfg.Metrics, cfg.Logger = svc, m, logger
	ts := listen(t, cfg)
	srv := ts.srv
	ready := func(context.Context) error {
		if srv.Draining() {
			return errors.New("draining")
		}
		return nil
	}
	o, err := ops.Listen("127.0.0.1:0", ops.Options{Registry: m.Registry(), Ready: ready})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	return &opsServer{
		testServer: ts,
		svc:        svc, store: store, metrics: m, ops: "http://" + o.Addr().String(),
	}
}

// scrape reads /metrics.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	res, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", res.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("/metrics is not Prometheus text: %v", err)
	}
	return fams
}

// metricValue sums the series of name whose labels include want: counter
// and gauge values, histogram sample counts.
func metricValue(fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
	sum := 0.0
series:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(want); i += 2 {
			found := false
			for _, l := range m.Label {
				if l.GetName() == want[i] && l.GetValue() == want[i+1] {
					found = true
				}
			}
			if !found {
				continue series
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		case m.Untyped != nil:
			sum += m.Untyped.GetValue()
		}
	}
	return sum
}

func httpStatus(t *testing.T, url string) int {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

// TestOpsMetrics drives sends, pushes and sync pages through a real server
// and checks that /metrics counts them, next to protoactor-go's and
// pebble's series; and that a second server in the process has its own
// series (the rate-limit refusal it counts is not the first's).
func TestOpsMetrics(t *testing.T) {
	ts := startOpsServer(t, transport.Config{}, nil)
	if got := httpStatus(t, ts.ops+"/healthz"); got != http.StatusOK {
		t.Fatalf("/healthz: %d", got)
	}
	if got := httpStatus(t, ts.ops+"/readyz"); got != http.StatusOK {
		t.Fatalf("/readyz of a running server: %d", got)
	}
	if got := httpStatus(t, ts.ops+"/debug/pprof/"); got != http.StatusOK {
		t.Fatalf("/debug/pprof/: %d", got)
	}
	ann := ts.dial(t, "ann", "phone", 0)
	bob := ts.dial(t, "bob", "phone", 0)
	const n = 5
	var conv string
	for i := range n {
		s, err := ann.Send(ctx(t), client.Message{To: "bob", ClientMsgID: fmt.Sprint("m", i), Text: "hello"})
		if err != nil {
			t.Fatal(err)
		}
		conv = s.Conversation
		next(t, bob, pointerTo(conv, s.Seq))
	}
	if s, err := ann.Send(ctx(t), client.Message{To: "bob", ClientMsgID: "m0", Text: "hello"}); err != nil || !s.Duplicate {
		t.Fatalf("retried send: %v %v", s, err)
	}
	if _, err := bob.Sync(ctx(t), 0, 100); err != nil {
		t.Fatal(err)
	}

	var fams map[string]*dto.MetricFamily
	at := func(name string, want float64, labels ...string) func() bool {
		return func() bool {
			fams = scrape(t, ts.ops)
			return metricValue(fams, name, labels...) >= want
		}
	}
	waitFor(t, 10*time.Second, "requests counted", at("imsync_requests_total", n+1, "op", "send", "code", "ok"))
	waitFor(t, 10*time.Second, "sends counted", at("imsync_sends_total", n, "result", "stored"))
	waitFor(t, 10*time.Second, "duplicates counted", at("imsync_sends_total", 1, "result", "duplicate"))
	waitFor(t, 10*time.Second, "pushes counted", at("imsync_pushes_total", n))
	waitFor(t, 10*time.Second, "send→push observed", at("imsync_send_to_push_seconds", n))
	waitFor(t, 10*time.Second, "fanout lag observed", at("imsync_fanout_lag_seconds", 1))
	waitFor(t, 10*time.Second, "sync page counted", at("imsync_sync_pages_total", 1))
	waitFor(t, 10*time.Second, "sync bytes counted", at("imsync_sync_page_bytes_total", 100))
	waitFor(t, 10*time.Second, "conversation appends timed", at("imsync_store_append_duration_seconds", n, "stream", "conversation"))
	waitFor(t, 10*time.Second, "inbox appends timed", at("imsync_store_append_duration_seconds", 1, "stream", "inbox"))
	for name, want := range map[string]float64{
		"imsync_connections":                        2,
		"imsync_devices_online":                     2,
		"imsync_users_online":                       2,
		"imsync_draining":                           0,
		"imsync_cluster_members":                    1,
		"imsync_cluster_requests_failed_over_total": 0,
	} {
		if got := metricValue(fams, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got := metricValue(fams, "imsync_grains_active", "kind", "conversation"); got < 1 {
		t.Errorf("conversation grains active = %v", got)
	}
	if got := metricValue(fams, "imsync_pebble_disk_bytes"); got <= 0 {
		t.Errorf("imsync_pebble_disk_bytes = %v", got)
	}
	if _, ok := fams["imsync_pebble_l0_files"]; !ok {
		t.Error("no imsync_pebble_l0_files")
	}
	var proto []string
	for name := range fams {
		if strings.HasPrefix(name, "protoactor_") {
			proto = append(proto, name)
		}
	}
	if len(proto) == 0 {
		t.Error("no protoactor_ series")
	}
	if _, ok := fams["go_goroutines"]; !ok {
		t.Error("no Go runtime series")
	}

	// A second server in the same process: its own registry.
	slow := startOpsServer(t, transport.Config{RequestsPerSecond: 0.001, RequestBurst: 1}, nil)
	cat := slow.dial(t, "cat", "phone", 0)
	if _, err := cat.Send(ctx(t), client.Message{To: "dan", ClientMsgID: "c1", Text: "one"}); err != nil {
		t.Fatal(err)
	}
	_, err := cat.Send(ctx(t), client.Message{To: "dan", ClientMsgID: "c2", Text: "two"})
	if err == nil || !strings.Contains(err.Error(), "rate") {
		t.Fatalf("second send over the rate: %v", err)
	}
	sf := scrape(t, slow.ops)
	// (The client's own sync pulls may be refused too: at least the send.)
	if got := metricValue(sf, "imsync_rate_limited_total", "reason", "rate"); got < 1 {
		t.Errorf("rate-limit refusals on the second server = %v, want the send's at least", got)
	}
	if got := metricValue(sf, "imsync_requests_total", "op", "send", "code", "rate_limited"); got != 1 {
		t.Errorf("rate-limited sends on the second server = %v, want 1", got)
	}
	if got := metricValue(scrape(t, ts.ops), "imsync_rate_limited_total"); got > 0 {
		t.Errorf("the first server counted the second's refusal: %v", got)
	}
}

// TestRefusedLoginLogged: a refused login is logged with its reason and
// remote address, never with the token.
func TestRefusedLoginLogged(t *testing.T) {
	var logs transporttest.SyncBuffer
	ts := startOpsServer(t, transport.Config{}, slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	other, err := transport.LoadOrCreateKey(t.TempDir()) // not the server's key
	if err != nil {
		t.Fatal(err)
	}
	forged, err := other.Mint("ann", "phone", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Dial(ctx(t), client.Config{Addr: ts.addr, Token: forged, TLS: ts.tls}); err == nil {
		t.Fatal("a forged token logged in")
	}
	var line map[string]any
	waitFor(t, 10*time.Second, "the refusal logged", func() bool {
		for _, l := range strings.Split(logs.String(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "login refused" {
				line = m
				return true
			}
		}
		return false
	})
	if r, _ := line["reason"].(string); !strings.Contains(r, "signature") && !strings.Contains(r, "no key with kid") {
		t.Errorf("reason %q does not say what is wrong", r)
	}
	if r, _ := line["remote"].(string); !strings.HasPrefix(r, "127.0.0.1:") {
		t.Errorf("remote %q", r)
	}
	for _, part := range strings.Split(forged, ".") {
		if len(part) > 3 && strings.Contains(logs.String(), part) {
			t.Fatalf("the log holds token text %q:\n%s", part, logs.String())
		}
	}
	if got := metricValue(scrape(t, ts.ops), "imsync_logins_refused_total", "reason", "unauthorized"); got != 1 {
		t.Errorf("imsync_logins_refused_total{reason=unauthorized} = %v", got)
	}
}

// TestDrain: devices under load are told to go away, finish their calls
// and leave by themselves (Drain does not have to close anyone); /readyz
// says 503 from the start of the drain; a new connection is refused; every
// acknowledged send is stored once, none was cut and retried.
func TestDrain(t *testing.T) {
	ts := startOpsServer(t, transport.Config{}, nil)
	const senders = 4
	type ack struct {
		conv, id string
		seq      uint64
	}
	var (
		mu    sync.Mutex
		acked []ack
		wg    sync.WaitGroup
	)
	stop := make(chan struct{})
	started := make(chan struct{}, senders)
	for i := range senders {
		c := ts.dial(t, fmt.Sprint("u", i), "phone", 0)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("u%d-%d", i, j)
				cctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				s, err := c.Send(cctx, client.Message{To: "sink", ClientMsgID: id, Text: id})
				cancel()
				if err != nil {
					return // once it went away, nothing answers here any more
				}
				if s.Duplicate {
					t.Errorf("send %s was cut and retried (duplicate at seq %d)", id, s.Seq)
				}
				mu.Lock()
				acked = append(acked, ack{s.Conversation, id, s.Seq})
				mu.Unlock()
				if j == 10 {
					started <- struct{}{}
				}
			}
		}()
	}
	for range senders {
		<-started
	}
	dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	drained := make(chan error, 1)
	go func() { drained <- ts.srv.Drain(dctx) }()
	waitFor(t, 10*time.Second, "/readyz 503", func() bool { return httpStatus(t, ts.ops+"/readyz") == http.StatusServiceUnavailable })
	if err := <-drained; err != nil {
		t.Fatalf("Drain had to close connections: %v", err)
	}
	close(stop)
	wg.Wait()
	if len(acked) < senders*10 {
		t.Fatalf("only %d sends acknowledged", len(acked))
	}
	// Every acknowledged send is in its conversation, at its seq.
	for _, a := range acked {
		evs, err := ts.store.ReadStream(ctx(t), events.ConversationStream(a.conv), events.ReadStreamOptions{From: events.Revision(a.seq - 1), Limit: 1})
		if err != nil || len(evs) != 1 {
			t.Fatalf("send %s at %s/%d: %v", a.id, a.conv, a.seq, err)
		}
		if !bytes.Contains(evs[0].Data, []byte(a.id)) {
			t.Fatalf("seq %d of %s is not send %s", a.seq, a.conv, a.id)
		}
	}
	if _, err := ts.svc.SettleFanout(ctx(t)); err != nil {
		t.Fatal(err)
	}
}

// TestDrainRefusesNewConnections: while a drain waits for a connection,
// /readyz answers 503, a new login is refused with 105 (going away), and
// the drain ends as soon as the last connection does.
func TestDrainRefusesNewConnections(t *testing.T) {
	ts := startOpsServer(t, transport.Config{}, nil)
	held := ts.rawDial(t) // never logs in: the drain waits for it
	if !waitConns(ts, 1) {
		t.Fatal("the held connection is not counted")
	}
	dctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	drained := make(chan error, 1)
	go func() { drained <- ts.srv.Drain(dctx) }()
	waitFor(t, 10*time.Second, "/readyz 503", func() bool { return httpStatus(t, ts.ops+"/readyz") == http.StatusServiceUnavailable })
	if got := metricValue(scrape(t, ts.ops), "imsync_draining"); got != 1 {
		t.Errorf("imsync_draining = %v while draining", got)
	}
	_, err := client.Dial(ctx(t), client.Config{Addr: ts.addr, Token: mint(t, ts.key, "late", "phone"), TLS: ts.tls, NoReconnect: true})
	if err == nil || !strings.Contains(err.Error(), "going away") {
		t.Fatalf("a login during the drain: %v", err)
	}
	select {
	case err := <-drained:
		t.Fatalf("the drain ended with a connection open: %v", err)
	default:
	}
	held.CloseWithError(0, "")
	if err := <-drained; err != nil {
		t.Fatalf("drain: %v", err)
	}
}

// waitConns polls the server's connection count.
func waitConns(ts *opsServer, n int) bool {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var fams map[string]*dto.MetricFamily
		res, err := http.Get(ts.ops + "/metrics")
		if err == nil {
			p := expfmt.NewTextParser(model.UTF8Validation)
			fams, _ = p.TextToMetricFamilies(res.Body)
			res.Body.Close()
		}
		if metricValue(fams, "imsync_connections") == float64(n) {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// TestOperationsDocs: the Grafana dashboard is JSON with queries in every
// panel; every imsync series that docs/operations.md or the dashboard
// names exists, and every series the server has is documented.
func TestOperationsDocs(t *testing.T) {
	ts := startOpsServer(t, transport.Config{}, nil)
	descs := make(chan *prometheus.Desc)
	go func() {
		ts.metrics.Registry().Describe(descs)
		close(descs)
	}()
	have := map[string]bool{}
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range descs {
		if m := fqName.FindStringSubmatch(d.String()); m != nil && strings.HasPrefix(m[1], "imsync_") {
			have[m[1]] = true
		}
	}
	if len(have) < 30 {
		t.Fatalf("only %d imsync series registered: %v", len(have), have)
	}

	raw, err := os.ReadFile("../docs/deploy/grafana-imsync.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string
		Panels []struct {
			Type, Title string
			Targets     []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("grafana-imsync.json is not JSON: %v", err)
	}
	var exprs []string
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			exprs = append(exprs, q.Expr)
		}
	}
	doc, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`imsync_[a-z0-9_]+`)
	known := func(n string) bool {
		for _, suffix := range []string{"", "_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(n, suffix); ok && have[base] {
				return true
			}
		}
		return false
	}
	for _, src := range []struct{ what, text string }{{"the dashboard", strings.Join(exprs, "\n")}, {"docs/operations.md", string(doc)}} {
		for _, n := range name.FindAllString(src.text, -1) {
			if !known(n) {
				t.Errorf("%s names %s, which the server does not have", src.what, n)
			}
		}
	}
	for n := range have {
		if !strings.Contains(string(doc), "`"+n+"`") {
			t.Errorf("%s is not documented in docs/operations.md", n)
		}
	}
}

func mint(t *testing.T, key *transport.Key, user, device string) string {
	t.Helper()
	tok, err := key.Mint(user, device, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestSlowConsumerLogged: a device that does not read its control stream
// is logged once as a slow consumer, then its disconnect with the reason,
// and both are counted.
func TestSlowConsumerLogged(t *testing.T) {
	var logs transporttest.SyncBuffer
	ts := startOpsServer(t, transport.Config{WriteTimeout: time.Second, RequestsPerSecond: 1e9, RequestBurst: 1 << 30},
		slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	floodUnreadErrors(t, ts.testServer, mint(t, ts.key, "eve", "raw"))
	lines := func(msg string) (found []map[string]any) {
		for _, l := range strings.Split(logs.String(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == msg {
				found = append(found, m)
			}
		}
		return found
	}
	// As in TestUnreadControlStreamEndsConnection: filling the unread
	// stream takes a while on a loaded machine.
	deadline := time.Now().Add(30 * time.Second)
	for len(lines("device disconnected")) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no disconnect logged:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	slow := lines("slow consumer: control stream not read; closing")
	if len(slow) != 1 || slow[0]["user"] != "eve" || slow[0]["device"] != "raw" {
		t.Errorf("slow consumer logged %d times: %v\n%s", len(slow), slow, logs.String())
	}
	if r, _ := lines("device disconnected")[0]["reason"].(string); !strings.Contains(r, "control stream not read") {
		t.Errorf("disconnect reason %q", r)
	}
	if got := metricValue(scrape(t, ts.ops), "imsync_disconnects_total", "reason", "bad_frame"); got != 1 {
		t.Errorf("imsync_disconnects_total{reason=bad_frame} = %v", got)
	}
}
