package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/projections"
)

// checkpointDir is where replay keeps projection checkpoints inside a data
// directory: DIR/projections/NAME.checkpoint.
func checkpointDir(data string) string { return filepath.Join(data, "projections") }

// replayOptions are what `imsync replay` and `imsync stats` share.
type replayOptions struct {
	data     string          // checkpoints in DIR/projections; the events too unless storeURL
	storeURL string          // EventStoreDB connection string: read the events there
	tool     string          // the command, for messages (default "replay")
	from     events.Position // inclusive; zero: the start of $all
	rebuild  bool
	// progress receives a bar (terminal) or plain lines (every interval).
	progress io.Writer
	terminal bool
	interval time.Duration
}

// replayResult says what one replay did.
type replayResult struct {
	Projection string `json:"projection"`
	Events     int    `json:"events"`   // applied by this run
	Position   uint64 `json:"position"` // last position the checkpoint covers (0: none)
}

// runReplay runs `imsync replay`.
func runReplay(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	data := fs.String("data", "", "data directory of the server (its event store is DIR/events; checkpoints in DIR/projections)")
	storeURL := fs.String("store", os.Getenv("IMSYNC_STORE"), "EventStoreDB connection string to read instead of DIR/events (as serve --store; or IMSYNC_STORE)")
	name := fs.String("projection", "", "registered projection: "+strings.Join(projections.Names(), ", "))
	from := fs.String("from-position", "", "first global position replayed when there is no checkpoint (or with --rebuild)")
	rebuild := fs.Bool("rebuild", false, "forget the checkpoint and replay from the start (or --from-position)")
	if err := parseFlags(ctx, fs, args); err != nil {
		return err
	}
	if *data == "" || *name == "" || fs.NArg() > 0 {
		return fmt.Errorf("%w: replay needs --data DIR and --projection NAME, and no other arguments", errUsage)
	}
	p, err := projections.New(*name)
	if err != nil {
		return fmt.Errorf("%w: replay: %v", errUsage, err)
	}
	o := replayOptions{data: *data, storeURL: *storeURL, rebuild: *rebuild, progress: os.Stderr, terminal: isTerminal(os.Stderr), interval: time.Second}
	if *from != "" {
		n, err := strconv.ParseUint(*from, 10, 64)
		if err != nil || n == 0 {
			return fmt.Errorf("%w: replay: --from-position %q is not a position (a positive integer, as store log and export print it)", errUsage, *from)
		}
		o.from = events.Position{Commit: n, Prepare: n}
	}
	res, err := replay(ctx, p, o)
	if err != nil {
		return err
	}
	return json.NewEncoder(out).Encode(res)
}

// replay runs p over the store of o.data (or o.storeURL) up to its last
// event (as it was when replay started), resuming from p's checkpoint in
// DIR/projections (in memory, from the start, without o.data). While a
// server runs on o.data, it reads a checkpoint of the server's store;
// the projection's checkpoint stays in DIR/projections, so the next run
// resumes where this one ended.
func replay(ctx context.Context, p projections.Projection, o replayOptions) (replayResult, error) {
	res := replayResult{Projection: p.Name()}
	tool := o.tool
	if tool == "" {
		tool = "replay"
	}
	store, err := openToolStore(ctx, o.data, o.storeURL, tool, o.progress)
	if err != nil {
		return res, err
	}
	defer store.Close()
	var checkpoints projections.CheckpointStore = &projections.MemoryCheckpoints{}
	if o.data != "" {
		checkpoints = projections.FileCheckpoints{Dir: checkpointDir(o.data)}
	}

	var filter events.Filter
	if f, ok := p.(projections.Filter); ok {
		filter = f.Filter()
	}
	last, err := store.ReadAll(ctx, events.ReadAllOptions{Direction: events.Backwards, From: events.PositionEnd, Limit: 1, Filter: filter})
	if err != nil {
		return res, fmt.Errorf("replay: %w", err)
	}
	r := &projections.Runner{
		Store:       store,
		Checkpoints: checkpoints,
		Projection:  p,
		// A kill loses at most about a second of work, and saving a large
		// state does not dominate a long replay.
		SaveInterval: time.Second,
	}
	// A projection with files of its own (the search index) lives in
	// DIR/projections/NAME and may keep its checkpoint there.
	if l, ok := p.(projections.Located); ok {
		if err := l.Open(filepath.Join(checkpointDir(o.data), p.Name())); err != nil {
			return res, fmt.Errorf("replay: %w", err)
		}
		defer l.Close()
	}
	if k, ok := p.(projections.CheckpointKeeper); ok {
		r.Checkpoints = k.Checkpoints()
	}
	if o.from != (events.Position{}) {
		r.From = events.SubscribeAfterPosition(events.Position{Commit: o.from.Commit - 1, Prepare: o.from.Prepare - 1})
	}
	if len(last) == 0 {
		// Nothing to replay: still restore a Stateful projection's state.
		if s, ok := p.(projections.Stateful); ok {
			if err := s.Restore(nil); err != nil {
				return res, err
			}
		}
		if o.rebuild {
			return res, r.Checkpoints.Delete(ctx, p.Name())
		}
		return res, nil
	}
	r.Until = last[0].Position
	if r.Until.Less(o.from) {
		return res, fmt.Errorf("%w: replay: --from-position %d is after the last event (%d)", errUsage, o.from.Commit, r.Until.Commit)
	}
	pr := &progress{w: o.progress, terminal: o.terminal, interval: o.interval, name: p.Name(), end: r.Until.Commit, started: time.Now()}
	r.Applied = pr.applied
	if o.rebuild {
		err = r.Rebuild(ctx)
	} else {
		err = r.Run(ctx)
	}
	pr.finish(err)
	if err != nil {
		return res, err
	}
	res.Events = pr.n
	if cp, ok, err := r.Checkpoints.Load(ctx, p.Name()); err == nil && ok {
		res.Position = cp.Position.Commit
	}
	return res, nil
}

