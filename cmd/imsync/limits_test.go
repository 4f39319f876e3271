package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/transport"
)

// Without a --read-fanout-threshold of its own (flag, environment or
// config file), the threshold is 500 or a smaller --max-group-size; one
// given explicitly above the maximum is still refused.
func TestReadFanoutThresholdFollowsMaxGroupSize(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "imsync.conf")
	apply := func(args ...string) (actors.Limits, error) {
		fs := newFlagSet("serve")
		l := registerLimitFlags(fs)
		inv := &invocation{cmd: &command{name: "serve", config: true}, out: &bytes.Buffer{}}
		if err := parseFlags(context.WithValue(context.Background(), invocationKey{}, inv), fs, args); err != nil {
			return actors.Limits{}, err
		}
		var tcfg transport.Config
		var acfg actors.Config
		err := l.apply(&tcfg, &acfg)
		return acfg.Limits, err
	}
	for _, c := range []struct {
		args      []string
		threshold int
	}{
		{nil, 500},
		{[]string{"--max-group-size", "100"}, 100},
		{[]string{"--max-group-size", "2"}, 2},
		{[]string{"--max-group-size", "1000"}, 500},
		{[]string{"--max-group-size", "100", "--read-fanout-threshold", "50"}, 50},
		{[]string{"--max-group-size", "100", "--read-fanout-threshold", "100"}, 100},
	} {
		lim, err := apply(c.args...)
		if err != nil || lim.ReadFanoutThreshold != c.threshold {
			t.Errorf("%v: threshold %d, %v; want %d", c.args, lim.ReadFanoutThreshold, err, c.threshold)
		}
	}
	refused := func(what string, args ...string) {
		t.Helper()
		_, err := apply(args...)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "--read-fanout-threshold 200: want 1 to --max-group-size (100)") {
			t.Errorf("%s: %v, want the explicit threshold refused", what, err)
		}
	}
	refused("flag", "--max-group-size", "100", "--read-fanout-threshold", "200")
	os.WriteFile(conf, []byte("max-group-size = 100\nread-fanout-threshold = 200\n"), 0o644)
	refused("config file", "--config", conf)
	os.WriteFile(conf, []byte("max-group-size = 100\n"), 0o644)
	if lim, err := apply("--config", conf); err != nil || lim.ReadFanoutThreshold != 100 {
		t.Errorf("max-group-size = 100 in the config file: threshold %d, %v", lim.ReadFanoutThreshold, err)
	}
	t.Setenv("IMSYNC_READ_FANOUT_THRESHOLD", "200")
	refused("environment", "--max-group-size", "100")
}
