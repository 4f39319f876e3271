package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
)

// runCompletion is `imsync completion bash|zsh|fish`: a completion script
// generated from the command table and each command's flags.
func runCompletion(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlagSet("completion")
	if err := parseFlags(ctx, fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: completion bash|zsh|fish", errUsage)
	}
	switch fs.Arg(0) {
	case "bash":
		_, err := io.WriteString(out, bashCompletion())
		return err
	case "zsh":
		// zsh runs bash completion functions through bashcompinit.
		_, err := io.WriteString(out, "#compdef imsync\nautoload -U +X bashcompinit && bashcompinit\n"+bashCompletion())
		return err
	case "fish":
		_, err := io.WriteString(out, fishCompletion())
		return err
	}
	return fmt.Errorf("%w: completion: unknown shell %q: want bash, zsh or fish", errUsage, fs.Arg(0))
}

// completionEntry is one visible command with its flags.
type completionEntry struct {
	name, summary string
	flags         []*flag.Flag
}

func completionEntries() []completionEntry {
	var es []completionEntry
	table := commands()
	for i := range table {
		if table[i].hidden {
			continue
		}
		e := completionEntry{name: table[i].name, summary: table[i].summary}
		describe(&table[i]).VisitAll(func(f *flag.Flag) { e.flags = append(e.flags, f) })
		es = append(es, e)
	}
	return es
}

func bashCompletion() string {
	var b strings.Builder
	b.WriteString("# imsync completion for bash: source <(imsync completion bash)\n_imsync() {\n")
	b.WriteString("  local cur=${COMP_WORDS[COMP_CWORD]}\n  COMPREPLY=()\n")
	fmt.Fprintf(&b, "  if [ \"$COMP_CWORD\" -eq 1 ]; then\n    COMPREPLY=($(compgen -W %q -- \"$cur\"))\n    return\n  fi\n", strings.Join(topNames(), " "))
	b.WriteString("  case \"${COMP_WORDS[1]}\" in\n")
	for _, top := range topNames() {
		if subs := subcommands(top); len(subs) > 0 {
			fmt.Fprintf(&b, "  %s)\n    if [ \"$COMP_CWORD\" -eq 2 ]; then\n      COMPREPLY=($(compgen -W %q -- \"$cur\"))\n      return\n    fi ;;\n", top, strings.Join(subs, " "))
		}
	}
	b.WriteString("  esac\n  local cmd=\"${COMP_WORDS[1]}\"\n  case \"${COMP_WORDS[1]}\" in\n")
	for _, top := range topNames() {
		if len(subcommands(top)) > 0 {
			fmt.Fprintf(&b, "  %s) cmd=\"%s ${COMP_WORDS[2]}\" ;;\n", top, top)
		}
	}
	b.WriteString("  esac\n  local flags=\"\"\n  case \"$cmd\" in\n")
	for _, e := range completionEntries() {
		var names []string
		for _, f := range e.flags {
			names = append(names, "--"+f.Name)
		}
		fmt.Fprintf(&b, "  %q) flags=%q ;;\n", e.name, strings.Join(names, " "))
	}
	b.WriteString("  esac\n  case \"$cur\" in\n  -*) COMPREPLY=($(compgen -W \"$flags\" -- \"$cur\")) ;;\n  *) COMPREPLY=($(compgen -f -- \"$cur\")) ;;\n  esac\n}\ncomplete -F _imsync imsync\n")
	return b.String()
}

func fishCompletion() string {
	var b strings.Builder
	b.WriteString("# imsync completion for fish: imsync completion fish | source\ncomplete -c imsync -f\n")
	seen := map[string]bool{}
	for _, e := range completionEntries() {
		top, sub, hasSub := strings.Cut(e.name, " ")
		if !seen[top] {
			seen[top] = true
			desc := e.summary
			if hasSub {
				desc = top + " commands: " + strings.Join(subcommands(top), ", ")
			}
			fmt.Fprintf(&b, "complete -c imsync -n __fish_use_subcommand -a %s -d %s\n", top, fishQuote(desc))
		}
		cond := "__fish_seen_subcommand_from " + top
		if hasSub {
			fmt.Fprintf(&b, "complete -c imsync -n %s -a %s -d %s\n", fishQuote(cond+"; and not __fish_seen_subcommand_from "+strings.Join(subcommands(top), " ")), sub, fishQuote(e.summary))
			cond += "; and __fish_seen_subcommand_from " + sub
		}
		for _, f := range e.flags {
			_, usage := flag.UnquoteUsage(f)
			req := " -r"
			if isBoolFlag(f) {
				req = ""
			}
			fmt.Fprintf(&b, "complete -c imsync -n %s -l %s%s -d %s\n", fishQuote(cond), f.Name, req, fishQuote(usage))
		}
	}
	return b.String()
}

// fishQuote quotes s for fish: single quotes, with \ and ' escaped.
func fishQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
