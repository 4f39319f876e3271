package esdb_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/teststore"
)

// TestServerChild is the protocol server process of TestKill9ServerUnderLoad.
func TestServerChild(t *testing.T) { teststore.ServeAsChild(t) }

// startServerProcess runs the protocol server in a child process on dir
// and listen, and returns it once it serves, with its connection string.
func startServerProcess(t *testing.T, dir, listen string) (*exec.Cmd, string) {
	t.Helper()
	return teststore.StartServerProcess(t, "TestServerChild", dir, listen)
}

// TestKill9ServerUnderLoad kills the protocol server process with SIGKILL
// three times while writers append (each event with a fixed id at its
// exact revision, repeated on ErrUnavailable) and subscriptions follow,
// and starts it again on the same data and address each time: every
// append lands exactly once, and each subscription delivers every event
// once, in order.
func TestKill9ServerUnderLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	child, url := startServerProcess(t, dir, "127.0.0.1:0")
	listen := regexp.MustCompile(`esdb://([^?]+)`).FindStringSubmatch(url)[1]
	s := open(t, url)
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	const writers, n = 4, 150
	prefix := "kill-" + uuid.NewString()[:8] + "-"
	all, err := s.SubscribeToAll(ctx, events.SubscribeAllOptions{Filter: events.Filter{StreamPrefixes: []string{prefix}}})
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close()
	streamSub, err := s.SubscribeToStream(ctx, prefix+"0", events.SubscribeFromStart())
	if err != nil {
		t.Fatal(err)
	}
	defer streamSub.Close()

	var progress sync.Map // writer → events appended
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				if err := appendRetrying(ctx, s, fmt.Sprintf("%s%d", prefix, w), i); err != nil {
					errs <- err
					return
				}
				progress.Store(w, i+1)
			}
		}()
	}
	done := func() int {
		total := 0
		progress.Range(func(_, v any) bool { total += v.(int); return true })
		return total
	}
	for kill := 1; kill <= 3; kill++ {
		for done() < kill*writers*n/4 {
			if ctx.Err() != nil {
				t.Fatalf("writers stalled at %d appends", done())
			}
			time.Sleep(5 * time.Millisecond)
		}
		child.Process.Signal(syscall.SIGKILL)
		child.Wait()
		child, _ = startServerProcess(t, dir, listen)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	var got []events.RecordedEvent
	for len(got) < n {
		e, err := streamSub.Recv(ctx)
		if err != nil {
			t.Fatalf("stream subscription after %d events: %v", len(got), err)
		}
		got = append(got, e)
	}
	checkSeq(t, "stream subscription across kills", got, n)
	perStream := map[string][]events.RecordedEvent{}
	for seen := 0; seen < writers*n; seen++ {
		e, err := all.Recv(ctx)
		if err != nil {
			t.Fatalf("$all subscription after %d events: %v", seen, err)
		}
		perStream[e.Stream] = append(perStream[e.Stream], e)
	}
	// Nothing else is pending: the next event is a marker appended now.
	if _, err := s.AppendToStream(ctx, prefix+"end", events.NoStream, events.EventData{Type: "End"}); err != nil {
		t.Fatal(err)
	}
	if e, err := all.Recv(ctx); err != nil || e.Stream != prefix+"end" {
		t.Fatalf("after every event: %s/%d %v, want the marker", e.Stream, e.Revision, err)
	}
	for w := range writers {
		stream := fmt.Sprintf("%s%d", prefix, w)
		checkSeq(t, "$all subscription, "+stream, perStream[stream], n)
		stored, err := s.ReadStream(ctx, stream, events.ReadStreamOptions{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		checkSeq(t, "stored "+stream, stored, n)
	}
}
