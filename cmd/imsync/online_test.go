package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/events/teststore"
	"github.com/imsync/imsync/projections"
	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/client"
)

const runChildEnv = "IMSYNC_RUN_CHILD_ARGS"

// TestRunChild is the `imsync ARGS...` process of the tests below (ARGS
// as JSON in IMSYNC_RUN_CHILD_ARGS): its standard output and error are
// the command's own.
func TestRunChild(t *testing.T) {
	raw := os.Getenv(runChildEnv)
	if raw == "" {
		t.Skip("only runs as a child of the tool tests")
	}
	var args []string
	if err := json.Unmarshal([]byte(raw), &args); err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), args, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "imsync:", err)
		os.Exit(exitCode(err))
	}
	os.Exit(0) // before the test framework prints to standard output
}

// childCmd is `imsync args...` as a process of its own.
func childCmd(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(args)
	cmd := exec.Command(exe, "-test.run=^TestRunChild$")
	cmd.Env = append(os.Environ(), runChildEnv+"="+string(raw), "IMSYNC_STORE=")
	return cmd
}

// runChild runs `imsync args...` in a process of its own.
func runChild(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := childCmd(t, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// sender sends messages from one client to a user until stopped, and
// keeps what was acknowledged: client message id → seq.
type sender struct {
	t    *testing.T
	c    *client.Client
	to   string
	stop chan struct{}
	done chan struct{}

	mu    sync.Mutex
	acked map[string]uint64
}

func startSender(t *testing.T, c *client.Client, to string) *sender {
	s := &sender{t: t, c: c, to: to, stop: make(chan struct{}), done: make(chan struct{}), acked: map[string]uint64{}}
	go func() {
		defer close(s.done)
		for i := 0; ; i++ {
			select {
			case <-s.stop:
				return
			default:
			}
			id := fmt.Sprintf("m-%d", i)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			res, err := c.Send(ctx, client.Message{To: to, ClientMsgID: id, Text: "hello " + id})
			cancel()
			if err != nil {
				select {
				case <-s.stop:
				default:
					t.Errorf("send %s: %v", id, err)
				}
				return
			}
			s.mu.Lock()
			s.acked[id] = res.Seq
			s.mu.Unlock()
		}
	}()
	return s
}

// snapshot returns what was acknowledged so far.
func (s *sender) snapshot() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]uint64, len(s.acked))
	for k, v := range s.acked {
		out[k] = v
	}
	return out
}

