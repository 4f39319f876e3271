package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// apiServer runs `imsync serve --api 127.0.0.1:0 --api-key KEYFILE flags...`
// and returns the API's HOST:PORT and the key file.
func apiServer(t *testing.T, flags ...string) (apiAddr, keyFile string) {
	t.Helper()
	keyFile = filepath.Join(t.TempDir(), "api.key")
	if err := os.WriteFile(keyFile, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(t.TempDir(), "data")
	ctx, stop := context.WithCancel(context.Background())
	var out syncBuffer
	served := make(chan error, 1)
	args := serveArgs(t, data, append([]string{"--listen", "127.0.0.1:0", "--api", "127.0.0.1:0", "--api-key", keyFile}, flags...)...)
	go func() { served <- run(ctx, args, &out) }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	for end := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if m := regexp.MustCompile(`server API on http://(\S+)`).FindStringSubmatch(out.String()); m != nil {
			return m[1], keyFile
		}
		if time.Now().After(end) {
			t.Fatalf("server did not start: %q", out.String())
		}
	}
}

// apiRun runs `imsync api args...` with stdin as standard input.
func apiRun(stdin string, args ...string) (string, error) {
	var out bytes.Buffer
	ctx := withStdin(context.Background(), strings.NewReader(stdin))
	err := run(ctx, append([]string{"api"}, args...), &out)
	return out.String(), err
}

func decodeAnswer(t *testing.T, out string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("answer %q: %v", out, err)
	}
	return m
}

