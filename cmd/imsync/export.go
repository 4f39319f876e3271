package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/esdb"
	"github.com/imsync/imsync/projections/export"
)

// runExport runs `imsync export`: one row per event of the embedded store
// in DIR (or of the EventStoreDB server --store names), as JSONL or Parquet
// (docs/analysts.md documents the columns).
func runExport(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("export", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	data := fs.String("data", "", "data directory of the server (its event store is DIR/events)")
	storeURL := fs.String("store", os.Getenv("IMSYNC_STORE"), "EventStoreDB connection string to read instead of DIR/events (as serve --store; or IMSYNC_STORE)")
	format := fs.String("format", "jsonl", "jsonl or parquet")
	outPath := fs.String("out", "", "file to write (- for standard output)")
	from := fs.String("from-position", "", "first global position exported (inclusive)")
	to := fs.String("to-position", "", "last global position exported (inclusive; default: the last event)")
	var prefixes multiFlag
	fs.Var(&prefixes, "streams", "only streams with this name prefix (repeatable)")
	if err := parseFlags(ctx, fs, args); err != nil {
		return err
	}
	if (*data == "" && *storeURL == "") || *outPath == "" || fs.NArg() > 0 {
		return fmt.Errorf("%w: export needs --data DIR (or --store URL) and --out PATH, and no other arguments", errUsage)
	}
	f := export.Format(*format)
	if f != export.JSONL && f != export.Parquet {
		return fmt.Errorf("%w: export: --format %q: want jsonl or parquet", errUsage, *format)
	}
	var rng export.Range
	rng.Filter.StreamPrefixes = prefixes
	for _, p := range []struct {
		flag, val string
		dst       *events.Position
	}{{"--from-position", *from, &rng.From}, {"--to-position", *to, &rng.To}} {
		if p.val == "" {
			continue
		}
		n, err := strconv.ParseUint(p.val, 10, 64)
		if err != nil || n == 0 {
			return fmt.Errorf("%w: export: %s %q is not a position (a positive integer, as store log and export print it)", errUsage, p.flag, p.val)
		}
		*p.dst = events.Position{Commit: n, Prepare: n}
	}
	if rng.To != (events.Position{}) && rng.To.Less(rng.From) {
		return fmt.Errorf("%w: export: --to-position %d is before --from-position %d", errUsage, rng.To.Commit, rng.From.Commit)
	}

	store, err := openToolStore(ctx, *data, *storeURL, "export", os.Stderr)
	if err != nil {
		return err
	}
	defer store.Close()

	if *outPath == "-" {
		w, _ := export.NewWriter(f, out)
		if _, err := export.Export(ctx, store, rng, w); err != nil {
			return err
		}
		return w.Close()
	}
	// Written beside PATH and renamed into place once complete: an export
	// that fails or is interrupted leaves no partial file at PATH.
	file, err := os.CreateTemp(filepath.Dir(*outPath), filepath.Base(*outPath)+".tmp*")
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	defer os.Remove(file.Name()) // no-op once renamed
	w, _ := export.NewWriter(f, file)
	n, err := export.Export(ctx, store, rng, w)
	if err == nil {
		err = w.Close()
	}
	if err == nil {
		err = file.Sync()
	}
	if cerr := file.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(file.Name(), *outPath)
	}
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return json.NewEncoder(out).Encode(map[string]any{"rows": n, "format": f, "out": *outPath})
}

// toolStore is the store a read-only tool (export, replay, stats, store
// log/read) reads, and what it must do when done.
type toolStore struct {
	events.Store
	cleanup func()
}

// Close closes the store and removes a checkpoint read in its place.
func (t toolStore) Close() error {
	err := t.Store.Close()
	if t.cleanup != nil {
		t.cleanup()
	}
	return err
}

// openToolStore opens the events a tool reads: the EventStoreDB server
// storeURL names, else the embedded store of the data directory. It refuses
// a directory without a store (instead of creating an empty one). When a
// server holds the embedded store, it asks that server for a consistent
// checkpoint (through the control socket) and reads that instead, saying
// so on stderr; the checkpoint, in a temporary directory inside data (so
// that its tables are hard links, not copies), is removed on Close.
func openToolStore(ctx context.Context, data, storeURL, tool string, stderr io.Writer) (toolStore, error) {
	if storeURL != "" {
		s, err := esdb.Open(ctx, storeURL, esdb.Options{})
		if err != nil {
			return toolStore{}, fmt.Errorf("%s: --store: %w", tool, err)
		}
		return toolStore{Store: s}, nil
	}
	d, err := inspectDataDir(data)
	if err != nil {
		return toolStore{}, err
	}
	if !d.store {
		return toolStore{}, fmt.Errorf("%s: %s holds no event store (%s is missing or empty); "+
			"if its server keeps the events in EventStoreDB, pass the same --store (or IMSYNC_STORE)", tool, data, storeDir(data))
	}
	s, err := events.Open(storeDir(data), events.Options{ScavengeInterval: -1})
	if err == nil {
		return toolStore{Store: s}, nil
	}
	if !errors.Is(err, events.ErrInUse) {
		return toolStore{}, err
	}
	dir, pos, err := checkpointOfServer(ctx, data, tool)
	if err != nil {
		return toolStore{}, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	cp, err := events.Open(filepath.Join(dir, "events"), events.Options{ScavengeInterval: -1})
	if err != nil {
		cleanup()
		return toolStore{}, fmt.Errorf("%s: open the checkpoint of the running server's store: %w", tool, err)
	}
	fmt.Fprintf(stderr, "imsync %s: a server is running on %s: reading a consistent checkpoint of its store, up to position %d "+
		"(events appended after it are left out)\n", tool, data, pos.Commit)
	return toolStore{Store: cp, cleanup: cleanup}, nil
}

// checkpointTempPrefix names the temporary directories that hold
// checkpoints inside a data directory (backup leaves them out).
const checkpointTempPrefix = ".checkpoint-"

// checkpointOfServer asks the server running on data for a checkpoint of
// its store in a new temporary directory inside data; the store is in its
// events/ subdirectory. The caller removes dir.
func checkpointOfServer(ctx context.Context, data, tool string) (dir string, pos events.Position, err error) {
	abs, err := filepath.Abs(data)
	if err != nil {
		return "", pos, err
	}
	dir, err = os.MkdirTemp(abs, checkpointTempPrefix+tool+"-*")
	if err != nil {
		return "", pos, fmt.Errorf("%s: %w", tool, err)
	}
	pos, err = requestCheckpoint(ctx, abs, filepath.Join(dir, "events"))
	if err != nil {
		os.RemoveAll(dir)
		if errors.Is(err, errNoControl) {
			return "", pos, fmt.Errorf("%s: %w: the store in %s is in use by another process, which does not answer on %s (%v); "+
				"stop the server (or run a build of imsync serve that has the control socket) and run it again",
				tool, events.ErrInUse, data, controlSocket(data), err)
		}
		return "", pos, fmt.Errorf("%s: %w", tool, err)
	}
	return dir, pos, nil
}
