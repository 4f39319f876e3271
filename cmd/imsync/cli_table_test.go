package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestEveryCommandHelp: every command of the table answers --help, -h and
// `imsync help NAME` with its synopsis and every flag it parses, and exits 0.
func TestEveryCommandHelp(t *testing.T) {
	table := commands()
	withFlags := 0
	for i := range table {
		c := &table[i]
		if c.hidden {
			continue
		}
		fs := describe(c)
		var names []string
		fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
		if len(names) > 0 {
			withFlags++
		}
		for _, args := range [][]string{
			append(strings.Fields(c.name), "--help"),
			append(strings.Fields(c.name), "-h"),
			append([]string{"help"}, strings.Fields(c.name)...),
		} {
			out, err := runCmd(t, args...)
			if err != nil || exitCode(err) != 0 {
				t.Fatalf("%q: %v (exit %d)", args, err, exitCode(err))
			}
			if !strings.HasPrefix(out, "usage: imsync "+c.name+" ") || !strings.Contains(out, c.summary) {
				t.Fatalf("%q printed no synopsis:\n%s", args, out)
			}
			for _, n := range names {
				if !regexp.MustCompile(`(?m)^  --` + regexp.QuoteMeta(n) + `( |$)`).MatchString(out) {
					t.Fatalf("%q does not list --%s:\n%s", args, n, out)
				}
			}
		}
	}
	// Every command but help, completion and the three store commands
	// without arguments has flags of its own: the table reached them all.
	if withFlags < len(table)-4 {
		t.Fatalf("only %d of %d commands showed flags", withFlags, len(table))
	}
	// The flags found are the ones the command parses: serve has its limits.
	serve := describe(&table[slices.IndexFunc(table, func(c command) bool { return c.name == "serve" })])
	for _, n := range []string{"data", "listen", "config", "max-body-size", "read-fanout-threshold", "recall-window"} {
		if serve.Lookup(n) == nil {
			t.Fatalf("serve --help lacks --%s", n)
		}
	}
	for _, args := range [][]string{nil, {"help"}, {"--help"}} {
		out, err := runCmd(t, args...)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range topNames() {
			if !strings.Contains(out, "  imsync "+name+" ") {
				t.Fatalf("%q: the overview lacks %s:\n%s", args, name, out)
			}
		}
	}
	if out, err := runCmd(t, "group", "--help"); err != nil || !strings.Contains(out, "imsync group add --conv ID USER") {
		t.Fatalf("group --help: %v\n%s", err, out)
	}
}

// TestUsageErrors: an unknown command, subcommand or flag is a usage error
// (exit 2) that lists what exists.
func TestUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, "commands: serve, token, send, edit"},
		{[]string{"group"}, "group needs a command: create, add, remove"},
		{[]string{"group", "rename"}, "group commands: create, add, remove"},
		{[]string{"store", "append", "--nope"}, "store append: flag provided but not defined: -nope"},
		{[]string{"help", "frobnicate"}, "unknown command"},
		{[]string{"send", "--to", "bob"}, "send (--to USER | --conv ID) TEXT|-"},
		{[]string{"completion", "tcsh"}, "want bash, zsh or fish"},
		{[]string{"serve", "--data", "x", "--max-group-size", "1"}, "--max-group-size 1: want 2 to"},
	} {
		_, err := runCmd(t, c.args...)
		if exitCode(err) != exitUsage || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%q: %v (exit %d), want a usage error with %q", c.args, err, exitCode(err), c.want)
		}
	}
}

func TestReorderArgs(t *testing.T) {
	fs := newFlagSet("x")
	fs.Bool("json", false, "")
	fs.String("to", "", "")
	for _, c := range []struct {
		in   []string
		want string
		help bool
	}{
		{[]string{"hi", "--json"}, "--json -- hi", false},
		{[]string{"hi", "--to", "bob", "there"}, "--to bob -- hi there", false},
		{[]string{"--to=bob", "-", "--json"}, "--to=bob --json -- -", false},
		{[]string{"a", "--", "--json", "-x"}, "-- a --json -x", false},
		{[]string{"a", "--help"}, "-- a", true},
		{[]string{"--unknown", "a"}, "--unknown -- a", false},
	} {
		got, help := reorderArgs(fs, c.in)
		if strings.Join(got, " ") != c.want || help != c.help {
			t.Fatalf("reorderArgs(%q) = %q, %v; want %q, %v", c.in, got, help, c.want, c.help)
		}
	}
}

