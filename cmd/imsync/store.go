package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/projections"
	"github.com/imsync/imsync/projections/export"
	// Keeps the protobuf registry from panicking once this binary links both
	// protoactor-go's cluster and the EventStoreDB client.
	_ "github.com/imsync/imsync/events/protoconflict"
)

// runStore runs `imsync store CMD`: tools that open the event store
// directly. append, scavenge and recover need the server stopped; read
// and log run beside it, on a checkpoint of its store, and log --follow
// follows the running server's store through its control socket (with no
// server running it refuses: nothing new can arrive in a stopped store).
func runStore(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: store needs a command: append, read, log, scavenge or recover", errUsage)
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	data := fs.String("data", "", "store directory")
	// Each command declares only the flags it reads, so that a flag that
	// does not apply (store log --stream) is a usage error, not ignored.
	var stream *string
	var prefixes multiFlag
	var (
		typ       *string
		expect    *string
		from      *string
		limit     *int
		backwards *bool
		follow    *bool
		accept    *bool
		raw       *bool
	)
	switch cmd {
	case "append":
		stream = fs.String("stream", "", "stream name")
		typ = fs.String("type", "Text", "event type")
		expect = fs.String("expect", "any", "expected revision: any, no-stream, exists or a revision")
	case "read":
		stream = fs.String("stream", "", "stream name")
		from = fs.String("from", "", "first revision (default: start, or end with --backwards)")
		limit = fs.Int("limit", 100, "events to read, 1 to 10000")
		backwards = fs.Bool("backwards", false, "read newest first")
		raw = fs.Bool("raw", false, "print the stored payload (text, or base64 bytes) instead of the decoded event")
	case "log":
		from = fs.String("from", "", "first global position (default: start)")
		limit = fs.Int("limit", 100, "events to read, 1 to 10000 (not with --follow)")
		fs.Var(&prefixes, "prefix", "only streams with this name prefix (repeatable)")
		follow = fs.Bool("follow", false, "follow the running server's store live until interrupted (with no server running: refused, status 5)")
		raw = fs.Bool("raw", false, "print the stored payload (text, or base64 bytes) instead of the decoded event")
	case "scavenge":
	case "recover":
		accept = fs.Bool("accept-data-loss", false, "open a store whose newest acknowledged events are damaged, keeping what survived")
	default:
		return fmt.Errorf("%w: unknown store command %q", errUsage, cmd)
	}
	if err := parseFlags(ctx, fs, args); err != nil {
		return err
	}
	if *data == "" {
		return fmt.Errorf("%w: %s needs --data DIR", errUsage, cmd)
	}
	if follow != nil && *follow && flagGiven(fs, "limit") {
		return fmt.Errorf("%w: store log: --limit does not go with --follow (which prints every event until interrupted); "+
			"to read a bounded range use --from and --limit without --follow", errUsage)
	}
	if limit != nil && (*limit < 1 || *limit > events.MaxReadLimit) && !(follow != nil && *follow) {
		return fmt.Errorf("%w: store %s: --limit %d: want 1 to %d", errUsage, cmd, *limit, events.MaxReadLimit)
	}
	if cmd == "recover" {
		return runRecover(*data, *accept, out)
	}
	var store events.Store
	if cmd == "read" || (cmd == "log" && !*follow) {
		// Read-only: beside a running server, from a checkpoint of its store.
		ts, err := openToolStore(ctx, *data, "", "store "+cmd, os.Stderr)
		if err != nil {
			return err
		}
		store = ts
	} else {
		// Only append creates a store: the other tools refuse a --data
		// that holds none.
		if cmd != "append" {
			if d, err := inspectDataDir(*data); err != nil {
				return err
			} else if !d.store {
				return fmt.Errorf("store %s: %s holds no event store (%s is missing or empty); pass the --data the server runs with", cmd, *data, storeDir(*data))
			}
		}
		s, err := events.Open(storeDir(*data), events.Options{ScavengeInterval: -1})
		if errors.Is(err, events.ErrInUse) && cmd == "log" {
			return followBesideServer(ctx, *data, *from, prefixes, out, raw != nil && *raw)
		}
		if err == nil && cmd == "log" {
			// No server holds the store: following it would only keep its
			// lock, and keep a server from starting on it.
			if err := s.Close(); err != nil {
				return err
			}
			return withStatus(exitUnavailable, "store log --follow: no server is running on %s: nothing new can arrive; "+
				"run `store log` without --follow, or start the server and follow again", *data)
		}
		if errors.Is(err, events.ErrInUse) {
			return fmt.Errorf("store %s: %w; it writes to the store, which needs the server on %s stopped "+
				"(store log and store read work beside it)", cmd, err, *data)
		}
		if err != nil {
			return err
		}
		store = s
	}
	defer store.Close()
	enc := json.NewEncoder(out)
	show := decodedEvent
	if raw != nil && *raw {
		show = func(e events.RecordedEvent) any { return jsonEvent(e) }
	}

	switch cmd {
	case "append":
		exp, err := parseExpected(*expect)
		if err != nil {
			return err
		}
		if fs.NArg() == 0 {
			return fmt.Errorf("%w: append needs at least one TEXT", errUsage)
		}
		var evs []events.EventData
		for _, text := range fs.Args() {
			evs = append(evs, events.EventData{Type: *typ, Data: []byte(text)})
		}
		res, err := store.AppendToStream(ctx, *stream, exp, evs...)
		if err != nil {
			return err
		}
		return enc.Encode(map[string]any{"stream": *stream, "revision": res.NextExpected, "position": res.Position.Commit})
	case "read":
		opts := events.ReadStreamOptions{Limit: *limit}
		if *backwards {
			opts.Direction, opts.From = events.Backwards, events.RevisionEnd
		}
		if *from != "" {
			n, err := strconv.ParseUint(*from, 10, 64)
			if err != nil {
				return fmt.Errorf("%w: --from %q is not a revision", errUsage, *from)
			}
			opts.From = events.Revision(n)
		}
		evs, err := store.ReadStream(ctx, *stream, opts)
		if err != nil {
			return err
		}
		return encodeAll(enc, evs, show)
	case "log":
		var pos events.Position
		if *from != "" {
			n, err := strconv.ParseUint(*from, 10, 64)
			if err != nil {
				return fmt.Errorf("%w: --from %q is not a position", errUsage, *from)
			}
			pos = events.Position{Commit: n, Prepare: n}
		}
		filter := events.Filter{StreamPrefixes: prefixes}
		evs, err := store.ReadAll(ctx, events.ReadAllOptions{From: pos, Limit: *limit, Filter: filter})
		if err != nil {
			return err
		}
		return encodeAll(enc, evs, show)
	case "scavenge":
		return store.(*events.Embedded).Scavenge(ctx)
	}
	return nil
}

