package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
)

// command is one entry of the command table (see commands): every command
// of the binary, with what its help, the overview and shell completion say.
//
// A command's run function builds its own flag.FlagSet and parses it with
// parseFlags(ctx, fs, args), which gives every command the same behaviour:
// --help, flags after positional arguments, values from IMSYNC_<FLAG>
// environment variables and, for commands with config set, from --config
// FILE. New flags are plain fs.String/fs.Int/... lines in the run function.
//
// A new command is a function run(ctx, args, out) that builds its flag set
// (newFlagSet) and calls parseFlags before anything else, plus an entry in
// commands(); TestEveryCommandHelp then checks its --help.
type command struct {
	name     string // "send", or "group create" for a subcommand
	synopsis string // what follows "imsync NAME" in usage lines
	summary  string // one line: what it does
	section  string // heading of the overview
	run      func(ctx context.Context, args []string, out io.Writer) error
	config   bool     // takes --config FILE (flag = value lines)
	noEnv    []string // flags not read from the environment
	hidden   bool     // internal: left out of help and completion
}

const (
	sectionServer  = "Server"
	sectionClient  = "Client (--server HOST:PORT --token TOKEN --ca DATA/server.crt or IMSYNC_SERVER, IMSYNC_TOKEN,\nIMSYNC_CA; --json prints JSON lines)"
	sectionStore   = "Event store tools (the server must not be running on DIR)"
	sectionAnalyst = "Export for analysts (the server must not be running on DIR; columns in docs/analysts.md)"
	sectionOther   = "Other"
)

// invocation is what parseFlags needs to know about the command being run;
// it travels in the context.
type invocation struct {
	cmd      *command
	out      io.Writer
	stdin    io.Reader
	stderr   io.Writer     // nil: os.Stderr
	describe bool          // only capture the flag set (help, completion)
	fs       *flag.FlagSet // captured by parseFlags
	done     bool          // help was printed or the flags captured: nothing else ran
}

type invocationKey struct{}

func invocationOf(ctx context.Context) *invocation {
	inv, _ := ctx.Value(invocationKey{}).(*invocation)
	return inv
}

type stdinKey struct{}

// withStdin makes r the standard input of commands run with ctx.
func withStdin(ctx context.Context, r io.Reader) context.Context {
	return context.WithValue(ctx, stdinKey{}, r)
}

type stderrKey struct{}

// withStderr makes w the standard error of commands run with ctx.
func withStderr(ctx context.Context, w io.Writer) context.Context {
	return context.WithValue(ctx, stderrKey{}, w)
}

// errFlagsCaptured ends a run started only to learn its flags.
var errFlagsCaptured = errors.New("flags captured")

// run runs the command args[0] (with its subcommand, if any) of the table.
func run(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		printOverview(out)
		return nil
	}
	c, rest, err := lookupCommand(args)
	if err != nil {
		return err
	}
	return runCommand(ctx, c, rest, out)
}

// runCommand runs c with its arguments; a run that printed help or
// captured flags ends here without error.
func runCommand(ctx context.Context, c *command, args []string, out io.Writer) error {
	inv := &invocation{cmd: c, out: out, stdin: os.Stdin}
	if r, ok := ctx.Value(stdinKey{}).(io.Reader); ok {
		inv.stdin = r
	}
	if w, ok := ctx.Value(stderrKey{}).(io.Writer); ok {
		inv.stderr = w
	}
	err := c.run(context.WithValue(ctx, invocationKey{}, inv), args, out)
	if inv.done {
		return nil
	}
	return err
}

