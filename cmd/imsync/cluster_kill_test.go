//go:build cluster

// Multi-process cluster tests: three `imsync serve --cluster` processes
// and the EventStoreDB protocol server as a fourth. They run only with
// -tags cluster (and without -race: four instrumented processes on a small
// machine take minutes):
//
//	go test -tags cluster -run '^TestCluster' ./cmd/imsync/

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/imsync/imsync/actors/etcdtest"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/esdb"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/client"
)

// clusterChildEnv carries a child's serve arguments (JSON). Not an
// IMSYNC_ variable: those set serve's flags.
const clusterChildEnv = "CLUSTER_TEST_SERVE_ARGS"

// TestClusterServeChild is one node of the cluster tests.
func TestClusterServeChild(t *testing.T) {
	raw := os.Getenv(clusterChildEnv)
	if raw == "" {
		t.Skip("only runs as a node of the cluster tests")
	}
	var args []string
	if err := json.Unmarshal([]byte(raw), &args); err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, args, os.Stdout); err != nil {
		fmt.Println("serve:", err)
		os.Exit(exitCode(err))
	}
}

// clusterNode is one `imsync serve --cluster` process.
type clusterNode struct {
	data, listen, advertise string
	ops                     string   // its --ops address (/metrics)
	extra                   []string // more serve flags
	cmd                     *exec.Cmd
}

// freePort returns a loopback TCP port p such that p+1000 (the member's
// health port) is free too, on every interface, as the provider binds it.
func freeMemberPort(t *testing.T) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		if p+1000 > 65535 {
			l.Close()
			continue
		}
		h, err := net.Listen("tcp", fmt.Sprintf(":%d", p+1000))
		l.Close()
		if err != nil {
			continue
		}
		h.Close()
		return p
	}
	t.Fatal("no free pair of member ports")
	return 0
}

func freeUDPAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().String()
}

// start runs the node and waits until it listens; membership is its
// --peers or --etcd flag.
func (n *clusterNode) start(t *testing.T, storeURL string, membership ...string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args, _ := json.Marshal(append([]string{"serve", "--data", n.data, "--listen", n.listen, "--store", storeURL,
		"--cluster", "chat", "--advertise", n.advertise, "--ops", n.ops,
		// The resends at the end go as fast as the nodes answer.
		"--request-rate", "100000", "--request-burst", "100000"}, append(membership, n.extra...)...))
	cmd := exec.Command(exe, "-test.run=^TestClusterServeChild$")
	cmd.Env = append(os.Environ(), clusterChildEnv+"="+string(args))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "listening on "+n.listen) {
			go io.Copy(io.Discard, out)
			n.cmd = cmd
			return
		}
	}
	cmd.Process.Kill()
	t.Fatalf("node %s did not start", n.advertise)
}

// kill9 ends the node the way a crash would.
func (n *clusterNode) kill9() {
	n.cmd.Process.Signal(syscall.SIGKILL)
	n.cmd.Wait()
}

func (n *clusterNode) stop() {
	n.cmd.Process.Signal(syscall.SIGTERM)
	n.cmd.Wait()
}