// progress reports a replay: a bar redrawn in place on a terminal, plain
// lines otherwise. Positions give the fraction done (they grow with the
// bytes of the log, not one per event).
type progress struct {
	w        io.Writer
	terminal bool
	interval time.Duration
	name     string
	end      uint64 // position of the last event to replay

	started, shown time.Time
	first, pos     uint64
	n              int
}

func (p *progress) applied(e projections.Event) {
	if p.n == 0 {
		p.first = e.Position.Commit
	}
	p.n++
	p.pos = e.Position.Commit
	now := time.Now()
	every := p.interval
	if p.terminal {
		every = 100 * time.Millisecond
	}
	if now.Sub(p.shown) < every {
		return
	}
	p.shown = now
	p.show(now)
}

func (p *progress) show(now time.Time) {
	elapsed := now.Sub(p.started)
	rate := float64(p.n) / max(elapsed.Seconds(), 1e-9)
	frac := 1.0
	if p.end > p.first {
		frac = float64(p.pos-p.first) / float64(p.end-p.first)
	}
	eta := "?"
	if frac > 0 {
		eta = (time.Duration(float64(elapsed) * (1 - frac) / frac)).Round(time.Second).String()
	}
	if p.terminal {
		const width = 30
		done := int(frac * width)
		fmt.Fprintf(p.w, "\r%s [%s%s] %3.0f%% %d events %.0f events/s ETA %s ",
			p.name, strings.Repeat("#", done), strings.Repeat("-", width-done), 100*frac, p.n, rate, eta)
		return
	}
	fmt.Fprintf(p.w, "replay %s: %d events, %.0f events/s, position %d of %d, ETA %s\n", p.name, p.n, rate, p.pos, p.end, eta)
}

func (p *progress) finish(err error) {
	if p.n > 0 {
		p.show(time.Now())
	}
	if p.terminal && p.n > 0 {
		fmt.Fprintln(p.w)
	}
	if err == nil && !p.terminal {
		fmt.Fprintf(p.w, "replay %s: done, %d events in %s\n", p.name, p.n, time.Since(p.started).Round(time.Millisecond))
	}
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// runStats runs `imsync stats`: replays the stats projection (resuming
// from its checkpoint) and prints its report.
func runStats(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("stats", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	data := fs.String("data", "", "data directory of the server (its event store is DIR/events; checkpoint in DIR/projections)")
	storeURL := fs.String("store", os.Getenv("IMSYNC_STORE"), "EventStoreDB connection string to read instead of DIR/events (as serve --store; or IMSYNC_STORE)")
	asJSON := fs.Bool("json", false, "print the report as one JSON object")
	if err := parseFlags(ctx, fs, args); err != nil {
		return err
	}
	if (*data == "" && *storeURL == "") || fs.NArg() > 0 {
		return fmt.Errorf("%w: stats needs --data DIR or --store URL, and no other arguments", errUsage)
	}
	s := projections.NewStats()
	o := replayOptions{data: *data, storeURL: *storeURL, tool: "stats", progress: os.Stderr, terminal: isTerminal(os.Stderr), interval: time.Second}
	if _, err := replay(ctx, s, o); err != nil {
		return err
	}
	return printStats(out, s.Report(), *asJSON)
}

func printStats(out io.Writer, r projections.StatsReport, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(out).Encode(r)
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "DAY (UTC)\tMESSAGES\tACTIVE USERS")
	for _, d := range r.Days {
		fmt.Fprintf(w, "%s\t%d\t%d\n", d.Day, d.Messages, d.ActiveUsers)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "DAY (UTC)\tCONVERSATION\tMESSAGES")
	for _, c := range r.Conversations {
		fmt.Fprintf(w, "%s\t%s\t%d\n", c.Day, textValue(c.Conversation), c.Messages)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "\tCOUNT\tMIN\tP50\tP90\tP99\tMAX")
	for _, d := range []struct {
		name string
		d    projections.Distribution
	}{{"fanout (inbox entries per message)", r.Fanout}, {"delivery lag (ms)", r.LagMS}} {
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\t%d\n", d.name, d.d.Count, d.d.Min, d.d.P50, d.d.P90, d.d.P99, d.d.Max)
	}
	return w.Flush()
}
