package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/client"
)

const serveChildEnv = "IMSYNC_SERVE_CHILD_DATA"

// TestServeChild is the server process of TestKill9UnderLoad.
func TestServeChild(t *testing.T) {
	data := os.Getenv(serveChildEnv)
	if data == "" {
		t.Skip("only runs as the child of TestKill9UnderLoad")
	}
	if err := run(context.Background(), []string{"serve", "--data", data, "--listen", "127.0.0.1:0"}, os.Stdout); err != nil {
		fmt.Println("serve:", err)
		os.Exit(2)
	}
}

// startChild runs `imsync serve` in a child process and returns its address.
func startChild(t *testing.T, data string) (*exec.Cmd, string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestServeChild$")
	cmd.Env = append(os.Environ(), serveChildEnv+"="+data)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if m := regexp.MustCompile(`listening on (\S+)`).FindStringSubmatch(sc.Text()); m != nil {
			go func() {
				for sc.Scan() {
				}
			}()
			return cmd, m[1]
		}
	}
	cmd.Process.Kill()
	t.Fatalf("server child did not start")
	return nil, ""
}

type sendRecord struct {
	conv, cid string
	seq       uint64
}

// TestKill9UnderLoad kills the server with SIGKILL while clients send with
// client message ids, restarts it, lets the clients retry what was not
// acknowledged, and checks that every conversation's seqs are gapless and
// every message exists exactly once — at the seq acknowledged, if it was.
func TestKill9UnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	data := filepath.Join(t.TempDir(), "data")
	key, err := transport.LoadOrCreateKey(data)
	if err != nil {
		t.Fatal(err)
	}
	senders := []string{"ann", "bob", "cat", "dan"}
	dial := func(addr, user string) *client.Client {
		tok, _ := key.Mint(user, "phone", time.Hour, time.Now())
		pem, err := os.ReadFile(filepath.Join(data, transport.CertFile))
		if err != nil {
			t.Fatal(err)
		}
		tlsConf, _ := client.PinnedTLS(pem)
		c, err := client.Dial(context.Background(), client.Config{Addr: addr, Token: tok, TLS: tlsConf, NoReconnect: true})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	child, addr := startChild(t, data)
	setup := dial(addr, "ann")
	group, err := setup.CreateGroup(context.Background(), "crew", "crew", senders[1:])
	if err != nil {
		t.Fatal(err)
	}
	setup.Close()

	var mu sync.Mutex
	acked := map[string]sendRecord{} // cid → where it was acknowledged
	unsure := map[string]string{}    // cid → conversation, outcome unknown
	var wg sync.WaitGroup
	for i, user := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dial(addr, user)
			defer c.Close()
			peer := senders[(i+1)%len(senders)]
			for n := 0; ; n++ {
				conv, to := group, ""
				if n%2 == 1 {
					conv, to = "", peer
				}
				cid := fmt.Sprintf("%s-%d", user, n)
				sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				r, err := c.Send(sctx, client.Message{Conversation: conv, To: to, ClientMsgID: cid, Text: cid})
				cancel()
				mu.Lock()
				if err != nil {
					if to != "" {
						conv = "dm:" + to
					}
					unsure[cid] = conv
					mu.Unlock()
					return // the server is gone
				}
				acked[cid] = sendRecord{r.Conversation, cid, r.Seq}
				mu.Unlock()
			}
		}()
	}
	time.Sleep(700 * time.Millisecond)
	child.Process.Signal(syscall.SIGKILL)
	child.Wait()
	wg.Wait()
	t.Logf("%d sends acknowledged, %d in flight at the kill", len(acked), len(unsure))
	if len(acked) == 0 {
		t.Fatal("nothing was acknowledged before the kill")
	}

	// Restart; each sender retries what it does not know about.
	child, addr = startChild(t, data)
	for cid, conv := range unsure {
		user := regexp.MustCompile(`^[a-z]+`).FindString(cid)
		c := dial(addr, user)
		m := client.Message{Conversation: conv, ClientMsgID: cid, Text: cid}
		if len(conv) > 3 && conv[:3] == "dm:" {
			m = client.Message{To: conv[3:], ClientMsgID: cid, Text: cid}
		}
		r, err := c.Send(context.Background(), m)
		c.Close()
		if err != nil {
			t.Fatalf("retry of %s: %v", cid, err)
		}
		acked[cid] = sendRecord{r.Conversation, cid, r.Seq}
	}
	// Acknowledged before the kill → the retry must say duplicate at the same seq.
	for cid, rec := range acked {
		if _, wasUnsure := unsure[cid]; wasUnsure {
			continue
		}
		user := regexp.MustCompile(`^[a-z]+`).FindString(cid)
		c := dial(addr, user)
		r, err := c.Send(context.Background(), client.Message{Conversation: rec.conv, ClientMsgID: cid, Text: cid})
		c.Close()
		if err != nil || !r.Duplicate || r.Seq != rec.seq {
			t.Fatalf("retry of acknowledged %s (seq %d): %+v %v", cid, rec.seq, r, err)
		}
		break // one per run is enough here; the store check below covers all
	}
	child.Process.Signal(syscall.SIGTERM)
	child.Wait()

	// Read the conversations straight from the store.
	store, err := events.Open(storeDir(data), events.Options{ScavengeInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	convs := map[string]bool{}
	for _, r := range acked {
		convs[r.conv] = true
	}
	seen := map[string]uint64{}
	for conv := range convs {
		var n uint64
		for {
			page, err := store.ReadStream(context.Background(), events.ConversationStream(conv), events.ReadStreamOptions{From: events.Revision(n), Limit: 1000})
			if err != nil && !errors.Is(err, events.ErrStreamNotFound) {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			for _, e := range page {
				if uint64(e.Revision) != n {
					t.Fatalf("%s: revision %d after %d: gap", conv, e.Revision, n)
				}
				n++
				if e.Type != "MessageSent" {
					continue
				}
				m, _ := events.Decode(e.Type, e.Data)
				cid := m.(*eventspb.MessageSent).ClientMsgId
				if _, dup := seen[cid]; dup {
					t.Fatalf("%s stored twice", cid)
				}
				seen[cid] = n
			}
		}
	}
	for cid, rec := range acked {
		if seen[cid] != rec.seq {
			t.Fatalf("%s acknowledged at %s/%d, stored at %d", cid, rec.conv, rec.seq, seen[cid])
		}
	}
	t.Logf("%d messages stored, each once, seqs gapless", len(seen))
}
