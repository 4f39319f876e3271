package transport

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/transport/wire"
)

// Search request limits (docs/protocol.md, "Search").
const (
	DefaultSearchLimit = 20
	MaxSearchLimit     = 100
	MaxSearchOffset    = 10_000
	MaxSearchQuery     = 1024 // bytes of query text
	// maxSearchBytes bounds the hits of one answer, like a page
	// (actors.MaxPageBytes): 100 hits of 16 KiB messages would not fit a
	// frame. The answer then ends early and says more.
	maxSearchBytes = actors.MaxPageBytes
	// membershipRetries bounds the searches one request runs when hits
	// come from conversations the caller has just left.
	membershipRetries = 3
)

// Searcher answers search queries: the server's search index (`imsync
// serve` wires the search projection). The server has already restricted
// the query to the caller's conversations.
type Searcher interface {
	Search(ctx context.Context, q SearchQuery) (*wire.SearchResult, error)
}

// SearchQuery is a validated Search request, restricted to
// Conversations (never empty).
type SearchQuery struct {
	Text                 string
	Conversations        []string
	Sender, Kind         string
	FromUnixMs, ToUnixMs int64 // 0: open
	Limit, Offset        int
}

// validSearch checks a Search request: bad input is refused as INVALID.
func validSearch(m *wire.Search) error {
	switch {
	case strings.TrimSpace(m.GetQuery()) == "":
		return errInvalid("search needs a query")
	case len(m.Query) > MaxSearchQuery:
		return errInvalid(fmt.Sprintf("search query of %d bytes exceeds %d", len(m.Query), MaxSearchQuery))
	case m.Limit > MaxSearchLimit:
		return errInvalid(fmt.Sprintf("search limit %d exceeds %d", m.Limit, MaxSearchLimit))
	case m.Offset > MaxSearchOffset:
		return errInvalid(fmt.Sprintf("search offset %d exceeds %d", m.Offset, MaxSearchOffset))
	case m.FromUnixMs < 0 || m.ToUnixMs < 0:
		return errInvalid("search time bounds must be positive unix milliseconds (0: open)")
	case m.FromUnixMs != 0 && m.ToUnixMs != 0 && m.FromUnixMs >= m.ToUnixMs:
		return errInvalid(fmt.Sprintf("search time range [%d, %d) is empty", m.FromUnixMs, m.ToUnixMs))
	}
	return nil
}

// search answers a Search request with hits from the conversations the
// caller is a member of: the conversation asked for, after its grain
// confirmed the membership, or those of the caller's conversation list.
// Since that list learns of a removal a moment after the conversation,
// each conversation that has hits is confirmed with its grain; one that
// is not confirmed is taken out and the search runs again.
func (c *conn) search(ctx context.Context, m *wire.Search) (*wire.SearchResult, error) {
	if err := validSearch(m); err != nil {
		return nil, err
	}
	searcher := c.s.cfg.Search
	if searcher == nil {
		return nil, &actors.Failure{Code: actors.Code_UNAVAILABLE, Message: "search is not enabled on this server"}
	}
	svc := c.s.cfg.Service
	q := SearchQuery{
		Text: m.Query, Sender: m.Sender, Kind: m.Kind, FromUnixMs: m.FromUnixMs, ToUnixMs: m.ToUnixMs,
		Limit: int(m.Limit), Offset: int(m.Offset),
	}
	if q.Limit == 0 {
		q.Limit = DefaultSearchLimit
	}
	confirmed := map[string]bool{}
	if m.Conversation != "" {
		ok, err := svc.IsMember(ctx, c.user, m.Conversation)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, &actors.Failure{Code: actors.Code_NOT_FOUND, Message: fmt.Sprintf("conversation %q not found", m.Conversation)}
		}
		q.Conversations = []string{m.Conversation}
		confirmed[m.Conversation] = true
	} else {
		list, err := svc.Conversations(ctx, c.user)
		if err != nil {
			return nil, err
		}
		for _, s := range list.Conversations {
			q.Conversations = append(q.Conversations, s.ConversationId)
		}
	}
	for attempt := 0; ; attempt++ {
		if len(q.Conversations) == 0 {
			return &wire.SearchResult{}, nil
		}
		r, err := searcher.Search(ctx, q)
		if err != nil {
			return nil, err
		}
		allowed := map[string]bool{}
		for _, conv := range q.Conversations {
			allowed[conv] = true
		}
		var gone []string
		for _, h := range r.Hits {
			conv := h.Conversation
			if !allowed[conv] || slices.Contains(gone, conv) {
				continue
			}
			if !confirmed[conv] {
				ok, err := svc.IsMember(ctx, c.user, conv)
				if err != nil {
					return nil, err
				}
				if !ok {
					gone = append(gone, conv)
					continue
				}
				confirmed[conv] = true
			}
		}
		if len(gone) > 0 && attempt+1 < membershipRetries {
			q.Conversations = slices.DeleteFunc(q.Conversations, func(c string) bool { return slices.Contains(gone, c) })
			continue
		}
		// Never a hit of a conversation not confirmed, even when the
		// retries ran out.
		return fitSearch(r, q.Offset, func(h *wire.SearchHit) bool { return confirmed[h.Conversation] }), nil
	}
}

// fitSearch keeps the hits of r that keep accepts, up to maxSearchBytes
// of them, and sets where the next page starts (after the last hit
// looked at).
func fitSearch(r *wire.SearchResult, offset int, keep func(*wire.SearchHit) bool) *wire.SearchResult {
	var kept []*wire.SearchHit
	size, seen := 0, 0
	for _, h := range r.Hits {
		if keep(h) {
			n := proto.Size(h) + 4 // with its tag and length
			if size+n > maxSearchBytes && len(kept) > 0 {
				r.More = true
				break
			}
			size += n
			kept = append(kept, h)
		}
		seen++
	}
	r.Hits = kept
	r.NextOffset = uint32(offset + seen)
	if uint64(r.NextOffset) < r.Total {
		r.More = true
	}
	return r
}