// lookupCommand finds the table entry args name, longest name first
// ("group create" before "group").
func lookupCommand(args []string) (*command, []string, error) {
	table := commands()
	if len(args) > 1 {
		for i := range table {
			if table[i].name == args[0]+" "+args[1] {
				return &table[i], args[2:], nil
			}
		}
	}
	for i := range table {
		if table[i].name == args[0] {
			return &table[i], args[1:], nil
		}
	}
	if subs := subcommands(args[0]); len(subs) > 0 {
		if len(args) > 1 && isHelp(args[1]) {
			return &command{name: args[0], run: func(_ context.Context, _ []string, out io.Writer) error {
				printGroupHelp(out, args[0])
				return nil
			}}, nil, nil
		}
		if len(args) == 1 {
			return nil, nil, fmt.Errorf("%w: %s needs a command: %s", errUsage, args[0], strings.Join(subs, ", "))
		}
		return nil, nil, fmt.Errorf("%w: unknown command %q; %s commands: %s", errUsage, args[0]+" "+args[1], args[0], strings.Join(subs, ", "))
	}
	return nil, nil, fmt.Errorf("%w: unknown command %q; commands: %s (imsync help CMD for one)", errUsage, args[0], strings.Join(topNames(), ", "))
}

func isHelp(a string) bool { return a == "-h" || a == "--help" || a == "-help" }

// subcommands lists the subcommands of a command group ("group", "store").
func subcommands(parent string) []string {
	var subs []string
	for _, c := range commands() {
		if p, sub, ok := strings.Cut(c.name, " "); ok && p == parent && !c.hidden {
			subs = append(subs, sub)
		}
	}
	return subs
}

// topNames lists the first words of the visible commands, in table order.
func topNames() []string {
	var names []string
	for _, c := range commands() {
		top, _, _ := strings.Cut(c.name, " ")
		if !c.hidden && !slices.Contains(names, top) {
			names = append(names, top)
		}
	}
	return names
}

// describe runs c only until it has built its flag set, and returns it.
func describe(c *command) *flag.FlagSet {
	inv := &invocation{cmd: c, out: io.Discard, stdin: strings.NewReader(""), describe: true}
	c.run(context.WithValue(context.Background(), invocationKey{}, inv), nil, io.Discard)
	if inv.fs == nil {
		return flag.NewFlagSet(c.name, flag.ContinueOnError)
	}
	return inv.fs
}

// newFlagSet is a flag set for parseFlags: errors come back, nothing is
// printed by the flag package itself.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parseFlags parses args into fs the way every imsync command does:
//
//   - -h/--help prints the command's synopsis and flags (the run then
//     ends without error);
//   - flags may follow positional arguments ("send hi --json"); "--" ends
//     the flags, "-" alone is a positional argument (standard input);
//   - a flag not on the command line takes its value from the environment
//     variable IMSYNC_<NAME> (upper case, "-" as "_"), then from the
//     --config file of commands that take one, then its default.
//
// Errors wrap errUsage and name the command.
func parseFlags(ctx context.Context, fs *flag.FlagSet, args []string) error {
	inv := invocationOf(ctx)
	name := fs.Name()
	if inv != nil {
		name = inv.cmd.name
	}
	fs.SetOutput(io.Discard)
	var configFile *string
	if inv != nil && inv.cmd.config && fs.Lookup("config") == nil {
		configFile = fs.String("config", "", "`FILE` of settings, one flag = value line per flag (README, Configuration)")
	}
	if inv != nil && inv.describe {
		inv.fs, inv.done = fs, true
		return errFlagsCaptured
	}
	ordered, help := reorderArgs(fs, args)
	if help {
		if inv == nil {
			return fmt.Errorf("%w: %s: help requested", errUsage, name)
		}
		printCommandHelp(inv.out, inv.cmd, fs)
		inv.done = true
		return flag.ErrHelp
	}
	if err := fs.Parse(ordered); err != nil {
		return fmt.Errorf("%w: %s: %v", errUsage, name, err)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var noEnv []string
	if inv != nil {
		noEnv = inv.cmd.noEnv
	}
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || envErr != nil || slices.Contains(noEnv, f.Name) {
			return
		}
		v, ok := os.LookupEnv(envName(f.Name))
		if !ok || v == "" {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			envErr = fmt.Errorf("%w: %s: %s=%q: %v", errUsage, name, envName(f.Name), v, err)
			return
		}
		set[f.Name] = true
	})
	if envErr != nil {
		return envErr
	}
	if configFile != nil && *configFile != "" {
		if err := applyConfigFile(fs, *configFile, set); err != nil {
			return fmt.Errorf("%w: %s: %v", errUsage, name, err)
		}
	}
	return nil
}

