// Command imsync is the one binary of imsync: the server, a client for
// every operation, and tools for the event store.
//
//	imsync serve --data DIR [--store esdb://HOST:2113?tls=false] [--listen HOST:PORT] [--config FILE] [limits...]
//	imsync token --data DIR --user U --device D [--ttl 24h] | token --print-jwks (--data DIR | --key FILE.pem...)
//	imsync send (--to USER | --conv ID) [--id ID] [--reply-to SEQ] [--mention USER]... [--kind KIND] [--meta K=V]... TEXT|-
//	imsync edit --conv ID --seq N TEXT|-
//	imsync group create --name N --members a,b,c | group add|remove --conv ID USER
//	imsync convs | history --conv ID | sync [--state FILE] | tail | read --conv ID --seq N | recall --conv ID --seq N
//	imsync search [--conv ID] [--from USER] QUERY
//	imsync store append|read|log|scavenge|recover --data DIR ...
//	imsync export | replay | stats --data DIR ... | backup --data DIR --out DIR2
//	imsync api [--api HOST:PORT] [--api-key FILE] METHOD PATH [JSON|-]
//	imsync version | completion bash|zsh|fish | help [COMMAND]
//
// Every command is one entry of the table in commands; `imsync COMMAND
// --help` prints its flags. Client commands take --server HOST:PORT --token
// T and --ca FILE or --insecure; --json prints one JSON object per line
// (text that is not valid UTF-8 as text_base64). Text output quotes values
// holding control characters, newlines, spaces or invalid UTF-8. Every flag
// can also come from the environment (IMSYNC_<FLAG>). Exit status: 0 ok,
// 1 error, 2 usage, 3 refused, 4 not found, 5 unavailable.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	// Keeps the protobuf registry from panicking once this binary links both
	// protoactor-go's cluster and the EventStoreDB client.
	_ "github.com/imsync/imsync/events/protoconflict"
)