// TestFlagPrecedence: a flag comes from the command line, else the
// environment, else the --config file, else its default; an unknown
// setting or a bad value in the file is an error naming its line.
func TestFlagPrecedence(t *testing.T) {
	var got map[string]string
	parse := func(args ...string) error {
		fs := newFlagSet("probe")
		vals := map[string]*string{}
		for _, n := range []string{"alpha", "beta", "gamma", "delta-x"} {
			vals[n] = fs.String(n, "default", "")
		}
		fs.Int("count", 1, "")
		inv := &invocation{cmd: &command{name: "probe", config: true}, out: &bytes.Buffer{}}
		err := parseFlags(context.WithValue(context.Background(), invocationKey{}, inv), fs, args)
		got = map[string]string{}
		for n, v := range vals {
			got[n] = *v
		}
		return err
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "imsync.conf")
	os.WriteFile(file, []byte("# settings\nalpha = file\nbeta = file\n\ngamma = \"file value\"  \n"), 0o644)
	t.Setenv("IMSYNC_ALPHA", "env")
	t.Setenv("IMSYNC_BETA", "env")
	t.Setenv("IMSYNC_DELTA_X", "env")
	if err := parse("--config", file, "--alpha", "flag"); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"alpha": "flag", "beta": "env", "gamma": "file value", "delta-x": "env"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	// The config file may itself come from the environment.
	t.Setenv("IMSYNC_CONFIG", file)
	t.Setenv("IMSYNC_BETA", "")
	if err := parse(); err != nil || got["beta"] != "file" || got["alpha"] != "env" {
		t.Fatalf("IMSYNC_CONFIG: %v %v", got, err)
	}
	t.Setenv("IMSYNC_CONFIG", "")
	for _, c := range []struct{ text, want string }{
		{"alpha = a\nlisten-addr = x\n", "imsync.conf:2: unknown setting \"listen-addr\""},
		{"alpha = a\n\ncount = many\n", "imsync.conf:3: count = \"many\""},
		{"alpha\n", "imsync.conf:1: want `flag = value`"},
		{"config = other\n", "unknown setting \"config\""},
	} {
		os.WriteFile(file, []byte(c.text), 0o644)
		if err := parse("--config", file); !errors.Is(err, errUsage) || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("file %q: %v, want %q", c.text, err, c.want)
		}
	}
	t.Setenv("IMSYNC_COUNT", "many")
	if err := parse(); !errors.Is(err, errUsage) || !strings.Contains(err.Error(), `IMSYNC_COUNT="many"`) {
		t.Fatalf("bad environment value: %v", err)
	}
}

// TestServeConfigFileAndEnv: serve takes its limits from --config and the
// environment, the environment winning; the server then enforces them.
func TestServeConfigFileAndEnv(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "imsync.conf")
	os.WriteFile(conf, []byte("listen = 127.0.0.1:0\nmax-body-size = 8\nedit-window = 1ms\n"), 0o644)
	t.Setenv("IMSYNC_MAX_BODY_SIZE", "12")
	addr, data := cliServerWith(t, "--config", conf)
	ann := mintToken(t, data, "ann", "d")
	base := []string{"--server", addr, "--token", ann, "--ca", filepath.Join(data, "server.crt")}
	if _, err := runCmd(t, append([]string{"send", "--to", "bob", "twelve bytes"}, base...)...); err != nil {
		t.Fatalf("a 12-byte body under IMSYNC_MAX_BODY_SIZE=12: %v", err)
	}
	if _, err := runCmd(t, append([]string{"send", "--to", "bob", "thirteen byte"}, base...)...); err == nil || !strings.Contains(err.Error(), "exceeds 12") {
		t.Fatalf("a 13-byte body: %v", err)
	}
	// edit-window = 1ms from the file: an edit is refused as expired.
	out, err := runCmd(t, append([]string{"send", "--json", "--to", "bob", "x"}, base...)...)
	if err != nil {
		t.Fatal(err)
	}
	m := lines(t, out)[0]
	// Edits are refused as expired once the window has passed.
	for end := time.Now().Add(5 * time.Second); ; {
		_, err = runCmd(t, append([]string{"edit", "--conv", m["conversation"].(string), "--seq", jsonNum(m["seq"].(float64)), "y"}, base...)...)
		if err != nil && strings.Contains(err.Error(), "error 6") {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("edit long after the 1 ms window: %v", err)
		}
	}
}