// envName is the environment variable of a flag: IMSYNC_SYNC_RETENTION
// for --sync-retention.
func envName(flagName string) string {
	return "IMSYNC_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// reorderArgs moves flags before positional arguments, so that the flag
// package, which stops at the first positional one, sees them all. It
// reports whether help was asked for.
func reorderArgs(fs *flag.FlagSet, args []string) (ordered []string, help bool) {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		name := strings.TrimLeft(a, "-")
		if isHelp(a) && fs.Lookup(name) == nil {
			help = true
			continue
		}
		flags = append(flags, a)
		if strings.Contains(name, "=") {
			continue
		}
		if f := fs.Lookup(name); f != nil && !isBoolFlag(f) {
			if i+1 == len(args) {
				// The value is missing: left last, the flag package says
				// so, instead of taking the "--" below as the value.
				return flags, help
			}
			flags = append(flags, args[i+1])
			i++
		}
	}
	return append(append(flags, "--"), pos...), help
}

// isRepeatable says whether a flag collects every value it is given.
func isRepeatable(f *flag.Flag) bool {
	switch f.Value.(type) {
	case *multiFlag, *stringsFlag:
		return true
	}
	return false
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// applyConfigFile sets the flags not set yet from a file of `name = value`
// lines; # starts a comment at the start of a line or after a blank (a #
// inside a value, as in a URL or a password, stays), a value may be
// Go-quoted ("a b", and "a #b" for a value with a blank before its #), a
// name may repeat only for a repeatable flag. An unknown name, a bad value
// or a repeated setting is an error naming its line.
func applyConfigFile(fs *flag.FlagSet, path string, set map[string]bool) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	fromFile := map[string]int{} // setting: the line that set it
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if !ok || key == "" {
			return fmt.Errorf("%s:%d: want `flag = value`, got %q", path, n, line)
		}
		if strings.HasPrefix(val, `"`) {
			q, err := strconv.QuotedPrefix(val)
			if err == nil {
				// After the closing quote: nothing, or a blank and a comment.
				if after := val[len(q):]; after != "" {
					if rest, _ := cutComment(after); rest != "" || (after[0] != ' ' && after[0] != '\t') {
						err = fmt.Errorf("%q follows the closing quote (a comment is # after a blank)", after)
					}
				}
			}
			if err == nil {
				val, err = strconv.Unquote(q)
			}
			if err != nil {
				return fmt.Errorf("%s:%d: %s: bad quoted value: %v", path, n, key, err)
			}
		} else if cut, ok := cutComment(val); ok {
			if cut == "" {
				return fmt.Errorf("%s:%d: %s: the value is only a comment: quote a value that starts with # (%s = \"#...\")", path, n, key, key)
			}
			val = cut
		}
		fl := fs.Lookup(key)
		if fl == nil || key == "config" {
			return fmt.Errorf("%s:%d: unknown setting %q (imsync %s --help lists the flags)", path, n, key, fs.Name())
		}
		if prev := fromFile[key]; prev > 0 && !isRepeatable(fl) {
			return fmt.Errorf("%s:%d: %s is set again (line %d): keep one", path, n, key, prev)
		}
		if set[key] && fromFile[key] == 0 {
			continue // the command line or the environment wins
		}
		if err := fs.Set(key, val); err != nil {
			return fmt.Errorf("%s:%d: %s = %q: %v", path, n, key, val, err)
		}
		if fromFile[key] == 0 {
			fromFile[key] = n
		}
		set[key] = true
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("--config %s: %w", path, err)
	}
	return nil
}

// cutComment cuts a trailing comment off an unquoted value: a # at its
// start or after a blank.
func cutComment(val string) (string, bool) {
	for i := 0; i < len(val); i++ {
		if val[i] == '#' && (i == 0 || val[i-1] == ' ' || val[i-1] == '\t') {
			return strings.TrimSpace(val[:i]), true
		}
	}
	return val, false
}

