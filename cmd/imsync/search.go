package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/projections"
	"github.com/imsync/imsync/projections/search"
	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/client"
	"github.com/imsync/imsync/transport/wire"
)

// searchDir is where the search index lives inside a data directory:
// DIR/projections/search (beside the other projections' checkpoints), for
// `imsync serve` and `imsync replay --projection search` alike.
func searchDir(data string) string { return filepath.Join(checkpointDir(data), search.Name) }

// searchRetry is how long the live index waits before it starts again
// after an error (the failing event is delivered again).
const searchRetry = 5 * time.Second

// searchDefault is serve's --search default: on, unless IMSYNC_SEARCH
// says otherwise.
func searchDefault() (bool, error) {
	v := os.Getenv("IMSYNC_SEARCH")
	if v == "" {
		return true, nil
	}
	on, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%w: IMSYNC_SEARCH=%q: want true or false", errUsage, v)
	}
	return on, nil
}

// liveSearch is the server's search: the search projection fed live from
// the server's own store, off the grains' path (its own subscription and
// goroutine), answering the gateway's Search requests. Until start it
// answers that search is unavailable.
type liveSearch struct {
	mu     sync.Mutex
	idx    *search.Index
	cancel context.CancelFunc
	done   chan struct{}
}

var _ transport.Searcher = (*liveSearch)(nil)

