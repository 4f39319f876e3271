package search

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/blevesearch/bleve/v2"
	"github.com/blevesearch/bleve/v2/search/query"
)

// Query limits.
const (
	DefaultLimit = 20
	MaxLimit     = 100
	MaxOffset    = 10_000
	// MaxQueryBytes bounds the query text.
	MaxQueryBytes = 1024
)

// ErrInvalidQuery is wrapped by every error Search returns for a query it
// refuses (an empty text, a bad time range, a limit or offset out of
// bounds).
var ErrInvalidQuery = errors.New("invalid search query")

// Query selects messages: those holding every word of Text (case
// ignored), that match each field filter that is set, best matches first
// (the newest first among equals), Limit of them after skipping Offset.
type Query struct {
	Text string
	// Conversations, when not nil, restricts the search to these
	// conversations: an empty, non-nil slice finds nothing. A server sets
	// it to the caller's conversations.
	Conversations []string
	Sender        string
	Kind          string
	// From and To bound the time the message was sent: From <= time < To.
	// A zero value leaves that side open.
	From, To time.Time
	Limit    int // 1..MaxLimit; 0: DefaultLimit
	Offset   int // 0..MaxOffset
}

// Hit is one message found.
type Hit struct {
	Conversation string    `json:"conversation"`
	Seq          uint64    `json:"seq"`
	Sender       string    `json:"sender"`
	Kind         string    `json:"kind"`
	Time         time.Time `json:"time"`
	Text         string    `json:"text"`
	Edited       bool      `json:"edited,omitempty"`
	Score        float64   `json:"score"`
}

// Result is a page of hits. Total counts every message that matches;
// More says that hits follow this page (ask again with Offset+len(Hits)).
type Result struct {
	Hits  []Hit  `json:"hits"`
	Total uint64 `json:"total"`
	More  bool   `json:"more"`
}

// Validate checks q as Search does.
func (q Query) Validate() error {
	switch {
	case strings.TrimSpace(q.Text) == "":
		return fmt.Errorf("%w: empty query text", ErrInvalidQuery)
	case len(q.Text) > MaxQueryBytes:
		return fmt.Errorf("%w: query text of %d bytes exceeds %d", ErrInvalidQuery, len(q.Text), MaxQueryBytes)
	case q.Limit < 0 || q.Limit > MaxLimit:
		return fmt.Errorf("%w: limit %d out of 1..%d", ErrInvalidQuery, q.Limit, MaxLimit)
	case q.Offset < 0 || q.Offset > MaxOffset:
		return fmt.Errorf("%w: offset %d out of 0..%d", ErrInvalidQuery, q.Offset, MaxOffset)
	case !q.From.IsZero() && !q.To.IsZero() && !q.From.Before(q.To):
		return fmt.Errorf("%w: time range from %s to %s is empty", ErrInvalidQuery, q.From.Format(time.RFC3339Nano), q.To.Format(time.RFC3339Nano))
	}
	return nil
}

// Search runs q over the saved documents.
func (x *Index) Search(ctx context.Context, q Query) (Result, error) {
	if err := q.Validate(); err != nil {
		return Result{}, err
	}
	if q.Conversations != nil && len(q.Conversations) == 0 {
		return Result{Hits: []Hit{}}, nil
	}
	limit := q.Limit
	if limit == 0 {
		limit = DefaultLimit
	}
	text := bleve.NewMatchQuery(q.Text)
	text.SetField("text")
	text.SetOperator(query.MatchQueryOperatorAnd)
	must := []query.Query{text}
	if q.Conversations != nil {
		convs := make([]query.Query, len(q.Conversations))
		for i, c := range q.Conversations {
			convs[i] = term("conversation", c)
		}
		must = append(must, bleve.NewDisjunctionQuery(convs...))
	}
	if q.Sender != "" {
		must = append(must, term("sender", q.Sender))
	}
	if q.Kind != "" {
		must = append(must, term("kind", q.Kind))
	}
	if !q.From.IsZero() || !q.To.IsZero() {
		var lo, hi *float64
		if !q.From.IsZero() {
			v := float64(q.From.UnixMilli())
			lo = &v
		}
		if !q.To.IsZero() {
			v := float64(q.To.UnixMilli())
			hi = &v
		}
		incl, excl := true, false
		r := bleve.NewNumericRangeInclusiveQuery(lo, hi, &incl, &excl)
		r.SetField("at")
		must = append(must, r)
	}
	req := bleve.NewSearchRequestOptions(bleve.NewConjunctionQuery(must...), limit, q.Offset, false)
	req.Fields = []string{"*"}
	req.SortBy([]string{"-_score", "-at", "_id"})

	x.mu.RLock()
	defer x.mu.RUnlock()
	if x.idx == nil {
		return Result{}, errors.New("search: index not open")
	}
	res, err := x.idx.SearchInContext(ctx, req)
	if err != nil {
		return Result{}, fmt.Errorf("search: %w", err)
	}
	out := Result{Hits: make([]Hit, 0, len(res.Hits)), Total: res.Total}
	for _, h := range res.Hits {
		d := docFromFields(h.Fields)
		out.Hits = append(out.Hits, Hit{
			Conversation: d.Conversation, Seq: d.Seq, Sender: d.Sender, Kind: d.Kind,
			Time: d.time(), Text: d.Text, Edited: d.Edited, Score: h.Score,
		})
	}
	out.More = uint64(q.Offset+len(out.Hits)) < res.Total
	return out, nil
}

func term(field, value string) query.Query {
	t := bleve.NewTermQuery(value)
	t.SetField(field)
	return t
}