// runRecover runs `imsync store recover`: it opens a store that Open
// refuses because acknowledged events are missing, and reports the loss.
func runRecover(data string, accept bool, out io.Writer) error {
	if !accept {
		return fmt.Errorf("%w: recover keeps only what survived and loses the damaged events for good; "+
			"restore from a backup if you have one, else run it again with --accept-data-loss", errUsage)
	}
	store, loss, err := events.Recover(storeDir(data), events.Options{ScavengeInterval: -1})
	if err != nil {
		return err
	}
	if err := store.Close(); err != nil {
		return err
	}
	return json.NewEncoder(out).Encode(map[string]any{
		"lost_events":           loss.Events(),
		"found_position":        loss.FoundPosition,
		"acknowledged_position": loss.AcknowledgedPosition,
	})
}

func parseExpected(s string) (events.ExpectedRevision, error) {
	switch s {
	case "any":
		return events.Any, nil
	case "no-stream":
		return events.NoStream, nil
	case "exists":
		return events.StreamExists, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return events.ExpectedRevision{}, fmt.Errorf("%w: --expect %q: want any, no-stream, exists or a revision", errUsage, s)
	}
	return events.Exactly(events.Revision(n)), nil
}

// followBesideServer runs `store log --follow` on the store of the server
// running on data, through its control socket.
func followBesideServer(ctx context.Context, data, from string, prefixes []string, out io.Writer, raw bool) error {
	var pos uint64
	if from != "" {
		n, err := strconv.ParseUint(from, 10, 64)
		if err != nil {
			return fmt.Errorf("%w: --from %q is not a position", errUsage, from)
		}
		pos = n
	}
	show := decodedEvent
	if raw {
		show = func(e events.RecordedEvent) any { return jsonEvent(e) }
	}
	enc := json.NewEncoder(out)
	fmt.Fprintf(os.Stderr, "imsync store log: a server is running on %s: following its store live (interrupt to stop)\n", data)
	err := followServer(ctx, data, pos, prefixes, func(e events.RecordedEvent) error { return enc.Encode(show(e)) })
	if errors.Is(err, errNoControl) {
		return fmt.Errorf("store log --follow: %w: the store in %s is in use by another process, which does not answer on %s (%v); "+
			"stop the server (or run a build of imsync serve that has the control socket) and run it again",
			events.ErrInUse, data, controlSocket(data), err)
	}
	return err
}

func encodeAll(enc *json.Encoder, evs []events.RecordedEvent, show func(events.RecordedEvent) any) error {
	for _, e := range evs {
		if err := enc.Encode(show(e)); err != nil {
			return err
		}
	}
	return nil
}

// decodedEvent shows an event as export's JSONL row: its place in the
// store and the fields of its domain event (message text as text). An
// event that does not decode shows raw, with the reason.
func decodedEvent(e events.RecordedEvent) any {
	d, err := projections.Decode(e)
	if err != nil {
		m := jsonEvent(e)
		m["decode_error"] = err.Error()
		return m
	}
	row, err := export.Flatten(d)
	if err != nil {
		m := jsonEvent(e)
		m["decode_error"] = err.Error()
		return m
	}
	return row
}

// jsonEvent shows data as text when it is UTF-8, else as base64 bytes.
func jsonEvent(e events.RecordedEvent) map[string]any {
	m := map[string]any{
		"stream":   e.Stream,
		"revision": e.Revision,
		"position": e.Position.Commit,
		"id":       e.ID.String(),
		"type":     e.Type,
		"created":  e.Created,
	}
	if isText(e.Data) {
		m["text"] = string(e.Data)
	} else {
		m["data"] = e.Data
	}
	return m
}

func isText(b []byte) bool {
	return utf8.Valid(b) && !strings.ContainsFunc(string(b), func(r rune) bool { return r < 0x20 && r != '\n' && r != '\t' })
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
