// Command imsync is the one binary of imsync: the server, a client for
// every operation, and tools for the event store.
//
//	imsync serve --data DIR [--store esdb://HOST:2113?tls=false] [--listen HOST:PORT]
//	imsync token --data DIR --user U --device D [--ttl 24h]
//	imsync send (--to USER | --conv ID) [--id CLIENT_MSG_ID] TEXT
//	imsync group create --name N --members a,b,c | group add|remove --conv ID USER
//	imsync convs | history --conv ID | sync [--state FILE] | tail | read --conv ID --seq N | recall --conv ID --seq N
//	imsync store append|read|log|scavenge|recover --data DIR ...
//	imsync export --data DIR --format jsonl|parquet --out PATH [--from-position P] [--to-position P] [--streams PREFIX]
//	imsync replay --data DIR --projection NAME [--from-position P] [--rebuild]
//	imsync stats --data DIR [--json]
//
// Client commands take --server HOST:PORT --token T (or IMSYNC_SERVER,
// IMSYNC_TOKEN) and --ca FILE or --insecure; --json prints one JSON object
// per line (text that is not valid UTF-8 as text_base64). Text output quotes
// values holding control characters, newlines, spaces or invalid UTF-8.
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

const usage = `imsync — event-sourced chat backend

Server:
  imsync serve --data DIR [--listen 127.0.0.1:7400] [--cert FILE --key FILE]
               [--store esdb://HOST:2113?tls=false]   (events in EventStoreDB/KurrentDB;
                                                       DIR keeps keys and certificate)
               [--sync-retention 30d (0: for ever; or IMSYNC_SYNC_RETENTION)]
               [--new-store | --new-key | --new-cert: replace a missing piece on purpose]
               [--ops 127.0.0.1:9400 [--ops-public] [--ops-actor-metrics=false]]
                                          (/metrics, /healthz, /readyz, pprof)
               [--log-format text|json] [--log-level debug|info|warn|error] [--drain-timeout 10s]
  imsync token --data DIR --user USER --device DEVICE [--ttl 24h]

Client (--server HOST:PORT --token TOKEN, or IMSYNC_SERVER / IMSYNC_TOKEN;
        --ca DIR/server.crt or --insecure; --json for JSON lines):
  imsync send (--to USER | --conv ID) [--id CLIENT_MSG_ID] TEXT
  imsync group create --name NAME --members a,b,c
  imsync group add|remove --conv ID USER
  imsync convs
  imsync history --conv ID [--before SEQ | --after SEQ | --unread] [--limit N]
  imsync sync [--state FILE]
  imsync tail
  imsync read --conv ID --seq N
  imsync recall --conv ID --seq N

Load generator (starts its own server unless --server/--data name one):
  imsync bench [--pairs 128] [--group 100] [--group-senders 16] [--duration 5s] [--idle 1000]

Event store tools (the server must not be running on DIR):
  imsync store append   --data DIR --stream NAME [--type TYPE] [--expect any|no-stream|exists|REV] TEXT...
  imsync store read     --data DIR --stream NAME [--from REV] [--limit N] [--backwards] [--raw]
  imsync store log      --data DIR [--from POS] [--limit N] [--prefix P]... [--follow] [--raw]
                        (decoded events, the rows of export; --raw: payload as text or base64)
  imsync store scavenge --data DIR
  imsync store recover  --data DIR --accept-data-loss   (a store refused for missing acknowledged events)

Export for analysts (the server must not be running on DIR; columns in docs/analysts.md):
  imsync export --data DIR --format jsonl|parquet --out PATH|- [--from-position P] [--to-position P]
                [--streams PREFIX]...
  imsync replay --data DIR --projection NAME [--from-position P] [--rebuild]
                (checkpoint in DIR/projections/NAME.checkpoint; progress on standard error)
  imsync stats  --data DIR [--json]   (replays the stats projection, prints its table)
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "imsync:", err)
		if errors.Is(err, errUsage) {
			fmt.Fprint(os.Stderr, usage)
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("bad usage")

func run(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(out, usage)
		return nil
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "serve":
		return runServe(ctx, args, out)
	case "token":
		return runToken(args, out)
	case "store":
		return runStore(ctx, args, out)
	case "export":
		return runExport(ctx, args, out)
	case "replay":
		return runReplay(ctx, args, out)
	case "stats":
		return runStats(ctx, args, out)
	case "bench":
		return runBench(ctx, args, out)
	case "bench-clients": // the child process of bench's idle measurement
		return runBenchClients(ctx, args, out)
	case "send", "group", "convs", "history", "sync", "tail", "read", "recall":
		return runClient(ctx, cmd, args, out)
	}
	return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
}

// storeDir is where the event store lives inside a data directory.
func storeDir(data string) string { return filepath.Join(data, "events") }
