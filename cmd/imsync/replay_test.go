package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/projections"
)

func TestReplayPlainProgressAndCheckpoint(t *testing.T) {
	data, all := exportData(t, 30) // 30 messages, 30 inbox entries, one raw event
	ctx := context.Background()
	var prog bytes.Buffer
	res, err := replay(ctx, projections.NewStats(), replayOptions{data: data, progress: &prog})
	if err != nil {
		t.Fatal(err)
	}
	if want := len(all) - 1; res.Events != want || res.Position != all[want-1].Position.Commit {
		t.Fatalf("replay %+v, want %d events up to %d", res, want, all[want-1].Position.Commit)
	}
	lines := strings.Split(strings.TrimSpace(prog.String()), "\n")
	if len(lines) != 62 { // one per event (interval 0), the final state, done
		t.Fatalf("%d progress lines:\n%s", len(lines), prog.String())
	}
	if !strings.HasPrefix(lines[0], "replay stats: 1 events, ") || !strings.Contains(lines[60], "60 events") ||
		!strings.Contains(lines[60], fmt.Sprintf("position %d of %d, ETA 0s", res.Position, res.Position)) ||
		!strings.HasPrefix(lines[61], "replay stats: done, 60 events in ") {
		t.Fatalf("progress lines:\n%s", prog.String())
	}
	if strings.Contains(prog.String(), "\r") {
		t.Fatal("plain progress holds a carriage return")
	}
	if _, err := os.Stat(filepath.Join(data, "projections", "stats.checkpoint")); err != nil {
		t.Fatal(err)
	}

	// Resumed: nothing new to apply; the report comes from the checkpoint.
	out, err := runCmd(t, "replay", "--data", data, "--projection", "stats")
	if err != nil {
		t.Fatal(err)
	}
	if got := lines1(t, out); got["events"] != 0.0 || got["position"] != float64(res.Position) {
		t.Fatalf("second replay printed %s", out)
	}
	out, err = runCmd(t, "stats", "--data", data, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var rep projections.StatsReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Days) != 1 || rep.Days[0].Messages != 30 || rep.Days[0].ActiveUsers != 1 ||
		len(rep.Conversations) != 1 || rep.Conversations[0].Conversation != "c1" ||
		rep.Fanout != (projections.Distribution{Count: 30, Min: 1, P50: 1, P90: 1, P99: 1, Max: 1}) || rep.LagMS.Count != 30 {
		t.Fatalf("stats report %+v", rep)
	}
	out, err = runCmd(t, "stats", "--data", data)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ACTIVE USERS", rep.Days[0].Day + "  c1", "fanout (inbox entries per message)  30", "delivery lag (ms)"} {
		if !strings.Contains(out, want) {
			t.Fatalf("stats table lacks %q:\n%s", want, out)
		}
	}

	// --rebuild starts again; --from-position starts later.
	out, err = runCmd(t, "replay", "--data", data, "--projection", "stats", "--rebuild")
	if err != nil || lines1(t, out)["events"] != 60.0 {
		t.Fatalf("rebuild printed %s, %v", out, err)
	}
	from := all[40].Position.Commit
	out, err = runCmd(t, "replay", "--data", data, "--projection", "stats", "--rebuild", "--from-position", fmt.Sprint(from))
	if err != nil || lines1(t, out)["events"] != 20.0 {
		t.Fatalf("rebuild from %d printed %s, %v", from, out, err)
	}
}

func lines1(t *testing.T, out string) map[string]any {
	t.Helper()
	l := lines(t, out)
	if len(l) != 1 {
		t.Fatalf("want one JSON line, got %q", out)
	}
	return l[0]
}

func TestReplayRefusals(t *testing.T) {
	data, _ := exportData(t, 1)
	held, err := events.Open(storeDir(data), events.Options{ScavengeInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = runCmd(t, "replay", "--data", data, "--projection", "stats")
	_, err2 := runCmd(t, "stats", "--data", data)
	held.Close()
	for _, err := range []error{err, err2} {
		if !errors.Is(err, events.ErrInUse) || !strings.Contains(err.Error(), "stop the server") {
			t.Fatalf("replay of a store in use: %v", err)
		}
	}
	for _, args := range [][]string{
		{"replay", "--projection", "stats"},
		{"replay", "--data", data},
		{"replay", "--data", data, "--projection", "nope"},
		{"replay", "--data", data, "--projection", "stats", "--from-position", "x"},
		{"replay", "--data", data, "--projection", "stats", "--from-position", "999999999"},
		{"stats"},
	} {
		if _, err := runCmd(t, args...); !errors.Is(err, errUsage) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
}

func TestReplayTerminalBar(t *testing.T) {
	data, _ := exportData(t, 5)
	var prog bytes.Buffer
	if _, err := replay(context.Background(), projections.NewStats(), replayOptions{data: data, progress: &prog, terminal: true}); err != nil {
		t.Fatal(err)
	}
	s := prog.String()
	if !strings.HasPrefix(s, "\rstats [") || !strings.Contains(s, "\rstats [##############################] 100% 10 events ") ||
		!strings.HasSuffix(s, "\n") || strings.Count(s, "\n") != 1 {
		t.Fatalf("terminal progress %q", s)
	}
}