// start opens the index in data and feeds it from store: the events after
// its checkpoint first, then live ones.
func (l *liveSearch) start(data string, store events.Store, logger *slog.Logger) error {
	idx, err := search.Open(searchDir(data))
	if err != nil {
		return fmt.Errorf("serve: search: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.mu.Lock()
	l.idx, l.cancel, l.done = idx, cancel, make(chan struct{})
	l.mu.Unlock()
	go func() {
		defer close(l.done)
		for {
			r := &projections.Runner{Store: store, Checkpoints: idx.Checkpoints(), Projection: idx, SaveIdle: 100 * time.Millisecond}
			err := r.Run(ctx)
			if ctx.Err() != nil {
				return
			}
			logger.Error("search index stopped; starting again from its checkpoint", "retry_in", searchRetry, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(searchRetry):
			}
		}
	}()
	return nil
}

// close stops feeding the index and closes it.
func (l *liveSearch) close() {
	l.mu.Lock()
	idx, cancel, done := l.idx, l.cancel, l.done
	l.idx = nil
	l.mu.Unlock()
	if idx == nil {
		return
	}
	cancel()
	<-done
	idx.Close()
}

// Search implements transport.Searcher.
func (l *liveSearch) Search(ctx context.Context, q transport.SearchQuery) (*wire.SearchResult, error) {
	l.mu.Lock()
	idx := l.idx
	l.mu.Unlock()
	if idx == nil {
		return nil, &actors.Failure{Code: actors.Code_UNAVAILABLE, Message: "search is not enabled on this server"}
	}
	sq := search.Query{
		Text: q.Text, Conversations: q.Conversations, Sender: q.Sender, Kind: q.Kind,
		Limit: q.Limit, Offset: q.Offset,
	}
	if q.FromUnixMs != 0 {
		sq.From = time.UnixMilli(q.FromUnixMs)
	}
	if q.ToUnixMs != 0 {
		sq.To = time.UnixMilli(q.ToUnixMs)
	}
	r, err := idx.Search(ctx, sq)
	if errors.Is(err, search.ErrInvalidQuery) {
		return nil, &actors.Failure{Code: actors.Code_INVALID, Message: err.Error()}
	}
	if err != nil {
		return nil, err
	}
	out := &wire.SearchResult{Total: r.Total, More: r.More, Hits: make([]*wire.SearchHit, len(r.Hits))}
	for i, h := range r.Hits {
		out.Hits[i] = &wire.SearchHit{
			Conversation: h.Conversation, Seq: h.Seq, Sender: h.Sender, Kind: h.Kind,
			AtUnixMs: h.Time.UnixMilli(), Text: h.Text, Edited: h.Edited, Score: h.Score,
		}
	}
	return out, nil
}

// runSearch runs `imsync search [--conv ID] [--from USER] QUERY`.
func runSearch(ctx context.Context, args []string, out io.Writer) error {
	fs, cf := newClientFlags("search")
	conv := fs.String("conv", "", "only this conversation")
	from := fs.String("from", "", "only messages sent by this user")
	kind := fs.String("kind", "", "only messages of this kind")
	since := fs.String("since", "", "only messages sent at or after this time (RFC 3339)")
	until := fs.String("until", "", "only messages sent before this time (RFC 3339)")
	limit := fs.Int("limit", transport.DefaultSearchLimit, fmt.Sprintf("hits to print (1..%d; asked for %d a page)", transport.MaxSearchOffset, transport.MaxSearchLimit))
	if err := parseFlags(ctx, fs, args); err != nil {
		return err
	}
	text := strings.Join(fs.Args(), " ")
	if strings.TrimSpace(text) == "" {
		return fmt.Errorf("%w: search [--conv ID] [--from USER] QUERY", errUsage)
	}
	if *limit <= 0 || *limit > transport.MaxSearchOffset {
		return fmt.Errorf("%w: search --limit must be 1..%d", errUsage, transport.MaxSearchOffset)
	}
	q := client.SearchQuery{Text: text, Conversation: *conv, Sender: *from, Kind: *kind}
	for _, b := range []struct {
		flag, value string
		t           *time.Time
	}{{"since", *since, &q.From}, {"until", *until, &q.To}} {
		if b.value == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, b.value)
		if err != nil {
			return fmt.Errorf("%w: search --%s %q: want an RFC 3339 time (2026-03-01T12:00:00Z)", errUsage, b.flag, b.value)
		}
		*b.t = t
	}
	c, err := cf.dial(ctx, 0, true)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()

	var hits []*wire.SearchHit
	more := false
	for len(hits) < *limit {
		q.Limit = min(*limit-len(hits), transport.MaxSearchLimit)
		r, err := c.Search(ctx, q)
		if err != nil {
			return fmt.Errorf("search: %w", err)
		}
		hits = append(hits, r.Hits...)
		more = r.More
		if !r.More || len(r.Hits) == 0 || r.NextOffset > transport.MaxSearchOffset {
			break
		}
		q.Offset = int(r.NextOffset)
	}
	return printHits(out, hits, more && len(hits) >= *limit, cf.json)
}

// printHits prints hits as JSON lines (conversation, seq, sender, text,
// kind, time, edited, score) or as a table (text escaped as textValue
// does).
func printHits(out io.Writer, hits []*wire.SearchHit, more, asJSON bool) error {
	if asJSON {
		p := printer{out: out, json: true}
		for _, h := range hits {
			rec := map[string]any{
				"conversation": h.Conversation, "seq": h.Seq, "sender": h.Sender, "text": []byte(h.Text),
				"kind": h.Kind, "time": time.UnixMilli(h.AtUnixMs).UTC().Format(time.RFC3339Nano), "score": h.Score,
			}
			if h.Edited {
				rec["edited"] = true
			}
			p.print(nil, rec)
		}
		return nil
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "CONVERSATION\tSEQ\tSENDER\tTIME (UTC)\tTEXT")
	for _, h := range hits {
		text := tableText(h.Text)
		if h.Edited {
			text += " (edited)"
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\n", textValue(h.Conversation), h.Seq, textValue(h.Sender),
			time.UnixMilli(h.AtUnixMs).UTC().Format("2006-01-02 15:04:05"), text)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if more {
		_, err := fmt.Fprintln(out, "(more hits: raise --limit)")
		return err
	}
	return nil
}

// tableText is text for the last column of a table: as written, unless it
// holds a control character, a line break or invalid UTF-8 (then quoted,
// like textValue), so no one can move the cursor or forge a line.
func tableText(s string) string {
	if !utf8.ValidString(s) {
		return strconv.Quote(s)
	}
	for _, r := range s {
		if r != ' ' && !strconv.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}