// TestExitCodes: refused tokens, unknown conversations, an unreachable
// server and an untrusted certificate end with their own status and say
// what to do.
func TestExitCodes(t *testing.T) {
	addr, data := cliServer(t)
	ca := filepath.Join(data, "server.crt")
	ann := mintToken(t, data, "ann", "d")

	_, err := runCmd(t, "convs", "--server", addr, "--token", ann+"x", "--ca", ca)
	if exitCode(err) != exitRefused || !strings.Contains(err.Error(), "imsync token") {
		t.Fatalf("forged token: %v (exit %d)", err, exitCode(err))
	}
	_, err = runCmd(t, "history", "--server", addr, "--token", ann, "--ca", ca, "--conv", "g-nosuch")
	if exitCode(err) != exitNotFound {
		t.Fatalf("unknown conversation: %v (exit %d)", err, exitCode(err))
	}
	_, err = runCmd(t, "convs", "--server", addr, "--token", ann)
	if exitCode(err) != exitError || !strings.Contains(err.Error(), "--ca DATA/server.crt") {
		t.Fatalf("untrusted certificate: %v (exit %d)", err, exitCode(err))
	}
	_, err = runCmd(t, "convs", "--server", addr, "--token", ann, "--ca", filepath.Join(data, "nosuch.crt"))
	if exitCode(err) != exitNotFound || !strings.Contains(err.Error(), "server.crt in its data directory") {
		t.Fatalf("missing --ca file: %v (exit %d)", err, exitCode(err))
	}
	_, err = runCmd(t, "token", "--data", filepath.Join(t.TempDir(), "other"), "--user", "a", "--device", "d")
	if exitCode(err) != exitNotFound || !strings.Contains(err.Error(), "pass the --data the server runs with") {
		t.Fatalf("token with a wrong --data: %v (exit %d)", err, exitCode(err))
	}
	// A UDP port nobody listens on.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := pc.LocalAddr().String()
	pc.Close()
	_, err = runCmd(t, "convs", "--server", dead, "--token", ann, "--ca", ca, "--timeout", "500ms")
	if exitCode(err) != exitUnavailable || !strings.Contains(err.Error(), "server unreachable at "+dead+": is `imsync serve` running") {
		t.Fatalf("no server: %v (exit %d)", err, exitCode(err))
	}
}

// TestSendEditReplyMention: send from standard input, a reply with
// mentions, an edit; the receiver sees them in history and in its sync
// timeline. Flags may follow the text.
func TestSendEditReplyMention(t *testing.T) {
	addr, data := cliServer(t)
	ca := filepath.Join(data, "server.crt")
	ann, bob := mintToken(t, data, "ann", "d"), mintToken(t, data, "bob", "d")
	as := func(tok string, stdin string, args ...string) []map[string]any {
		t.Helper()
		var out bytes.Buffer
		ctx := withStdin(context.Background(), strings.NewReader(stdin))
		err := run(ctx, append(args, "--server", addr, "--token", tok, "--ca", ca, "--json"), &out)
		if err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		return lines(t, out.String())
	}
	first := as(ann, "from standard input\n", "send", "--to", "bob", "-")[0]
	conv, seq := first["conversation"].(string), jsonNum(first["seq"].(float64))
	as(ann, "", "send", "a reply", "--conv", conv, "--reply-to", seq, "--mention", "bob", "--mention", "ann")
	edited := as(ann, "", "edit", "--conv", conv, "--seq", seq, "edited text")[0]
	if edited["edited_seq"] != first["seq"] {
		t.Fatalf("edit printed %v", edited)
	}
	h := as(bob, "", "history", "--conv", conv, "--after", "0")
	if len(h) != 2 || h[0]["text"] != "edited text" || h[0]["edited"] != true ||
		h[1]["text"] != "a reply" || h[1]["reply_to"] != first["seq"] || fmt.Sprint(h[1]["mentions"]) != "[bob ann]" {
		t.Fatalf("history printed %v", h)
	}
	// Bob's timeline: joined, the message, the reply, the edit (fanout
	// follows the acknowledgement: sync until all four are in).
	state := filepath.Join(t.TempDir(), "bob.seq")
	var entries []map[string]any
	for end := time.Now().Add(10 * time.Second); len(entries) < 4 && time.Now().Before(end); {
		entries = append(entries, as(bob, "", "sync", "--state", state)...)
	}
	if len(entries) != 4 || entries[1]["text"] != "from standard input" || entries[2]["reply_to"] != first["seq"] ||
		entries[3]["type"] != "EditNotice" || entries[3]["edited_seq"] != first["seq"] || entries[3]["text"] != "edited text" {
		t.Fatalf("bob's timeline: %v", entries)
	}
	var out bytes.Buffer
	err := run(withStdin(context.Background(), strings.NewReader("\n")), []string{"send", "--to", "bob", "-", "--server", addr, "--token", ann, "--ca", ca}, &out)
	if exitCode(err) != exitUsage || !strings.Contains(err.Error(), "standard input held no text") {
		t.Fatalf("empty standard input: %v", err)
	}
}

