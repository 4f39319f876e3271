package main

import (
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// docFiles are the documents whose command lines are checked.
func docFiles(t *testing.T) []string {
	files, err := filepath.Glob(filepath.Join("..", "..", "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	deploy, _ := filepath.Glob(filepath.Join("..", "..", "docs", "deploy", "*"))
	return append(append(files, filepath.Join("..", "..", "README.md")), deploy...)
}

// TestDocumentedFlagsExist: every `imsync CMD ... --flag` in the README and
// the docs names a command of the table and flags it has, and every
// IMSYNC_ variable they name is a flag's (or one the tests read).
func TestDocumentedFlagsExist(t *testing.T) {
	flagsOf := map[string]*flag.FlagSet{}
	envs := map[string]bool{"IMSYNC_TEST_STORE": true, "IMSYNC_ESDB_URL": true, "IMSYNC_SEED": true, "IMSYNC_BENCH_EVENTS": true, "IMSYNC_HEAVY_TESTS": true, "IMSYNC_LARGE_GROUP": true,
		etcdPasswordEnv: true} // read by serve --etcd-user, never a flag
	table := commands()
	for i := range table {
		fs := describe(&table[i])
		flagsOf[table[i].name] = fs
		fs.VisitAll(func(f *flag.Flag) { envs[envName(f.Name)] = true })
	}
	cmdRe := regexp.MustCompile(`\bimsync ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?`)
	flagRe := regexp.MustCompile(`(?:^|\s)--([a-z][a-z0-9-]*)`)
	checked := 0
	for _, file := range docFiles(t) {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for n, line := range strings.Split(string(b), "\n") {
			for _, env := range regexp.MustCompile(`IMSYNC_[A-Z][A-Z0-9_]*[A-Z0-9]`).FindAllString(line, -1) {
				if !envs[env] {
					t.Errorf("%s:%d: %s is no flag's environment variable", file, n+1, env)
				}
			}
			locs := cmdRe.FindAllStringSubmatchIndex(line, -1)
			for i, loc := range locs {
				name := line[loc[2]:loc[3]]
				if loc[4] >= 0 {
					if two := name + " " + line[loc[4]:loc[5]]; flagsOf[two] != nil {
						name = two
					}
				}
				fs := flagsOf[name]
				if fs == nil {
					continue // prose: "imsync is", "imsync processes"
				}
				// The command's flags run to the end of its code span, line
				// or the next command.
				rest := line[loc[1]:]
				if i+1 < len(locs) {
					rest = line[loc[1]:locs[i+1][0]]
				}
				if j := strings.IndexAny(rest, "`|;"); j >= 0 {
					rest = rest[:j]
				}
				for _, m := range flagRe.FindAllStringSubmatch(rest, -1) {
					checked++
					if fs.Lookup(m[1]) == nil && m[1] != "help" {
						t.Errorf("%s:%d: imsync %s has no --%s", file, n+1, name, m[1])
					}
				}
			}
		}
	}
	if checked < 30 {
		t.Fatalf("only %d documented flags found", checked)
	}
}
