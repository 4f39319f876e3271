package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// In a --config file, # after a blank starts a comment, also after a
// value; a # inside a value (a URL's fragment, a password) stays, and a
// quoted value keeps every #.
func TestConfigFileTrailingComments(t *testing.T) {
	file := filepath.Join(t.TempDir(), "imsync.conf")
	var got map[string]string
	parse := func(text string) error {
		os.WriteFile(file, []byte(text), 0o644)
		fs := newFlagSet("probe")
		vals := map[string]*string{}
		for _, n := range []string{"listen", "store", "name"} {
			vals[n] = fs.String(n, "default", "")
		}
		inv := &invocation{cmd: &command{name: "probe", config: true}, out: &bytes.Buffer{}}
		err := parseFlags(context.WithValue(context.Background(), invocationKey{}, inv), fs, []string{"--config", file})
		got = map[string]string{}
		for n, v := range vals {
			got[n] = *v
		}
		return err
	}
	for _, c := range []struct {
		text string
		want map[string]string
	}{
		{"listen = 127.0.0.1:7400 # the public port\n", map[string]string{"listen": "127.0.0.1:7400"}},
		{"listen = 127.0.0.1:7400\t# tab first\n", map[string]string{"listen": "127.0.0.1:7400"}},
		{"store = esdb://u:pa#ss@h:2113?tls=false #creds inside\n", map[string]string{"store": "esdb://u:pa#ss@h:2113?tls=false"}},
		{"name = \"a # b\" # quoted\n", map[string]string{"name": "a # b"}},
		{"name = \"#x\"\n", map[string]string{"name": "#x"}},
		{"name = a#b\n", map[string]string{"name": "a#b"}},
	} {
		if err := parse(c.text); err != nil {
			t.Errorf("%q: %v", c.text, err)
			continue
		}
		for k, v := range c.want {
			if got[k] != v {
				t.Errorf("%q: %s = %q, want %q", c.text, k, got[k], v)
			}
		}
	}
	for _, c := range []struct{ text, want string }{
		{"name = # only a comment\n", "imsync.conf:1: name: the value is only a comment"},
		{"name = \"a\"#b\n", "imsync.conf:1: name: bad quoted value"},
		{"name = \"a\" b\n", "imsync.conf:1: name: bad quoted value"},
	} {
		if err := parse(c.text); !errors.Is(err, errUsage) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.text, err, c.want)
		}
	}
}