// TestVersion: version prints what the build recorded.
func TestVersion(t *testing.T) {
	out, err := runCmd(t, "version")
	if err != nil || !strings.HasPrefix(out, "imsync ") || !strings.Contains(out, runtime.Version()) {
		t.Fatalf("version: %v %q", err, out)
	}
	bi := buildInfoFrom(&debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/imsync/imsync", Version: "v1.2.3"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.time", Value: "2026-12-01T00:00:00Z"}, {Key: "vcs.modified", Value: "true"}}})
	if got := bi.String(); got != "imsync v1.2.3 github.com/imsync/imsync go1.26.8 revision abc123 2026-12-01T00:00:00Z (modified)" {
		t.Fatalf("version line %q", got)
	}
	js, err := runCmd(t, "version", "--json")
	if err != nil || lines(t, js)[0]["go"] != runtime.Version() {
		t.Fatalf("version --json: %v %q", err, js)
	}
}

// TestCompletion: each script names every command and every flag, and the
// bash one completes commands, subcommands and flags.
func TestCompletion(t *testing.T) {
	scripts := map[string]string{}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		out, err := runCmd(t, "completion", sh)
		if err != nil {
			t.Fatal(err)
		}
		scripts[sh] = out
		for _, e := range completionEntries() {
			for _, w := range strings.Fields(e.name) {
				if !strings.Contains(out, w) {
					t.Fatalf("%s completion lacks %q", sh, w)
				}
			}
			for _, f := range e.flags {
				if !strings.Contains(out, f.Name) {
					t.Fatalf("%s completion lacks --%s of %s", sh, f.Name, e.name)
				}
			}
		}
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash to run the completion with")
	}
	complete := func(words ...string) string {
		t.Helper()
		script := scripts["bash"] + fmt.Sprintf("\nCOMP_WORDS=(%s); COMP_CWORD=%d; _imsync; echo \"${COMPREPLY[*]}\"\n",
			strings.Join(quoteAll(words), " "), len(words)-1)
		out, err := exec.Command(bash, "-c", script).CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := complete("imsync", "se"); got != "serve send search" {
		t.Fatalf("imsync se<TAB>: %q", got)
	}
	if got := complete("imsync", "group", "a"); got != "add" {
		t.Fatalf("imsync group a<TAB>: %q", got)
	}
	if got := complete("imsync", "send", "--re"); got != "--reply-to" {
		t.Fatalf("imsync send --re<TAB>: %q", got)
	}
	if got := complete("imsync", "store", "log", "--f"); got != "--follow --from" {
		t.Fatalf("imsync store log --f<TAB>: %q", got)
	}
}

func quoteAll(ws []string) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = "'" + w + "'"
	}
	return out
}

