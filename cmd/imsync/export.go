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
	"github.com/imsync/imsync/projections/export"
)

// runExport runs `imsync export`: one row per event of the embedded store
// in DIR, as JSONL or Parquet (docs/analysts.md documents the columns).
func runExport(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("export", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	data := fs.String("data", "", "data directory of the server (its event store is DIR/events)")
	format := fs.String("format", "jsonl", "jsonl or parquet")
	outPath := fs.String("out", "", "file to write (- for standard output)")
	from := fs.String("from-position", "", "first global position exported (inclusive)")
	to := fs.String("to-position", "", "last global position exported (inclusive; default: the last event)")
	var prefixes multiFlag
	fs.Var(&prefixes, "streams", "only streams with this name prefix (repeatable)")
	if err := parseFlags(ctx, fs, args); err != nil {
		return err
	}
	if *data == "" || *outPath == "" || fs.NArg() > 0 {
		return fmt.Errorf("%w: export needs --data DIR and --out PATH, and no other arguments", errUsage)
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

	store, err := openToolStore(*data, "export")
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

// openToolStore opens the embedded store of a data directory for a tool
// that reads it: it refuses a directory without one (instead of creating an
// empty store) and says what to do when a server holds it.
func openToolStore(data, tool string) (*events.Embedded, error) {
	d, err := inspectDataDir(data)
	if err != nil {
		return nil, err
	}
	if !d.store {
		return nil, fmt.Errorf("%s: %s holds no event store (%s is missing or empty)", tool, data, storeDir(data))
	}
	s, err := events.Open(storeDir(data), events.Options{ScavengeInterval: -1})
	if errors.Is(err, events.ErrInUse) {
		return nil, fmt.Errorf("%s: %w; the embedded store admits one process at a time: stop the server on %s "+
			"(or %s from a copy of the data directory taken while it was stopped) and run it again", tool, err, data, tool)
	}
	return s, err
}
