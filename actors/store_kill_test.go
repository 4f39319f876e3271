package actors_test

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/esdb"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/events/teststore"
)

// TestStoreServerChild is the protocol server process of
// TestGrainsSurviveStoreServerKill9.
func TestStoreServerChild(t *testing.T) { teststore.ServeAsChild(t) }

// startStoreServer runs the protocol server in a child process on dir and
// listen, and returns it once it serves, with its connection string.
func startStoreServer(t *testing.T, dir, listen string) (*exec.Cmd, string) {
	t.Helper()
	return teststore.StartServerProcess(t, "TestStoreServerChild", dir, listen)
}

// TestGrainsSurviveStoreServerKill9 runs the grains on the EventStoreDB
// backend against the protocol server in its own process, and kills that
// process with SIGKILL three times while every user sends to a direct
// conversation and to a group, restarting it each time on the same data
// and address. A send that fails (with a typed error: UNAVAILABLE, or the
// attempt's deadline) is repeated with the same client message id until
// it is acknowledged. The store must then hold every acknowledged message
// once, at its acknowledged seq, in gapless conversations; the fanout must
// finish; every member's sync timeline must be gapless and hold each
// pointer its conversations owe it once, in order; and each user's phone,
// attached throughout, must be pushed up to the timeline's end, every
// entry pushed being the one stored at its user seq.
func TestGrainsSurviveStoreServerKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	if raceEnabled {
		// The store's gRPC client has goroutines that end after the test
		// and read gRPC's global logger, which the next test's cluster
		// member replaces (see .ci/run).
		t.Skip("not with -race")
	}
	began := time.Now()
	dir := filepath.Join(t.TempDir(), "store")
	child, url := startStoreServer(t, dir, "127.0.0.1:0")
	listen := regexp.MustCompile(`esdb://([^?]+)`).FindStringSubmatch(url)[1]
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// Lazy: the cluster member starts after the store opens.
	store, err := esdb.Open(ctx, url, esdb.Options{Lazy: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	svc := start(t, actors.Config{Store: store})

	// retry repeats op (idempotent by its ids) until it succeeds; it fails
	// the test on an error that is neither UNAVAILABLE nor the attempt's
	// deadline, and on the test's deadline.
	retry := func(what string, op func(ctx context.Context) error) bool {
		for tries := 0; ; tries++ {
			c, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := op(c)
			cancel()
			switch {
			case err == nil:
				return tries > 0
			case ctx.Err() != nil:
				t.Errorf("%s: still failing at the test's deadline: %v", what, err)
				return false
			case !errors.Is(err, actors.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded):
				t.Errorf("%s: %v", what, err)
				return false
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	users := []string{"ann", "bob", "cat", "dan", "eve"}
	peer := map[string]string{"ann": "bob", "bob": "cat", "cat": "dan", "dan": "eve", "eve": "ann"}
	groups := map[string][]string{"crew": users, "trio": {"ann", "cat", "eve"}}
	for id, members := range groups {
		retry("create "+id, func(c context.Context) error {
			_, err := svc.CreateGroup(c, id, members[0], id, members[1:])
			return err
		})
	}
	for _, u := range users {
		retry("open direct "+u, func(c context.Context) error {
			_, err := svc.OpenDirect(c, u, peer[u])
			return err
		})
	}
	phones := map[string]*pushLog{} // every user's phone, online throughout
	for _, u := range users {
		phones[u] = &pushLog{}
		retry("attach "+u+"'s phone", func(c context.Context) error {
			_, err := svc.AttachDevice(c, u, "phone", phones[u])
			return err
		})
	}
	if t.Failed() {
		t.FailNow()
	}

	// Each user has two senders: one to their direct peer, one to their
	// groups in turn.
	type sendKey struct{ conv, sender, cid string }
	var mu sync.Mutex
	acked := map[sendKey]uint64{}
	retried, dups := 0, 0 // sends acknowledged after a failed try; as duplicates
	const per = 100
	var wg sync.WaitGroup
	senders := 0
	for _, u := range users {
		var mine []string
		for id, members := range groups {
			if slices.Contains(members, u) {
				mine = append(mine, id)
			}
		}
		slices.Sort(mine)
		for s, convs := range [][]string{{actors.DirectID(u, peer[u])}, mine} {
			senders++
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range per {
					k := sendKey{convs[i%len(convs)], u, fmt.Sprintf("%s-%d-%d", u, s, i)}
					var r actors.SendResult
					again := retry(fmt.Sprintf("send %v", k), func(c context.Context) (err error) {
						r, err = svc.Send(c, actors.SendRequest{Conversation: k.conv, Sender: u, Device: "phone", ClientMsgID: k.cid, Body: []byte(k.cid)})
						return err
					})
					if t.Failed() {
						return
					}
					mu.Lock()
					if again {
						retried++
					}
					if r.Duplicate {
						dups++ // a try whose answer the kill lost had stored it
					}
					acked[k] = r.Seq
					mu.Unlock()
				}
			}()
		}
	}
	ackedCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	total := senders * per
	const kills = 3
	for kill := 1; kill <= kills; kill++ {
		for ackedCount() < kill*total/(kills+1) && ctx.Err() == nil && !t.Failed() {
			time.Sleep(5 * time.Millisecond)
		}
		if ctx.Err() != nil || t.Failed() {
			break
		}
		child.Process.Signal(syscall.SIGKILL)
		child.Wait()
		if kill == 2 {
			// Away for longer than the client's discovery attempts (about
			// a second): the backend replaces the client that gave up.
			time.Sleep(1500 * time.Millisecond)
		}
		child, _ = startStoreServer(t, dir, listen)
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("%d kills; %d sends acknowledged, %d of them after a failed try, %d as duplicates", kills, len(acked), retried, dups)

	// The conversations: gapless, every acknowledged message once at its
	// seq, nothing else.
	convs := map[string][]proto.Message{}
	for id := range groups {
		convs[id] = nil
	}
	for _, u := range users {
		convs[actors.DirectID(u, peer[u])] = nil
	}
	stored := map[sendKey]uint64{}
	for id := range convs {
		evs := readAll(t, ctx, store, events.ConversationStream(id))
		convs[id] = evs
		for i, ev := range evs {
			seq := uint64(i) + 1
			if m, ok := ev.(*eventspb.MessageSent); ok {
				k := sendKey{id, m.Sender, m.ClientMsgId}
				if prev, dup := stored[k]; dup {
					t.Fatalf("%v stored twice: at %d and %d", k, prev, seq)
				}
				stored[k] = seq
			}
		}
	}
	for k, seq := range acked {
		if got, ok := stored[k]; !ok || got != seq {
			t.Fatalf("%v acknowledged at seq %d, stored at %d (%v)", k, seq, got, ok)
		}
	}
	if len(stored) != len(acked) {
		t.Fatalf("%d messages stored, %d acknowledged", len(stored), len(acked))
	}

	// The fanout finishes, and every timeline holds what it is owed.
	for id, evs := range convs {
		retry("ensure fanout of "+id, func(c context.Context) error {
			return svc.EnsureFanout(c, id, uint64(len(evs)))
		})
	}
	if t.Failed() {
		t.FailNow()
	}
	owed := map[string]map[string][]string{} // user → conversation → entries
	for id, evs := range convs {
		var members []string
		for i, ev := range evs {
			seq := uint64(i) + 1
			switch e := ev.(type) {
			case *eventspb.ConversationCreated:
				members = e.Members
				for _, u := range members {
					owe(owed, u, id, fmt.Sprint("MembershipChanged@", seq))
				}
			case *eventspb.MessageSent:
				for _, u := range members {
					owe(owed, u, id, fmt.Sprint("MessagePointer@", seq))
				}
			default:
				t.Fatalf("%s holds %T at %d", id, ev, seq)
			}
		}
	}
	for _, u := range users {
		got := map[string][]string{}
		timeline := readAll(t, ctx, store, events.InboxStream(u))
		for _, ev := range timeline {
			switch e := ev.(type) {
			case *eventspb.MessagePointer:
				got[e.ConversationId] = append(got[e.ConversationId], fmt.Sprint("MessagePointer@", e.Seq))
			case *eventspb.MembershipChanged:
				got[e.ConversationId] = append(got[e.ConversationId], fmt.Sprint("MembershipChanged@", e.Seq))
			default:
				t.Fatalf("%s's timeline holds %T", u, ev)
			}
		}
		for id := range convs {
			if want := owed[u][id]; !slices.Equal(got[id], want) {
				t.Fatalf("%s's timeline from %s:\n got %v\nwant %v", u, id, got[id], want)
			}
		}
		// The phone was told of the whole timeline, and every entry pushed
		// is the one stored at its user seq.
		end := time.Now().Add(15 * time.Second)
		for phones[u].newest() < uint64(len(timeline)) {
			if time.Now().After(end) {
				t.Fatalf("%s's phone was pushed up to user seq %d; the timeline ends at %d", u, phones[u].newest(), len(timeline))
			}
			time.Sleep(10 * time.Millisecond)
		}
		for _, p := range phones[u].all() {
			if p.UserSeq > uint64(len(timeline)) {
				t.Fatalf("%s's phone was pushed user seq %d; the timeline ends at %d", u, p.UserSeq, len(timeline))
			}
			if p.Entry == nil {
				continue
			}
			m, err := events.Decode(p.Entry.Type, p.Entry.Data)
			if err != nil || p.Entry.UserSeq != p.UserSeq || !proto.Equal(m, timeline[p.UserSeq-1]) {
				t.Fatalf("%s's phone was pushed %d: %v (%v); stored: %v", u, p.UserSeq, m, err, timeline[p.UserSeq-1])
			}
		}
	}
	t.Logf("checked in %s", time.Since(began).Round(time.Millisecond))
}

// owe appends entry to what conversation conv owes user.
func owe(owed map[string]map[string][]string, user, conv, entry string) {
	if owed[user] == nil {
		owed[user] = map[string][]string{}
	}
	owed[user][conv] = append(owed[user][conv], entry)
}

// readAll reads a whole stream from the store and decodes it, checking
// that its revisions are gapless from 0.
func readAll(t *testing.T, ctx context.Context, store events.Store, stream string) []proto.Message {
	t.Helper()
	var out []proto.Message
	for {
		page, err := store.ReadStream(ctx, stream, events.ReadStreamOptions{From: events.Revision(len(out)), Limit: 1000})
		if errors.Is(err, events.ErrStreamNotFound) {
			return out
		}
		if err != nil {
			t.Fatalf("read %s: %v", stream, err)
		}
		for _, e := range page {
			if uint64(e.Revision) != uint64(len(out)) {
				t.Fatalf("%s: revision %d at position %d: gap", stream, e.Revision, len(out))
			}
			m, err := events.Decode(e.Type, e.Data)
			if err != nil {
				t.Fatalf("%s/%d: %v", stream, e.Revision, err)
			}
			out = append(out, m)
		}
		if len(page) < 1000 {
			return out
		}
	}
}

// pushLog is a device connection that keeps every push.
type pushLog struct {
	mu     sync.Mutex
	pushes []*actors.Push
}

func (l *pushLog) Push(p *actors.Push) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pushes = append(l.pushes, p)
}

func (l *pushLog) all() []*actors.Push {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.pushes)
}

// newest is the highest user seq pushed.
func (l *pushLog) newest() uint64 {
	var n uint64
	for _, p := range l.all() {
		n = max(n, p.UserSeq)
	}
	return n
}