// mintToken mints a device token for the server on data.
func mintToken(t *testing.T, data, user, device string) string {
	t.Helper()
	out, err := runCmd(t, "token", "--data", data, "--user", user, "--device", device)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// TestServeRefusesBadLimits: a limit out of its range stops serve before
// anything is created, with an error naming the flag and the range.
func TestServeRefusesBadLimits(t *testing.T) {
	runCmd := serveStopped
	for _, c := range [][2]string{
		{"--request-rate", "0"}, {"--request-rate", "-5"}, {"--request-burst", "0"},
		{"--max-conns-per-user", "0"}, {"--max-conns-per-user", "5000"},
		{"--max-group-size", "1"}, {"--max-group-size", "2000000"},
		{"--read-fanout-threshold", "0"}, {"--read-fanout-threshold", "200001"},
		{"--recall-window", "0s"}, {"--edit-window", "-1m"},
		{"--max-body-size", "0"}, {"--max-body-size", "300000"},
		// Absurd values that parse: tiny, not a number, infinite, huge.
		{"--request-rate", "1e-300"}, {"--request-rate", "0.05"}, {"--request-rate", "NaN"},
		{"--request-rate", "Inf"}, {"--request-rate", "-Inf"}, {"--request-rate", "1e7"},
		{"--request-burst", "-1"}, {"--request-burst", "2000000"},
		{"--max-conns-per-user", "-1"}, {"--max-body-size", "-1"},
		{"--recall-window", "1ns"}, {"--recall-window", "999us"}, {"--recall-window", "169h"},
		{"--recall-window", "2562047h"}, {"--edit-window", "1ns"}, {"--edit-window", "2562047h"},
		{"--drain-timeout", "2h"},
	} {
		data := filepath.Join(t.TempDir(), "data")
		_, err := runCmd(t, "serve", "--data", data, "--max-group-size", "200000", c[0], c[1])
		if c[0] == "--max-group-size" {
			_, err = runCmd(t, "serve", "--data", data, c[0], c[1])
		}
		if exitCode(err) != exitUsage || !strings.Contains(err.Error(), c[0]+" ") || !strings.Contains(err.Error(), "want ") {
			t.Fatalf("serve %s %s: %v", c[0], c[1], err)
		}
		if _, statErr := os.Stat(data); !os.IsNotExist(statErr) {
			t.Fatalf("serve %s %s created %s", c[0], c[1], data)
		}
	}
}

// serveStopped runs a command with a context already cancelled: a serve
// that wrongly accepts its flags starts and stops at once (and the test
// fails on its nil error) instead of serving until the test times out.
func serveStopped(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out bytes.Buffer
	err := run(ctx, args, &out)
	return out.String(), err
}

// TestServeRefusesUnparsableLimits: values that do not even parse
// (overflowing a duration or an int, or days past the bound) are usage
// errors naming the flag; nothing is created.
func TestServeRefusesUnparsableLimits(t *testing.T) {
	runCmd := serveStopped
	for _, c := range [][2]string{
		{"--recall-window", "9999999999h"}, {"--edit-window", "3000000h"},
		{"--drain-timeout", "9999999999h"},
		{"--request-burst", "99999999999999999999"}, {"--max-group-size", "1e6"},
		{"--request-rate", "1e400"},
		{"--sync-retention", "106752d"}, {"--sync-retention", "3651d"}, {"--sync-retention", "87601h"},
		{"--sync-retention", "9999999999h"},
	} {
		data := filepath.Join(t.TempDir(), "data")
		_, err := runCmd(t, "serve", "--data", data, c[0], c[1])
		if exitCode(err) != exitUsage || !strings.Contains(err.Error(), c[0][1:]+":") && !strings.Contains(err.Error(), c[0][1:]+" ") {
			t.Fatalf("serve %s %s: %v", c[0], c[1], err)
		}
		if strings.HasPrefix(c[0], "--sync-retention") && !strings.Contains(err.Error(), "want ") {
			t.Fatalf("serve %s %s: %v, want the range", c[0], c[1], err)
		}
		if _, statErr := os.Stat(data); !os.IsNotExist(statErr) {
			t.Fatalf("serve %s %s created %s", c[0], c[1], data)
		}
	}
	var r retentionFlag
	if err := r.Set("3650d"); err != nil || time.Duration(r) != 3650*24*time.Hour {
		t.Fatalf("3650d: %v, %v", time.Duration(r), err)
	}
}

// TestStoreToolsRefuseWrongData: the store tools that read do not create
// an empty store in a --data that holds none; they name the directory.
func TestStoreToolsRefuseWrongData(t *testing.T) {
	for _, args := range [][]string{
		{"store", "read", "--stream", "conv-1"},
		{"store", "log"},
		{"store", "scavenge"},
	} {
		data := filepath.Join(t.TempDir(), "not-the-data")
		_, err := runCmd(t, append(args, "--data", data)...)
		if err == nil || !strings.Contains(err.Error(), data+" holds no event store") {
			t.Fatalf("%q on a wrong --data: %v", args, err)
		}
		if _, statErr := os.Stat(data); !os.IsNotExist(statErr) {
			t.Fatalf("%q created %s", args, data)
		}
	}
}
