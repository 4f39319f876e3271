package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The test binary is also the imsync command: scripts run it through a
// ./imsync wrapper that sets this variable (see imsyncWrapper).
const asCommandEnv = "IMSYNC_TEST_RUN_AS_COMMAND"

func TestMain(m *testing.M) {
	if os.Getenv(asCommandEnv) == "1" {
		os.Unsetenv(asCommandEnv)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// imsyncWrapper writes dir/imsync, a script that runs this test binary as
// the imsync command (the same main as `go build ./cmd/imsync`).
func imsyncWrapper(t *testing.T, dir string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf("#!/bin/sh\n%s=1 exec %q \"$@\"\n", asCommandEnv, exe)
	if err := os.WriteFile(filepath.Join(dir, "imsync"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

// mdBlocks returns the fenced blocks of a language in a Markdown file,
// under the heading that starts with section ("" for the whole file).
func mdBlocks(t *testing.T, path, section, lang string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	if section != "" {
		i := strings.Index(text, "\n"+section)
		if i < 0 {
			t.Fatalf("%s has no section %q", path, section)
		}
		text = text[i+1:]
		if j := strings.Index(text[len(section):], "\n## "); j >= 0 {
			text = text[:len(section)+j]
		}
	}
	var blocks []string
	for _, m := range regexp.MustCompile("(?s)```"+lang+"\n(.*?)```").FindAllStringSubmatch(text, -1) {
		blocks = append(blocks, m[1])
	}
	return blocks
}

// shellStep is one command of a README block with the output shown under
// it (comment lines "# key=value ...").
type shellStep struct {
	cmd  string
	want []string
}

var outputComment = regexp.MustCompile(`^# [a-z_]+=`)

func shellSteps(block string) []shellStep {
	var steps []shellStep
	lines := strings.Split(block, "\n")
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		switch {
		case strings.TrimSpace(l) == "":
		case strings.HasPrefix(l, "#"):
			if outputComment.MatchString(l) && len(steps) > 0 {
				steps[len(steps)-1].want = append(steps[len(steps)-1].want, strings.TrimPrefix(l, "# "))
			}
		default:
			cmd := l
			for strings.HasSuffix(cmd, "\\") && i+1 < len(lines) {
				i++
				cmd = strings.TrimSuffix(cmd, "\\") + lines[i]
			}
			steps = append(steps, shellStep{cmd: cmd})
		}
	}
	return steps
}

// outputPattern is the regexp of a shown output: … stands for a word.
func outputPattern(want []string) *regexp.Regexp {
	parts := strings.Split(strings.Join(want, "\n"), "…")
	for i := range parts {
		parts[i] = regexp.QuoteMeta(parts[i])
	}
	return regexp.MustCompile(`\A` + strings.Join(parts, `[^ \n]*`) + `\z`)
}

// outputERE is outputPattern as a POSIX extended regular expression, for
// bash's =~.
func outputERE(want []string) string {
	parts := strings.Split(strings.Join(want, "\n"), "…")
	for i := range parts {
		var b strings.Builder
		for _, r := range parts[i] {
			if strings.ContainsRune(`\.[]()*+?{}|^$`, r) {
				b.WriteByte('\\')
			}
			b.WriteRune(r)
		}
		parts[i] = b.String()
	}
	return "^" + strings.Join(parts, "[^ ]*") + "$"
}

// bashQuote quotes s as one bash word.
func bashQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// tourScript turns README steps into a bash script that stops at the
// first failing command and prints each shown command's output between
// markers. A shown output that does not match yet (fanout follows the
// acknowledgement) is asked again, for at most 10 s.
func tourScript(steps []shellStep) string {
	var b strings.Builder
	b.WriteString("set -e\n")
	for i, s := range steps {
		if len(s.want) == 0 {
			b.WriteString(s.cmd + "\n")
			continue
		}
		// A quoted regular expression would match literally: it goes
		// through a variable. The newline ends a trailing comment.
		fmt.Fprintf(&b, "__re=%s; __end=$((SECONDS+10)); while :; do __out=$(%s\n); if [[ $__out =~ $__re ]] || [ $SECONDS -ge $__end ]; then break; fi; sleep 0.05; done\n",
			bashQuote(outputERE(s.want)), s.cmd)
		fmt.Fprintf(&b, "printf '@@OUT %d\\n%%s\\n@@END\\n' \"$__out\"\n", i)
	}
	return b.String()
}

// TestReadmeTour runs the README's commands as written: the server of
// "Two commands", the tail of the second terminal and the tour of the
// third, against a real server on a random port, and checks every output
// the README shows.
func TestReadmeTour(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	readme := filepath.Join("..", "..", "README.md")
	dir := t.TempDir()
	imsyncWrapper(t, dir)
	data := filepath.Join(dir, "imsync-data")
	env := append(os.Environ(), storeEnv(t, data)...)

	// Terminal 1: the server, on a random port instead of 7400.
	var serveCmd string
	for _, b := range mdBlocks(t, readme, "## Two commands", "sh") {
		if strings.Contains(b, " serve ") {
			serveCmd = strings.TrimSpace(b)
		}
	}
	if !strings.HasPrefix(serveCmd, "go run ./cmd/imsync serve --data ./imsync-data") {
		t.Fatalf("README's serve command: %q", serveCmd)
	}
	serveCmd = strings.Replace(serveCmd, "go run ./cmd/imsync", "./imsync", 1) + " --listen 127.0.0.1:0"
	var serveOut syncBuffer
	server := exec.Command(bash, "-c", "exec "+serveCmd)
	server.Dir, server.Env, server.Stdout, server.Stderr = dir, env, &serveOut, &serveOut
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		server.Process.Signal(os.Interrupt)
		if err := server.Wait(); err != nil {
			t.Errorf("serve ended with %v:\n%s", err, serveOut.String())
		}
	}()
	addr := waitForOutput(t, &serveOut, regexp.MustCompile(`listening on (\S+)`))

	tour := mdBlocks(t, readme, "## A five-minute tour", "sh")
	if len(tour) != 3 || !strings.HasPrefix(tour[0], "go build -o imsync ./cmd/imsync") {
		t.Fatalf("the tour has %d blocks, want build, tail and the rest: %q", len(tour), tour)
	}
	substitute := func(block string) string { return strings.ReplaceAll(block, "127.0.0.1:7400", addr) }

	// Terminal 2: tail, a block complete on its own (its own exports and
	// token line); it says on standard error when it follows.
	tailSteps := shellSteps(substitute(tour[1]))
	last := &tailSteps[len(tailSteps)-1]
	if !strings.HasPrefix(last.cmd, "./imsync tail ") {
		t.Fatalf("the second block ends with %q, not tail", last.cmd)
	}
	last.cmd = "exec " + last.cmd
	var tailOut, tailErr syncBuffer
	tail := exec.Command(bash, "-c", tourScript(tailSteps))
	tail.Dir, tail.Env, tail.Stdout, tail.Stderr = dir, env, &tailOut, &tailErr
	if err := tail.Start(); err != nil {
		t.Fatal(err)
	}
	tailDone := false
	defer func() {
		if !tailDone {
			tail.Process.Kill()
			tail.Wait()
		}
	}()
	waitForOutput(t, &tailErr, regexp.MustCompile(`following`))

	// Terminal 3: the tour.
	steps := shellSteps(substitute(tour[2]))
	tourCmd := exec.Command(bash, "-c", tourScript(steps))
	tourCmd.Dir, tourCmd.Env = dir, env
	var stderr bytes.Buffer
	tourCmd.Stderr = &stderr
	out, err := tourCmd.Output()
	if err != nil {
		t.Fatalf("the tour failed: %v\n%s\n%s", err, out, stderr.String())
	}
	shown := 0
	for i, s := range steps {
		if len(s.want) == 0 {
			continue
		}
		shown++
		m := regexp.MustCompile(fmt.Sprintf(`(?s)@@OUT %d\n(.*?)\n@@END\n`, i)).FindSubmatch(out)
		if m == nil || !outputPattern(s.want).Match(m[1]) {
			got := "(nothing)"
			if m != nil {
				got = string(m[1])
			}
			t.Fatalf("%s\nprinted:\n%s\nthe README shows:\n%s", s.cmd, got, strings.Join(s.want, "\n"))
		}
	}
	if shown < 6 {
		t.Fatalf("only %d outputs checked", shown)
	}

	// The phone's tail saw everything after it started, the read marker last.
	want := []string{"text=\"hello bob\"", "text=\"pack light\"", "text=\"bring a map\"", "reply_to=3 mentions=bob",
		"type=EditNotice", "type=RecallNotice", "type=ReadMarkerMoved"}
	for end := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		got := tailOut.String()
		missing := ""
		for _, w := range want {
			if !strings.Contains(got, w) {
				missing = w
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("tail printed no %q:\n%s\n%s", missing, got, tailErr.String())
		}
	}
	tail.Process.Signal(os.Interrupt)
	if err := tail.Wait(); err != nil {
		t.Fatalf("tail ended with %v on interrupt:\n%s", err, tailErr.String())
	}
	tailDone = true
}

// waitFor waits until out matches re and returns its first group.
func waitForOutput(t *testing.T, out *syncBuffer, re *regexp.Regexp) string {
	t.Helper()
	for end := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			if len(m) > 1 {
				return m[1]
			}
			return m[0]
		}
		if time.Now().After(end) {
			t.Fatalf("no %v in:\n%s", re, out.String())
		}
	}
}

// TestReadmeConfigExample: the configuration file the README shows is
// one serve accepts, and its values reach the flags.
func TestReadmeConfigExample(t *testing.T) {
	blocks := mdBlocks(t, filepath.Join("..", "..", "README.md"), "## Configuration", "conf")
	if len(blocks) != 1 {
		t.Fatalf("README's Configuration has %d conf blocks", len(blocks))
	}
	file := filepath.Join(t.TempDir(), "imsync.conf")
	os.WriteFile(file, []byte(blocks[0]), 0o644)
	table := commands()
	for i := range table {
		if table[i].name != "serve" {
			continue
		}
		fs := describe(&table[i])
		set := map[string]bool{}
		if err := applyConfigFile(fs, file, set); err != nil {
			t.Fatalf("README's example: %v", err)
		}
		if len(set) < 3 {
			t.Fatalf("README's example set only %v", set)
		}
		for name := range set {
			if f := fs.Lookup(name); f.Value.String() == f.DefValue && name != "data" {
				t.Fatalf("--%s = %s: the example sets the default", name, f.Value)
			}
		}
		return
	}
	t.Fatal("no serve command")
}
