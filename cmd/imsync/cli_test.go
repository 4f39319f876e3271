package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/transporttest"
)

// syncBuffer lets the test read what a running command printed so far.
type syncBuffer = transporttest.SyncBuffer

// TestTour runs the README's tour: a server, two users, two devices.
func TestTour(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	addr, stop := serveOn(t, data)
	defer stop()
	ca := filepath.Join(data, "server.crt")
	token := func(user, device string) string {
		out, err := runCmd(t, "token", "--data", data, "--user", user, "--device", device)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	as := func(tok string, args ...string) []map[string]any {
		t.Helper()
		n := 1
		if args[0] == "group" {
			n = 2
		}
		full := append(append(append([]string{}, args[:n]...), "--server", addr, "--token", tok, "--ca", ca, "--json"), args[n:]...)
		out, err := runCmd(t, full...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return lines(t, out)
	}
	ann, bobPhone, bobLaptop := token("ann", "phone"), token("bob", "phone"), token("bob", "laptop")

	sent := as(ann, "send", "--to", "bob", "--id", "hello-1", "hello bob")
	conv := sent[0]["conversation"].(string)
	if sent[0]["seq"] != 2.0 || sent[0]["client_msg_id"] != "hello-1" {
		t.Fatalf("send printed %v", sent)
	}
	if again := as(ann, "send", "--to", "bob", "--id", "hello-1", "hello bob"); again[0]["duplicate"] != true || again[0]["seq"] != 2.0 {
		t.Fatalf("retried send printed %v", again)
	}
	g := as(ann, "group", "create", "--name", "trip", "--members", "bob,cat")[0]["conversation"].(string)
	as(ann, "send", "--conv", g, "pack light")
	as(ann, "group", "add", "--conv", g, "dan")

	// Fanout follows the acknowledgement: sync until the five entries are
	// in (each sync resumes from the state file).
	state := filepath.Join(t.TempDir(), "bob-laptop.seq")
	syncUntil := func(n int) []map[string]any {
		var got []map[string]any
		for end := time.Now().Add(10 * time.Second); len(got) < n && time.Now().Before(end); {
			got = append(got, as(bobLaptop, "sync", "--state", state)...)
		}
		return got
	}
	first := syncUntil(5)
	for i, e := range first {
		if e["user_seq"] != float64(i+1) {
			t.Fatalf("first sync printed %v", first)
		}
	}
	convs := as(bobPhone, "convs")
	if len(convs) != 2 {
		t.Fatalf("convs printed %v", convs)
	}
	h := as(bobPhone, "history", "--conv", conv)
	if len(h) != 1 || h[0]["text"] != "hello bob" || h[0]["sender"] != "ann" {
		t.Fatalf("history printed %v", h)
	}
	as(bobPhone, "read", "--conv", g, "--seq", "2")
	seq := as(ann, "send", "--conv", g, "oops")[0]["seq"].(float64)
	as(ann, "recall", "--conv", g, "--seq", jsonNum(seq))
	// The laptop syncs exactly what it missed: the read marker, the
	// message, its recall.
	more := syncUntil(3)
	var types []string
	for _, e := range more {
		types = append(types, e["type"].(string))
	}
	if strings.Join(types, ",") != "ReadMarkerMoved,MessagePointer,RecallNotice" || more[0]["user_seq"] != 6.0 {
		t.Fatalf("second sync printed %v", more)
	}
	if again := as(bobLaptop, "sync", "--state", state); len(again) != 0 {
		t.Fatalf("third sync printed %v", again)
	}
}

func jsonNum(f float64) string {
	b, _ := json.Marshal(f)
	return string(b)
}

// TestBenchRuns runs every bench scenario but the idle one (which needs
// the real binary as its child) at a tiny scale, and checks that each one
// measured something: positive rates, messages sent, and every message
// delivered to every device it was due at.
func TestBenchRuns(t *testing.T) {
	var out bytes.Buffer
	var rep benchReport
	benchReported = func(r benchReport) { rep = r }
	defer func() { benchReported = nil }()
	err := run(context.Background(), []string{"bench", "--duration", "300ms", "--pairs", "4", "--group", "6", "--group-senders", "2", "--scenarios", "echo,direct,group"}, &out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"bare quic-go echo:", "store alone:", "grains alone", "of the grains-alone rate", "direct: 8 users", "group: 6 users", "send→push"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("bench output lacks %q:\n%s", want, out.String())
		}
	}
	if rep.echo <= 0 || rep.store <= 0 || rep.grains <= 0 || len(rep.results) != 2 {
		t.Fatalf("bench measured echo %.0f/s, store %.0f/s, grains %.0f/s, %d scenarios:\n%s", rep.echo, rep.store, rep.grains, len(rep.results), out.String())
	}
	for _, r := range rep.results {
		if r.sends == 0 || r.elapsed <= 0 || len(r.ack) != r.sends {
			t.Fatalf("%s: %d sends, %d acks in %s", r.name, r.sends, len(r.ack), r.elapsed)
		}
		want := r.sends
		if r.name == "group" {
			want = r.sends * r.devices
		}
		if r.due != want || len(r.push) != r.due {
			t.Fatalf("%s: %d of %d deliveries reached the devices (%d sends to %d devices)", r.name, len(r.push), r.due, r.sends, r.devices)
		}
	}
}

// TestServeWithGivenCertificate: serve uses a certificate it is given and
// creates none of its own.
func TestServeWithGivenCertificate(t *testing.T) {
	certDir := t.TempDir()
	if _, err := transport.LoadOrCreateCert(certDir); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(t.TempDir(), "data")
	addr, out, stop := serveInProcess(t, serveArgs(t, data, "--listen", "127.0.0.1:0",
		"--cert", filepath.Join(certDir, "server.crt"), "--key", filepath.Join(certDir, "server.key"))...)
	if !strings.Contains(out.String(), filepath.Join(certDir, "server.crt")) {
		t.Fatalf("serve names another certificate: %q", out.String())
	}
	if _, err := os.Stat(filepath.Join(data, "server.crt")); !os.IsNotExist(err) {
		t.Fatalf("serve created a certificate of its own: %v", err)
	}
	tok, err := runCmd(t, "token", "--data", data, "--user", "ann", "--device", "d")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := runCmd(t, "convs", "--server", addr, "--token", strings.TrimSpace(tok), "--ca", filepath.Join(certDir, "server.crt")); err != nil {
		t.Fatalf("client pinned to the given certificate: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := runCmd(t, "serve", "--data", data, "--cert", "x.pem"); !errors.Is(err, errUsage) {
		t.Fatalf("--cert without --key: %v", err)
	}
}