// printOverview prints every visible command, by section.
func printOverview(out io.Writer) {
	fmt.Fprintln(out, "imsync — event-sourced chat backend")
	fmt.Fprintln(out)
	fmt.Fprintln(out, "usage: imsync COMMAND [flags] [arguments]   (imsync help COMMAND, or imsync COMMAND --help)")
	var sections []string
	for _, c := range commands() {
		if !c.hidden && !slices.Contains(sections, c.section) {
			sections = append(sections, c.section)
		}
	}
	for _, s := range sections {
		fmt.Fprintf(out, "\n%s:\n", s)
		for _, c := range commands() {
			if c.section == s && !c.hidden {
				fmt.Fprintf(out, "  imsync %-15s %s\n", c.name, c.summary)
			}
		}
	}
	fmt.Fprint(out, `
Flags may come before or after the arguments ("--" ends them). Every flag can also be
set in the environment as IMSYNC_<FLAG> (IMSYNC_SYNC_RETENTION for --sync-retention);
the command line wins. Exit status: 0 ok, 1 error, 2 usage, 3 refused (token or
permission), 4 not found, 5 server unavailable or unreachable.
`)
}

// printGroupHelp lists the subcommands of a command group.
func printGroupHelp(out io.Writer, parent string) {
	fmt.Fprintf(out, "usage: imsync %s COMMAND [flags]\n\n", parent)
	for _, c := range commands() {
		if p, _, _ := strings.Cut(c.name, " "); p == parent && !c.hidden {
			fmt.Fprintf(out, "  imsync %s %s\n      %s\n", c.name, c.synopsis, c.summary)
		}
	}
}

// printCommandHelp prints a command's synopsis, summary and flags.
func printCommandHelp(out io.Writer, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(out, "usage: imsync %s %s\n\n%s\n", c.name, c.synopsis, c.summary)
	first := true
	fs.VisitAll(func(f *flag.Flag) {
		if first {
			fmt.Fprintln(out, "\nflags:")
			first = false
		}
		typ, usage := flag.UnquoteUsage(f)
		head := "  --" + f.Name
		if typ != "" {
			head += " " + typ
		}
		fmt.Fprintln(out, head)
		var notes []string
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" && f.DefValue != "[]" {
			notes = append(notes, "default "+f.DefValue)
		}
		if !slices.Contains(c.noEnv, f.Name) {
			notes = append(notes, "env "+envName(f.Name))
		}
		fmt.Fprintf(out, "      %s (%s)\n", usage, strings.Join(notes, "; "))
	})
}

// runHelp is `imsync help [COMMAND]`.
func runHelp(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlagSet("help")
	if err := parseFlags(ctx, fs, args); err != nil {
		return err
	}
	args = fs.Args()
	switch {
	case len(args) == 0:
		printOverview(out)
		return nil
	case len(args) == 1 && len(subcommands(args[0])) > 0:
		printGroupHelp(out, args[0])
		return nil
	}
	name := strings.Join(args, " ")
	table := commands()
	for i := range table {
		if table[i].name == name {
			return runCommand(ctx, &table[i], []string{"--help"}, out)
		}
	}
	return fmt.Errorf("%w: help: unknown command %q; commands: %s", errUsage, name, strings.Join(topNames(), ", "))
}

// stderrOf is where the command run with ctx reports progress.
func stderrOf(ctx context.Context) io.Writer {
	if inv := invocationOf(ctx); inv != nil && inv.stderr != nil {
		return inv.stderr
	}
	return os.Stderr
}

// stdinOf is the standard input of the command run with ctx.
func stdinOf(ctx context.Context) io.Reader {
	if inv := invocationOf(ctx); inv != nil {
		return inv.stdin
	}
	return os.Stdin
}

// flagGiven says whether the flag was set: on the command line, in the
// environment or in a --config file (all of them set it on fs).
func flagGiven(fs *flag.FlagSet, name string) bool {
	found := false
	fs.Visit(func(f *flag.Flag) { found = found || f.Name == name })
	return found
}
