package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imsync/imsync/transport"
)

// A flag that takes a value, given last without one, is a usage error:
// it must not take the "--" that ends the reordered flags as its value
// (`imsync serve --data` would run a server on a directory named "--").
func TestFlagMissingItsValue(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	for _, args := range [][]string{
		{"token", "--user", "ann", "--device", "phone", "--data"},
		{"token", "--data"},
		{"send", "hello", "--to"},
	} {
		_, err := runCmd(t, args...)
		if exitCode(err) != exitUsage || !strings.Contains(err.Error(), "flag needs an argument: -"+strings.TrimLeft(args[len(args)-1], "-")) {
			t.Errorf("%q: %v (exit %d), want a usage error: flag needs an argument", args, err, exitCode(err))
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("the working directory got %v", ents)
	}
}

// A setting given twice in a --config file is a mistake (which line was
// meant?) unless its flag is repeatable: the error names both lines.
func TestConfigFileRepeatedSetting(t *testing.T) {
	file := filepath.Join(t.TempDir(), "imsync.conf")
	parse := func(text string) error {
		os.WriteFile(file, []byte(text), 0o644)
		fs := newFlagSet("probe")
		fs.String("listen", "", "")
		var tags multiFlag
		fs.Var(&tags, "tag", "")
		inv := &invocation{cmd: &command{name: "probe", config: true}, out: &bytes.Buffer{}}
		return parseFlags(context.WithValue(context.Background(), invocationKey{}, inv), fs, []string{"--config", file})
	}
	err := parse("listen = 127.0.0.1:7400\n# later\nlisten = 0.0.0.0:7400\n")
	if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "imsync.conf:3") || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("a repeated setting: %v, want a usage error naming lines 1 and 3", err)
	}
	if err := parse("tag = a\ntag = b\n"); err != nil {
		t.Fatalf("a repeatable setting given twice: %v", err)
	}
}

// A bad --ttl, --user or --device of `imsync token` is a bad command line:
// exit status 2 (README, Exit status), as for any other flag value.
func TestTokenBadValuesAreUsageErrors(t *testing.T) {
	data := t.TempDir()
	if _, err := transport.LoadOrCreateKey(data); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"--user", "ann", "--device", "phone", "--ttl", "-1h"},
		{"--user", "ann", "--device", "phone", "--ttl", "0s"},
		{"--user", "a b", "--device", "phone"},
		{"--user", "ann", "--device", strings.Repeat("d", 200)},
		{"--user", "..", "--device", "phone"},
		{"--user", "ann", "--device", "."},
	} {
		out, err := runCmd(t, append([]string{"token", "--data", data}, args...)...)
		if exitCode(err) != exitUsage || out != "" {
			t.Errorf("token %q: %v (exit %d), printed %q; want exit 2 and nothing printed", args, err, exitCode(err), out)
		}
	}
}

// Defect P2-12 (serve.go, not fixed here): a --listen address that
// cannot be used is found only after the data directory was set up,
// so a typo leaves a new directory with a token key, a certificate and an
// empty store. "Bad input gets a clear error and changes nothing."
func TestServeBadListenCreatesNothing(t *testing.T) {
	data := filepath.Join(t.TempDir(), "new")
	for _, args := range [][]string{
		{"serve", "--data", data, "--listen", "127.0.0.1:bad"},
	} {
		if _, err := runCmd(t, args...); exitCode(err) != exitUsage {
			t.Errorf("%q: %v (exit %d), want a usage error", args, err, exitCode(err))
		}
		if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%q created %s", args, data)
		}
	}
}
