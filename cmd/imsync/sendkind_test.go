package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestSendKindAndMeta: `imsync send --kind KIND --meta K=V...` reaches the
// other member, who sees the kind and the metadata in history --json;
// a malformed --meta is a usage error and sends nothing.
func TestSendKindAndMeta(t *testing.T) {
	addr, data := cliServer(t)
	ca := filepath.Join(data, "server.crt")
	ann, bob := mintToken(t, data, "ann", "d"), mintToken(t, data, "bob", "d")
	as := func(tok string, args ...string) (string, error) {
		return runCmd(t, append(args, "--server", addr, "--token", tok, "--ca", ca)...)
	}
	out, err := as(ann, "send", "--to", "bob", "--json", "--kind", "note", "--meta", "lang=en", "--meta", "topic=a=b", "remember the tickets")
	if err != nil {
		t.Fatal(err)
	}
	var sent struct {
		Conversation string `json:"conversation"`
	}
	if err := json.Unmarshal([]byte(out), &sent); err != nil || sent.Conversation == "" {
		t.Fatalf("send: %q %v", out, err)
	}
	for _, bad := range [][]string{{"--meta", "novalue"}, {"--meta", "=v"}, {"--meta", "k=1", "--meta", "k=2"}} {
		args := append([]string{"send", "--to", "bob"}, bad...)
		if _, err := as(ann, append(args, "not sent")...); exitCode(err) != exitUsage || !strings.Contains(err.Error(), "meta") {
			t.Fatalf("send %v: %v (exit %d), want a usage error", bad, err, exitCode(err))
		}
	}
	out, err = as(bob, "history", "--conv", sent.Conversation, "--json")
	if err != nil {
		t.Fatal(err)
	}
	msgs := lines(t, out)
	if len(msgs) != 1 {
		t.Fatalf("bob's history: %q", out)
	}
	md, _ := msgs[0]["metadata"].(map[string]any)
	if msgs[0]["kind"] != "note" || msgs[0]["text"] != "remember the tickets" || md["lang"] != "en" || md["topic"] != "a=b" || len(md) != 2 {
		t.Fatalf("bob's history: %v", msgs[0])
	}
}