// TestAPICommand drives the server API with `imsync api`: the examples of
// docs/extending.md, flags from the environment, error answers with the
// CLI's exit statuses, and bad input refused before anything is sent.
func TestAPICommand(t *testing.T) {
	addr, key := apiServer(t)
	call := func(stdin string, args ...string) (map[string]any, error) {
		t.Helper()
		out, err := apiRun(stdin, append([]string{"--api", addr, "--api-key", key}, args...)...)
		if out == "" {
			return nil, err
		}
		return decodeAnswer(t, out), err
	}
	ok := func(stdin string, args ...string) map[string]any {
		t.Helper()
		m, err := call(stdin, args...)
		if err != nil {
			t.Fatalf("imsync api %v: %v", args, err)
		}
		return m
	}

	if m := ok("", "POST", "/v1/groups", `{"id":"trip","creator":"ann","name":"Trip","members":["bob"]}`); m["conversation"] != "trip" {
		t.Fatalf("create a group: %v", m)
	}
	sent := ok(`{"conversation":"trip","sender":"ann","client_msg_id":"m1","text":"pack light"}`, "post", "/v1/messages", "-")
	if sent["seq"] == nil || sent["duplicate"] != false {
		t.Fatalf("send from standard input: %v", sent)
	}
	// Flags from the environment (IMSYNC_API, IMSYNC_API_KEY), after the
	// positional arguments too.
	t.Setenv("IMSYNC_API", addr)
	t.Setenv("IMSYNC_API_KEY", key)
	out, err := apiRun("", "GET", "/v1/conversations/trip/messages?reader=bob&limit=20", "--timeout", "20s")
	if err != nil {
		t.Fatal(err)
	}
	h := decodeAnswer(t, out)
	msgs, _ := h["messages"].([]any)
	if len(msgs) != 1 || !strings.Contains(out, "cGFjayBsaWdodA==") { // base64 of "pack light"
		t.Fatalf("history: %s", out)
	}
	if _, err := apiRun("", "GET", "/openapi.json"); err != nil {
		t.Fatalf("the OpenAPI document: %v", err)
	}

	// Error answers: printed, and the exit status says what kind.
	for _, c := range []struct {
		name   string
		args   []string
		status int
		code   float64
	}{
		{"not a member", []string{"POST", "/v1/messages", `{"conversation":"trip","sender":"zed","text":"let me in"}`}, exitNotFound, 2},
		{"no such endpoint", []string{"GET", "/v1/nothing"}, exitNotFound, 101},
		{"refused: an admin only", []string{"POST", "/v1/conversations/trip/members", `{"actor":"bob","user":"cat"}`}, exitRefused, 3},
		{"invalid for the server", []string{"POST", "/v1/messages", `{"conversation":"trip","sender":"ann","text":"a","body":"YQ=="}`}, exitError, 1},
	} {
		m, err := call("", c.args...)
		if exitCode(err) != c.status || m["code"] != c.code || m["error"] == "" {
			t.Fatalf("%s: answer %v, %v (exit %d), want exit %d, code %v", c.name, m, err, exitCode(err), c.status, c.code)
		}
	}
	wrongKey := filepath.Join(t.TempDir(), "wrong.key")
	os.WriteFile(wrongKey, []byte("not-the-key-0123456789"), 0o600)
	if _, err := apiRun("", "--api-key", wrongKey, "GET", "/v1/users/ann/conversations"); exitCode(err) != exitRefused {
		t.Fatalf("a wrong key: %v (exit %d)", err, exitCode(err))
	}

	// Bad input is refused before anything is sent: the history is unchanged.
	for _, args := range [][]string{
		{"POST", "/v1/messages", `{"conversation":"trip","sender":"ann","text":"half`},
		{"POST", "/v1/messages", `{"conversation":"trip","sender":"ann","text":"x"} {}`},
		{"SEND", "/v1/messages", `{}`},
		{"POST", "v1/messages", `{}`},
		{"GET", "/v1/conversations/trip/messages", `{"reader":"bob"}`},
		{"POST"},
		{"--api", "ftp://127.0.0.1:1", "GET", "/v1/users/ann/conversations"},
		{"--timeout", "0s", "GET", "/v1/users/ann/conversations"},
	} {
		if _, err := apiRun("", args...); exitCode(err) != exitUsage {
			t.Fatalf("imsync api %q: %v (exit %d), want a usage error", args, err, exitCode(err))
		}
	}
	if _, err := apiRun("", "--api-key", filepath.Join(t.TempDir(), "missing"), "GET", "/v1/users/ann/conversations"); exitCode(err) != exitNotFound {
		t.Fatalf("a missing key file: %v (exit %d)", err, exitCode(err))
	}
	t.Setenv("IMSYNC_API_KEY", "")
	if _, err := apiRun("", "GET", "/v1/users/ann/conversations"); exitCode(err) != exitUsage || !strings.Contains(err.Error(), "--api-key") {
		t.Fatalf("no key: %v (exit %d)", err, exitCode(err))
	}
	t.Setenv("IMSYNC_API_KEY", key)
	out, err = apiRun("", "GET", "/v1/conversations/trip/messages?reader=bob")
	if err != nil || len(decodeAnswer(t, out)["messages"].([]any)) != 1 {
		t.Fatalf("after bad input: %s %v", out, err)
	}

	// Nobody listening: unavailable.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	if _, err := apiRun("", "--api", dead, "GET", "/v1/users/ann/conversations"); exitCode(err) != exitUnavailable || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("no server: %v (exit %d)", err, exitCode(err))
	}
}