// waitAcked waits until at least n sends were acknowledged.
func (s *sender) waitAcked(n int) {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for len(s.snapshot()) < n {
		if time.Now().After(deadline) {
			s.t.Fatalf("only %d sends acknowledged, want %d", len(s.snapshot()), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (s *sender) halt() {
	close(s.stop)
	<-s.done
}

// dialUser connects user's device to the server at addr whose data
// directory (certificate) is data, with a token from key.
func dialUser(t *testing.T, data, addr string, key *transport.Key, user string) *client.Client {
	t.Helper()
	c := dialServe(t, data, addr, key, user, "phone", 0)
	t.Cleanup(func() { c.Close() })
	return c
}

// servedWithSends starts `imsync serve` on a new data directory in a
// process of its own and has ann send to bob all along.
func servedWithSends(t *testing.T) (data string, server *exec.Cmd, s *sender, key *transport.Key) {
	t.Helper()
	return servedWithSendsOpt(t, serveOptions{})
}

func servedWithSendsOpt(t *testing.T, opt serveOptions) (data string, server *exec.Cmd, s *sender, key *transport.Key) {
	t.Helper()
	if testing.Short() {
		t.Skip("spawns processes")
	}
	if teststore.ESDB() {
		t.Skip("checkpoints are the embedded store's; the EventStoreDB backend is read with --store (TestToolsOnESDB)")
	}
	data = filepath.Join(t.TempDir(), "data")
	key, err := transport.LoadOrCreateKey(data)
	if err != nil {
		t.Fatal(err)
	}
	ch := startServe(t, data, opt, "--listen", "127.0.0.1:0")
	server, addr := ch.cmd, ch.addr
	ann := dialUser(t, data, addr, key, "ann")
	s = startSender(t, ann, "bob")
	t.Cleanup(func() {
		select {
		case <-s.stop:
		default:
			s.halt()
		}
	})
	return data, server, s, key
}

// exportedMessages reads a JSONL export: client message id → seq of each
// MessageSent row, and the rows' positions in order.
func exportedMessages(t *testing.T, path string) (map[string]uint64, []uint64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	msgs := map[string]uint64{}
	var positions []uint64
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var row struct {
			Type        string `json:"type"`
			Position    uint64 `json:"position"`
			ClientMsgID string `json:"client_msg_id"`
			Seq         uint64 `json:"seq"`
			Stream      string `json:"stream"`
		}
		if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
			t.Fatal(err)
		}
		positions = append(positions, row.Position)
		if row.Type == "MessageSent" && strings.HasPrefix(row.Stream, events.ConversationPrefix) {
			if _, dup := msgs[row.ClientMsgID]; dup {
				t.Fatalf("message %s exported twice", row.ClientMsgID)
			}
			msgs[row.ClientMsgID] = row.Seq
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return msgs, positions
}

func noCheckpointLeft(t *testing.T, data string) {
	t.Helper()
	entries, _ := os.ReadDir(data)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), checkpointTempPrefix) {
			t.Fatalf("temporary checkpoint %s left in the data directory", e.Name())
		}
	}
}

// TestToolsBesideRunningServer: export, replay, stats and store log/read
// run while `imsync serve` (a process of its own) holds the store and
// acknowledges sends; they read a consistent checkpoint that holds every
// send acknowledged before they started, say so on standard error, and
// remove it afterwards. replay's checkpoint stays in DIR/projections: a
// later run continues it, and once the server is gone the stats it built
// over three runs equal a replay from scratch.
func TestToolsBesideRunningServer(t *testing.T) {
	data, server, s, _ := servedWithSends(t)
	s.waitAcked(30)
	before := s.snapshot()

	out := filepath.Join(t.TempDir(), "events.jsonl")
	stdout, stderr, err := runChild(t, "export", "--data", data, "--format", "jsonl", "--out", out)
	if err != nil {
		t.Fatalf("export beside the server: %v\n%s", err, stderr)
	}
	if !strings.Contains(stderr, "a server is running on "+data+": reading a consistent checkpoint of its store, up to position") {
		t.Fatalf("export did not say it read a checkpoint: %q", stderr)
	}
	exported, positions := exportedMessages(t, out)
	for id, seq := range before {
		if exported[id] != seq {
			t.Fatalf("message %s acknowledged at seq %d before the export; exported at %d", id, seq, exported[id])
		}
	}
	exportedAt := map[uint64]bool{}
	for i, p := range positions {
		if i > 0 && p <= positions[i-1] {
			t.Fatalf("exported row %d at position %d, after %d", i, p, positions[i-1])
		}
		exportedAt[p] = true
	}
	// No event missing: whatever the log still shows up to the export's
	// last position was exported. (Retention only hides more as time goes
	// on: the fanout watcher's checkpoint stream keeps its last four, so
	// the log itself has gaps where older checkpoints were.)
	logged, stderr, err := runChild(t, "store", "log", "--data", data, "--limit", "10000")
	if err != nil {
		t.Fatalf("store log beside the server: %v\n%s", err, stderr)
	}
	for _, row := range lines(t, logged) {
		if p := uint64(row["position"].(float64)); p <= positions[len(positions)-1] && !exportedAt[p] {
			t.Fatalf("the log shows position %d (%v), the export skipped it", p, row)
		}
	}
	if rows := lines1(t, stdout)["rows"]; rows != float64(len(positions)) {
		t.Fatalf("export printed %s, wrote %d rows", stdout, len(positions))
	}
	noCheckpointLeft(t, data)

	replayOnce := func() replayResult {
		t.Helper()
		stdout, stderr, err := runChild(t, "replay", "--data", data, "--projection", "stats")
		if err != nil {
			t.Fatalf("replay: %v\n%s", err, stderr)
		}
		var res replayResult
		if err := json.Unmarshal([]byte(stdout), &res); err != nil {
			t.Fatalf("replay printed %q", stdout)
		}
		return res
	}
	first := replayOnce()
	if first.Events == 0 || first.Position < positions[len(positions)-1] {
		t.Fatalf("replay beside the server: %+v, want at least the %d exported events", first, len(positions))
	}

	stdout, stderr, err = runChild(t, "store", "log", "--data", data, "--limit", "3")
	if err != nil || len(lines(t, stdout)) != 3 || !strings.Contains(stderr, "reading a consistent checkpoint") {
		t.Fatalf("store log beside the server: %v, %q, %q", err, stdout, stderr)
	}
	conv := events.ConversationStream(actors.DirectID("ann", "bob"))
	stdout, _, err = runChild(t, "store", "read", "--data", data, "--stream", conv, "--limit", "2")
	if l := lines(t, stdout); err != nil || len(l) != 2 || l[1]["seq"] != 2.0 {
		t.Fatalf("store read beside the server: %v, %q", err, stdout)
	}
	if _, stderr, err := runChild(t, "store", "append", "--data", data, "--stream", "x", "t"); err == nil ||
		!strings.Contains(stderr, "needs the server on "+data+" stopped") {
		t.Fatalf("store append beside the server: %v, %q", err, stderr)
	}

	s.waitAcked(len(before) + 30)
	second := replayOnce()
	if second.Events == 0 || second.Position <= first.Position {
		t.Fatalf("second replay %+v did not continue after %+v", second, first)
	}
	stdout, _, err = runChild(t, "stats", "--data", data, "--json")
	if err != nil {
		t.Fatal(err)
	}
	noCheckpointLeft(t, data)

	s.halt()
	server.Process.Kill()
	server.Wait()
	// Stopped: the checkpointed stats (three runs, two of them beside the
	// server) resume to what one replay from scratch counts.
	resumed := resumedStats(t, data)
	if resumed.Days[0].Messages < len(s.snapshot()) {
		t.Fatalf("stats count %d messages, %d were acknowledged", resumed.Days[0].Messages, len(s.snapshot()))
	}
}

// resumedStats runs `imsync stats` on data, which resumes from the
// checkpoint, and holds the report against a replay from scratch.
func resumedStats(t *testing.T, data string) projections.StatsReport {
	t.Helper()
	var resumed projections.StatsReport
	stdout, _, err := runChild(t, "stats", "--data", data, "--json")
	if err != nil || json.Unmarshal([]byte(stdout), &resumed) != nil {
		t.Fatalf("stats: %v %q", err, stdout)
	}
	if want := statsFromScratch(t, data); !reflect.DeepEqual(resumed, want) {
		t.Fatalf("resumed stats\n %+v\nfrom scratch\n %+v", resumed, want)
	}
	return resumed
}

// statsFromScratch replays stats over data's store in memory.
func statsFromScratch(t *testing.T, data string) projections.StatsReport {
	t.Helper()
	st, err := events.Open(storeDir(data), events.Options{ScavengeInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	p := projections.NewStats()
	last, err := st.ReadAll(context.Background(), events.ReadAllOptions{Direction: events.Backwards, From: events.PositionEnd, Limit: 1, Filter: p.Filter()})
	if err != nil || len(last) == 0 {
		t.Fatalf("store: %v", err)
	}
	r := &projections.Runner{Store: st, Checkpoints: &projections.MemoryCheckpoints{}, Projection: p, Until: last[0].Position}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	return p.Report()
}

// TestBackupOfRunningServer: a backup taken while the server acknowledges
// sends holds every message acknowledged before it; a server started on
// the copy serves them all, at their seqs, to a device whose token the
// original's key signed.
func TestBackupOfRunningServer(t *testing.T) {
	data, server, s, key := servedWithSends(t)
	s.waitAcked(40)
	before := s.snapshot()
	copyDir := filepath.Join(t.TempDir(), "backup")
	stdout, stderr, err := runChild(t, "backup", "--data", data, "--out", copyDir)
	if err != nil {
		t.Fatalf("backup: %v\n%s", err, stderr)
	}
	res := lines1(t, stdout)
	if res["server_running"] != true || res["position"].(float64) == 0 {
		t.Fatalf("backup printed %s", stdout)
	}
	for _, f := range []string{"token.key", transport.CertFile, "server.key", transport.ResetKeyFile, dataMarker} {
		if _, err := os.Stat(filepath.Join(copyDir, f)); err != nil {
			t.Errorf("backup lacks %s: %v", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(copyDir, controlSocketName)); err == nil {
		t.Error("backup copied the control socket")
	}
	noCheckpointLeft(t, data)
	s.waitAcked(len(before) + 20) // the server went on
	s.halt()
	server.Process.Kill()
	server.Wait()

	// A non-empty --out is refused and left alone.
	if _, stderr, err := runChild(t, "backup", "--data", data, "--out", copyDir); err == nil || !strings.Contains(stderr, "is not empty") {
		t.Fatalf("backup into a non-empty directory: %v %q", err, stderr)
	}

	// Restore: a server on the copy.
	_, addr := startChild(t, copyDir)
	bob := dialUser(t, copyDir, addr, key, "bob")
	conv := actors.DirectID("ann", "bob")
	got := map[string]uint64{}
	var after uint64
	for {
		var page *eventspb.History
		err := withTimeout(20*time.Second, func(ctx context.Context) error {
			var err error
			page, err = bob.History(ctx, conv, client.HistoryQuery{After: after, FromStart: true, Limit: 1000})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range page.Messages {
			got[m.Message.GetClientMsgId()] = m.Seq
			after = m.Seq
		}
		if !page.More {
			break
		}
	}
	for id, seq := range before {
		if got[id] != seq {
			t.Fatalf("message %s acknowledged at seq %d before the backup; the restored server has it at %d", id, seq, got[id])
		}
	}

	// A stopped server's directory backs up too, events and all.
	stopped := filepath.Join(t.TempDir(), "backup2")
	if _, err := runCmd(t, "backup", "--data", data, "--out", stopped); err != nil {
		t.Fatal(err)
	}
	a, b := openStoreOf(t, data), openStoreOf(t, stopped)
	defer a.Close()
	defer b.Close()
	ea, err := a.ReadAll(context.Background(), events.ReadAllOptions{Limit: events.MaxReadLimit})
	if err != nil {
		t.Fatal(err)
	}
	eb, err := b.ReadAll(context.Background(), events.ReadAllOptions{Limit: events.MaxReadLimit})
	if err != nil || len(ea) != len(eb) || ea[len(ea)-1].ID != eb[len(eb)-1].ID {
		t.Fatalf("backup of the stopped server holds %d events (%v), the store %d", len(eb), err, len(ea))
	}
}

// bigStore makes a data directory whose store holds n messages in a few
// conversations, each with two inbox entries.
func bigStore(t *testing.T, n int) string {
	t.Helper()
	data := filepath.Join(t.TempDir(), "data")
	s, err := events.Open(storeDir(data), events.Options{ScavengeInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	const batch = 500
	for i := 0; i < n; i += batch {
		conv := fmt.Sprint("c", i/batch%7)
		var msgs, ptrs []events.EventData
		for j := i; j < min(i+batch, n); j++ {
			e, _ := events.Encode(uuid.Nil, &eventspb.MessageSent{Sender: fmt.Sprint("u", j%13), Kind: "text", Body: []byte(fmt.Sprint("hello ", j))})
			msgs = append(msgs, e)
		}
		res, err := s.AppendToStream(ctx, events.ConversationStream(conv), events.Any, msgs...)
		if err != nil {
			t.Fatal(err)
		}
		first := uint64(res.NextExpected) + 2 - uint64(len(msgs))
		for k := range msgs {
			p, _ := events.Encode(uuid.Nil, &eventspb.MessagePointer{ConversationId: conv, Seq: first + uint64(k)})
			ptrs = append(ptrs, p)
		}
		for _, user := range []string{"ann", "bob"} {
			if _, err := s.AppendToStream(ctx, events.InboxStream(user), events.Any, ptrs...); err != nil {
				t.Fatal(err)
			}
		}
	}
	return data
}

// TestReplayKilledResumes: `imsync replay` killed with SIGKILL in the
// middle of a replay, after it saved a checkpoint, resumes from that
// checkpoint: the second run applies exactly the events after it, and the
// stats equal a replay from scratch (neither loss nor double counting).
func TestReplayKilledResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	data := bigStore(t, 10_000)
	cpFile := filepath.Join(checkpointDir(data), "stats.checkpoint")
	cmd := childCmd(t, "replay", "--data", data, "--projection", "stats")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(cpFile); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("replay saved no checkpoint")
		}
		time.Sleep(time.Millisecond)
	}
	cmd.Process.Kill() // SIGKILL
	cmd.Wait()

	cps := projections.FileCheckpoints{Dir: checkpointDir(data)}
	cp, ok, err := cps.Load(context.Background(), "stats")
	if err != nil || !ok {
		t.Fatalf("checkpoint after the kill: %v %v", ok, err)
	}
	st, err := events.Open(storeDir(data), events.Options{ScavengeInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	filter := projections.NewStats().Filter()
	var total, afterCP int
	from := events.PositionStart
	for {
		page, err := st.ReadAll(context.Background(), events.ReadAllOptions{From: from, Limit: 5000, Filter: filter})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page {
			if e.Position == from && total > 0 {
				continue
			}
			total++
			if cp.Position.Less(e.Position) {
				afterCP++
			}
		}
		if len(page) < 5000 {
			break
		}
		from = page[len(page)-1].Position
	}
	st.Close()
	if afterCP == 0 || afterCP == total {
		t.Fatalf("the kill came at %d events of %d: not in the middle of the replay", total-afterCP, total)
	}

	stdout, stderr, err := runChild(t, "replay", "--data", data, "--projection", "stats")
	if err != nil {
		t.Fatalf("resumed replay: %v\n%s", err, stderr)
	}
	if got := lines1(t, stdout)["events"]; got != float64(afterCP) {
		t.Fatalf("resumed replay applied %v events; %d follow the checkpoint", got, afterCP)
	}
	resumedStats(t, data)
}

// TestToolsOnESDB: export, replay and stats read the events through the
// EventStoreDB backend with --store (or IMSYNC_STORE), as serve does;
// replay keeps its checkpoint in --data.
func TestToolsOnESDB(t *testing.T) {
	ctx := context.Background()
	s, srv := teststore.OpenESDB(t)
	url := srv.URL()
	for i := range 40 {
		e, _ := events.Encode(uuid.Nil, &eventspb.MessageSent{Sender: fmt.Sprint("u", i%3), ClientMsgId: fmt.Sprint("m", i), Kind: "text", Body: []byte(fmt.Sprint("hi ", i))})
		if _, err := s.AppendToStream(ctx, "conv-c1", events.Any, e); err != nil {
			t.Fatal(err)
		}
		p, _ := events.Encode(uuid.Nil, &eventspb.MessagePointer{ConversationId: "c1", Seq: uint64(i + 1)})
		if _, err := s.AppendToStream(ctx, "inbox-bob", events.Any, p); err != nil {
			t.Fatal(err)
		}
	}
	stored, err := s.ReadAll(ctx, events.ReadAllOptions{Limit: events.MaxReadLimit, Filter: events.Filter{StreamPrefixes: []string{"conv-", "inbox-"}}})
	if err != nil || len(stored) != 80 {
		t.Fatalf("store holds %d events: %v", len(stored), err)
	}

	out := filepath.Join(t.TempDir(), "events.jsonl")
	if _, err := runCmd(t, "export", "--store", url, "--format", "jsonl", "--out", out, "--streams", "conv-", "--streams", "inbox-"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	rows := lines(t, string(b))
	if len(rows) != len(stored) {
		t.Fatalf("exported %d rows of %d events", len(rows), len(stored))
	}
	for i, e := range stored {
		if rows[i]["stream"] != e.Stream || rows[i]["position"] != float64(e.Position.Commit) || rows[i]["id"] != e.ID.String() {
			t.Fatalf("row %d %v, event %+v", i, rows[i], e)
		}
	}

	data := filepath.Join(t.TempDir(), "analyst")
	res, err := runCmd(t, "replay", "--data", data, "--store", url, "--projection", "stats")
	if err != nil || lines1(t, res)["events"] != 80.0 {
		t.Fatalf("replay --store: %v %s", err, res)
	}
	if _, err := os.Stat(filepath.Join(checkpointDir(data), "stats.checkpoint")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("IMSYNC_STORE", url)
	res, err = runCmd(t, "stats", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var rep projections.StatsReport
	if err := json.Unmarshal([]byte(res), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Days) != 1 || rep.Days[0].Messages != 40 || rep.Days[0].ActiveUsers != 3 || rep.Fanout.Count != 40 || rep.LagMS.Count != 40 {
		t.Fatalf("stats through IMSYNC_STORE: %+v", rep)
	}
}

// TestBackupRefusals: a directory that is no server's, a copy inside the
// data directory and missing flags are refused, and nothing is written.
func TestBackupRefusals(t *testing.T) {
	data, _ := exportData(t, 3)
	notData := t.TempDir()
	out := filepath.Join(t.TempDir(), "out")
	if _, err := runCmd(t, "backup", "--data", notData, "--out", out); err == nil || !strings.Contains(err.Error(), "not the data directory of a server") {
		t.Fatalf("backup of a directory that is no server's: %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("a refused backup created %s: %v", out, err)
	}
	for _, args := range [][]string{
		{"backup", "--data", data},
		{"backup", "--out", out},
		{"backup", "--data", data, "--out", filepath.Join(data, "copy")},
		{"backup", "--data", data, "--out", out, "extra"},
	} {
		if _, err := runCmd(t, args...); !errors.Is(err, errUsage) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
	if _, err := os.Stat(filepath.Join(data, "copy")); !os.IsNotExist(err) {
		t.Fatal("a refused backup wrote inside the data directory")
	}
	// A store held by a process that has no control socket: refused, and
	// the half-made copy is removed.
	held, err := events.Open(storeDir(data), events.Options{ScavengeInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = runCmd(t, "backup", "--data", data, "--out", out)
	held.Close()
	if !errors.Is(err, events.ErrInUse) || !strings.Contains(err.Error(), "stop the server") {
		t.Fatalf("backup of a store held without a control socket: %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("a failed backup left %s: %v", out, err)
	}
}

// followed is a running `imsync store log --follow`: its rows as they come.
type followed struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	rows   chan map[string]any
}

func startFollow(t *testing.T, args ...string) *followed {
	t.Helper()
	f := &followed{cmd: childCmd(t, append([]string{"store", "log", "--follow"}, args...)...), stderr: &syncBuffer{}, rows: make(chan map[string]any, 1<<16)}
	out, err := f.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	f.cmd.Stderr = f.stderr
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.cmd.Process.Kill(); f.cmd.Wait() })
	go func() {
		defer close(f.rows)
		sc := bufio.NewScanner(out)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				m = map[string]any{"not_json": sc.Text()}
			}
			f.rows <- m
		}
	}()
	return f
}

// TestStoreLogFollowBesideRunningServer: `store log --follow` follows the
// store of a running server (through its control socket): every event in
// order without a gap or a repeat, including the sends acknowledged while
// it follows; --from and --prefix narrow it; when the server stops, the
// tool ends with status 5 and names the position to follow on from, and
// what it printed equals the stopped store's log.
func TestStoreLogFollowBesideRunningServer(t *testing.T) {
	data, server, s, _ := servedWithSendsOpt(t, serveOptions{drain: true})
	s.waitAcked(10)
	all := startFollow(t, "--data", data)
	conv := events.ConversationStream(actors.DirectID("ann", "bob"))
	narrow := startFollow(t, "--data", data, "--from", "5", "--prefix", conv)

	// Follow until the sends acknowledged after the tools started show up.
	s.waitAcked(len(s.snapshot()) + 20)
	want := s.snapshot()
	var got []map[string]any
	seen := map[string]float64{}
	deadline := time.After(60 * time.Second)
	for len(seen) < len(want) {
		select {
		case r, ok := <-all.rows:
			if !ok {
				t.Fatalf("the follow ended early: %s", all.stderr.String())
			}
			if r["position"] != float64(len(got)+1) {
				t.Fatalf("row %d at position %v: want %d (gapless, in order)", len(got), r["position"], len(got)+1)
			}
			got = append(got, r)
			if r["type"] == "MessageSent" && r["stream"] == conv {
				seen[r["client_msg_id"].(string)] = r["seq"].(float64)
			}
		case <-deadline:
			t.Fatalf("followed %d rows; %d of %d acknowledged sends seen", len(got), len(seen), len(want))
		}
	}
	for id, seq := range want {
		if seen[id] != float64(seq) {
			t.Fatalf("send %s acknowledged at seq %d, followed at %v", id, seq, seen[id])
		}
	}
	if !strings.Contains(all.stderr.String(), "following its store live") {
		t.Fatalf("the tool did not say it follows the running server: %q", all.stderr.String())
	}
	// --from 5 --prefix: exactly the conversation's events from position 5 on.
	var wantNarrow []map[string]any
	for _, r := range got {
		if r["stream"] == conv && r["position"].(float64) >= 5 {
			wantNarrow = append(wantNarrow, r)
		}
	}
	for i := 0; i < 5; i++ {
		if r := <-narrow.rows; !reflect.DeepEqual(r, wantNarrow[i]) {
			t.Fatalf("--from 5 --prefix %s: row %d is %v, want %v", conv, i, r, wantNarrow[i])
		}
	}

	// A graceful stop does not wait for the followers; they end with the
	// position to follow on from.
	s.halt()
	server.Process.Signal(syscall.SIGTERM)
	if err := server.Wait(); err != nil {
		t.Fatalf("the server stopped with %v while tools followed it", err)
	}
	for r := range all.rows { // what it printed until the server stopped
		if r["position"] != float64(len(got)+1) {
			t.Fatalf("row %d at position %v: want %d (gapless, in order)", len(got), r["position"], len(got)+1)
		}
		got = append(got, r)
	}
	err := all.cmd.Wait()
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	}
	if code != exitUnavailable || !strings.Contains(all.stderr.String(), "stopped") ||
		!strings.Contains(all.stderr.String(), "follow on with --from") {
		t.Fatalf("follow after the server stopped: status %d (%v), stderr %q", code, err, all.stderr.String())
	}
	printed := len(got)
	if m := regexp.MustCompile(`follow on with --from (\d+)`).FindStringSubmatch(all.stderr.String()); m == nil || m[1] != strconv.Itoa(printed+1) {
		t.Fatalf("the tool printed positions 1..%d and said %q", printed, all.stderr.String())
	}
	stdout, stderr, err := runChild(t, "store", "log", "--data", data, "--limit", "10000")
	if err != nil {
		t.Fatalf("store log after the server stopped: %v\n%s", err, stderr)
	}
	log := lines(t, stdout)
	for i, r := range got {
		if i >= len(log) {
			t.Fatalf("followed %d rows, the stopped store holds %d", i+1, len(log))
		}
		if !reflect.DeepEqual(r, log[i]) {
			t.Fatalf("followed row %d %v, the stopped store holds %v", i, r, log[i])
		}
	}
}
