package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imsync/imsync/transport/client"
)

// TestClientCommandsPage: history --limit 500 of 16 KiB messages (8 MB,
// eight frames' worth) prints 500 messages and where the rest starts;
// --after 0 starts at the first message; convs lists more lines than one
// page holds.
func TestClientCommandsPage(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	addr, stop := serveOn(t, data)
	defer stop()
	ca := filepath.Join(data, "server.crt")
	token := func(user string) string {
		out, err := runCmd(t, "token", "--data", data, "--user", user, "--device", "d")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	ann := token("ann")
	tc := pinnedTLSOf(t, data)
	cctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := client.Dial(cctx, client.Config{Addr: addr, Token: ann, TLS: tc})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	g, err := c.CreateGroup(cctx, "", "big", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	const n = 600
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				body := append([]byte(fmt.Sprintf("%04d", i)), bytes.Repeat([]byte("x"), 16<<10-4)...)
				if _, err := c.Send(cctx, client.Message{Conversation: g, ClientMsgID: fmt.Sprint(i), Body: body}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i := range 210 {
		if _, err := c.CreateGroup(cctx, "", fmt.Sprint("small-", i), []string{"bob"}); err != nil {
			t.Fatal(err)
		}
	}

	as := func(args ...string) []map[string]any {
		t.Helper()
		full := append(append([]string{args[0]}, "--server", addr, "--token", ann, "--ca", ca, "--json"), args[1:]...)
		out, err := runCmd(t, full...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return lines(t, out)
	}
	h := as("history", "--conv", g, "--limit", "500")
	if len(h) != 501 {
		t.Fatalf("history --limit 500 printed %d lines", len(h))
	}
	for i, m := range h[:500] {
		if want := float64(n + 1 - i); m["seq"] != want {
			t.Fatalf("line %d: seq %v, want %v", i, m["seq"], want)
		}
	}
	if end := h[500]; end["more"] != true || end["before"] != h[499]["seq"] {
		t.Fatalf("history --limit 500 ends with %v", end)
	}
	first := as("history", "--conv", g, "--after", "0", "--limit", "3")
	if len(first) != 4 || first[0]["seq"] != 2.0 || first[2]["seq"] != 4.0 || first[3]["more"] != true || first[3]["after"] != 4.0 {
		t.Fatalf("history --after 0 printed %v", first)
	}
	rest := as("history", "--conv", g, "--after", "590")
	if len(rest) != n+1-590 || rest[0]["seq"] != 591.0 {
		t.Fatalf("history --after 590 printed %d lines", len(rest))
	}
	if convs := as("convs"); len(convs) != 211 {
		t.Fatalf("convs printed %d lines, want 211", len(convs))
	}
}