// TestAPICommandRejected: a message the before-send webhook rejects is
// answered 422 with code 8 and the reason; `imsync api` exits 3.
func TestAPICommandRejected(t *testing.T) {
	secret := []byte("s")
	hook := newModerationHook(t, secret)
	secretFile := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secretFile, secret, 0o600)
	addr, key := apiServer(t, "--before-send-webhook", hook.srv.URL, "--webhook-secret", secretFile)
	if _, err := apiRun("", "--api", addr, "--api-key", key, "POST", "/v1/groups", `{"id":"g","creator":"ann","name":"g","members":["bob"]}`); err != nil {
		t.Fatal(err)
	}
	out, err := apiRun("", "--api", addr, "--api-key", key, "POST", "/v1/messages", `{"conversation":"g","sender":"ann","text":"spam"}`)
	m := decodeAnswer(t, out)
	if exitCode(err) != exitRefused || m["code"] != float64(8) || m["reason"] != "no-spam" || !strings.Contains(err.Error(), "no-spam") {
		t.Fatalf("rejected: %s, %v (exit %d)", out, err, exitCode(err))
	}
	out, err = apiRun("", "--api", addr, "--api-key", key, "POST", "/v1/messages",
		`{"conversation":"g","sender":"ann","text":"darn","metadata":{"lang":"en"}}`)
	if err != nil {
		t.Fatal(err)
	}
	out, err = apiRun("", "--api", addr, "--api-key", key, "GET", "/v1/conversations/g/messages?reader=bob")
	if err != nil || !strings.Contains(out, `"lang":"en"`) || !strings.Contains(out, `"moderated":"yes"`) {
		t.Fatalf("the rewritten message with the sender's and the webhook's metadata: %s %v", out, err)
	}
	hook.srv.Close()
	out, err = apiRun("", "--api", addr, "--api-key", key, "POST", "/v1/messages", `{"conversation":"g","sender":"ann","text":"hi"}`)
	if m := decodeAnswer(t, out); exitCode(err) != exitUnavailable || m["code"] != float64(9) || m["reason"] != "before-send-webhook" {
		t.Fatalf("check failed: %s, %v (exit %d)", out, err, exitCode(err))
	}
}

// TestAPIDocExamples runs the `imsync api` block of docs/extending.md
// ("Server API") with bash against a real server, and checks each answer
// shown under a command ("# ..." lines) and each exit status ("# exit N").
func TestAPIDocExamples(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	var block string
	for _, b := range mdBlocks(t, filepath.Join("..", "..", "docs", "extending.md"), "## Server API", "sh") {
		if strings.Contains(b, "imsync api ") {
			block = b
		}
	}
	if block == "" {
		t.Fatal("docs/extending.md shows no imsync api example")
	}
	addr, key := apiServer(t)
	dir := t.TempDir()
	imsyncWrapper(t, dir)
	k, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "api.key"), k, 0o600)

	type step struct {
		cmd  string
		want []string
		exit int
	}
	var steps []step
	for _, l := range strings.Split(strings.ReplaceAll(block, "127.0.0.1:7402", addr), "\n") {
		switch {
		case strings.TrimSpace(l) == "":
		case strings.HasPrefix(l, "# exit "):
			n, err := strconv.Atoi(strings.TrimPrefix(l, "# exit "))
			if err != nil || len(steps) == 0 {
				t.Fatalf("bad line %q", l)
			}
			steps[len(steps)-1].exit = n
		case strings.HasPrefix(l, "# "):
			steps[len(steps)-1].want = append(steps[len(steps)-1].want, strings.TrimPrefix(l, "# "))
		default:
			steps = append(steps, step{cmd: l})
		}
	}
	var script strings.Builder
	for i, s := range steps {
		if len(s.want) == 0 && s.exit == 0 {
			script.WriteString(s.cmd + "\n")
			continue
		}
		fmt.Fprintf(&script, "__out=$(%s 2>/dev/null)\n__rc=$?\nprintf '@@OUT %d %%d\\n%%s\\n@@END\\n' $__rc \"$__out\"\n", s.cmd, i)
	}
	cmd := exec.Command(bash, "-c", script.String())
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"), "IMSYNC_API=", "IMSYNC_API_KEY=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	got := map[int]string{}
	rcs := map[int]int{}
	for _, m := range regexp.MustCompile(`(?s)@@OUT (\d+) (\d+)\n(.*?)\n@@END\n`).FindAllStringSubmatch(string(out), -1) {
		i, _ := strconv.Atoi(m[1])
		rcs[i], _ = strconv.Atoi(m[2])
		got[i] = m[3]
	}
	checked := 0
	for i, s := range steps {
		if len(s.want) == 0 && s.exit == 0 {
			continue
		}
		checked++
		if rcs[i] != s.exit || !outputPattern(s.want).MatchString(got[i]) {
			t.Errorf("%s\n got (exit %d): %s\nwant (exit %d): %s", s.cmd, rcs[i], got[i], s.exit, strings.Join(s.want, "\n"))
		}
	}
	if checked < 5 {
		t.Fatalf("only %d answers checked:\n%s", checked, out)
	}
}