// commands is the command table: every command of the binary, in the
// order of the overview.
func commands() []command {
	storeCmd := func(sub string) func(context.Context, []string, io.Writer) error {
		return func(ctx context.Context, args []string, out io.Writer) error {
			return runStore(ctx, append([]string{sub}, args...), out)
		}
	}
	return []command{
		{name: "serve", section: sectionServer, run: runServe, config: true,
			synopsis: "--data DIR [--listen 127.0.0.1:7400] [--store esdb://HOST:2113?tls=false] [--config FILE] [flags]",
			summary:  "run the server: event store, grains and QUIC gateway in one process"},
		{name: "token", section: sectionServer, run: runToken,
			synopsis: "--data DIR --user USER --device DEVICE [--ttl 24h] [--jwt-audience AUD] [--jwt-issuer ISS] | --print-jwks (--data DIR | --key FILE.pem... [--kid ID])",
			summary:  "mint a device token (a JWT) with the data directory's development key, or print a JWKS"},

		{name: "send", section: sectionClient, run: runSend,
			synopsis: "(--to USER | --conv ID) [--id CLIENT_MSG_ID] [--reply-to SEQ] [--mention USER]... [--kind KIND] [--meta KEY=VALUE]... TEXT|-",
			summary:  "send a message (TEXT, or standard input with -)"},
		{name: "edit", section: sectionClient, run: runEdit,
			synopsis: "--conv ID --seq N TEXT|-",
			summary:  "replace the text of one of your messages (within the server's edit window)"},
		{name: "recall", section: sectionClient, run: runRecall,
			synopsis: "--conv ID --seq N",
			summary:  "recall one of your messages (within the server's recall window)"},
		{name: "group create", section: sectionClient, run: runGroupCreate,
			synopsis: "--name NAME --members a,b,c",
			summary:  "create a group with you as admin"},
		{name: "group add", section: sectionClient, run: runGroupChange(true),
			synopsis: "--conv ID USER",
			summary:  "add a member to a group"},
		{name: "group remove", section: sectionClient, run: runGroupChange(false),
			synopsis: "--conv ID USER",
			summary:  "remove a member from a group (or leave it)"},
		{name: "convs", section: sectionClient, run: runConvs,
			synopsis: "",
			summary:  "list your conversations: last seq, unread count, read marker"},
		{name: "history", section: sectionClient, run: runHistory,
			synopsis: "--conv ID [--before SEQ | --after SEQ | --unread] [--limit N]",
			summary:  "page a conversation's messages (newest first, or oldest first from --after/--unread)"},
		{name: "sync", section: sectionClient, run: runSync,
			synopsis: "[--state FILE]",
			summary:  "print what your sync timeline holds after the saved position, and save the new one"},
		{name: "tail", section: sectionClient, run: runTail,
			synopsis: "",
			summary:  "follow your sync timeline live until interrupted"},
		{name: "read", section: sectionClient, run: runRead,
			synopsis: "--conv ID --seq N",
			summary:  "move your read marker (forward only; prints the marker that results)"},
		{name: "search", section: sectionClient, run: runSearch,
			synopsis: "[--conv ID] [--from USER] [--kind K] [--since T] [--until T] [--limit 20] QUERY",
			summary:  "search the messages of your conversations holding every word of QUERY"},

		{name: "store append", section: sectionStore, run: storeCmd("append"),
			synopsis: "--data DIR --stream NAME [--type TYPE] [--expect any|no-stream|exists|REV] TEXT...",
			summary:  "append events to a stream"},
		{name: "store read", section: sectionStore, run: storeCmd("read"),
			synopsis: "--data DIR --stream NAME [--from REV] [--limit N] [--backwards] [--raw]",
			summary:  "read a stream"},
		{name: "store log", section: sectionStore, run: storeCmd("log"),
			synopsis: "--data DIR [--from POS] [--limit N] [--prefix P]... [--follow] [--raw]",
			summary:  "read the global log (decoded events, the rows of export)"},
		{name: "store scavenge", section: sectionStore, run: storeCmd("scavenge"),
			synopsis: "--data DIR",
			summary:  "delete from disk the events that retention or deletion hide"},
		{name: "store recover", section: sectionStore, run: storeCmd("recover"),
			synopsis: "--data DIR --accept-data-loss",
			summary:  "open a store refused for missing acknowledged events, keeping what survived"},

		{name: "export", section: sectionAnalyst, run: runExport,
			synopsis: "(--data DIR | --store URL) --format jsonl|parquet --out PATH|- [--from-position P] [--to-position P] [--streams PREFIX]...",
			summary:  "export events as rows (JSONL or Parquet)"},
		{name: "replay", section: sectionAnalyst, run: runReplay,
			synopsis: "(--data DIR | --store URL) --projection NAME [--from-position P] [--rebuild]",
			summary:  "replay a projection from its checkpoint (DIR/projections/NAME.checkpoint; for search, inside its index)"},
		{name: "stats", section: sectionAnalyst, run: runStats,
			synopsis: "(--data DIR | --store URL) [--json]",
			summary:  "replay the stats projection and print its table"},

		{name: "backup", section: sectionServer, run: runBackup,
			synopsis: "--data DIR --out DIR2",
			summary:  "copy a server's data directory consistently, the server running or not"},
		{name: "api", section: sectionOther, run: runAPI,
			synopsis: "[--api HOST:PORT] [--api-key FILE] METHOD PATH [JSON|-]",
			summary:  "call the server API (serve --api) and print its JSON answer"},

		{name: "bench", section: sectionOther, run: runBench, noEnv: []string{"server", "data"},
			synopsis: "[--pairs 128] [--group 100] [--group-senders 16] [--duration 5s] [--idle 1000] [--server ADDR --data DIR]",
			summary:  "load generator (starts its own server unless --server names one)"},
		{name: "bench-clients", run: runBenchClients, hidden: true, // the child process of bench's idle measurement
			summary: "idle clients for bench"},

		{name: "version", section: sectionOther, run: runVersion,
			synopsis: "[--json]",
			summary:  "print the module version and the VCS revision it was built from"},
		{name: "completion", section: sectionOther, run: runCompletion,
			synopsis: "bash|zsh|fish",
			summary:  "print a shell completion script"},
		{name: "help", section: sectionOther, run: runHelp,
			synopsis: "[COMMAND]",
			summary:  "print the commands, or one command's synopsis and flags"},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "imsync:", err)
		if errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "(imsync help lists the commands; imsync COMMAND --help one command's flags)")
		}
		os.Exit(exitCode(err))
	}
}

var errUsage = errors.New("bad usage")

// storeDir is where the event store lives inside a data directory.
func storeDir(data string) string { return filepath.Join(data, "events") }
