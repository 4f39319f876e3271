package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/client"
)

// startChild runs `imsync serve` in a child process and returns its address.
func startChild(t *testing.T, data string) (*exec.Cmd, string) {
	t.Helper()
	ch := startServe(t, data, serveOptions{}, "--listen", "127.0.0.1:0")
	return ch.cmd, ch.addr
}

// TestKill9UnderLoad kills the server with SIGKILL several times while
// every user's device sends (to a group and directly), recalls, marks read
// and, for the group's admin, adds and removes a member. Each time, the
// server restarts and every operation whose outcome the kill hid is retried
// with the same ids. A history of everything acknowledged is then held
// against the store (see history_test.go):
//   - each acknowledged message is stored once, at its acknowledged seq,
//     and nothing is stored that was not acknowledged; conversation seqs
//     are gapless; every acknowledged send retried afterwards answers
//     "duplicate" with the same seq;
//   - recalls and membership changes are stored as acknowledged;
//   - every member's sync timeline is gapless and holds each entry its
//     conversations owe it exactly once, in order, and nothing else;
//   - every device (one online during the load, one that synced once and
//     went offline, one offline throughout) converges to exactly that
//     timeline, and recalls reach the offline ones;
//   - conversation lists hold each member's conversations, with unread
//     counts by the documented rule from the acknowledged read markers.
func TestKill9UnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("IMSYNC_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("seed %d (rerun with IMSYNC_SEED=%d)", seed, seed)
	began := time.Now()
	data := filepath.Join(t.TempDir(), "data")
	key, err := transport.LoadOrCreateKey(data)
	if err != nil {
		t.Fatal(err)
	}
	dial := func(addr, user, dev string, last uint64) *client.Client {
		t.Helper()
		return dialServe(t, data, addr, key, user, dev, last)
	}

	users := crewUsers
	const group, admin, joiner = crewGroup, crewAdmin, crewJoiner
	h := &history{}
	devices := map[string]*device{}
	for _, u := range users {
		for _, d := range []string{"phone", "laptop", "tablet"} {
			devices[u+"/"+d] = &device{user: u, name: d}
		}
	}

	child, addr := startChild(t, data)
	setup := dial(addr, admin, "setup", 0)
	if err := withTimeout(10*time.Second, func(ctx context.Context) error {
		_, err := setup.CreateGroup(ctx, group, group, []string{"bob", "cat", "dan"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	setup.Close()

	// phones are the devices online during the load; each applies its
	// timeline as it goes.
	type phone struct {
		c    *client.Client
		done chan struct{}
	}
	phones := map[string]*phone{}
	dialPhones := func() {
		for _, u := range users {
			d := devices[u+"/phone"]
			p := &phone{c: dial(addr, u, "phone", d.last()), done: make(chan struct{})}
			go func() { d.consume(t, p.c); close(p.done) }()
			phones[u] = p
		}
	}
	closePhones := func() {
		for _, p := range phones {
			p.c.Close()
			<-p.done
		}
	}
	// syncDevice connects a device from where it stopped and applies
	// entries until it has the newest at login and until done says so.
	syncDevice := func(d *device, done func() (bool, string)) {
		t.Helper()
		c := dial(addr, d.user, d.name, d.last())
		consumed := make(chan struct{})
		go func() { d.consume(t, c); close(consumed) }()
		newest := c.Welcome().GetUserSeq()
		for end := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			ok, state := true, ""
			if done != nil {
				ok, state = done()
			}
			if ok && d.last() >= newest {
				break
			}
			if time.Now().After(end) {
				t.Fatalf("%s/%s stopped at user seq %d (newest at login %d) %s", d.user, d.name, d.last(), newest, state)
			}
		}
		c.Close()
		<-consumed
	}
	// nextOp picks a user's next operation; callers hold opMu (it keeps
	// the counters and the joiner's membership).
	var opMu sync.Mutex
	nextOp := (&crewWorkload{h: h}).next
	acked := h.ackedCount

	const cycles = 3
	dialPhones()
	for cycle := range cycles {
		// Load: every user's phone runs operations one after another until
		// the server dies under it.
		r := rand.New(rand.NewPCG(seed, uint64(cycle)))
		target := acked() + 150 + r.IntN(150)
		var wg sync.WaitGroup
		for i, u := range users {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(seed, uint64(100*cycle+i+1)))
				c := phones[u].c
				for {
					opMu.Lock()
					o := h.begin(nextOp(u, r))
					opMu.Unlock()
					err := withTimeout(5*time.Second, func(ctx context.Context) error { return o.do(ctx, h, c) })
					if err != nil {
						if refused(err) {
							t.Errorf("%v refused: %v", o, err)
						}
						return // the server is gone; o stays unacknowledged
					}
				}
			}()
		}
		for end := time.Now().Add(30 * time.Second); acked() < target && time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		}
		child.Process.Signal(syscall.SIGKILL)
		child.Wait()
		wg.Wait()
		closePhones()
		if t.Failed() {
			t.FailNow()
		}
		pending := h.pending()
		t.Logf("cycle %d: killed with %d operations acknowledged in all, %d in flight", cycle, acked(), len(pending))

		// Restart; retry what the kill left unknown, with the same ids.
		child, addr = startChild(t, data)
		dialPhones()
		for _, o := range pending {
			var err error
			for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
				if err = withTimeout(5*time.Second, func(ctx context.Context) error { return o.do(ctx, h, phones[o.user].c) }); err == nil || refused(err) {
					break
				}
			}
			if err != nil {
				t.Fatalf("retry of %v: %v", o, err)
			}
		}
		if cycle == 0 {
			// The laptops sync once, then stay offline to the end.
			for _, u := range users {
				syncDevice(devices[u+"/laptop"], nil)
			}
		}
	}
	// Every acknowledged send, sent again, is a duplicate at the same seq.
	var wg sync.WaitGroup
	ops := h.snapshot()
	for _, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, o := range ops {
				if o.kind != opSend || o.user != u {
					continue
				}
				again := *o
				if err := withTimeout(10*time.Second, func(ctx context.Context) error { return again.do(ctx, &history{}, phones[u].c) }); err != nil {
					t.Errorf("resend of %v: %v", o, err)
					return
				}
				if !again.dup || again.answer != o.answer {
					t.Errorf("resend of %v acknowledged at %d: answered %d, duplicate %v", o, o.answer, again.answer, again.dup)
					return
				}
			}
		}()
	}
	wg.Wait()
	closePhones()
	if t.Failed() {
		t.FailNow()
	}
	child.Process.Signal(syscall.SIGTERM)
	child.Wait()

	// The conversations, read from the store after the last restart.
	store := openStoreOf(t, data)
	logs := h.checkConversations(t, store)
	store.Close()

	// Every device catches up (fanout the kills interrupted resumes after
	// the restart); the conversation lists follow the rule.
	child, addr = startChild(t, data)
	for _, u := range users {
		owed := 0
		for _, keys := range expectedInbox(logs, u) {
			owed += len(keys)
		}
		hasAll := func(d *device) func() (bool, string) {
			return func() (bool, string) {
				d.mu.Lock()
				defer d.mu.Unlock()
				n := 0
				for _, e := range d.applied {
					if e.Type != "ReadMarkerMoved" {
						n++
					}
				}
				return n >= owed, fmt.Sprintf("with %d of the %d entries its conversations owe it", n, owed)
			}
		}
		for _, name := range []string{"tablet", "laptop", "phone"} {
			syncDevice(devices[u+"/"+name], hasAll(devices[u+"/"+name]))
		}
		c := dial(addr, u, "lister", 0)
		var list *eventspb.ConversationList
		if err := withTimeout(10*time.Second, func(ctx context.Context) (err error) {
			list, err = c.Conversations(ctx)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		c.Close()
		h.checkList(t, logs, u, list)
	}
	child.Process.Signal(syscall.SIGTERM)
	child.Wait()

	// The sync timelines, read from the store, against the conversations
	// and against every device.
	store = openStoreOf(t, data)
	defer store.Close()
	var all []*device
	for _, u := range users {
		var mine []*device
		for _, name := range []string{"phone", "laptop", "tablet"} {
			mine = append(mine, devices[u+"/"+name])
		}
		checkInbox(t, store, logs, u, mine)
		all = append(all, mine...)
	}
	recalls := checkRecallsReached(t, logs, all)
	kinds := map[opKind]int{}
	retried := 0
	for _, o := range h.snapshot() {
		kinds[o.kind]++
		if o.retried {
			retried++
		}
	}
	t.Logf("%d kill cycles, %v operations (%d retried after a kill), %d recall notices on devices; %s",
		cycles, kinds, retried, recalls, time.Since(began).Round(time.Millisecond))
}

// The crew: the scenario both kill tests drive (TestKill9UnderLoad on one
// server, TestClusterKill9UnderLoad on three nodes). Five users, direct
// conversations in a ring, a group that eve joins and leaves.
var (
	crewUsers = []string{"ann", "bob", "cat", "dan", "eve"}
	crewPeer  = map[string]string{"ann": "bob", "bob": "cat", "cat": "dan", "dan": "ann", "eve": "ann"}
)

const crewGroup, crewAdmin, crewJoiner = "crew", "ann", "eve"

// crewConvsOf lists the conversations u is a member of (eve's group
// membership aside).
func crewConvsOf(u string) []string {
	out := []string{directID(u, crewPeer[u])}
	if u != crewJoiner {
		out = append(out, crewGroup)
	}
	for v, p := range crewPeer {
		if p == u {
			out = append(out, directID(u, v))
		}
	}
	return out
}

// crewWorkload picks the crew's operations against history h; next is
// called by one goroutine at a time (it keeps the client ids' counters and
// eve's membership).
type crewWorkload struct {
	h       *history
	counter map[string]int
	eveIn   bool
}

func (w *crewWorkload) next(u string, r *rand.Rand) *op {
	x := r.IntN(100)
	switch {
	case u == crewAdmin && x < 6:
		w.eveIn = !w.eveIn
		return &op{kind: opMember, user: u, conv: crewGroup, member: crewJoiner, add: w.eveIn}
	case x < 14:
		if m := w.h.recallable(u); m != nil {
			return &op{kind: opRecall, user: u, conv: m.conv, seq: m.answer}
		}
	case x < 30:
		convs := crewConvsOf(u)
		conv := convs[r.IntN(len(convs))]
		if last := w.h.lastSeq(conv); last > 0 {
			return &op{kind: opRead, user: u, conv: conv, seq: 1 + r.Uint64N(last)}
		}
	}
	if w.counter == nil {
		w.counter = map[string]int{}
	}
	w.counter[u]++
	cid := fmt.Sprintf("%s-%d", u, w.counter[u])
	if u != crewJoiner && r.IntN(2) == 0 {
		return &op{kind: opSend, user: u, conv: crewGroup, cid: cid}
	}
	return &op{kind: opSend, user: u, conv: directID(u, crewPeer[u]), to: crewPeer[u], cid: cid}
}
