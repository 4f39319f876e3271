package main

import (
	"os"
	"strings"
	"testing"
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
