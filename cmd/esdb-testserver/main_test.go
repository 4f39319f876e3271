package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/google/uuid"
)

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"--data", t.TempDir(), "--memory"},
		{"--memory", "extra"},
		{"--bogus"},
	} {
		err := run(context.Background(), args, io.Discard, io.Discard)
		if !errors.Is(err, errUsage) {
			t.Errorf("run %q = %v, want a usage error", args, err)
		}
	}
}

// TestServeAndStop builds the command, runs it on a data directory, talks
// to it with the official client, stops it with SIGTERM and runs it again
// on the same directory.
func TestServeAndStop(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the command")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	exe := filepath.Join(t.TempDir(), "esdb-testserver")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", exe, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	data := t.TempDir()
	id := uuid.New()
	for round := 0; round < 2; round++ {
		cmd := exec.CommandContext(ctx, exe, "--data", data, "--listen", "127.0.0.1:0")
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		url, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil {
			cmd.Process.Kill()
			t.Fatalf("reading the URL: %v", err)
		}
		url = strings.TrimSpace(url)
		if !strings.HasPrefix(url, "esdb://127.0.0.1:") || !strings.HasSuffix(url, "?tls=false") {
			t.Errorf("printed %q, want esdb://127.0.0.1:PORT?tls=false", url)
		}
		conf, err := esdb.ParseConnectionString(url)
		if err != nil {
			t.Fatal(err)
		}
		conf.Logger = esdb.NoopLogging()
		c, err := esdb.NewClient(conf)
		if err != nil {
			t.Fatal(err)
		}
		// The same event both times: the second append is a retry.
		res, err := c.AppendToStream(ctx, "s", esdb.AppendToStreamOptions{ExpectedRevision: esdb.NoStream{}},
			esdb.EventData{EventID: id, EventType: "E", Data: []byte("x")})
		if err != nil || res.NextExpectedVersion != 0 {
			t.Errorf("round %d: append = %+v, %v", round, res, err)
		}
		rs, err := c.ReadStream(ctx, "s", esdb.ReadStreamOptions{}, 10)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for {
			if _, err := rs.Recv(); err != nil {
				if !errors.Is(err, io.EOF) {
					t.Errorf("round %d: read: %v", round, err)
				}
				break
			}
			n++
		}
		if n != 1 {
			t.Errorf("round %d: stream holds %d events, want 1", round, n)
		}
		c.Close()
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("round %d: exit after SIGTERM: %v", round, err)
		}
	}
}