// startProtocolServer builds cmd/esdb-testserver and runs it on a store
// in dir; it returns the connection string.
func startProtocolServer(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "esdb-testserver")
	if out, err := exec.Command("go", "build", "-o", bin, "../esdb-testserver").CombinedOutput(); err != nil {
		t.Fatalf("build esdb-testserver: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "--data", dir, "--listen", "127.0.0.1:0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	sc := bufio.NewScanner(out)
	if !sc.Scan() || !strings.HasPrefix(sc.Text(), "esdb://") {
		t.Fatalf("esdb-testserver did not start: %q", sc.Text())
	}
	go io.Copy(io.Discard, out)
	return sc.Text()
}

// clusterFixture is a protocol server and three nodes sharing one token
// key, certificate and stateless reset key, as docs/cluster.md says.
type clusterFixture struct {
	t        *testing.T
	root     string
	storeURL string
	etcd     string               // the nodes' --etcd; --peers when empty
	extra    func(i int) []string // more serve flags for node i (nil: none)
	nodes    []*clusterNode
	key      *transport.Key
	pem      []byte
}

// startCluster starts three nodes that know each other by --peers.
func startCluster(t *testing.T) *clusterFixture { return startClusterWith(t, "") }

// startClusterWith starts three nodes that register in the etcd at
// etcdEndpoint, or know each other by --peers when it is empty.
func startClusterWith(t *testing.T, etcdEndpoint string) *clusterFixture {
	t.Helper()
	return startClusterOf(t, etcdEndpoint, nil)
}

// startClusterExtra starts three nodes that know each other by --peers,
// node i with the serve flags extra(i) besides.
func startClusterExtra(t *testing.T, extra func(i int) []string) *clusterFixture {
	t.Helper()
	return startClusterOf(t, "", extra)
}

func startClusterOf(t *testing.T, etcdEndpoint string, extra func(i int) []string) *clusterFixture {
	t.Helper()
	f := newClusterFixture(t, etcdEndpoint, extra)
	for range 3 {
		f.addNode()
	}
	for i := range f.nodes {
		f.startNode(i)
	}
	return f
}

// newClusterFixture starts the protocol server and makes the secrets the
// nodes share; it adds no node.
func newClusterFixture(t *testing.T, etcdEndpoint string, extra func(i int) []string) *clusterFixture {
	t.Helper()
	root := t.TempDir()
	f := &clusterFixture{t: t, root: root, etcd: etcdEndpoint, extra: extra, storeURL: startProtocolServer(t, filepath.Join(root, "esdb"))}
	first := filepath.Join(root, "n1")
	var err error
	if f.key, err = transport.LoadOrCreateKey(first); err != nil {
		t.Fatal(err)
	}
	if _, err := transport.LoadOrCreateCert(first); err != nil {
		t.Fatal(err)
	}
	if _, err := transport.LoadOrCreateResetKey(first); err != nil {
		t.Fatal(err)
	}
	if err := markDataDir(first); err != nil {
		t.Fatal(err)
	}
	if f.pem, err = os.ReadFile(filepath.Join(first, transport.CertFile)); err != nil {
		t.Fatal(err)
	}
	return f
}

// addNode adds a node that is not started yet; its data directory is a
// copy of the first node's.
func (f *clusterFixture) addNode() {
	t := f.t
	t.Helper()
	n := &clusterNode{data: filepath.Join(f.root, fmt.Sprintf("n%d", len(f.nodes)+1)), listen: freeUDPAddr(t),
		advertise: fmt.Sprintf("127.0.0.1:%d", freeMemberPort(t)), ops: freeTCPAddr(t)}
	if f.extra != nil {
		n.extra = f.extra(len(f.nodes))
	}
	if len(f.nodes) > 0 {
		first := f.nodes[0].data
		files, _ := os.ReadDir(first)
		if err := os.MkdirAll(n.data, 0o700); err != nil {
			t.Fatal(err)
		}
		for _, e := range files {
			if e.IsDir() {
				continue
			}
			b, err := os.ReadFile(filepath.Join(first, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(n.data, e.Name()), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	f.nodes = append(f.nodes, n)
}

func (f *clusterFixture) peersOf(i int) []string {
	var out []string
	for j, n := range f.nodes {
		if j != i {
			out = append(out, n.advertise)
		}
	}
	return out
}

func (f *clusterFixture) startNode(i int) {
	if f.etcd != "" {
		f.nodes[i].start(f.t, f.storeURL, "--etcd", f.etcd)
		return
	}
	f.nodes[i].start(f.t, f.storeURL, "--peers", strings.Join(f.peersOf(i), ","))
}

// dial connects a device to node i, with the other nodes to fall back on
// when only is false.
func (f *clusterFixture) dial(user, dev string, i int, only bool, last uint64) *client.Client {
	f.t.Helper()
	tok, err := f.key.Mint(user, dev, time.Hour, time.Now())
	if err != nil {
		f.t.Fatal(err)
	}
	tlsConf, err := client.PinnedTLS(f.pem)
	if err != nil {
		f.t.Fatal(err)
	}
	cfg := client.Config{Addr: f.nodes[i].listen, Token: tok, TLS: tlsConf, LastUserSeq: last, KeepAlive: 500 * time.Millisecond, IdleTimeout: 3 * time.Second}
	if !only {
		for j := range f.nodes {
			if j != i {
				cfg.Addrs = append(cfg.Addrs, f.nodes[(i+j)%len(f.nodes)].listen)
			}
		}
	}
	var c *client.Client
	if err := withTimeout(30*time.Second, func(ctx context.Context) error {
		c, err = client.Dial(ctx, cfg)
		return err
	}); err != nil {
		f.t.Fatalf("dial %s/%s at node %d: %v", user, dev, i+1, err)
	}
	return c
}

func (f *clusterFixture) openStore() events.Store {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := esdb.Open(ctx, f.storeURL, esdb.Options{})
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

// crossNodePush sends from sender's device on node `via` to receiver,
// whose only connection is on node `at`, until a send's entry reaches that
// connection; it records the sends in h and returns how long the last one
// took from acknowledgement to arrival. Until the members know each other,
// each node is a cluster of its own and pushes stay on it: so the first
// sends may need several tries.
func (f *clusterFixture) crossNodePush(h *history, sender, receiver string, via, at int, attempt *int) time.Duration {
	f.t.Helper()
	rc := f.dial(receiver, "watch", at, true, 0)
	defer rc.Close()
	sc := f.dial(sender, "probe", via, true, 0)
	defer sc.Close()
	// Skip what the timeline holds already.
	for newest := rc.Welcome().GetUserSeq(); newest > 0; {
		select {
		case e := <-rc.Entries():
			if e.UserSeq >= newest {
				newest = 0
			}
		case <-time.After(20 * time.Second):
			f.t.Fatalf("%s/watch did not catch up to %d", receiver, newest)
		}
	}
	for end := time.Now().Add(90 * time.Second); time.Now().Before(end); {
		*attempt++
		o := h.begin(&op{kind: opSend, user: sender, conv: directID(sender, receiver), to: receiver, cid: fmt.Sprintf("probe-%d", *attempt)})
		if err := retryUnavailable(func() error {
			return withTimeout(20*time.Second, func(ctx context.Context) error { return o.do(ctx, h, sc) })
		}); err != nil {
			f.t.Fatalf("probe send via node %d: %v", via+1, err)
		}
		acked := time.Now()
		for wait := time.After(2 * time.Second); ; {
			select {
			case e := <-rc.Entries():
				if p, ok := e.Message.(*eventspb.MessagePointer); ok && p.ConversationId == o.conv && p.Seq == o.answer {
					return time.Since(acked)
				}
				continue
			case <-wait:
			}
			break
		}
	}
	f.t.Fatalf("no send by %s through node %d reached %s's connection on node %d", sender, via+1, receiver, at+1)
	return 0
}

// retryUnavailable repeats call, as a client does, while it fails with
// UNAVAILABLE: right after a membership change, a grain active on two
// nodes answers so once from the one that is behind (docs/cluster.md).
func retryUnavailable(call func() error) error {
	var err error
	for range 5 {
		if err = call(); client.CodeOf(err) != client.CodeUnavailable {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
	return err
}

// TestClusterKill9UnderLoad: three nodes over the protocol server, every
// user's phone on a different node (falling back on the others), 1:1 and
// group sends, recalls, read markers and membership changes through all
// three; one node SIGKILLed mid-load and started again. The history of
// everything acknowledged is then held against the store as in
// TestKill9UnderLoad: each acknowledged message stored once at its
// acknowledged seq, every member's sync timeline gapless and complete,
// every device converging to it; the phones of the killed node reconnect
// to the others and resume. A device on one node sees what is sent through
// another, before and after the kill. It runs with each membership
// provider: the static list (--peers) and etcd (--etcd, an etcd in the
// test process); the killed node must leave the others' topology, and the
// restarted one (a new member at the same address) join it again.
func TestClusterKill9UnderLoad(t *testing.T) {
	t.Run("peers", func(t *testing.T) {
		clusterKill9UnderLoad(t, func(t *testing.T) *clusterFixture { return startCluster(t) })
	})
	t.Run("etcd", func(t *testing.T) {
		clusterKill9UnderLoad(t, func(t *testing.T) *clusterFixture { return startClusterWith(t, etcdtest.Start(t)) })
	})
}

func clusterKill9UnderLoad(t *testing.T, start func(*testing.T) *clusterFixture) {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("IMSYNC_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("seed %d (rerun with IMSYNC_SEED=%d)", seed, seed)
	began := time.Now()
	f := start(t)
	t.Logf("three nodes up in %s", time.Since(began).Round(time.Millisecond))
	h := &history{}
	probes := 0
	// A device on node 1 sees a message sent through node 3.
	took := f.crossNodePush(h, "bob", "ann", 2, 0, &probes)
	t.Logf("cross-node push: sent through node 3, on node 1's connection %s after the acknowledgement (%d probes until the members knew each other)", took.Round(time.Microsecond), probes)

	users := crewUsers
	const group, admin, joiner = crewGroup, crewAdmin, crewJoiner
	devices := map[string]*device{}
	for _, u := range users {
		for _, d := range []string{"phone", "tablet"} {
			devices[u+"/"+d] = &device{user: u, name: d}
		}
	}
	setup := f.dial(admin, "setup", 1, false, 0)
	if err := withTimeout(20*time.Second, func(ctx context.Context) error {
		_, err := setup.CreateGroup(ctx, group, group, []string{"bob", "cat", "dan"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	setup.Close()

	// Phones: user i on node i mod 3, falling back on the others.
	type phone struct {
		c    *client.Client
		done chan struct{}
	}
	phones := map[string]*phone{}
	for i, u := range users {
		d := devices[u+"/phone"]
		p := &phone{c: f.dial(u, "phone", i%3, false, 0), done: make(chan struct{})}
		go func() { d.consume(t, p.c); close(p.done) }()
		phones[u] = p
	}

	var opMu sync.Mutex
	nextOp := (&crewWorkload{h: h}).next

	// Load: each phone runs operations one after another; an operation
	// whose outcome a failure hid is retried with the same ids until it is
	// acknowledged, as an app would.
	var stop atomic.Bool
	var retriedOps atomic.Int64
	var wg sync.WaitGroup
	// However the test ends, the load stops before it does: a worker must
	// not report into a finished test.
	defer func() { stop.Store(true); wg.Wait() }()
	for i, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(i+1)))
			c := phones[u].c
			for !stop.Load() {
				opMu.Lock()
				o := nextOp(u, r)
				// A grain that moves while it handles a call is asked
				// again by the node that made the call (every grain
				// message is safe to repeat), so any call may have run
				// twice. A repeated recall or membership change answers
				// as a duplicate with the conversation's latest seq, not
				// the seq of its event: check only that each is stored
				// once and in order, as for calls the test itself repeats.
				o.retried = o.kind == opRecall || o.kind == opMember
				h.begin(o)
				opMu.Unlock()
				for end := time.Now().Add(90 * time.Second); ; {
					err := withTimeout(15*time.Second, func(ctx context.Context) error { return o.do(ctx, h, c) })
					if err == nil {
						break
					}
					if stop.Load() && t.Failed() {
						return // the test failed: leave the outcome open
					}
					if refused(err) {
						t.Errorf("%v refused: %v", o, err)
						return
					}
					if time.Now().After(end) {
						t.Errorf("%v not acknowledged in 90 s: %v", o, err)
						return
					}
					h.mu.Lock()
					o.retried = true
					h.mu.Unlock()
					retriedOps.Add(1)
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}
	acked := h.ackedCount
	waitAcked := func(n int, what string) {
		for end := time.Now().Add(120 * time.Second); acked() < n; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(end) || t.Failed() {
				stop.Store(true)
				t.Fatalf("%s: %d operations acknowledged, waited for %d", what, acked(), n)
			}
		}
	}
	ackedBy := func() map[string]int {
		h.mu.Lock()
		defer h.mu.Unlock()
		n := map[string]int{}
		for _, o := range h.ops {
			if o.acked {
				n[o.user]++
			}
		}
		return n
	}
	waitAcked(200, "before the kill")
	killedAt := time.Now()
	f.nodes[1].kill9()
	atKill := ackedBy()
	t.Logf("node 2 SIGKILLed with %d operations acknowledged", acked())
	left := f.waitMembers(2, 30*time.Second, 0, 2)
	t.Logf("node 2 left the others' topology %s after the kill", left.Round(time.Millisecond))
	waitAcked(acked()+200, "with node 2 down")
	// Every phone goes on while node 2 is down: those that were on it
	// reconnected to another node.
	for end := time.Now().Add(60 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		now, behind := ackedBy(), ""
		for _, u := range users {
			if now[u] <= atKill[u] {
				behind = u
			}
		}
		if behind == "" {
			break
		}
		if time.Now().After(end) || t.Failed() {
			stop.Store(true)
			t.Fatalf("%s's phone acknowledged nothing while node 2 was down", behind)
		}
	}
	f.startNode(1)
	t.Logf("node 2 started again with %d operations acknowledged", acked())
	back := f.waitMembers(3, 30*time.Second, 0, 1, 2)
	t.Logf("every node counted three members %s after node 2 listened", back.Round(time.Millisecond))
	waitAcked(acked()+200, "after node 2 came back")
	stop.Store(true)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	// Phones on the killed node reconnect first; the others' operations
	// wait only for their grains to move.
	onKilled := map[string]bool{}
	for i, u := range users {
		onKilled[u] = i%3 == 1
	}
	n, longest, which := h.across(killedAt, func(u string) bool { return !onKilled[u] })
	t.Logf("through the other nodes, %d operations were in flight at the kill; the longest was acknowledged after %s (%v)", n, longest.Round(time.Millisecond), which)
	n, longest, which = h.across(killedAt, func(u string) bool { return onKilled[u] })
	t.Logf("through the killed node, %d operations were in flight at the kill; the longest was acknowledged after %s (with the reconnection; %v)", n, longest.Round(time.Millisecond), which)
	// The restarted node takes part again: a device on it sees what is
	// sent through another node, and the other way round.
	took = f.crossNodePush(h, "cat", "dan", 0, 1, &probes)
	t.Logf("cross-node push after the restart: through node 1, on node 2's connection after %s", took.Round(time.Microsecond))
	took = f.crossNodePush(h, "dan", "cat", 1, 2, &probes)
	t.Logf("cross-node push after the restart: through node 2, on node 3's connection after %s", took.Round(time.Microsecond))

	// Every acknowledged send, sent again through another node, is a
	// duplicate at the same seq.
	for i, u := range users {
		c := f.dial(u, "resend", (i+1)%3, false, 0)
		for _, o := range h.snapshot() {
			if o.kind != opSend || o.user != u {
				continue
			}
			again := *o
			if err := retryUnavailable(func() error {
				return withTimeout(20*time.Second, func(ctx context.Context) error { return again.do(ctx, &history{}, c) })
			}); err != nil {
				t.Fatalf("resend of %v: %v", o, err)
			}
			if !again.dup || again.answer != o.answer {
				t.Fatalf("resend of %v acknowledged at %d: answered %d, duplicate %v", o, o.answer, again.answer, again.dup)
			}
		}
		c.Close()
	}
	for _, p := range phones {
		p.c.Close()
		<-p.done
	}

	store := f.openStore()
	defer store.Close()
	logs := h.checkConversations(t, store)

	// Every device converges: the phones (online throughout, on several
	// nodes) and the tablets (offline until now), each through a node
	// other than its phone's.
	for i, u := range users {
		owed := 0
		for _, keys := range expectedInbox(logs, u) {
			owed += len(keys)
		}
		for k, name := range []string{"phone", "tablet"} {
			d := devices[u+"/"+name]
			c := f.dial(u, name, (i+1+k)%3, false, d.last())
			consumed := make(chan struct{})
			go func() { d.consume(t, c); close(consumed) }()
			for end := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				d.mu.Lock()
				n := 0
				for _, e := range d.applied {
					if e.Type != "ReadMarkerMoved" {
						n++
					}
				}
				d.mu.Unlock()
				if n >= owed {
					break
				}
				if time.Now().After(end) {
					t.Fatalf("%s/%s holds %d of the %d entries its conversations owe it", u, name, n, owed)
				}
			}
			c.Close()
			<-consumed
		}
		c := f.dial(u, "lister", i%3, false, 0)
		var list *eventspb.ConversationList
		if err := withTimeout(20*time.Second, func(ctx context.Context) (err error) {
			list, err = c.Conversations(ctx)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		c.Close()
		h.checkList(t, logs, u, list)
	}
	var all []*device
	for _, u := range users {
		mine := []*device{devices[u+"/phone"], devices[u+"/tablet"]}
		checkInbox(t, store, logs, u, mine)
		all = append(all, mine...)
	}
	recalls := checkRecallsReached(t, logs, all)
	kinds := map[opKind]int{}
	for _, o := range h.snapshot() {
		kinds[o.kind]++
	}
	for _, n := range f.nodes {
		n.stop()
	}
	t.Logf("%v operations (%d retries after a failure), %d recall notices on devices; %s",
		kinds, retriedOps.Load(), recalls, time.Since(began).Round(time.Millisecond))
}

// udpProxy is a layer-4 balancer in miniature: one UDP address, each
// client flow forwarded to the backend that was current when the flow's
// latest packet came; moving the backend moves every flow at its next
// packet.
type udpProxy struct {
	pc      net.PacketConn
	mu      sync.Mutex
	backend string
	flows   map[string]*proxyFlow
}

type proxyFlow struct {
	up      *net.UDPConn
	backend string
}

func startUDPProxy(t *testing.T, backend string) *udpProxy {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &udpProxy{pc: pc, backend: backend, flows: map[string]*proxyFlow{}}
	t.Cleanup(func() {
		pc.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, f := range p.flows {
			f.up.Close()
		}
	})
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			p.mu.Lock()
			f := p.flows[from.String()]
			if f == nil || f.backend != p.backend {
				if f != nil {
					f.up.Close()
				}
				addr, _ := net.ResolveUDPAddr("udp", p.backend)
				up, err := net.DialUDP("udp", nil, addr)
				if err != nil {
					p.mu.Unlock()
					continue
				}
				f = &proxyFlow{up: up, backend: p.backend}
				p.flows[from.String()] = f
				go func() {
					b := make([]byte, 65536)
					for {
						n, err := up.Read(b)
						if err != nil {
							return
						}
						pc.WriteTo(b[:n], from)
					}
				}()
			}
			p.mu.Unlock()
			f.up.Write(buf[:n])
		}
	}()
	return p
}

func (p *udpProxy) moveTo(backend string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.backend = backend
}

// TestClusterBehindOneAddress: the nodes behind one UDP address. When the
// balancer moves a client's flow to another node, that node does not know
// the connection and answers with a stateless reset; since the nodes share
// reset.key, the client accepts it, reconnects through the same address —
// now to the other node — and its calls and pushes go on there, long
// before its idle timeout would have noticed anything.
func TestClusterBehindOneAddress(t *testing.T) {
	f := startCluster(t)
	proxy := startUDPProxy(t, f.nodes[0].listen)
	tok, err := f.key.Mint("ann", "phone", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tlsConf, err := client.PinnedTLS(f.pem)
	if err != nil {
		t.Fatal(err)
	}
	// An idle timeout far beyond the calls' deadlines: only the reset can
	// end the old connection in time.
	cfg := client.Config{Addr: proxy.pc.LocalAddr().String(), Token: tok, TLS: tlsConf, IdleTimeout: 5 * time.Minute, KeepAlive: -1}
	var ann *client.Client
	if err := withTimeout(30*time.Second, func(ctx context.Context) (err error) {
		ann, err = client.Dial(ctx, cfg)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ann.Close()
	bob := f.dial("bob", "phone", 2, true, 0)
	defer bob.Close()
	h := &history{}
	send := func(c *client.Client, user, to, cid string) *op {
		t.Helper()
		o := h.begin(&op{kind: opSend, user: user, conv: directID(user, to), to: to, cid: cid})
		if err := withTimeout(20*time.Second, func(ctx context.Context) error { return o.do(ctx, h, c) }); err != nil {
			t.Fatalf("send %s by %s: %v", cid, user, err)
		}
		return o
	}
	waitEntry := func(o *op) {
		t.Helper()
		for deadline := time.After(20 * time.Second); ; {
			select {
			case e := <-ann.Entries():
				if p, ok := e.Message.(*eventspb.MessagePointer); ok && p.ConversationId == o.conv && p.Seq == o.answer {
					return
				}
			case <-deadline:
				t.Fatalf("ann never got %s", o.cid)
			}
		}
	}
	waitEntry(send(bob, "bob", "ann", "before"))
	send(ann, "ann", "bob", "ann-before")

	proxy.moveTo(f.nodes[1].listen)
	moved := time.Now()
	send(ann, "ann", "bob", "ann-after") // reaches node 2 only through a new connection
	t.Logf("first call after the flow moved answered after %s", time.Since(moved).Round(time.Millisecond))
	waitEntry(send(bob, "bob", "ann", "after"))
}
